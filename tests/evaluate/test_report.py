"""evaluate_binary end to end: frozen threshold, intervals, MLflow names, JSON."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest

from medlora.errors import MetricUndefinedError
from medlora.evaluate.metrics import binary_metrics, metric_names
from medlora.evaluate.report import evaluate_binary, flat_metrics, to_json


def _split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y - 0.75)))


Y_VAL, S_VAL = _split(150, 0)
Y_TEST, S_TEST = _split(240, 1)
PATIENTS = np.repeat(np.arange(120), 2)
FAST = {"n_bootstrap": 100, "seed": 0}


@pytest.fixture(scope="module")
def result():
    site = np.where(np.arange(240) < 12, "b", "a")
    return evaluate_binary(
        Y_VAL, S_VAL, Y_TEST, S_TEST, clusters_test=PATIENTS, subgroups={"site": site}, **FAST
    )


def test_threshold_comes_from_validation_only(result) -> None:
    permuted = np.random.default_rng(3).permutation(Y_TEST)
    again = evaluate_binary(Y_VAL, S_VAL, permuted, S_TEST, **FAST)
    assert again.operating_point == result.operating_point
    assert again.metrics["auroc"] != result.metrics["auroc"]


def test_metrics_are_binary_metrics_at_the_frozen_threshold(result) -> None:
    assert result.metrics == binary_metrics(Y_TEST, S_TEST, result.operating_point.threshold)


def test_every_metric_has_an_interval_containing_it(result) -> None:
    for name in metric_names(True):
        low, high = result.intervals[name]
        assert low <= result.metrics[name] + 1e-12 and result.metrics[name] <= high + 1e-12, name
    for extra in ("auroc_delong", "sensitivity_wilson", "specificity_wilson"):
        assert extra in result.intervals
    assert result.delong["n_clusters"] == 120


def test_flat_metrics_names(result) -> None:
    flat = flat_metrics(result)
    for name in (
        "test_auroc", "test_auroc_ci_low", "test_auroc_ci_high", "test_sensitivity", "test_sensitivity_ci_low",
        "test_sensitivity_wilson_ci_high", "test_auroc_delong_ci_low", "test_auroc_delong_se", "test_n_clusters",
        "threshold", "threshold_val_sensitivity", "test_subgroup_site_b_auroc", "test_subgroup_site_b_n",
    ):  # fmt: skip
        assert name in flat, name
    assert all(re.fullmatch(r"[A-Za-z0-9_]+", k) for k in flat)  # safe MLflow metric names
    assert all(isinstance(v, float) for v in flat.values())
    assert flat["threshold"] == result.operating_point.threshold
    assert not any("subgroup" in k for k in flat_metrics(result, prefix="x_", include_subgroups=False))


def test_to_json_is_strict_json(result) -> None:
    doc = json.loads(json.dumps(to_json(result), allow_nan=False))
    assert doc["operating_point"]["threshold"] == result.operating_point.threshold
    assert doc["intervals"]["auroc"] == list(result.intervals["auroc"])
    assert doc["subgroups"][0]["column"] == "site" and doc["settings"]["n_bootstrap"] == 100


def test_warnings_name_clustering_and_small_subgroups(result) -> None:
    text = " ".join(result.warnings)
    assert "240 samples come from 120 clusters" in text
    assert "subgroup site=b" in text


def test_unreachable_policy_target_is_warned() -> None:
    y_val = np.array([1, 0, 1, 0, 1, 0])
    s_val = np.array([0.1, 0.9, 0.5, 0.2, 0.6, 0.3])
    res = evaluate_binary(y_val, s_val, Y_TEST, S_TEST, policy="specificity:0.95", **FAST)
    assert any("validation specificity reached only" in w for w in res.warnings)


def test_one_class_test_set_raises() -> None:
    with pytest.raises(MetricUndefinedError, match="AUROC"):
        evaluate_binary(Y_VAL, S_VAL, np.ones(10, int), np.linspace(0, 1, 10), **FAST)


def test_unbounded_scores() -> None:
    res = evaluate_binary(Y_VAL, S_VAL * 40 - 3, Y_TEST, S_TEST * 40 - 3, probabilities=False, **FAST)
    assert "brier" not in res.metrics and not math.isnan(res.metrics["auroc"])
