"""Operating points are chosen on validation data only, by the documented policies."""

from __future__ import annotations

import numpy as np
import pytest

from medlora.errors import ConfigError, MetricUndefinedError
from medlora.evaluate.operating_point import choose_operating_point, parse_policy

# 10 validation cases with distinct scores, so expected thresholds can be read off by hand:
# score     0.8 0.7 0.6 0.5 0.45 0.4 ...  sensitivity .25 .5 .75 .75 1 1 ...  specificity 1 1 1 5/6 5/6 4/6 ...
# The frozen threshold is the midpoint between the chosen score and the next lower one.
Y_VAL = np.array([0, 0, 0, 0, 0, 1, 0, 1, 1, 1])
S_VAL = np.array([0.05, 0.1, 0.2, 0.3, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8])


@pytest.mark.parametrize(
    ("policy", "threshold", "sens", "spec"),
    [
        ("youden", 0.425, 1.0, 5 / 6),  # J = 0.833 at score 0.45 beats 0.75 at 0.6
        ("sensitivity:0.95", 0.425, 1.0, 5 / 6),
        ("sensitivity:0.75", 0.55, 0.75, 1.0),  # highest score reaching the floor (0.6)
        ("specificity:0.80", 0.425, 1.0, 5 / 6),  # lowest score keeping the floor (0.45)
        ("specificity:0.99", 0.55, 0.75, 1.0),
        ("specificity:0.50", 0.25, 1.0, 0.5),
    ],
)
def test_policies_pick_the_documented_threshold(
    policy: str, threshold: float, sens: float, spec: float
) -> None:
    op = choose_operating_point(Y_VAL, S_VAL, policy)
    assert op.policy == policy and op.threshold == pytest.approx(threshold)
    assert op.val_sensitivity == pytest.approx(sens) and op.val_specificity == pytest.approx(spec)


def test_threshold_is_finite_between_validation_scores_and_rule_is_ge() -> None:
    op = choose_operating_point(Y_VAL, S_VAL, "sensitivity:0.999")
    assert np.isfinite(op.threshold) and S_VAL.min() <= op.threshold <= S_VAL.max()
    assert op.threshold not in S_VAL  # a midpoint: no validation case sits on the threshold
    assert np.mean(S_VAL[Y_VAL == 1] >= op.threshold) == op.val_sensitivity == 1.0


def test_exact_target_is_reached_despite_rounding() -> None:
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    s = np.r_[np.linspace(0.5, 1, 20), np.linspace(0, 0.49, 20)]
    assert choose_operating_point(y, s, "sensitivity:0.95").val_sensitivity == pytest.approx(0.95)


def test_unreachable_specificity_uses_highest_score(caplog: pytest.LogCaptureFixture) -> None:
    y, s = np.array([1, 0, 1, 0]), np.array([0.1, 0.9, 0.5, 0.2])
    op = choose_operating_point(y, s, "specificity:0.9")
    assert op.threshold == pytest.approx(0.7) and op.val_specificity == 0.5  # between 0.9 and 0.5
    assert "no validation threshold reaches specificity" in caplog.text


def test_threshold_ignores_anything_but_validation() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    s = rng.random(200) + 0.3 * y
    first = choose_operating_point(y, s, "youden")
    assert choose_operating_point(y.copy(), s.copy(), "youden") == first  # a pure function of (y_val, s_val)


@pytest.mark.parametrize(
    "policy", ["youden:0.5", "sensitivity", "specificity:1.5", "recall:0.9", "sensitivity:x"]
)
def test_bad_policy_names_the_allowed_ones(policy: str) -> None:
    with pytest.raises(ConfigError, match="allowed: youden"):
        parse_policy(policy)


def test_one_class_validation_raises() -> None:
    with pytest.raises(MetricUndefinedError, match="operating point.*undefined"):
        choose_operating_point(np.zeros(5, int), np.linspace(0, 1, 5))


def test_threshold_at_the_lowest_validation_score_is_that_score() -> None:
    op = choose_operating_point(np.array([1, 0, 1]), np.array([0.1, 0.5, 0.9]), "sensitivity:0.99")
    assert op.threshold == 0.1 and op.val_sensitivity == 1.0 and op.val_specificity == 0.0
