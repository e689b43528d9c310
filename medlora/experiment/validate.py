"""``medlora validate BUNDLE CONFIG``: external validation of a received bundle on a site's own studies.

The site's labelled studies are ingested with medlora's ingest (its identity rules, the **site's own**
secret), preprocessed exactly as the bundle says (never the site config's preprocessing), scored by the
bundle's model, and evaluated at the bundle's **frozen** operating point and calibration map
(:mod:`medlora.evaluate.validation`): nothing is re-tuned on the studies being evaluated. With
``--calibrate-on`` a site calibration subset refits the map and threshold; those studies are left out
and the report shows shipped vs site-adjusted on the other studies; the adjusted bundle is written as a
new bundle naming its parent. Every check that needs no scoring runs first, in seconds.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..bundle.adjust import SiteAdjustment, adjust_on_site, write_adjusted_bundle
from ..bundle.bundle import Bundle, open_bundle
from ..bundle.familiarity import load_feature_stats
from ..bundle.manifest import require_verified
from ..bundle.predict import Predictor
from ..bundle.site_scores import SiteScores, score_prepared
from ..config import Config
from ..errors import BundleError, ConfigError
from ..evaluate.external import SiteSet
from ..evaluate.familiarity import FeatureStats
from ..evaluate.operating_point import OperatingPoint
from ..evaluate.stage import study_scores, test_subgroups
from ..evaluate.validation import ValidationResult, validate_scores, validation_json, validation_metrics
from ..evaluate.validation_findings import finding_metrics, finding_rows
from ..io.findings import normal_vs_abnormal
from ..io.site import CALIBRATION, EVALUATION, parse_calibrate_on, prepare_site_data
from ..transforms.samples import with_views
from .context import start
from .validate_labels import check_labels
from .validate_run import log_validation, run_config, write_outputs

log = logging.getLogger(__name__)


@dataclass
class ValidationSummary:
    out: Path
    run_id: str | None
    metrics: dict[str, float]
    n_studies: int
    adjusted_bundle: Path | None = None
    pushed: Any = None  # what --push sent (medlora.io.dicomweb.push.PushResult)


def study_table(scores: SiteScores, bundle: Bundle, cfg: Config, stats: FeatureStats | None) -> pd.DataFrame:
    """One row per scored study: keys, split, the abnormal / any-finding label, the study score in the
    shipped map's units, its raw score, and its familiarity distance (NaN without statistics)."""
    samples = scores.samples
    normal, abnormal = normal_vs_abnormal(samples, cfg.data)
    known = samples.assign(label=abnormal.astype(int))[normal | abnormal]
    frames = []
    for split, part in known.groupby("split", sort=False):
        frames.append(study_scores(part, bundle.aggregate).frame().assign(split=split))
    studies = pd.concat(frames, ignore_index=True).rename(columns={"score": "raw_score"})
    studies["score"] = bundle.study_scores(studies["raw_score"].to_numpy())
    studies["call"] = (studies["score"] >= bundle.threshold).astype(int)
    keys, feats = scores.study_features()
    distance = stats.distance(feats) if stats is not None else np.full(len(keys), np.nan)
    studies["familiarity"] = studies["study_key"].map(dict(zip(keys, distance, strict=True)))
    studies["unfamiliar"] = studies["familiarity"] > (stats.threshold if stats is not None else np.inf)
    return studies


def internal_set(bundle: Bundle) -> tuple[SiteSet | None, dict | None]:
    """The bundle's own test studies (``predictions.csv``, split ``test``) and its ``metrics.json``."""
    preds, metrics = bundle.path / "predictions.csv", bundle.path / "metrics.json"
    internal = None
    if preds.is_file():
        frame = pd.read_csv(preds)
        frame = frame[(frame["split"] == "test") & frame["label"].notna() & frame["score"].notna()]
        internal = SiteSet(frame["label"].to_numpy(int), frame["score"].to_numpy(float),
                           frame["patient_key"].to_numpy(str))
    return internal, json.loads(metrics.read_text()) if metrics.is_file() else None


def _site_set(studies: pd.DataFrame, column: str = "score") -> SiteSet:
    return SiteSet(studies["label"].to_numpy(int), studies[column].to_numpy(float), studies["patient_key"].to_numpy(str))


def run_validate(bundle_path: Path, cfg: Config, out: Path, calibrate_on: str | None = None,
                 strict: bool = False, push: str | None = None) -> ValidationSummary:
    """Validate the bundle at ``bundle_path`` on the studies of ``cfg.data``; outputs go to ``out``. With
    ``push`` (the DICOMweb URL of the PACS the studies came from) each study's findings at the shipped
    operating point also go back there, as ``medlora predict --push`` sends them."""
    out = Path(out)
    calibrate = parse_calibrate_on(calibrate_on)
    if push is not None:  # a URL with credentials is refused before any work
        from ..io.dicomweb.client import server_url

        server_url(push)
    require_verified(Path(bundle_path))
    bundle = open_bundle(Path(bundle_path))
    if not bundle.binary_call:
        raise BundleError(f"{bundle.path}: a multi-class model without data.normal makes no abnormal-vs-normal call; "
                          "validate needs the bundle's 'any finding' operating point")
    if bundle.aggregate == "attention":
        raise BundleError(f"{bundle.path} is a study-level (attention) model; validate scores slice by slice and does "
                          "not support it yet: score its studies with medlora predict")
    notes = check_labels(bundle, cfg.data)
    predictor = Predictor([bundle])  # loads the base and checks its sha256 before any study is read
    stats = load_feature_stats(bundle)
    out.mkdir(parents=True, exist_ok=True)
    pre = bundle.preprocess()[0]
    data = with_views(prepare_site_data(cfg.data, out, calibrate), pre)
    ctx = start(run_config(cfg, bundle), data=data)  # the tracking store checked once, before any scoring
    splits = (EVALUATION,) + ((CALIBRATION,) if calibrate is not None else ())
    scores = score_prepared(predictor, data, cfg, splits)
    studies = study_table(scores, bundle, cfg, stats)
    evaluated = studies[studies["split"] == EVALUATION].reset_index(drop=True)
    if evaluated["label"].nunique() < 2:
        raise ConfigError(f"the site's evaluated studies hold only one class ({len(evaluated)} studies): "
                          "no AUROC, sensitivity and specificity together can be measured")
    _check_size(evaluated, cfg, strict)
    op = OperatingPoint(bundle.meta["operating_point"]["policy"], bundle.threshold, float("nan"), float("nan"))
    internal, internal_metrics = internal_set(bundle)
    subgroups = _subgroups(scores, data, cfg, evaluated)
    result: ValidationResult = validate_scores(
        _site_set(evaluated), op, cfg.evaluate, internal, internal_metrics, subgroups,
        evaluated["familiarity"].to_numpy(float) if stats is not None else None,
        stats.threshold if stats is not None else None, seed=cfg.train.seed)
    adjustment: SiteAdjustment | None = None
    adjusted_path = None
    if calibrate is not None:
        adjustment = adjust_on_site(bundle, studies[studies["split"] == CALIBRATION], evaluated, cfg.evaluate,
                                    seed=cfg.train.seed)
        adjusted_path = write_adjusted_bundle(bundle, adjustment, out / "adjusted_bundle", cfg.data.name)
    findings = finding_rows(scores.samples[scores.samples["split"] == EVALUATION], cfg.data.task, list(cfg.data.outputs),
                            bundle.output_thresholds, bundle.aggregate, op.policy, cfg.evaluate,
                            seed=cfg.train.seed) if bundle.outputs else []
    metrics = {**validation_metrics(result), **finding_metrics(findings)}
    doc = {**validation_json(result), "notes": notes, "bundle": _bundle_summary(bundle), "findings": findings,
           "skipped_files": int(len(data.skipped)),
           "site_adjustment": adjustment.to_json() if adjustment is not None else None}
    write_outputs(out, evaluated, doc, result, bundle, stats, data.card.name if data.card is not None else cfg.data.name)
    run_id = log_validation(ctx, bundle, metrics, out)
    pushed = None
    if push is not None:
        from ..review.push import push_predictions

        inputs = [Path(cfg.data.root)]
        pushed = push_predictions(predictor, predictor.predict_files(inputs), inputs, push)
    log.info("validated %s on %d site studies: AUROC %.3f at the shipped threshold %.4g (outputs in %s)",
             bundle.name, len(evaluated), metrics.get("test_auroc", float("nan")), bundle.threshold, out)
    return ValidationSummary(out, run_id, metrics, len(evaluated), adjusted_path, pushed)


def _check_size(evaluated: pd.DataFrame, cfg: Config, strict: bool) -> None:
    counts = evaluated["label"].value_counts()
    small = min(int(counts.get(0, 0)), int(counts.get(1, 0)))
    if small < cfg.evaluate.min_per_class:
        message = (f"the site's evaluated studies hold {int(counts.get(1, 0))} abnormal and {int(counts.get(0, 0))} "
                   f"normal, below evaluate.min_per_class={cfg.evaluate.min_per_class}: estimates are unstable")
        if strict:
            raise ConfigError(message + "; --strict refuses to validate on so few")
        log.warning(message)


def _subgroups(scores: SiteScores, data, cfg: Config, evaluated: pd.DataFrame) -> dict[str, np.ndarray] | None:
    if not cfg.evaluate.subgroups:
        return None
    from ..io.subgroups import subgroup_table

    table = subgroup_table(data.manifest, cfg.data, cfg.evaluate.subgroups)
    frame = pd.DataFrame({"study_key": evaluated["study_key"]})
    return test_subgroups(frame, table)


def _bundle_summary(bundle: Bundle) -> dict:
    from ..bundle.adjust import bundle_sha256

    meta = bundle.meta
    return {"name": bundle.name, "sha256": bundle_sha256(bundle.path), "method": bundle.method,
            "base": meta["base"].get("timm_name"), "mlflow_run_id": meta.get("mlflow_run_id"),
            "threshold": bundle.threshold, "policy": meta["operating_point"].get("policy"),
            "calibration": (meta.get("calibration") or {}).get("method", "none"),
            "dataset": (meta.get("dataset") or {}).get("name")}
