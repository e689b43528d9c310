"""Subgroup metrics use the frozen threshold, never crash, and warn when a group is small or one-class."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medlora.evaluate.metrics import binary_metrics
from medlora.evaluate.subgroups import evaluate_subgroups

RNG = np.random.default_rng(0)
N = 200
Y = RNG.integers(0, 2, N)
S = 1 / (1 + np.exp(-(RNG.normal(size=N) + 1.5 * Y - 0.75)))
SEX = RNG.choice(np.array(["F", "M"], dtype=object), N)
SEX[:7] = None


def _by_value(results: list) -> dict[str, object]:
    return {r.value: r for r in results}


def test_subgroup_metrics_equal_metrics_on_the_subset_at_the_frozen_threshold() -> None:
    groups = _by_value(evaluate_subgroups(Y, S, 0.5, {"sex": SEX}, n_bootstrap=50))
    assert set(groups) == {"F", "M", "missing"}
    mask = SEX == "F"
    assert groups["F"].metrics == pytest.approx(binary_metrics(Y[mask], S[mask], 0.5), nan_ok=True)
    assert groups["F"].n == mask.sum() and groups["F"].n_positive == Y[mask].sum()
    assert {"auroc", "sensitivity_wilson"} <= set(groups["F"].intervals)


def test_one_class_subgroup_is_nan_with_warning() -> None:
    site = np.where(np.arange(N) < 5, "tiny", "main")
    y = Y.copy()
    y[:5] = 1  # the "tiny" site has positives only
    groups = _by_value(evaluate_subgroups(y, S, 0.5, {"site": site}, n_bootstrap=20))
    tiny = groups["tiny"]
    assert math.isnan(tiny.metrics["auroc"]) and math.isnan(tiny.metrics["specificity"])
    assert not math.isnan(tiny.metrics["sensitivity"])
    assert tiny.warnings == [
        "subgroup site=tiny has only positives (n=5): metrics needing both classes are NaN"
    ]
    assert not groups["main"].warnings


def test_small_subgroup_warns() -> None:
    groups = _by_value(evaluate_subgroups(Y, S, 0.5, {"sex": SEX}, n_bootstrap=10))
    assert "estimates are unstable" in groups["missing"].warnings[0]


def test_numeric_and_nan_values_become_labels() -> None:
    age_band = np.where(np.arange(N) % 2, 40.0, np.nan)
    groups = _by_value(evaluate_subgroups(Y, S, 0.5, {"age": age_band}, n_bootstrap=10))
    assert set(groups) == {"40.0", "missing"}


def test_misaligned_column_names_it() -> None:
    with pytest.raises(ValueError, match="subgroup column 'sex' has 3 values for 200"):
        evaluate_subgroups(Y, S, 0.5, {"sex": np.array(["F", "M", "F"])}, n_bootstrap=10)
