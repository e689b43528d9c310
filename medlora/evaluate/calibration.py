"""Calibration of predicted probabilities: Brier score, expected calibration error, reliability data.

These assume the scores are probabilities of the positive (abnormal) class in ``[0, 1]``. Binning is
equal-width with ``n_bins`` bins over ``[0, 1]`` (edges ``np.linspace(0, 1, n_bins + 1)``); bin ``b``
holds ``edges[b] < p <= edges[b+1]`` and the first bin also holds ``p == 0``. This is the binning of
scikit-learn's ``calibration_curve(strategy="uniform")``, so reliability points match it bin for bin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .checks import check_binary

logger = logging.getLogger(__name__)

DEFAULT_BINS = 10


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], p, side="left")


def weighted_brier(y: np.ndarray, p: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Brier score of each row of ``weights`` (``(B, n)`` draw counts of checked ``y``/``p``)."""
    return (weights @ (p - y) ** 2) / weights.sum(axis=1)


def weighted_ece(y: np.ndarray, p: np.ndarray, weights: np.ndarray, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """ECE of each row of ``weights``: ``sum_b |sum_{i in b} w_i (y_i - p_i)| / sum_i w_i``."""
    onehot = np.eye(n_bins)[_bin_index(p, n_bins)]  # (n, bins)
    return np.abs(weights @ (onehot * (y - p)[:, None])).sum(axis=1) / weights.sum(axis=1)


def brier_score(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared difference between probability and outcome (lower is better; 0.25 = coin flip)."""
    y, p = check_binary(y_true, prob, what="probabilities", probabilities=True)
    return float(weighted_brier(y, p, np.ones((1, y.size)))[0])


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE: ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|`` over equal-width bins.

    Empty bins contribute nothing. ECE depends on the binning, so the number of bins is reported
    alongside it in the report's JSON.
    """
    y, p = check_binary(y_true, prob, what="probabilities", probabilities=True)
    return float(weighted_ece(y, p, np.ones((1, y.size)), n_bins)[0])


@dataclass(frozen=True)
class ReliabilityData:
    """Points of a reliability diagram; arrays cover the non-empty bins only.

    ``mean_predicted`` is the mean probability in a bin, ``fraction_positive`` the observed rate of
    the positive class there, ``count`` how many samples fell into it and ``bin_low``/``bin_high``
    its edges.
    """

    mean_predicted: np.ndarray
    fraction_positive: np.ndarray
    count: np.ndarray
    bin_low: np.ndarray
    bin_high: np.ndarray
    n_bins: int


def reliability_diagram(y_true: np.ndarray, prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> ReliabilityData:
    """Per-bin mean probability and observed positive rate (what a reliability diagram plots)."""
    y, p = check_binary(y_true, prob, what="probabilities", probabilities=True)
    idx = _bin_index(p, n_bins)
    count = np.bincount(idx, minlength=n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    keep = count > 0
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return ReliabilityData(
        mean_predicted=sum_p[keep] / count[keep],
        fraction_positive=sum_y[keep] / count[keep],
        count=count[keep],
        bin_low=edges[:-1][keep],
        bin_high=edges[1:][keep],
        n_bins=n_bins,
    )


def _logit(p: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    p = np.clip(p, eps, 1.0 - eps)
    return np.log(p / (1.0 - p))


@dataclass(frozen=True)
class CalibrationFit:
    """Logistic recalibration of probabilities on new data (Van Calster et al. 2019, "Calibration: the
    Achilles heel of predictive analytics", BMC Medicine 17:230).

    ``intercept`` is calibration-in-the-large: ``a`` in ``logit P(y) = a + logit(p)`` (0 when the
    average risk is right; negative when the model over-predicts). ``slope`` is ``b`` in
    ``logit P(y) = a' + b logit(p)`` (1 when the spread is right; below 1 when predictions are too
    extreme, the usual finding at an external site).
    """

    intercept: float
    slope: float
    n: int


def _newton_logistic(x: np.ndarray, y: np.ndarray, offset: np.ndarray, steps: int = 50) -> np.ndarray:
    """Maximum-likelihood coefficients of ``logit P(y) = offset + x @ beta`` (Newton-Raphson, tiny ridge)."""
    beta = np.zeros(x.shape[1])
    for _ in range(steps):
        eta = offset + x @ beta
        mu = 1.0 / (1.0 + np.exp(-np.clip(eta, -40.0, 40.0)))
        w = np.maximum(mu * (1.0 - mu), 1e-12)
        grad = x.T @ (y - mu)
        hess = (x * w[:, None]).T @ x + 1e-9 * np.eye(x.shape[1])
        delta = np.linalg.solve(hess, grad)
        beta = beta + delta
        if np.max(np.abs(delta)) < 1e-10:
            break
    return beta


def calibration_intercept_slope(y_true: np.ndarray, prob: np.ndarray) -> CalibrationFit:
    """Calibration intercept (in the large) and slope of probabilities ``prob`` against outcomes ``y_true``.

    NaN for both when only one class is present (neither is defined then).
    """
    y, p = check_binary(y_true, prob)
    if y.min() == y.max():
        logger.warning("calibration intercept/slope need both classes: NaN")
        return CalibrationFit(float("nan"), float("nan"), int(y.size))
    z = _logit(p.astype(np.float64))
    y = y.astype(np.float64)
    (intercept,) = _newton_logistic(np.ones((y.size, 1)), y, z)
    _, slope = _newton_logistic(np.column_stack([np.ones(y.size), z]), y, np.zeros(y.size))
    return CalibrationFit(float(intercept), float(slope), int(y.size))
