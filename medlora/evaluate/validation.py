"""External validation of a shipped model on a site's studies, everything at the shipped operating point.

Nothing here chooses a threshold or fits a calibration map on the studies it evaluates: the site's
study scores arrive already in the shipped map's units and are called at the shipped threshold
(:func:`~medlora.evaluate.report.evaluate_at`). What is measured:

* every metric of a run's report, with the same intervals (DeLong, Wilson, patient-clustered bootstrap);
* calibration intercept and slope (:func:`~medlora.evaluate.calibration.calibration_intercept_slope`);
* the bundle's own test results beside the site's (:mod:`.external`), the threshold the site would need
  for the shipped sensitivity (reported, never applied), and the score-distribution shift (:mod:`.shift`);
* familiarity: the share of studies outside what the model was trained on, and the metrics on flagged
  and unflagged studies apart;
* subgroups whose site metric falls outside the bundle's internal interval.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..config import EvaluateConfig
from .calibration import CalibrationFit, calibration_intercept_slope
from .external import Comparison, SiteSet, compare_sets, threshold_for_sensitivity
from .metrics import binary_metrics
from .operating_point import OperatingPoint
from .report import EvaluationResult, _jsonable, evaluate_at, flat_metrics, to_json
from .shift import ScoreShift, score_shift

logger = logging.getLogger(__name__)
SUBGROUP_METRICS = ("auroc", "sensitivity", "specificity")


@dataclass
class Familiarity:
    available: bool
    threshold: float = float("nan")
    flagged_fraction: float = float("nan")
    n_flagged: int = 0
    flagged: dict[str, float] = field(default_factory=dict)  # metrics on the flagged studies
    unflagged: dict[str, float] = field(default_factory=dict)


@dataclass
class ValidationResult:
    evaluation: EvaluationResult
    calibration: CalibrationFit
    familiarity: Familiarity
    comparisons: list[Comparison] = field(default_factory=list)
    shift: ScoreShift | None = None
    threshold_for_internal_sensitivity: float = float("nan")
    subgroups_outside: list[dict[str, Any]] = field(default_factory=list)


def _subset_metrics(y: np.ndarray, s: np.ndarray, threshold: float, mask: np.ndarray) -> dict[str, float]:
    """Point metrics of the studies in ``mask`` (AUROC NaN with one class there); counts always."""
    y, s = y[mask], s[mask]
    out = {"n": float(mask.sum()), "n_positive": float(y.sum()), "n_negative": float((1 - y).sum())}
    if len(y):
        both = 0 < y.sum() < len(y)
        metrics = binary_metrics(y, s, threshold, True) if both else {}
        out.update({k: float(metrics.get(k, np.nan)) for k in ("auroc", "sensitivity", "specificity")})
        if not both:
            out["sensitivity" if y.all() else "specificity"] = float(((s >= threshold) == y.astype(bool)).mean())
    return out


def familiarity_of(y: np.ndarray, s: np.ndarray, threshold: float, distances: np.ndarray | None,
                   distance_threshold: float | None) -> Familiarity:
    """The share of studies flagged as unfamiliar and the metrics on each side (``None``: not available)."""
    if distances is None or distance_threshold is None:
        return Familiarity(False)
    flagged = distances > distance_threshold
    return Familiarity(True, float(distance_threshold), float(flagged.mean()) if len(flagged) else float("nan"),
                       int(flagged.sum()), _subset_metrics(y, s, threshold, flagged),
                       _subset_metrics(y, s, threshold, ~flagged))


def subgroups_outside(evaluation: EvaluationResult, internal_metrics: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Subgroups whose site metric lies outside the bundle's internal (whole test set) interval."""
    if not internal_metrics:
        return []
    intervals = internal_metrics.get("intervals") or {}
    out = []
    for g in evaluation.subgroups:
        for name in SUBGROUP_METRICS:
            band = intervals.get(f"{name}_delong" if name == "auroc" else name) or intervals.get(name)
            value = g.metrics.get(name)
            if not band or band[0] is None or value is None or not np.isfinite(value):
                continue
            if not band[0] <= value <= band[1]:
                out.append({"column": g.column, "value": g.value, "metric": name, "site": float(value),
                            "internal_low": float(band[0]), "internal_high": float(band[1]), "n": g.n})
    return out


def validate_scores(site: SiteSet, op: OperatingPoint, cfg: EvaluateConfig, internal: SiteSet | None = None,
                    internal_metrics: dict[str, Any] | None = None, subgroups: dict[str, np.ndarray] | None = None,
                    distances: np.ndarray | None = None, distance_threshold: float | None = None,
                    seed: int = 0) -> ValidationResult:
    """Everything measured on the site's studies at the frozen ``op`` (module docstring)."""
    evaluation = evaluate_at(op, site.y, site.s, site.clusters, cfg.bootstrap, cfg.ci, seed, subgroups,
                             True, cfg.min_per_class)
    result = ValidationResult(evaluation, calibration_intercept_slope(site.y, site.s),
                              familiarity_of(site.y, site.s, op.threshold, distances, distance_threshold))
    if internal is not None and len(internal.y):
        result.comparisons = compare_sets(internal, site, op.threshold, cfg.bootstrap, cfg.ci, seed)
        result.shift = score_shift(internal.s, site.s)
        shipped = binary_metrics(internal.y, internal.s, op.threshold, True)["sensitivity"]
        if 0 < site.y.sum() and np.isfinite(shipped):
            result.threshold_for_internal_sensitivity = threshold_for_sensitivity(site.y, site.s, shipped)
    result.subgroups_outside = subgroups_outside(evaluation, internal_metrics)
    for row in result.subgroups_outside:
        logger.warning("subgroup %s=%s: site %s %.3f outside the internal interval [%.3f, %.3f]", row["column"],
                       row["value"], row["metric"], row["site"], row["internal_low"], row["internal_high"])
    return result


def validation_metrics(result: ValidationResult) -> dict[str, float]:
    """MLflow metrics: a run's test metric names (``test_auroc``, ``threshold`` ...) plus the validation's own."""
    out = flat_metrics(result.evaluation, "test_")
    out["test_calibration_intercept"] = result.calibration.intercept
    out["test_calibration_slope"] = result.calibration.slope
    for c in result.comparisons:
        out[f"diff_{c.metric}"] = c.diff
        out[f"diff_{c.metric}_ci_low"], out[f"diff_{c.metric}_ci_high"] = c.diff_ci
    if result.shift is not None:
        out["score_shift_ks"] = result.shift.statistic
        out["score_shift_p"] = result.shift.p_value
    if np.isfinite(result.threshold_for_internal_sensitivity):
        out["threshold_for_internal_sensitivity"] = result.threshold_for_internal_sensitivity
    if result.familiarity.available:
        out["familiarity_flagged_fraction"] = result.familiarity.flagged_fraction
        out.update({f"familiarity_flagged_{k}": v for k, v in result.familiarity.flagged.items()})
        out.update({f"familiarity_unflagged_{k}": v for k, v in result.familiarity.unflagged.items()})
    out["subgroups_outside_internal"] = float(len(result.subgroups_outside))
    return {k: float(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def validation_json(result: ValidationResult) -> dict[str, Any]:
    """``metrics.json`` of a validation: the site's evaluation as a run's, plus the validation sections."""
    return {**to_json(result.evaluation), **_jsonable({
        "calibration_fit": asdict(result.calibration),
        "comparisons": [c.to_dict() for c in result.comparisons],
        "score_shift": result.shift.to_dict() if result.shift is not None else None,
        "threshold_for_internal_sensitivity": result.threshold_for_internal_sensitivity,
        "familiarity": asdict(result.familiarity),
        "subgroups_outside_internal": result.subgroups_outside,
    })}
