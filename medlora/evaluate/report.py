"""One call from validation and test scores to every reported number with its interval.

:func:`evaluate_binary` freezes the operating point on validation data, computes all metrics on the
test set at that threshold, and attaches intervals:

* ``intervals[<metric>]``: patient-clustered, label-stratified percentile bootstrap (the primary
  interval for every metric; see :mod:`medlora.evaluate.intervals`);
* ``intervals["auroc_delong"]``: DeLong interval (Obuchowski's clustered variance when clusters are
  given; see :mod:`medlora.evaluate.delong`);
* ``intervals["sensitivity_wilson"]``, ``intervals["specificity_wilson"]``, ``intervals["ppv_wilson"]``,
  ``intervals["npv_wilson"]``: Wilson score intervals of the rates' counts (what the review report
  shows for them: a bootstrap interval of a rate collapses to one point on a handful of cases);
* ``calibration``: the recalibration map fitted on validation and the scores' Brier/ECE before and
  after it (set by :func:`medlora.evaluate.stage.run_evaluate`; ``{"method": "none"}`` without one).

:func:`flat_metrics` turns a result into MLflow metric names, :func:`to_json` into a metrics.json
document (NaN becomes null).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .calibration import DEFAULT_BINS
from .checks import check_binary
from .delong import delong_auc
from .intervals import Interval, bootstrap_metric_intervals, wilson_interval, wilson_sensitivity_specificity
from .metrics import _safe_name, binary_metrics
from .operating_point import OperatingPoint, choose_operating_point, parse_policy
from .subgroups import MIN_PER_CLASS, SubgroupResult, evaluate_subgroups

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_binary` measured; ``warnings`` lists what a reader must know."""

    operating_point: OperatingPoint
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    delong: dict[str, float | str]
    subgroups: list[SubgroupResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)


def wilson_predictive_values(metrics: dict[str, float], ci: float = 0.95) -> dict[str, Interval]:
    """Wilson intervals ``ppv_wilson`` (tp of the predicted positives) and ``npv_wilson`` (tn of the
    predicted negatives) from the confusion counts."""
    tp, fn, tn, fp = (int(metrics[k]) for k in ("tp", "fn", "tn", "fp"))
    return {"ppv_wilson": wilson_interval(tp, tp + fp, ci), "npv_wilson": wilson_interval(tn, tn + fn, ci)}


def evaluate_binary(
    y_val: np.ndarray,
    s_val: np.ndarray,
    y_test: np.ndarray,
    s_test: np.ndarray,
    clusters_test: np.ndarray | None = None,
    policy: str = "youden",
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    subgroups: dict[str, np.ndarray] | None = None,
    probabilities: bool = True,
    min_per_class: int = MIN_PER_CLASS,
) -> EvaluationResult:
    """Freeze a threshold on validation (``policy``), then measure the test set with intervals.

    ``clusters_test`` (e.g. patient ids aligned with the test samples) makes the bootstrap and DeLong
    intervals account for several samples per patient. ``subgroups`` maps a column name to values
    aligned with the test samples. Raises :class:`~medlora.errors.MetricUndefinedError` if the
    validation or test labels hold a single class.
    """
    op = choose_operating_point(y_val, s_val, policy)
    return evaluate_at(op, y_test, s_test, clusters_test, n_bootstrap, ci, seed, subgroups, probabilities,
                       min_per_class)


def evaluate_at(
    op: OperatingPoint,
    y_test: np.ndarray,
    s_test: np.ndarray,
    clusters_test: np.ndarray | None = None,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    subgroups: dict[str, np.ndarray] | None = None,
    probabilities: bool = True,
    min_per_class: int = MIN_PER_CLASS,
) -> EvaluationResult:
    """Measure ``y_test``/``s_test`` at an operating point frozen elsewhere (on validation data, or the one a
    bundle shipped with): the studies measured never move the threshold."""
    policy = op.policy
    y, s = check_binary(y_test, s_test, what="test scores")
    metrics = binary_metrics(y, s, op.threshold, probabilities)
    notes = _operating_point_notes(op)

    intervals, nan_fraction = bootstrap_metric_intervals(
        y, s, op.threshold, clusters_test, n_bootstrap, ci, seed, probabilities
    )
    for name, frac in nan_fraction.items():
        if 0.0 < frac < 1.0 and n_bootstrap > 0:
            notes.append(
                f"{name} was undefined in {frac:.1%} of bootstrap replicates; its interval uses the rest"
            )
    intervals.update(wilson_sensitivity_specificity(metrics, ci))
    intervals.update(wilson_predictive_values(metrics, ci))
    dl = delong_auc(y, s, ci=ci, clusters=clusters_test)
    intervals["auroc_delong"] = (dl.ci_low, dl.ci_high)
    delong = asdict(dl)

    n_clusters = int(np.unique(clusters_test).size) if clusters_test is not None else int(y.size)
    counts = {
        "n": int(y.size),
        "n_positive": int(y.sum()),
        "n_negative": int(y.size - y.sum()),
        "n_clusters": n_clusters,
    }
    if n_clusters < y.size:
        notes.append(
            f"{y.size} samples come from {n_clusters} clusters: bootstrap and DeLong intervals are clustered; "
            "Wilson intervals assume independent samples and are too narrow"
        )
    if min(counts["n_positive"], counts["n_negative"]) < min_per_class:
        notes.append(
            f"test set has {counts['n_positive']} positives and {counts['n_negative']} negatives: estimates are unstable"
        )

    groups = (
        evaluate_subgroups(y, s, op.threshold, subgroups, clusters_test, n_bootstrap, ci, seed, probabilities)
        if subgroups
        else []
    )
    for g in groups:
        notes.extend(g.warnings)
    for note in notes:
        logger.warning(note)
    settings = {
        "policy": policy, "n_bootstrap": n_bootstrap, "ci": ci, "seed": seed,
        "probabilities": probabilities, "ece_bins": DEFAULT_BINS, "delong_ci_method": dl.method,
        "min_per_class": min_per_class,
    }  # fmt: skip
    return EvaluationResult(op, metrics, intervals, delong, groups, notes, counts, settings)


def _operating_point_notes(op: OperatingPoint) -> list[str]:
    name, target = parse_policy(op.policy)
    achieved = {"sensitivity": op.val_sensitivity, "specificity": op.val_specificity}.get(name)
    if target is not None and achieved is not None and achieved < target - 1e-12:
        return [f"operating point {op.policy}: validation {name} reached only {achieved:.3f}"]
    return []


def _interval_names(prefix: str, intervals: dict[str, Interval]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, (low, high) in intervals.items():
        out[f"{prefix}{name}_ci_low"] = float(low)
        out[f"{prefix}{name}_ci_high"] = float(high)
    return out


def flat_metrics(
    result: EvaluationResult, prefix: str = "test_", include_subgroups: bool = True
) -> dict[str, float]:
    """MLflow-ready ``{name: value}``: every metric, its ``_ci_low``/``_ci_high``, counts and the threshold.

    Names: ``{prefix}<metric>``, ``{prefix}<metric>_ci_low/_ci_high`` (bootstrap),
    ``{prefix}auroc_delong_ci_low/_ci_high``, ``{prefix}auroc_delong_se``,
    ``{prefix}sensitivity_wilson_ci_low/_ci_high`` (and specificity, ppv, npv), ``{prefix}n``,
    ``{prefix}n_positive``, ``{prefix}n_negative``, ``{prefix}n_clusters``, ``threshold``,
    ``threshold_val_sensitivity``, ``threshold_val_specificity``; with a recalibration
    ``{prefix}brier_uncalibrated`` and ``{prefix}ece_uncalibrated`` (before it); per subgroup the same metric and
    interval names under ``{prefix}subgroup_<column>_<value>_`` plus ``..._n``, ``..._n_positive``,
    ``..._n_negative``.
    """
    out: dict[str, float] = {f"{prefix}{k}": float(v) for k, v in result.metrics.items()}
    out.update(_interval_names(prefix, result.intervals))
    out[f"{prefix}auroc_delong_se"] = float(result.delong["se"])
    out.update({f"{prefix}{k}": float(v) for k, v in result.counts.items()})
    op = result.operating_point
    out["threshold"] = op.threshold
    out["threshold_val_sensitivity"] = op.val_sensitivity
    out["threshold_val_specificity"] = op.val_specificity
    for name in ("brier", "ece"):  # the same scores before recalibration
        before = result.calibration.get(f"test_{name}_before")
        if before is not None:
            out[f"{prefix}{name}_uncalibrated"] = float(before)
    if include_subgroups:
        for g in result.subgroups:
            sub = f"{prefix}subgroup_{_safe_name(g.column)}_{_safe_name(g.value)}_"
            out.update({f"{sub}{k}": float(v) for k, v in g.metrics.items()})
            out.update(_interval_names(sub, g.intervals))
            out.update(
                {
                    f"{sub}n": float(g.n),
                    f"{sub}n_positive": float(g.n_positive),
                    f"{sub}n_negative": float(g.n_negative),
                }
            )
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def to_json(result: EvaluationResult) -> dict[str, Any]:
    """A JSON-serialisable dict of the whole result (intervals as ``[low, high]``, NaN as null)."""
    return _jsonable(
        {
            "operating_point": asdict(result.operating_point),
            "metrics": result.metrics,
            "intervals": result.intervals,
            "delong": result.delong,
            "counts": result.counts,
            "settings": result.settings,
            "subgroups": [asdict(g) for g in result.subgroups],
            "warnings": result.warnings,
            "calibration": result.calibration,
        }
    )
