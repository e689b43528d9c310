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

from medlora.errors import MedloraError

logger = logging.getLogger(__name__)

DEFAULT_BINS = 10


def _check_probabilities(y_true: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(y, p)`` as 1-D int/float arrays after checking labels are 0/1 and p lies in [0, 1]."""
    y = np.asarray(y_true).ravel()
    p = np.asarray(prob, dtype=float).ravel()
    if y.shape != p.shape:
        raise MedloraError(f"labels and probabilities differ in length: {y.size} vs {p.size}")
    if y.size and not np.isin(y, (0, 1)).all():
        raise MedloraError(f"labels must be 0/1, got values {np.unique(y)[:10].tolist()}")
    if not np.isfinite(p).all() or (p.size and (p.min() < 0 or p.max() > 1)):
        raise MedloraError(
            "calibration needs probabilities in [0, 1]; got values outside it "
            "(pass probabilities=False for unbounded scores such as anomaly distances)"
        )
    return y.astype(np.int64), p


def _bin_index(p: np.ndarray, n_bins: int) -> np.ndarray:
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges[1:-1], p, side="left")


def brier_score(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared difference between probability and outcome (lower is better; 0.25 = coin flip)."""
    y, p = _check_probabilities(y_true, prob)
    return float(np.mean((p - y) ** 2)) if y.size else float("nan")


def expected_calibration_error(y_true: np.ndarray, prob: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """ECE: ``sum_b (n_b / n) * |mean(y in b) - mean(p in b)|`` over equal-width bins.

    Empty bins contribute nothing. ECE depends on the binning, so the number of bins is reported
    alongside it in the report's JSON.
    """
    y, p = _check_probabilities(y_true, prob)
    if not y.size:
        return float("nan")
    return _ece_unchecked(y, p, n_bins)


def _ece_unchecked(y: np.ndarray, p: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    idx = _bin_index(p, n_bins)
    sum_y = np.bincount(idx, weights=y, minlength=n_bins)
    sum_p = np.bincount(idx, weights=p, minlength=n_bins)
    return float(np.abs(sum_y - sum_p).sum() / y.size)


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
    y, p = _check_probabilities(y_true, prob)
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
