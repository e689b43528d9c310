"""The export stage of a run, inside its active MLflow run: trained weights, ``medlora.json``, review bundle.

A run is FINISHED in MLflow only once its bundle is written: this stage runs before the run block
ends, logs the method's artifact and ``medlora.json``, then builds the bundle from the artifacts the
run has logged so far (the same path ``medlora export RUN_ID`` takes later, so both give the same
bundle). When any of it fails, the run is tagged ``medlora.failure_reason`` with the error and the
error propagates, so the run block ends the run FAILED rather than FINISHED.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from ..bundle.aggregator import FOLDER as AGGREGATOR_FOLDER
from ..bundle.aggregator import save_aggregator
from ..bundle.layout import METADATA_FILE, artifact_of, write_export
from ..review.build import export_bundle
from ..tracking import mlflow_run as track
from ..tracking import tags as T

log = logging.getLogger(__name__)


def record_failure(run_id: str, err: BaseException, tracking_uri: str | None = None) -> None:
    """Tag ``run_id`` with why it failed (the error type and message, cut to MLflow's tag size)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    reason = f"{type(err).__name__}: {err}"[:4900]
    try:
        MlflowClient(tracking_uri).set_tag(run_id, T.FAILURE_REASON, reason)
    except MlflowException as tag_err:  # the original error matters more than the tag
        log.warning("could not tag run %s with its failure reason: %s", run_id, tag_err)


def run_export(out: Path, model: nn.Module, metadata: dict[str, Any], tracking_uri: str | None = None,
               items: dict[str, dict[str, Any]] | None = None, aggregator: nn.Module | None = None) -> Path:
    """Export the active run ``metadata["mlflow_run_id"]``: write and log its weights and
    ``medlora.json`` under ``out``, then its review bundle at ``out/bundle`` (also logged to the run
    as ``bundle/``); returns the bundle.

    Call it inside the run block, after the run's predictions and metrics are logged. ``items``
    (sample id → MONAI item) spares re-ingesting the data for the saliency examples. ``aggregator`` (a
    study-level run's attention pooling) is saved beside the method's artifact and pinned in ``medlora.json``.
    """
    out = Path(out)
    run_id = metadata["mlflow_run_id"]
    try:
        if aggregator is not None:
            metadata = {**metadata, "aggregator": save_aggregator(out, aggregator)}
        write_export(out, model, metadata)
        art = artifact_of(metadata["method"])
        track.log_artifact(out / METADATA_FILE)
        track.log_artifact(out / art.folder, art.folder)
        if aggregator is not None:
            track.log_artifact(out / AGGREGATOR_FOLDER, AGGREGATOR_FOLDER)
        bundle = export_bundle(run_id, out / "bundle", tracking_uri=tracking_uri, overwrite=True, items=items)
        track.log_artifact(bundle, "bundle")  # report, plots, saliency, metrics: on the run that made them
        return bundle
    except Exception as err:  # noqa: BLE001 - recorded on the run, then re-raised unchanged
        record_failure(run_id, err, tracking_uri)
        raise
