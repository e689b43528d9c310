"""DeLong variance, confidence interval and paired test for AUROC.

Structural components come from midranks in O(n log n) (Sun & Xu 2014, "Fast implementation of
DeLong's algorithm for comparing the areas under correlated receiver operating characteristic
curves", IEEE Signal Processing Letters 21:1389). For a positive ``i`` the component ``V10_i`` is the
fraction of negatives it outscores (ties count one half); for a negative ``j``, ``V01_j`` is the
fraction of positives that outscore it. The AUROC is the mean of either.

With ``clusters`` (e.g. several images per patient) the components are summed per cluster and the
variance is Obuchowski's (1997, Biometrics 53:567) clustered estimator::

    var = S10 / M + S01 / N + 2 S11 / (M N)

where ``S10 = I10 / ((I10 - 1) M) sum_i (V10_i - m_i A)^2`` over clusters holding positives, ``S01``
likewise for negatives, and ``S11 = I / (I - 1) sum_i (V10_i - m_i A)(V01_i - n_i A)``. With one
sample per cluster this is exactly DeLong's variance (the default when ``clusters`` is None).

Confidence intervals (``method``):

``logit`` (default)
    Wald interval on ``logit(AUROC)`` with the delta-method standard error ``se / (A (1 - A))``,
    mapped back. It stays inside (0, 1) and covers better than the plain interval when the AUROC is
    high, as it often is in medical imaging.
``plain``
    ``A ± z se`` clipped to [0, 1] (pROC's ``ci.auc(method = "delong")``).

An AUROC of exactly 0 or 1 has zero DeLong variance; its interval is the point itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.stats import norm, rankdata

from .checks import check_binary, require_both_classes

logger = logging.getLogger(__name__)

CI_METHODS = ("logit", "plain")


@dataclass(frozen=True)
class DelongResult:
    """AUROC with its DeLong variance and a ``ci`` interval built by ``method``."""

    auc: float
    variance: float
    se: float
    ci_low: float
    ci_high: float
    ci: float
    method: str
    n_clusters: int


def structural_components(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(auc, v10, v01)`` for ``K`` score rows (shape ``(K, n)``): aucs ``(K,)``, v10 ``(K, m)``, v01 ``(K, n)``.

    ``v10`` covers the positives and ``v01`` the negatives, both in their order in ``y``.
    """
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    m, n = pos.shape[1], neg.shape[1]
    tx = rankdata(pos, axis=1)
    ty = rankdata(neg, axis=1)
    tz = rankdata(np.concatenate([pos, neg], axis=1), axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return v10.mean(axis=1), v10, v01


def delong_covariance(
    y: np.ndarray, scores: np.ndarray, clusters: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(aucs, covariance, n_clusters)`` of ``K`` correlated AUROCs; ``scores`` has shape ``(K, n)``.

    Covariance entries are NaN when fewer than two clusters hold positives or negatives.
    """
    aucs, v10, v01 = structural_components(y, scores)
    ids = np.arange(y.size) if clusters is None else np.asarray(clusters).ravel()
    if ids.size != y.size:
        raise ValueError(f"clusters and labels differ in length: {ids.size} vs {y.size}")
    _, inv = np.unique(ids, return_inverse=True)
    n_clusters = int(inv.max()) + 1
    pos, neg = y == 1, y == 0
    m_i = np.bincount(inv[pos], minlength=n_clusters).astype(float)
    n_i = np.bincount(inv[neg], minlength=n_clusters).astype(float)
    d10 = np.stack([np.bincount(inv[pos], weights=row, minlength=n_clusters) for row in v10]) - np.outer(
        aucs, m_i
    )
    d01 = np.stack([np.bincount(inv[neg], weights=row, minlength=n_clusters) for row in v01]) - np.outer(
        aucs, n_i
    )
    big_m, big_n = m_i.sum(), n_i.sum()
    i10, i01 = int((m_i > 0).sum()), int((n_i > 0).sum())
    if i10 < 2 or i01 < 2:
        logger.warning("DeLong variance needs >= 2 clusters with each class (got %d / %d): NaN", i10, i01)
        return aucs, np.full((len(aucs), len(aucs)), np.nan), n_clusters
    s10 = i10 / ((i10 - 1) * big_m) * (d10 @ d10.T)
    s01 = i01 / ((i01 - 1) * big_n) * (d01 @ d01.T)
    s11 = n_clusters / (n_clusters - 1) * (d10 @ d01.T)
    cov = s10 / big_m + s01 / big_n + (s11 + s11.T) / (big_m * big_n)
    return aucs, cov, n_clusters


def _interval(auc: float, se: float, ci: float, method: str) -> tuple[float, float]:
    z = float(norm.ppf(0.5 + ci / 2.0))
    if not np.isfinite(se):
        return float("nan"), float("nan")
    if method == "plain":
        return max(0.0, auc - z * se), min(1.0, auc + z * se)
    if auc <= 0.0 or auc >= 1.0:
        return auc, auc
    centre, half = np.log(auc / (1.0 - auc)), z * se / (auc * (1.0 - auc))
    return float(1.0 / (1.0 + np.exp(-(centre - half)))), float(1.0 / (1.0 + np.exp(-(centre + half))))


def delong_auc(
    y_true: np.ndarray,
    scores: np.ndarray,
    ci: float = 0.95,
    method: Literal["logit", "plain"] = "logit",
    clusters: np.ndarray | None = None,
) -> DelongResult:
    """AUROC, its DeLong (or clustered, see module docstring) variance and a confidence interval."""
    if method not in CI_METHODS:
        raise ValueError(
            f"DeLong interval method {method!r} is not known; allowed: {', '.join(CI_METHODS)}"
        )
    if not 0.0 < ci < 1.0:
        raise ValueError(f"confidence level must lie in (0, 1), got {ci}")
    y, s = check_binary(y_true, scores)
    require_both_classes(y, "AUROC (DeLong)")
    aucs, cov, n_clusters = delong_covariance(y, s[None, :], clusters)
    auc, var = float(aucs[0]), float(cov[0, 0])
    var = max(var, 0.0) if np.isfinite(var) else float("nan")  # clip round-off below zero
    se = float(np.sqrt(var))
    low, high = _interval(auc, se, ci, method)
    return DelongResult(auc, var, se, low, high, ci, method, n_clusters)


def delong_test(
    y_true: np.ndarray,
    scores_1: np.ndarray,
    scores_2: np.ndarray,
    clusters: np.ndarray | None = None,
    ci: float = 0.95,
) -> dict[str, float]:
    """DeLong's paired test of two models' AUROCs on the same cases (two-sided).

    Returns ``auc1``, ``auc2``, ``diff`` (= auc1 - auc2), ``se_diff``, ``diff_ci_low``/``diff_ci_high``
    (plain Wald interval of the difference), ``z`` and ``p``. If the difference has zero variance
    (e.g. one score is a monotone transform of the other) ``z`` is 0 and ``p`` is 1 when the AUROCs
    are equal, NaN otherwise.
    """
    y, s1 = check_binary(y_true, scores_1, what="scores_1")
    _, s2 = check_binary(y_true, scores_2, what="scores_2")
    require_both_classes(y, "AUROC (DeLong test)")
    aucs, cov, _ = delong_covariance(y, np.stack([s1, s2]), clusters)
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    if np.isfinite(var) and var > 1e-15:
        se = float(np.sqrt(var))
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    else:
        se = 0.0 if np.isfinite(var) else float("nan")
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 and np.isfinite(var) else (float("nan"), float("nan"))
    half = float(norm.ppf(0.5 + ci / 2.0)) * se
    return {
        "auc1": float(aucs[0]),
        "auc2": float(aucs[1]),
        "diff": diff,
        "se_diff": se,
        "diff_ci_low": diff - half,
        "diff_ci_high": diff + half,
        "z": float(z),
        "p": p,
    }


def delong_unpaired(
    y_1: np.ndarray,
    scores_1: np.ndarray,
    y_2: np.ndarray,
    scores_2: np.ndarray,
    clusters_1: np.ndarray | None = None,
    clusters_2: np.ndarray | None = None,
    ci: float = 0.95,
) -> dict[str, float]:
    """DeLong's test of two AUROCs measured on **independent** sets (e.g. an internal test set and an
    external site's studies): ``diff = auc1 - auc2`` with ``se = sqrt(var1 + var2)`` (no covariance:
    the sets share no case), a Wald interval of the difference, ``z`` and the two-sided ``p``."""
    r1 = delong_auc(y_1, scores_1, ci=ci, clusters=clusters_1)
    r2 = delong_auc(y_2, scores_2, ci=ci, clusters=clusters_2)
    diff = r1.auc - r2.auc
    se = float(np.sqrt(r1.variance + r2.variance))
    if np.isfinite(se) and se > 1e-15:
        z = diff / se
        p = float(2.0 * norm.sf(abs(z)))
    else:
        z, p = (0.0, 1.0) if abs(diff) < 1e-12 and np.isfinite(se) else (float("nan"), float("nan"))
    half = float(norm.ppf(0.5 + ci / 2.0)) * se
    return {"auc1": r1.auc, "auc2": r2.auc, "diff": diff, "se_diff": se,
            "diff_ci_low": diff - half, "diff_ci_high": diff + half, "z": float(z), "p": p}
