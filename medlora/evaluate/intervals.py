"""Confidence intervals: patient-clustered stratified bootstrap and Wilson score intervals.

Bootstrap. Images of one patient are correlated, so resampling images would make intervals too
narrow. Here the unit of resampling is the cluster (patient; every sample its own cluster when no
clusters are given): each replicate draws, with replacement, as many clusters as there are and keeps
all samples of each drawn cluster. Draws are stratified by the cluster's label (positive if any of
its samples is positive), so every replicate has the test set's number of positive and negative
clusters and the AUROC is defined in each replicate. The threshold stays frozen; it is never
re-chosen inside a replicate. Intervals are percentile intervals of the replicates, ignoring
replicates where a metric is undefined (NaN). Everything is seeded and reproducible. The metrics of
all replicates are computed in blocks from per-sample draw counts (a few matrix products per block,
not one Python call per replicate): 2000 replicates of 200 studies take ~0.2 s instead of ~0.8 s.

Wilson. The Wilson score interval for a binomial proportion (Wilson 1927) is used for sensitivity
(tp out of positives) and specificity (tn out of negatives). It assumes independent samples; with
several samples per patient prefer the clustered bootstrap.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
from scipy.stats import norm

from .checks import check_binary, require_both_classes
from .metrics import _binary_metrics_unchecked, binary_curve, weighted_binary_metrics

logger = logging.getLogger(__name__)

Interval = tuple[float, float]
_NAN_INTERVAL: Interval = (float("nan"), float("nan"))


def wilson_interval(successes: int, n: int, ci: float = 0.95) -> Interval:
    """Wilson score interval of ``successes / n``; ``(nan, nan)`` when ``n == 0``."""
    if n <= 0:
        return _NAN_INTERVAL
    if not 0 <= successes <= n:
        raise ValueError(f"successes must lie in [0, n={n}], got {successes}")
    z = float(norm.ppf(0.5 + ci / 2.0))
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def wilson_sensitivity_specificity(metrics: dict[str, float], ci: float = 0.95) -> dict[str, Interval]:
    """Wilson intervals ``sensitivity_wilson`` and ``specificity_wilson`` from the tp/fn/tn/fp counts."""
    tp, fn, tn, fp = (int(metrics[k]) for k in ("tp", "fn", "tn", "fp"))
    return {
        "sensitivity_wilson": wilson_interval(tp, tp + fn, ci),
        "specificity_wilson": wilson_interval(tn, tn + fp, ci),
    }


def cluster_bootstrap_indices(
    y: np.ndarray, clusters: np.ndarray | None = None, n_bootstrap: int = 2000, seed: int = 0
) -> Iterator[np.ndarray]:
    """Yield ``n_bootstrap`` arrays of sample indices, each a stratified resample of whole clusters."""
    y = np.asarray(y).ravel()
    ids = np.arange(y.size) if clusters is None else np.asarray(clusters).ravel()
    if ids.size != y.size:
        raise ValueError(f"clusters and labels differ in length: {ids.size} vs {y.size}")
    _, inv = np.unique(ids, return_inverse=True)
    n_clusters = int(inv.max()) + 1 if inv.size else 0
    order = np.argsort(inv, kind="mergesort")  # samples grouped by cluster
    sizes = np.bincount(inv, minlength=n_clusters)
    starts = np.cumsum(sizes) - sizes
    cluster_label = np.zeros(n_clusters, dtype=np.int64)
    np.maximum.at(cluster_label, inv, y.astype(np.int64))
    strata = [np.flatnonzero(cluster_label == label) for label in (0, 1)]
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap):
        chosen = np.concatenate([rng.choice(s, size=s.size, replace=True) for s in strata if s.size])
        lens = sizes[chosen]
        offsets = np.cumsum(lens) - lens
        yield order[np.repeat(starts[chosen] - offsets, lens) + np.arange(lens.sum())]


def bootstrap_replicates(
    y: np.ndarray,
    s: np.ndarray,
    statistic: Callable[[np.ndarray, np.ndarray], dict[str, float]],
    clusters: np.ndarray | None = None,
    n_bootstrap: int = 2000,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """``statistic(y[idx], s[idx])`` over clustered stratified resamples, one array per returned key."""
    rows = [statistic(y[idx], s[idx]) for idx in cluster_bootstrap_indices(y, clusters, n_bootstrap, seed)]
    if not rows:
        return {}
    return {k: np.array([r[k] for r in rows], dtype=float) for k in rows[0]}


def percentile_intervals(replicates: dict[str, np.ndarray], ci: float = 0.95) -> dict[str, Interval]:
    """Percentile interval of each replicate array, ignoring NaN replicates (all NaN gives NaN)."""
    if not 0.0 < ci < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {ci}")
    q = [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)]
    out: dict[str, Interval] = {}
    for name, values in replicates.items():
        finite = values[~np.isnan(values)]
        out[name] = (
            (float(np.percentile(finite, q[0])), float(np.percentile(finite, q[1])))
            if finite.size
            else _NAN_INTERVAL
        )
    return out


def bootstrap_metric_intervals(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    clusters: np.ndarray | None = None,
    n_bootstrap: int = 2000,
    ci: float = 0.95,
    seed: int = 0,
    probabilities: bool = True,
) -> tuple[dict[str, Interval], dict[str, float]]:
    """Percentile intervals of every :func:`~medlora.evaluate.metrics.binary_metrics` value at the
    frozen ``threshold``, plus each metric's fraction of replicates where it was undefined (NaN).

    ``n_bootstrap == 0`` gives NaN intervals (and a logged warning) rather than no keys, so the set of
    reported names does not depend on the setting.
    """
    y, s = check_binary(y_true, scores)
    if n_bootstrap <= 0:
        logger.warning("bootstrap disabled (n_bootstrap=0): intervals are NaN")
        names = _binary_metrics_unchecked(y, s, float(threshold), probabilities, "nan")
        return dict.fromkeys(names, _NAN_INTERVAL), dict.fromkeys(names, 1.0)
    reps = metric_replicates(y, s, float(threshold), clusters, n_bootstrap, seed, probabilities)
    return percentile_intervals(reps, ci), {k: float(np.isnan(v).mean()) for k, v in reps.items()}


def metric_replicates(y: np.ndarray, s: np.ndarray, threshold: float, clusters: np.ndarray | None = None,
                      n_bootstrap: int = 2000, seed: int = 0, probabilities: bool = True,
                      chunk: int | None = None) -> dict[str, np.ndarray]:
    """Every binary metric over the same clustered stratified resamples as :func:`bootstrap_replicates`
    with ``binary_metrics``, computed ``chunk`` resamples at a time as sample counts
    (:func:`~medlora.evaluate.metrics.weighted_binary_metrics`) instead of one call per resample.
    The default chunk keeps each ``(chunk, n)`` matrix near 32 MB."""
    chunk = chunk or max(8, min(256, 4_000_000 // max(y.size, 1)))
    parts: list[dict[str, np.ndarray]] = []
    block: list[np.ndarray] = []
    for idx in cluster_bootstrap_indices(y, clusters, n_bootstrap, seed):
        block.append(np.bincount(idx, minlength=y.size))
        if len(block) == chunk:
            parts.append(weighted_binary_metrics(y, s, np.stack(block, axis=1).T, threshold, probabilities))
            block = []
    if block:
        parts.append(weighted_binary_metrics(y, s, np.stack(block, axis=1).T, threshold, probabilities))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def roc_step(y: np.ndarray, s: np.ndarray, fpr_grid: np.ndarray) -> np.ndarray:
    """Empirical ROC as a step function: the best sensitivity with false-positive rate ``<= x``."""
    fps, tps, _ = binary_curve(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return tpr[np.searchsorted(fpr, fpr_grid, side="right") - 1]


def bootstrap_roc_band(
    y_true: np.ndarray,
    scores: np.ndarray,
    clusters: np.ndarray | None = None,
    n_bootstrap: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    n_grid: int = 101,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise percentile band of sensitivity over a false-positive-rate grid (vertical averaging).

    Returns ``(fpr_grid, tpr_low, tpr_high)``; the band is pointwise, not simultaneous.
    """
    y, s = check_binary(y_true, scores)
    require_both_classes(y, "ROC band")
    grid = np.linspace(0.0, 1.0, n_grid)
    curves = np.array(
        [roc_step(y[i], s[i], grid) for i in cluster_bootstrap_indices(y, clusters, n_bootstrap, seed)]
    )
    if not curves.size:
        return grid, np.full(n_grid, np.nan), np.full(n_grid, np.nan)
    low, high = np.percentile(curves, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)], axis=0)
    return grid, low, high
