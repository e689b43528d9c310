"""Temperature and Platt scaling: fitted on validation studies only, applied frozen to test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medlora.config import EvaluateConfig
from medlora.errors import ConfigError, MetricUndefinedError
from medlora.evaluate.recalibrate import Calibrator, calibration_summary, fit_calibrator, log_loss


def _overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and scores whose logits are 4x too large: right order, far too sure of themselves (the
    true log-odds of ``z`` drawn from N(+-1, 1) are ``2 z``; the score's are ``8 z``)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.normal(1.0, 1.0, n) * np.where(y == 1, 1, -1)
    return y, 1 / (1 + np.exp(-8 * z))


@pytest.mark.parametrize("method", ["temperature", "platt"])
def test_scaling_fitted_on_validation_lowers_its_log_loss_and_keeps_the_order(method):
    y, s = _overconfident(400, 0)
    cal = fit_calibrator(method, y, s)
    assert log_loss(y, cal.apply(s)) < log_loss(y, s) - 0.05
    assert cal.slope == pytest.approx(0.25, rel=0.3)  # the 4x overconfidence is undone
    if method == "temperature":
        assert cal.intercept == 0.0 and cal.to_dict()["temperature"] == pytest.approx(1 / cal.slope)
    order = np.argsort(s, kind="mergesort")
    assert (np.diff(cal.apply(s)[order]) >= 0).all()  # strictly monotone map: AUROC and ranking unchanged


def test_platt_matches_an_unpenalised_logistic_regression_on_the_logit():
    from sklearn.linear_model import LogisticRegression

    y, s = _overconfident(300, 1)
    cal = fit_calibrator("platt", y, s)
    p = np.clip(s, 1e-6, 1 - 1e-6)  # the calibrator clips scores before the logit
    z = np.log(p / (1 - p)).reshape(-1, 1)
    ref = LogisticRegression(C=1e10, max_iter=10_000).fit(z, y)
    assert cal.slope == pytest.approx(ref.coef_[0, 0], rel=1e-3)
    assert cal.intercept == pytest.approx(ref.intercept_[0], abs=1e-3)


def test_calibrator_round_trips_through_medlora_json_and_none_is_the_identity():
    cal = Calibrator("temperature", 0.5, 0.0)
    back = Calibrator.from_dict(cal.to_dict())
    assert back == cal and back.apply(np.array([0.5]))[0] == pytest.approx(0.5)
    assert back.apply(np.array([0.9]))[0] == pytest.approx(1 / (1 + np.exp(-0.5 * np.log(9))))
    assert Calibrator.from_dict(None).apply(np.array([0.3, 0.7])).tolist() == [0.3, 0.7]
    assert Calibrator.from_dict({"method": "none"}).to_dict() == {"method": "none"}


def test_one_class_validation_cannot_be_calibrated():
    with pytest.raises(MetricUndefinedError, match="both classes among the validation studies"):
        fit_calibrator("temperature", np.ones(5), np.full(5, 0.9))


def _frame(y: np.ndarray, s: np.ndarray, prefix: str) -> pd.DataFrame:
    keys = [f"{prefix}{i}" for i in range(len(y))]
    return pd.DataFrame({"study_key": keys, "patient_key": keys, "label": y, "score": s})


def test_run_evaluate_fits_on_validation_applies_to_test_and_reports_before_and_after():
    from medlora.evaluate.stage import run_evaluate

    yv, sv = _overconfident(200, 2)
    yt, st = _overconfident(200, 3)
    cfg = EvaluateConfig(bootstrap=50, calibration="temperature")
    raw, _, raw_test = run_evaluate(_frame(yv, sv, "v"), _frame(yt, st, "t"), EvaluateConfig(bootstrap=50))
    result, v, t = run_evaluate(_frame(yv, sv, "v"), _frame(yt, st, "t"), cfg)
    cal = fit_calibrator("temperature", yv, sv)  # validation alone decides the map
    assert result.calibration["temperature"] == pytest.approx(1 / cal.slope)
    np.testing.assert_allclose(t.score, cal.apply(raw_test.score))
    np.testing.assert_array_equal(t.label, raw_test.label)  # test labels untouched
    assert result.calibration["val_log_loss_after"] < result.calibration["val_log_loss_before"]
    assert result.metrics["brier"] == pytest.approx(result.calibration["test_brier_after"])
    assert result.calibration["test_brier_before"] == pytest.approx(raw.metrics["brier"])
    assert result.calibration["test_ece_after"] < result.calibration["test_ece_before"]
    assert result.metrics["auroc"] == pytest.approx(raw.metrics["auroc"])
    for key in ("tp", "fp", "tn", "fn"):  # the threshold moves with the scores: the same calls
        assert result.metrics[key] == raw.metrics[key]
    from medlora.evaluate.report import flat_metrics, to_json

    flat = flat_metrics(result)
    assert flat["test_brier_uncalibrated"] == pytest.approx(raw.metrics["brier"])
    assert to_json(result)["calibration"]["method"] == "temperature"
    assert raw.calibration == {"method": "none"} and "test_brier_uncalibrated" not in flat_metrics(raw)


def test_distances_are_not_calibrated():
    from medlora.config import config_from_dict
    from medlora.evaluate.stage import run_evaluate

    yv, sv = _overconfident(20, 4)
    with pytest.raises(ConfigError, match="distances are not probabilities"):
        run_evaluate(_frame(yv, sv * 9, "v"), _frame(yv, sv * 9, "t"), EvaluateConfig(calibration="platt"),
                     probabilities=False)
    with pytest.raises(ConfigError, match="distances, not probabilities") as err:
        config_from_dict({"pipeline": "oneclass", "data": {"root": "/nowhere"}, "evaluate": {"calibration": "platt"}})
    assert "/nowhere" not in str(err.value)  # the message names the keys, not the whole config


def test_per_finding_scores_are_not_recalibrated():
    from medlora.config import config_from_dict

    data = {"root": "/nowhere", "task": "multilabel", "findings": ["nodule", "effusion"]}
    with pytest.raises(ConfigError, match=r"evaluate.calibration='temperature' recalibrates the one score of "
                                          r"data.task binary; a multilabel run's per-finding scores"):
        config_from_dict({"data": data, "evaluate": {"calibration": "temperature"}})
    assert config_from_dict({"data": data}).evaluate.calibration == "none"


def test_calibration_summary_names_before_and_after():
    y, s = _overconfident(100, 5)
    summary = calibration_summary(fit_calibrator("platt", y, s), y, s, y, s)
    assert {"method", "slope", "intercept", "val_log_loss_before", "val_log_loss_after", "test_brier_before",
            "test_brier_after", "test_ece_before", "test_ece_after"} <= set(summary)
