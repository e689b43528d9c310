"""DeLong variance against independent references, clustered variance, paired test and coverage."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medlora.errors import MetricUndefinedError
from medlora.evaluate.delong import delong_auc, delong_test

# Hanley & McNeil (1982), Radiology 143:29, Table 1: five-point ratings of 109 CT images.
HM_NEG = np.repeat([1, 2, 3, 4, 5], [33, 6, 6, 11, 2])
HM_POS = np.repeat([1, 2, 3, 4, 5], [3, 2, 2, 11, 33])
HM_Y = np.r_[np.zeros(58, int), np.ones(51, int)]
HM_S = np.r_[HM_NEG, HM_POS].astype(float)


def _pairwise_components(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components from the full O(m n) kernel, without ranks."""
    x, z = s[y == 1][:, None], s[y == 0][None, :]
    psi = (x > z) + 0.5 * (x == z)
    return psi.mean(axis=1), psi.mean(axis=0)


def _reference_variance(y: np.ndarray, s: np.ndarray) -> float:
    v10, v01 = _pairwise_components(y, s)
    return v10.var(ddof=1) / v10.size + v01.var(ddof=1) / v01.size


def _reference_clustered_variance(y: np.ndarray, s: np.ndarray, clusters: np.ndarray) -> float:
    """Obuchowski (1997) written out cluster by cluster from the pairwise kernel."""
    x, z = s[y == 1], s[y == 0]
    big_m, big_n, auc = x.size, z.size, roc_auc_score(y, s)
    rows = []
    for c in np.unique(clusters):
        xc, zc = s[(clusters == c) & (y == 1)], s[(clusters == c) & (y == 0)]
        v10 = sum(np.sum((xi > z) + 0.5 * (xi == z)) for xi in xc) / big_n
        v01 = sum(np.sum((x > zj) + 0.5 * (x == zj)) for zj in zc) / big_m
        rows.append((xc.size, zc.size, v10, v01))
    m_i, n_i, v10, v01 = (np.array(col, dtype=float) for col in zip(*rows, strict=True))
    i10, i01, i = (m_i > 0).sum(), (n_i > 0).sum(), len(rows)
    s10 = i10 / ((i10 - 1) * big_m) * np.sum((v10 - m_i * auc) ** 2)
    s01 = i01 / ((i01 - 1) * big_n) * np.sum((v01 - n_i * auc) ** 2)
    s11 = i / (i - 1) * np.sum((v10 - m_i * auc) * (v01 - n_i * auc))
    return s10 / big_m + s01 / big_n + 2 * s11 / (big_m * big_n)


def test_hanley_mcneil_example() -> None:
    res = delong_auc(HM_Y, HM_S)
    assert res.auc == pytest.approx(0.8932, abs=1e-4)  # the published area
    assert res.variance == pytest.approx(_reference_variance(HM_Y, HM_S), rel=1e-12)
    assert res.se == pytest.approx(0.032, abs=0.002)  # Hanley-McNeil's approximate SE of the same data


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_variance_matches_pairwise_reference_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 150)
    s = np.round(rng.normal(size=150) + y, 1)  # many ties
    assert delong_auc(y, s).variance == pytest.approx(_reference_variance(y, s), rel=1e-10)


def test_clustered_variance_matches_written_out_formula() -> None:
    rng = np.random.default_rng(5)
    clusters = rng.integers(0, 40, 160)
    y = rng.integers(0, 2, 160)
    s = rng.normal(size=160) + y + 0.5 * rng.normal(size=40)[clusters]
    got = delong_auc(y, s, clusters=clusters)
    assert got.n_clusters == 40
    assert got.variance == pytest.approx(_reference_clustered_variance(y, s, clusters), rel=1e-10)


def test_singleton_clusters_equal_plain_delong_and_duplicates_do_not_shrink_variance() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 80)
    s = rng.normal(size=80) + y
    plain = delong_auc(y, s).variance
    assert delong_auc(y, s, clusters=np.arange(80)).variance == pytest.approx(plain, rel=1e-12)
    y5, s5, c5 = np.repeat(y, 5), np.repeat(s, 5), np.repeat(np.arange(80), 5)
    assert delong_auc(y5, s5, clusters=c5).variance == pytest.approx(plain, rel=1e-10)
    assert delong_auc(y5, s5).variance < plain / 3  # ignoring clusters would be overconfident


def test_perfect_separation_has_degenerate_interval() -> None:
    res = delong_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert (res.auc, res.variance, res.ci_low, res.ci_high) == (1.0, 0.0, 1.0, 1.0)


def test_paired_test_matches_reference_covariance() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 200)
    s1 = rng.normal(size=200) + 1.2 * y
    s2 = s1 + rng.normal(size=200) - 0.6 * y
    got = delong_test(y, s1, s2)
    a10, a01 = _pairwise_components(y, s1)
    b10, b01 = _pairwise_components(y, s2)
    var = np.var(a10 - b10, ddof=1) / a10.size + np.var(a01 - b01, ddof=1) / a01.size
    diff = roc_auc_score(y, s1) - roc_auc_score(y, s2)
    assert got["diff"] == pytest.approx(diff) and got["se_diff"] == pytest.approx(np.sqrt(var))
    assert got["p"] == pytest.approx(2 * norm.sf(abs(diff) / np.sqrt(var)))
    assert got["p"] < 0.01


def test_paired_test_of_monotone_transform_is_null() -> None:
    y, s = HM_Y, HM_S + np.linspace(0, 0.01, HM_S.size)
    got = delong_test(y, s, np.log(s))
    assert (got["diff"], got["z"], got["p"]) == (0.0, 0.0, 1.0)


def test_paired_test_rejects_at_nominal_rate_under_null() -> None:
    rng = np.random.default_rng(8)
    reject = 0
    for _ in range(300):
        y = np.r_[np.zeros(60, int), np.ones(60, int)]
        common = rng.normal(size=120) + y
        reject += delong_test(y, common + rng.normal(size=120), common + rng.normal(size=120))["p"] < 0.05
    assert 0.025 <= reject / 300 <= 0.08


def test_delong_coverage_binormal() -> None:
    """Binormal scores with separation d have true AUROC Phi(d / sqrt 2); 95% intervals cover it ~95%."""
    rng = np.random.default_rng(9)
    d, m, reps = 1.0, 150, 600  # the plain interval under-covers slightly below ~100 per class
    truth = norm.cdf(d / np.sqrt(2))
    y = np.r_[np.zeros(m, int), np.ones(m, int)]
    covered = {"logit": 0, "plain": 0}
    for _ in range(reps):
        s = np.r_[rng.normal(size=m), rng.normal(d, 1.0, size=m)]
        for method in covered:
            res = delong_auc(y, s, method=method)
            covered[method] += res.ci_low <= truth <= res.ci_high
    for method, hits in covered.items():
        assert 0.93 <= hits / reps <= 0.97, method


def test_errors_are_clear() -> None:
    with pytest.raises(MetricUndefinedError, match="DeLong.*undefined"):
        delong_auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="allowed: logit, plain"):
        delong_auc(HM_Y, HM_S, method="wald")  # type: ignore[arg-type]
