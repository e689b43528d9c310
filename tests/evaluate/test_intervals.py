"""Wilson intervals, patient-clustered stratified bootstrap, percentile intervals and coverage."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, norm

from medlora.evaluate.intervals import (
    bootstrap_metric_intervals,
    bootstrap_replicates,
    bootstrap_roc_band,
    cluster_bootstrap_indices,
    percentile_intervals,
    roc_step,
    wilson_interval,
)
from medlora.evaluate.metrics import auroc, metric_names


def test_wilson_known_value() -> None:
    low, high = wilson_interval(8, 10, 0.95)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)


@pytest.mark.parametrize(("k", "n", "ci"), [(0, 10, 0.95), (10, 10, 0.95), (3, 7, 0.9), (57, 120, 0.99)])
def test_wilson_matches_scipy(k: int, n: int, ci: float) -> None:
    ref = binomtest(k, n).proportion_ci(confidence_level=ci, method="wilson")
    assert wilson_interval(k, n, ci) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_wilson_empty_is_nan() -> None:
    assert all(math.isnan(v) for v in wilson_interval(0, 0))


def _clustered(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(30), rng.integers(1, 5, 30))
    per_cluster = (rng.random(30) < 0.4).astype(int)
    per_cluster[:2] = [0, 1]  # both classes present
    y = per_cluster[clusters]
    return y, rng.normal(size=y.size) + y, clusters


def test_resamples_hold_whole_clusters_and_keep_strata() -> None:
    y, _, clusters = _clustered()
    sizes = np.bincount(clusters)
    positive_clusters = np.unique(clusters[y == 1]).size
    for idx in cluster_bootstrap_indices(y, clusters, n_bootstrap=50, seed=1):
        drawn = np.bincount(clusters[idx], minlength=sizes.size)
        assert np.all(drawn % sizes == 0)  # every drawn cluster comes with all of its samples
        assert (drawn // sizes)[np.unique(clusters[y == 1])].sum() == positive_clusters


def test_bootstrap_is_seeded() -> None:
    y, _, clusters = _clustered()
    first = [i.tolist() for i in cluster_bootstrap_indices(y, clusters, 5, seed=3)]
    assert first == [i.tolist() for i in cluster_bootstrap_indices(y, clusters, 5, seed=3)]
    assert first != [i.tolist() for i in cluster_bootstrap_indices(y, clusters, 5, seed=4)]


def test_clustered_interval_is_wider_when_clusters_duplicate_samples() -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 120)
    s = rng.normal(size=120) + y
    y5, s5, c5 = np.repeat(y, 5), np.repeat(s, 5), np.repeat(np.arange(120), 5)
    kw = {"threshold": 0.5, "n_bootstrap": 300, "seed": 0, "probabilities": False}
    base = bootstrap_metric_intervals(y, s, **kw)[0]["auroc"]
    clustered = bootstrap_metric_intervals(y5, s5, clusters=c5, **kw)[0]["auroc"]
    naive = bootstrap_metric_intervals(y5, s5, **kw)[0]["auroc"]

    def width(ci: tuple[float, float]) -> float:
        return ci[1] - ci[0]

    assert width(clustered) == pytest.approx(width(base), rel=0.25)  # duplicates add no information
    assert width(naive) < 0.65 * width(clustered)  # resampling images is overconfident (~1/sqrt 5)


def test_metric_intervals_cover_every_metric_and_contain_estimates() -> None:
    y, s, clusters = _clustered(1)
    p = 1 / (1 + np.exp(-s))
    intervals, nan_fraction = bootstrap_metric_intervals(y, p, 0.5, clusters, n_bootstrap=200, seed=0)
    assert tuple(intervals) == metric_names(True) and set(nan_fraction) == set(intervals)
    low, high = intervals["auroc"]
    assert low <= auroc(y, p) <= high


def test_zero_bootstrap_gives_nan_intervals() -> None:
    y, s, _ = _clustered()
    intervals, _ = bootstrap_metric_intervals(y, s, 0.0, n_bootstrap=0, probabilities=False)
    assert set(intervals) == set(metric_names(False))
    assert all(math.isnan(v) for ci in intervals.values() for v in ci)


def test_percentile_intervals_skip_nan_replicates() -> None:
    reps = {"ppv": np.r_[np.nan, np.linspace(0, 1, 101)], "none": np.full(3, np.nan)}
    got = percentile_intervals(reps, ci=0.9)
    assert got["ppv"] == pytest.approx((0.05, 0.95))
    assert all(math.isnan(v) for v in got["none"])


def test_roc_band_brackets_the_curve() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    s = rng.normal(size=300) + y
    grid, low, high = bootstrap_roc_band(y, s, n_bootstrap=100, seed=0)
    curve = roc_step(y, s, grid)
    assert np.all(low <= high) and np.mean((low <= curve) & (curve <= high)) > 0.95


@pytest.mark.slow
def test_bootstrap_auroc_coverage_binormal() -> None:
    """Percentile bootstrap intervals of AUROC cover Phi(d / sqrt 2) in ~95% of repetitions."""
    rng = np.random.default_rng(11)
    d, m, reps, n_boot = 1.0, 150, 200, 200
    truth = norm.cdf(d / np.sqrt(2))
    y = np.r_[np.zeros(m, int), np.ones(m, int)]
    hits = 0
    for rep in range(reps):
        s = np.r_[rng.normal(size=m), rng.normal(d, 1.0, size=m)]
        replicates = bootstrap_replicates(
            y, s, lambda yb, sb: {"auroc": auroc(yb, sb)}, n_bootstrap=n_boot, seed=rep
        )
        low, high = percentile_intervals(replicates)["auroc"]
        hits += low <= truth <= high
    assert 0.93 <= hits / reps <= 0.97


@pytest.mark.parametrize("probabilities", [True, False])
@pytest.mark.parametrize("threshold", [0.5, 2.0, -1.0])  # ordinary, nothing predicted positive, everything positive
def test_vectorised_replicates_equal_one_call_per_resample(probabilities, threshold):
    """The bootstrap's vectorised metrics are exactly ``binary_metrics`` on each resample's indices,
    with tied scores, patient clusters and undefined (NaN) values included."""
    from medlora.evaluate.intervals import metric_replicates
    from medlora.evaluate.metrics import _binary_metrics_unchecked

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 57)
    s = np.round(rng.random(57), 1)  # many ties
    clusters = rng.integers(0, 19, 57)
    slow = bootstrap_replicates(
        y, s, lambda yb, sb: _binary_metrics_unchecked(yb, sb, threshold, probabilities, "nan"), clusters, 150, 3
    )
    fast = metric_replicates(y, s, threshold, clusters, 150, 3, probabilities, chunk=64)  # several chunks
    assert sorted(fast) == sorted(slow)
    for name in slow:
        np.testing.assert_allclose(fast[name], slow[name], rtol=0, atol=1e-12, equal_nan=True, err_msg=name)


def test_vectorised_ranking_metrics_are_nan_for_single_class_resamples():
    from medlora.evaluate.metrics import weighted_binary_metrics

    y, s = np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8])
    w = np.array([[1, 1, 1, 1], [2, 2, 0, 0]])  # the second draws negatives only
    out = weighted_binary_metrics(y, s, w, 0.5)
    assert out["auroc"][0] == 0.75 and np.isnan(out["auroc"][1]) and np.isnan(out["sensitivity"][1])
    assert out["specificity"][1] == 1.0 and out["tn"][1] == 4
