"""The summary a sweep ends with: its FINISHED children read back, tabled, tested and plotted.

Written under the sweep's output folder and logged to its parent run: ``summary.csv``/``summary.md``
(mean ± sd over seeds per method and shot count), ``delong.csv`` (paired DeLong tests against LoRA on
the same test studies; per finding for several findings), ``children.csv`` and the learning curves.
The tables and tests themselves are :mod:`.compare`'s, which ``medlora compare`` prints too.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ..tracking import mlflow_run as track
from ..tracking.runs import child_runs
from . import compare as cmp

log = logging.getLogger(__name__)


def summarise(client: Any, parent: Any, out: Path, outputs: Sequence[str] | None = None,
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(children, summary, DeLong) of a parent's FINISHED children; writes and logs the summary files
    and logs the summary as parent metrics (``<metric>_mean.<method>.<shots>shot``).

    Binary sweeps summarise ``test_auroc`` and the operating-point metrics; multi-class/multi-label
    sweeps (:func:`~medlora.sweep.compare.summary_metric_names`) the macro AUROC and each
    finding's (``outputs``: the findings or classes, for their order), with a learning curve of the
    macro AUROC and small multiples per finding (``learning_curves_findings.png``).
    """
    from mlflow.exceptions import MlflowException

    children = cmp.children_frame(child_runs(client, parent))
    if children.empty:
        return children, pd.DataFrame(), pd.DataFrame()
    summary = cmp.summary_table(children, cmp.summary_metric_names(children, outputs))
    multi = cmp.headline_metric(summary) == cmp.MACRO
    studies, findings = {}, {}
    keys = {"study_key": str, "patient_key": str}
    with track.download_bars_on_terminal(), tempfile.TemporaryDirectory() as tmp:
        for row in children.itertuples():
            point = (row.method, row.shots, row.seed)
            studies[point] = pd.read_csv(client.download_artifacts(row.run_id, "test_studies.csv", tmp), dtype=keys)
            if multi and outputs:
                try:
                    findings[point] = pd.read_csv(client.download_artifacts(row.run_id, "test_findings.csv", tmp),
                                                  dtype=keys)
                except (OSError, MlflowException) as err:  # a child logged before per-finding tables existed
                    log.warning("child %s has no test_findings.csv (%s): left out of the per-finding DeLong tests",
                                row.run_id, type(err).__name__)
    delong = cmp.paired_delong(studies, reference="lora")
    delong_findings = cmp.paired_delong_findings(findings, outputs or [], reference="lora")
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    delong.to_csv(out / "delong.csv", index=False)
    children.to_csv(out / "children.csv", index=False)
    note = ("test AUROC per finding (test_auroc.<finding>) and their mean (test_auroc_macro); " if multi else "")
    text = ["# Few-shot sweep summary", "", note + "mean ± sd over seeds; one FINISHED child run per (method, shots, seed)",
            "", cmp.markdown_table(cmp.format_summary(summary)), "",
            "## DeLong paired tests on the same test studies (clustered by patient)"
            + (" of the any-finding score" if multi else ""), "",
            cmp.markdown_table(cmp.format_delong(delong)) if not delong.empty else "(no pairs to compare)"]
    if not delong_findings.empty:
        delong_findings.to_csv(out / "delong_findings.csv", index=False)
        text += ["", "## DeLong paired tests per finding (studies with the finding unknown left out)", "",
                 cmp.markdown_table(cmp.format_delong(delong_findings))]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    cmp.plot_learning_curve(summary, out / "learning_curve.png")
    files = ["summary.csv", "summary.md", "delong.csv", "children.csv", "learning_curve.png"]
    if not delong_findings.empty:
        files.append("delong_findings.csv")
    if multi:
        cmp.plot_finding_curves(summary, out / "learning_curves_findings.png")
        files.append("learning_curves_findings.png")
    for name in files:
        track.log_artifact(out / name)
    track.log_metrics(cmp.summary_metrics(summary))
    return children, summary, delong
