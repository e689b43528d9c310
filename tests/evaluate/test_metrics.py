"""Binary and multi-class metrics against scikit-learn on random and edge-case inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

from medlora.errors import MetricUndefinedError
from medlora.evaluate.metrics import auroc, binary_metrics, metric_names, multiclass_metrics


def _random(n: int, seed: int, ties: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = 1 / (1 + np.exp(-(rng.normal(size=n) + y)))
    if ties:
        s = np.round(s, 1)
    return y, s


CASES = {
    "random": _random(200, 0),
    "random_small": _random(12, 1),
    "heavy_ties": _random(300, 2, ties=True),
    "all_tied": (np.array([0, 1, 0, 1, 1]), np.full(5, 0.5)),
    "perfect": (np.array([0, 0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.8, 0.9])),
    "inverted": (np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])),
    "imbalanced": (np.r_[np.zeros(97, int), np.ones(3, int)], np.linspace(0, 1, 100)),
}
THRESHOLDS = (0.0, 0.35, 0.5, 0.9, 1.0)


def _sklearn_reference(y: np.ndarray, s: np.ndarray, thr: float) -> dict[str, float]:
    pred = (s >= thr).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return {
        "auroc": roc_auc_score(y, s),
        "auprc": average_precision_score(y, s),
        "tp": tp, "fp": fp, "tn": tn, "fn": fn,
        "sensitivity": tp / (tp + fn),
        "specificity": tn / (tn + fp),
        "ppv": tp / (tp + fp) if tp + fp else math.nan,
        "npv": tn / (tn + fn) if tn + fn else math.nan,
        "f1": f1_score(y, pred, zero_division=np.nan),
        "balanced_accuracy": balanced_accuracy_score(y, pred),
        "accuracy": np.mean(pred == y),
        "brier": brier_score_loss(y, s),
        "sensitivity_at_specificity_90": tpr[fpr <= 0.1 + 1e-12].max(),
        "specificity_at_sensitivity_95": (1 - fpr)[tpr >= 0.95 - 1e-12].max(),
    }  # fmt: skip


@pytest.mark.parametrize("thr", THRESHOLDS)
@pytest.mark.parametrize("case", list(CASES))
def test_binary_metrics_match_sklearn(case: str, thr: float) -> None:
    y, s = CASES[case]
    got = binary_metrics(y, s, thr)
    assert tuple(got) == metric_names(True)
    for name, want in _sklearn_reference(y, s, thr).items():
        assert got[name] == pytest.approx(float(want), abs=1e-12, nan_ok=True), name


@pytest.mark.parametrize(
    ("case", "expected"),
    [("perfect", 1.0), ("inverted", 0.0), ("all_tied", 0.5)],
)
def test_auroc_known_values(case: str, expected: float) -> None:
    assert auroc(*CASES[case]) == pytest.approx(expected)


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_raises_with_clear_message(label: int) -> None:
    y = np.full(6, label)
    with pytest.raises(MetricUndefinedError, match=r"AUROC.*undefined.*all 6 labels"):
        binary_metrics(y, np.linspace(0, 1, 6), 0.5)


def test_one_class_nan_mode_keeps_defined_metrics() -> None:
    got = binary_metrics(np.ones(4, int), np.array([0.2, 0.6, 0.7, 0.9]), 0.5, on_one_class="nan")
    assert math.isnan(got["auroc"]) and math.isnan(got["specificity"])
    assert got["sensitivity"] == pytest.approx(0.75)


def test_undefined_ratios_are_nan() -> None:
    y, s = np.array([0, 1, 0, 1]), np.array([0.1, 0.2, 0.3, 0.4])
    got = binary_metrics(y, s, threshold=0.99)  # nothing predicted positive
    assert math.isnan(got["ppv"]) and got["sensitivity"] == 0.0 and got["specificity"] == 1.0


def test_unbounded_scores_omit_calibration() -> None:
    y, s = np.array([0, 1, 0, 1]), np.array([-3.0, 7.0, 1.0, 12.0])
    got = binary_metrics(y, s, 5.0, probabilities=False)
    assert "brier" not in got and "ece" not in got and got["auroc"] == 1.0
    with pytest.raises(MetricUndefinedError, match="probabilities=False"):
        binary_metrics(y, s, 5.0)


@pytest.mark.parametrize(
    ("y", "s", "error", "match"),
    [
        ([0, 1], [0.1], ValueError, "differ in length"),  # a caller's bug: shown with its traceback
        ([0, 2], [0.1, 0.2], ValueError, "labels must be 0"),
        ([0, 1], [0.1, np.nan], MetricUndefinedError, "non-finite"),  # e.g. a diverged model's scores
    ],
)
def test_bad_input_names_the_problem(y: list, s: list, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        binary_metrics(np.array(y), np.array(s), 0.5)


def test_multiclass_matches_sklearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 300)
    logits = rng.normal(size=(300, 3)) + np.eye(3)[y]
    p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    got = multiclass_metrics(y, p, ["normal", "pneumonia", "covid 19"])
    assert got["auroc_macro"] == pytest.approx(roc_auc_score(y, p, multi_class="ovr", average="macro"))
    assert got["auprc_pneumonia"] == pytest.approx(average_precision_score(y == 1, p[:, 1]))
    assert got["auroc_covid_19"] == pytest.approx(roc_auc_score(y == 2, p[:, 2]))
    assert got["f1_macro"] == pytest.approx(f1_score(y, p.argmax(1), average="macro"))
    assert got["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, p.argmax(1)))


def test_multiclass_one_class_raises() -> None:
    with pytest.raises(MetricUndefinedError, match="only class"):
        multiclass_metrics(np.zeros(4, int), np.full((4, 3), 1 / 3), ["a", "b", "c"])
