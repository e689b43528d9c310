"""A bundle: the folder a run exports and another site receives, and everything that reads it.

* :mod:`~medlora.bundle.bundle` — open a bundle (:func:`open_bundle`, :class:`Bundle`); start here.
* :mod:`~medlora.bundle.layout` — what files a bundle holds, what each adaptation method saves.
* :mod:`~medlora.bundle.metadata` — the content of ``medlora.json``.
* :mod:`~medlora.bundle.manifest` — ``MANIFEST.sha256``: write and verify.
* :mod:`~medlora.bundle.loading` — the trained model of a bundle, on its verified base.
* :mod:`~medlora.bundle.samples` — new DICOM/NIfTI files turned into the model's inputs.
* :mod:`~medlora.bundle.predict` — score new studies with one or more bundles.
* :mod:`~medlora.bundle.pyfunc` — the same scoring as an MLflow pyfunc model, registered.

The review report a bundle carries (model card, ``report.html``) is built by :mod:`medlora.review`.
"""
