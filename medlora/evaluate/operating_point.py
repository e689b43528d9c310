"""Choose a decision threshold on validation data and freeze it for the test set.

The threshold is picked from the validation ROC curve only; test labels never influence it, so the
test metrics at that threshold are an honest estimate of deployed performance. The prediction rule
everywhere in medlora is: positive (abnormal) iff ``score >= threshold``.

A policy selects a point of the validation ROC curve, i.e. a validation score ``s_k`` at which the
curve steps. Every threshold in ``(s_{k+1}, s_k]`` (``s_{k+1}`` the next lower validation score) gives
exactly the same validation sensitivity and specificity; medlora freezes the **midpoint** of that
interval (as pROC does), not its edge: taking ``s_k`` itself would put the threshold on the lowest
positive validation score of a well-separated set, so that slightly lower-scored positives on new data
are missed. At the lowest validation score the threshold is that score. It is never ``±inf``.

Policies (the ``evaluate.operating_point`` config field):

``youden``
    Maximise Youden's J = sensitivity + specificity - 1; ties go to the highest threshold.
``sensitivity:T``
    The highest threshold whose validation sensitivity is ``>= T``, i.e. the best specificity
    subject to the sensitivity floor (a rule-out / screening setting).
``specificity:T``
    The lowest threshold whose validation specificity is ``>= T``, i.e. the best sensitivity
    subject to the specificity floor (a rule-in setting). If no real score value reaches ``T``
    (the top-scored validation case is negative), the highest threshold is used and a warning is
    logged; the returned ``val_specificity`` then shows the shortfall.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_curve

from medlora.errors import ConfigError

from .checks import check_binary, require_both_classes
from .metrics import _EPS

logger = logging.getLogger(__name__)

POLICIES = ("youden", "sensitivity:T", "specificity:T")


@dataclass(frozen=True)
class OperatingPoint:
    """A frozen decision threshold and the validation sensitivity/specificity it achieved."""

    policy: str
    threshold: float
    val_sensitivity: float
    val_specificity: float


def parse_policy(policy: str) -> tuple[str, float | None]:
    """Split ``"sensitivity:0.95"`` into ``("sensitivity", 0.95)``; ``"youden"`` gives ``("youden", None)``."""
    name, sep, value = policy.strip().partition(":")
    if name == "youden" and not sep:
        return name, None
    if name in ("sensitivity", "specificity") and sep:
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if 0.0 < target < 1.0:
            return name, target
    raise ConfigError(
        f"operating point policy {policy!r} is not valid; allowed: {', '.join(POLICIES)} with 0<T<1"
    )


def choose_operating_point(y_val: np.ndarray, s_val: np.ndarray, policy: str = "youden") -> OperatingPoint:
    """Pick the threshold on validation labels/scores according to ``policy`` (see module docstring)."""
    name, target = parse_policy(policy)
    y, s = check_binary(y_val, s_val, what="validation scores")
    require_both_classes(y, "operating point (validation ROC curve)")
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    # Entry 0 is scikit-learn's artificial threshold above every score; drop it so that the
    # threshold is a real validation score.
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    spec = 1.0 - fpr
    if name == "youden":
        k = int(np.argmax(tpr - fpr))  # thresholds decrease, so argmax's first hit is the highest one
    elif name == "sensitivity":
        k = int(np.flatnonzero(tpr >= target - _EPS)[0])  # reached at the latest at tpr == 1
    else:
        ok = np.flatnonzero(spec >= target - _EPS)
        if ok.size:
            k = int(ok[-1])
        else:
            k = 0
            logger.warning(
                "no validation threshold reaches specificity %.3f (the top-scored case is negative); "
                "using the highest score, specificity %.3f",
                target,
                spec[0],
            )
    threshold = float(thresholds[k]) if k + 1 == len(thresholds) else float((thresholds[k] + thresholds[k + 1]) / 2)
    op = OperatingPoint(
        policy=policy,
        threshold=threshold,
        val_sensitivity=float(tpr[k]),
        val_specificity=float(spec[k]),
    )
    logger.info(
        "operating point %s: threshold %.6g (validation sensitivity %.3f, specificity %.3f)",
        policy,
        op.threshold,
        op.val_sensitivity,
        op.val_specificity,
    )
    return op
