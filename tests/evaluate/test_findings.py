"""Per-finding evaluation against scikit-learn; shared resamples; masking; multi-class summaries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    roc_auc_score,
)

from medlora.config import EvaluateConfig
from medlora.errors import InputError
from medlora.evaluate.findings import (
    StudyMatrix,
    cluster_bootstrap_weights,
    evaluate_findings,
    flat_multi_metrics,
    mean_auroc,
    study_matrix,
)

NAMES = ("Effusion", "Pleural Thickening", "Nodule")


def _matrix(n: int, seed: int, unknown: float = 0.1) -> StudyMatrix:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(NAMES))) < [0.3, 0.2, 0.1]).astype(float)
    s = 1 / (1 + np.exp(-(rng.normal(size=y.shape) + 1.5 * y)))
    y[rng.random(y.shape) < unknown] = np.nan
    return StudyMatrix(np.array([f"stu{i}" for i in range(n)]), np.array([f"pat{i // 2}" for i in range(n)]), s, y)


def test_per_finding_metrics_match_sklearn_on_the_known_targets():
    val, test = _matrix(300, 0), _matrix(400, 1)
    res = evaluate_findings(val, test, NAMES, EvaluateConfig(bootstrap=200))
    aucs = []
    for k, f in enumerate(res.findings):
        known = ~np.isnan(test.targets[:, k])  # unknown targets are left out, never counted negative
        y, s = test.targets[known, k], test.scores[known, k]
        assert f.n == known.sum() and f.n_positive == y.sum()
        assert f.metrics["auroc"] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert f.metrics["auprc"] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert f.metrics["sensitivity"] == pytest.approx(np.mean(s[y == 1] >= f.threshold))
        low, high = f.intervals["auroc"]
        assert low < f.metrics["auroc"] < high and f.intervals["auroc_delong"][0] < f.metrics["auroc"]
        aucs.append(f.metrics["auroc"])
    assert res.summary["auroc_macro"] == pytest.approx(np.mean(aucs))
    low, high = res.intervals["auroc_macro"]
    assert low < res.summary["auroc_macro"] < high and high - low < max(f.intervals["auroc"][1] - f.intervals["auroc"][0] for f in res.findings)
    known = ~np.isnan(test.targets)
    assert res.summary["auroc_micro"] == pytest.approx(roc_auc_score(test.targets[known], test.scores[known]))
    anyf = res.any_finding
    positive = (np.nan_to_num(test.targets) == 1).any(axis=1)
    assert anyf.counts["n_positive"] == positive.sum()


def test_a_finding_without_test_positives_is_nan_with_a_reason_and_the_rest_goes_on():
    val, test = _matrix(200, 2), _matrix(200, 3)
    test.targets[:, 2] = np.where(np.isnan(test.targets[:, 2]), np.nan, 0.0)
    res = evaluate_findings(val, test, NAMES, EvaluateConfig(bootstrap=50))
    nodule = res.findings[2]
    assert math.isnan(nodule.metrics["auroc"]) and "test holds 0 positives" in nodule.reason
    assert any("finding Nodule: test holds 0 positives" in w for w in res.warnings)
    assert res.summary["findings_evaluated"] == 2
    assert res.summary["auroc_macro"] == pytest.approx(np.mean([f.metrics["auroc"] for f in res.findings[:2]]))


def test_shared_weights_resample_whole_clusters_within_strata():
    clusters = np.array([0, 0, 1, 2, 2, 2, 3, 4])
    strata = np.array([1, 0, 0, 1, 0, 0, 0, 0])  # clusters 0 and 2 are positive
    w = cluster_bootstrap_weights(clusters, strata, 500, seed=1)
    assert w.shape == (8, 500)
    np.testing.assert_array_equal(w[0], w[1])  # a cluster's samples are drawn together
    np.testing.assert_array_equal(w[3], w[5])
    np.testing.assert_array_equal(w[0] + w[3], 2)  # two positive clusters drawn twice in all, every time
    np.testing.assert_array_equal(w[2] + w[6] + w[7], 3)
    np.testing.assert_array_equal(cluster_bootstrap_weights(clusters, strata, 500, seed=1), w)  # seeded


def test_multiclass_summaries_match_sklearn():
    rng = np.random.default_rng(4)
    names = ("grade0", "grade1", "grade2", "grade3")

    def m(n: int) -> StudyMatrix:
        y = rng.integers(0, 4, n)
        logits = rng.normal(size=(n, 4)) + 2 * np.eye(4)[y]
        p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        return StudyMatrix(np.arange(n).astype(str), np.arange(n).astype(str), p, np.eye(4)[y])

    val, test = m(200), m(300)
    res = evaluate_findings(val, test, names, EvaluateConfig(bootstrap=50), task="multiclass", normal=0, ordinal=True)
    y, pred = test.targets.argmax(1), test.scores.argmax(1)
    assert res.summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert res.summary["kappa_quadratic"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    assert res.confusion == confusion_matrix(y, pred).tolist()
    assert res.summary["auroc_macro"] == pytest.approx(roc_auc_score(y, test.scores, multi_class="ovr", average="macro"))
    assert res.any_finding.metrics["auroc"] == pytest.approx(roc_auc_score(y != 0, 1 - test.scores[:, 0]))


def test_flat_names_follow_the_finding_style():
    res = evaluate_findings(_matrix(150, 5), _matrix(150, 6), NAMES, EvaluateConfig(bootstrap=20))
    flat = flat_multi_metrics(res)
    for name in ("test_auroc.Effusion", "test_auroc_ci_low.Pleural_Thickening", "test_auprc.Nodule", "threshold.Nodule",
                 "test_auroc_macro", "test_auroc_macro_ci_high", "test_auroc_micro", "test_any_auroc"):
        assert name in flat, name
    assert flat["test_auroc.Effusion"] == res.findings[0].metrics["auroc"]


def test_study_matrix_aggregates_samples_and_refuses_conflicting_findings():
    frame = pd.DataFrame({"study_key": ["b", "a", "a"], "patient_key": ["p2", "p1", "p1"],
                          "score.x": [0.2, 0.1, 0.7], "label.x": [1.0, np.nan, np.nan]})
    m = study_matrix(frame, ("x",), "max")
    assert m.study_key.tolist() == ["a", "b"] and m.scores[:, 0].tolist() == [0.7, 0.2]
    assert np.isnan(m.targets[0, 0]) and m.targets[1, 0] == 1
    assert math.isnan(mean_auroc(m))  # one known target: no finding has both classes
    frame.loc[2, "label.x"] = 0.0
    with pytest.raises(InputError, match="conflicting findings"):
        study_matrix(frame, ("x",), "max")
