"""The same metrics and intervals per subgroup (sex, site, scanner vendor, age band, ...).

Each subgroup uses the operating point frozen on the whole validation set: a subgroup analysis asks
how the deployed rule performs for that group, not what the best rule for it would be. Subgroups
never stop an evaluation: one with a single class gets NaN for the metrics that need both classes
(AUROC, AUPRC, sensitivity-at-specificity, and sensitivity or specificity for the missing class)
and a warning; one with fewer than ``min_per_class`` positives or negatives gets a warning that its
estimates are unstable. Missing values (None, NaN, empty string) form their own ``missing`` group.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .intervals import Interval, bootstrap_metric_intervals, wilson_sensitivity_specificity
from .metrics import binary_metrics

logger = logging.getLogger(__name__)

#: Below this many positives or negatives a subgroup's estimates are flagged as unstable.
MIN_PER_CLASS = 10
MISSING = "missing"


@dataclass
class SubgroupResult:
    """Metrics and intervals of the samples whose ``column`` equals ``value``."""

    column: str
    value: str
    n: int
    n_positive: int
    n_negative: int
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    warnings: list[str] = field(default_factory=list)


def _as_labels(values: np.ndarray) -> np.ndarray:
    """Subgroup values as strings, with missing ones (None, NaN, '') mapped to ``missing``."""

    def one(v: object) -> str:
        if (
            v is None
            or (isinstance(v, float | np.floating) and np.isnan(v))
            or (isinstance(v, str) and not v)
        ):
            return MISSING
        return str(v.item()) if isinstance(v, np.generic) else str(v)

    return np.array([one(v) for v in np.asarray(values, dtype=object).ravel()], dtype=object)


def evaluate_subgroups(
    y: np.ndarray,
    s: np.ndarray,
    threshold: float,
    columns: dict[str, np.ndarray],
    clusters: np.ndarray | None = None,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    probabilities: bool = True,
    min_per_class: int = MIN_PER_CLASS,
) -> list[SubgroupResult]:
    """One :class:`SubgroupResult` per value of each column, in column order then sorted value order.

    ``y``/``s`` are the (already checked) test labels and scores; each column is aligned with them.
    """
    y = np.asarray(y).ravel()
    s = np.asarray(s, dtype=float).ravel()
    results: list[SubgroupResult] = []
    for column, raw in columns.items():
        labels = _as_labels(raw)
        if labels.size != y.size:
            raise ValueError(
                f"subgroup column {column!r} has {labels.size} values for {y.size} test samples"
            )
        for value in sorted(set(labels.tolist())):
            mask = labels == value
            results.append(
                _one_subgroup(
                    column, value, y[mask], s[mask], threshold,
                    None if clusters is None else np.asarray(clusters).ravel()[mask],
                    n_bootstrap, ci, seed, probabilities, min_per_class,
                )
            )  # fmt: skip
    return results


def _one_subgroup(
    column: str,
    value: str,
    y: np.ndarray,
    s: np.ndarray,
    threshold: float,
    clusters: np.ndarray | None,
    n_bootstrap: int,
    ci: float,
    seed: int,
    probabilities: bool,
    min_per_class: int,
) -> SubgroupResult:
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    name = f"subgroup {column}={value}"
    notes: list[str] = []
    if n_pos == 0 or n_neg == 0:
        only = "positives" if n_neg == 0 else "negatives"
        notes.append(f"{name} has only {only} (n={y.size}): metrics needing both classes are NaN")
    elif n_pos < min_per_class or n_neg < min_per_class:
        notes.append(
            f"{name} has {n_pos} positives and {n_neg} negatives (< {min_per_class} of a class): "
            "estimates are unstable and intervals wide"
        )
    metrics = binary_metrics(y, s, threshold, probabilities, on_one_class="nan")
    intervals, _ = bootstrap_metric_intervals(y, s, threshold, clusters, n_bootstrap, ci, seed, probabilities)
    intervals.update(wilson_sensitivity_specificity(metrics, ci))
    for note in notes:
        logger.warning(note)
    return SubgroupResult(column, value, int(y.size), n_pos, n_neg, metrics, intervals, notes)
