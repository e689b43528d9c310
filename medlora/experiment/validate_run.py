"""What a validation leaves behind: its files (``metrics.json``, ``predictions.csv``, plots,
``validation.html``) and its MLflow run in the site's experiment.

The run has the same short params and the same metric names as a training run's test metrics
(``test_auroc``, ``test_sensitivity`` ..., ``threshold``), so the MLflow table lines validations of several
bundles up beside the runs that trained them; tags name the bundle's sha256, its training run and, when
the bundle's run is a registered model in this store, the model version (which gets a tag back).
Only pseudonymous keys are written: no file name, UID or patient identifier.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..bundle.adjust import bundle_sha256
from ..bundle.bundle import Bundle
from ..config import Config
from ..evaluate.familiarity import FeatureStats
from ..evaluate.plots import plot_familiarity, plot_reliability, plot_roc, plot_score_shift
from ..evaluate.validation import ValidationResult
from ..review.html import Figure
from ..review.validation_page import write_page
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from .context import RunContext

log = logging.getLogger(__name__)
PREDICTION_COLUMNS = ["study_key", "patient_key", "label", "score", "call", "familiarity", "unfamiliar"]


def _plots(out: Path, evaluated: pd.DataFrame, result: ValidationResult, bundle: Bundle,
           stats: FeatureStats | None) -> list[Figure]:
    y, s = evaluated["label"].to_numpy(int), evaluated["score"].to_numpy(float)
    op = result.evaluation.operating_point
    folder = out / "plots"
    figs = [Figure(plot_roc(y, s, folder / "roc.png", operating_point=op, title="Site ROC (shipped threshold)"),
                   "ROC of the site's studies with the shipped operating point"),
            Figure(plot_reliability(y, s, folder / "reliability.png"), "Reliability of the site's study scores")]
    if result.shift is not None:
        figs.append(Figure(plot_score_shift(result.shift, folder / "score_shift.png", op.threshold),
                           "Study scores: the bundle's own test studies and the site's"))
    if stats is not None:
        figs.append(Figure(plot_familiarity(evaluated["familiarity"].to_numpy(float), stats.threshold,
                                            folder / "familiarity.png"),
                           "Distance of each site study to the bundle's training studies"))
    return figs


def write_outputs(out: Path, evaluated: pd.DataFrame, doc: dict[str, Any], result: ValidationResult, bundle: Bundle,
                  stats: FeatureStats | None, site: str) -> None:
    """``metrics.json``, ``predictions.csv`` (pseudonymous keys), plots and ``validation.html`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=str))
    evaluated[PREDICTION_COLUMNS].to_csv(out / "predictions.csv", index=False)
    figs = _plots(out, evaluated, result, bundle, stats)
    write_page(out / "validation.html", doc, bundle.meta["labels"], figs, site)


def _model_versions(run_id: str | None) -> list[Any]:
    if not run_id:
        return []
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return list(MlflowClient().search_model_versions(f"run_id='{run_id}'"))
    except MlflowException as err:  # a store without a model registry
        log.info("no model registry to look the bundle up in: %s", err)
        return []


def run_config(cfg: Config, bundle: Bundle) -> Config:
    """The site config with the bundle's base and method: the short params of the validation run say which
    model was validated (``backbone``, ``method``), as a training run's do."""
    model = cfg.model.model_copy(update={"backbone": bundle.meta["base"].get("timm_name", cfg.model.backbone),
                                         "method": bundle.method})
    return cfg.model_copy(update={"model": model})


def log_validation(ctx: RunContext, bundle: Bundle, metrics: dict[str, float], out: Path) -> str | None:
    """Log the validation as an MLflow run (``medlora.role=validation``) in the site's experiment."""
    import mlflow
    from mlflow import MlflowClient

    sha = bundle_sha256(bundle.path)
    trained = bundle.meta.get("mlflow_run_id")
    versions = _model_versions(trained)
    tags = {T.BUNDLE_SHA256: sha, T.BUNDLE_RUN: str(trained)}
    if versions:
        tags[T.BUNDLE_MODEL_VERSION] = ", ".join(f"{v.name}/{v.version}" for v in versions)
    name = f"validate-{bundle.method}-{ctx.cfg.data.name}-{sha[:6]}"
    with ctx.open_run(bundle.method, role="validation", name=name, tags=tags,
                      params={"bundle": bundle.name, "bundle_sha256": sha}) as run:
        if run is None:
            return None
        mlflow.log_metrics({k: v for k, v in metrics.items() if np.isfinite(v)})
        for file in ("metrics.json", "predictions.csv", "validation.html"):
            track.log_artifact(out / file)
        for png in sorted((out / "plots").glob("*.png")):
            track.log_artifact(png, "plots")
        run_id = run.info.run_id
    for v in versions:
        previous = (v.tags or {}).get(T.VALIDATION)
        MlflowClient().set_model_version_tag(v.name, v.version, T.VALIDATION,
                                             ", ".join(filter(None, [previous, run_id])))
    return run_id
