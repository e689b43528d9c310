"""Recalibration of study scores: temperature or Platt scaling, fitted on validation studies only.

A network's softmax output ranks studies but is rarely a probability one can read at face value
(ECE 0.4 is common after few-shot training). Both methods map a score ``p`` through its logit
``z = log(p / (1 - p))``:

* ``temperature`` (Guo et al., 2017): ``sigmoid(z / T)``, one parameter;
* ``platt`` (Platt, 1999): ``sigmoid(a * z + b)``, slope and intercept.

Each is fitted by minimising the log-loss of the validation studies' labels (scipy's optimisers),
then frozen and applied to the test studies, whose labels it never sees. Both maps are strictly
increasing (``T > 0``, ``a > 0`` is enforced), so AUROC and the ranking are unchanged; the operating
point is chosen on the calibrated validation scores, so calls are the same as on raw scores. The
fitted map travels in ``medlora.json`` (:meth:`Calibrator.to_dict`) so ``predict`` and the pyfunc
model apply it too. One-class distances are not probabilities and are never calibrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MetricUndefinedError
from .calibration import brier_score, expected_calibration_error

METHODS = ("none", "temperature", "platt")
_EPS = 1e-6  # scores are clipped to [eps, 1 - eps] before the logit


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free logistic


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of 0/1 labels ``y`` under probabilities ``p`` (clipped)."""
    p = np.clip(np.asarray(p, dtype=float), _EPS, 1.0 - _EPS)
    y = np.asarray(y, dtype=float)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log1p(-p)))


@dataclass(frozen=True)
class Calibrator:
    """A frozen score map ``sigmoid(slope * logit(p) + intercept)``; ``method='none'`` is the identity."""

    method: str = "none"
    slope: float = 1.0
    intercept: float = 0.0

    @property
    def calibrated(self) -> bool:
        return self.method != "none"

    def apply(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=float)
        return s.copy() if not self.calibrated else _sigmoid(self.slope * _logit(s) + self.intercept)

    def to_dict(self) -> dict[str, Any]:
        """What ``medlora.json`` stores under ``calibration``."""
        out: dict[str, Any] = {"method": self.method}
        if self.calibrated:
            out.update(slope=self.slope, intercept=self.intercept, fitted_on="validation studies",
                       formula="sigmoid(slope * logit(score) + intercept)")
            if self.method == "temperature":
                out["temperature"] = 1.0 / self.slope
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> Calibrator:
        """The calibrator a ``medlora.json`` describes (identity when it has none: older bundles)."""
        if not d or d.get("method", "none") == "none":
            return cls()
        return cls(str(d["method"]), float(d["slope"]), float(d["intercept"]))


def fit_calibrator(method: str, y_val: np.ndarray, s_val: np.ndarray) -> Calibrator:
    """Fit ``method`` (``none``, ``temperature``, ``platt``) to validation labels and scores."""
    from scipy.optimize import minimize, minimize_scalar

    if method not in METHODS:
        raise ValueError(f"calibration method {method!r}; allowed: {', '.join(METHODS)}")
    if method == "none":
        return Calibrator()
    y = np.asarray(y_val, dtype=float).ravel()
    if y.size == 0 or y.min() == y.max():
        raise MetricUndefinedError(f"{method} scaling needs both classes among the validation studies "
                                   f"(got {int(y.sum())} abnormal of {y.size})")
    z = _logit(s_val).ravel()

    def nll(slope: float, intercept: float) -> float:
        return log_loss(y, _sigmoid(slope * z + intercept))

    if method == "temperature":  # optimise log T so that T stays positive
        res = minimize_scalar(lambda log_t: nll(float(np.exp(-log_t)), 0.0), bounds=(-5.0, 5.0), method="bounded")
        return Calibrator("temperature", float(np.exp(-res.x)), 0.0)
    res = minimize(lambda v: nll(float(np.exp(v[0])), float(v[1])), x0=np.zeros(2), method="L-BFGS-B",
                   bounds=[(-7.0, 7.0), (-50.0, 50.0)])  # slope = exp(v0) > 0 keeps the ranking
    return Calibrator("platt", float(np.exp(res.x[0])), float(res.x[1]))


def calibration_summary(cal: Calibrator, y_val: np.ndarray, s_val: np.ndarray, y_test: np.ndarray,
                        s_test: np.ndarray) -> dict[str, Any]:
    """Validation log-loss and test Brier/ECE before and after ``cal`` (what the report shows)."""
    after_val, after_test = cal.apply(s_val), cal.apply(s_test)
    return {**cal.to_dict(),
            "val_log_loss_before": log_loss(y_val, s_val), "val_log_loss_after": log_loss(y_val, after_val),
            "test_brier_before": brier_score(y_test, s_test), "test_brier_after": brier_score(y_test, after_test),
            "test_ece_before": expected_calibration_error(y_test, s_test),
            "test_ece_after": expected_calibration_error(y_test, after_test)}
