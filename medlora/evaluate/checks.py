"""The one input check of every binary metric: 0/1 labels, finite scores of the same length.

:mod:`.metrics`, :mod:`.calibration`, :mod:`.intervals`, :mod:`.delong` and :mod:`.operating_point`
all validate their inputs here, so a bad input reads the same whichever function it reached first.
"""

from __future__ import annotations

import numpy as np

from medlora.errors import MetricUndefinedError


def check_binary(
    y_true: np.ndarray, scores: np.ndarray, what: str = "scores", probabilities: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(y, s)`` as 1-D int64/float64 arrays; labels must be 0/1 and scores finite.

    With ``probabilities`` the scores must also lie in ``[0, 1]`` (Brier score, ECE, reliability).
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and {what} differ in length: {y.size} vs {s.size}")
    if y.size == 0:
        raise MetricUndefinedError(f"no samples: metrics of {what} are undefined on an empty set")
    if not np.isin(y, (0, 1)).all():
        raise ValueError(
            f"labels must be 0 (normal) / 1 (abnormal), got values {np.unique(y)[:10].tolist()}"
        )
    if not np.isfinite(s).all():
        raise MetricUndefinedError(f"{what} contain {int((~np.isfinite(s)).sum())} non-finite values (NaN or inf)")
    if probabilities and (s.min() < 0 or s.max() > 1):
        raise MetricUndefinedError(
            "calibration needs probabilities in [0, 1]; got values outside it "
            "(pass probabilities=False for unbounded scores such as anomaly distances)"
        )
    return y.astype(np.int64), s


def require_both_classes(y: np.ndarray, metric: str) -> None:
    """Raise :class:`MetricUndefinedError` naming ``metric`` unless both classes are present."""
    n_pos = int(y.sum())
    if n_pos == 0 or n_pos == y.size:
        only = "positive (1)" if n_pos else "negative (0)"
        raise MetricUndefinedError(
            f"{metric} is undefined: all {y.size} labels are {only}; it needs both classes"
        )
