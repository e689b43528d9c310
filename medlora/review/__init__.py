"""The review report of a bundle: what a clinician reads before anyone uses the model.

* :mod:`~medlora.review.build` — ``medlora export``: a run's artifacts into a self-contained bundle.
* :mod:`~medlora.review.card` — the model card (Markdown); :mod:`~medlora.review.metric_rows` its metric
  rows; :mod:`~medlora.review.findings_report` the per-finding tables of multi-output models.
* :mod:`~medlora.review.html` — ``report.html``, one self-contained page.
* :mod:`~medlora.review.predictions` — the study- and image-level prediction tables.
* :mod:`~medlora.review.figures` and :mod:`~medlora.review.saliency` — plots and saliency examples.
* :mod:`~medlora.review.phi` — the scan that keeps patient identifiers out of a bundle.
* :mod:`~medlora.review.keys` — only runs keyed with a site secret may leave the site.

It reads bundles through :mod:`medlora.bundle` and is imported only by orchestration and the CLI.
"""
