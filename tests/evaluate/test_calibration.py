"""Brier score, ECE and reliability-diagram data against hand values and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss

from medlora.errors import MetricUndefinedError
from medlora.evaluate.calibration import brier_score, expected_calibration_error, reliability_diagram

RNG = np.random.default_rng(0)
P = np.r_[RNG.random(500), 0.0, 1.0, 0.3, 0.5]  # includes both ends and values on bin edges
Y = (RNG.random(P.size) < P**1.5).astype(int)  # deliberately over-confident probabilities


def test_brier_matches_sklearn() -> None:
    assert brier_score(Y, P) == pytest.approx(brier_score_loss(Y, P))


def test_ece_hand_example() -> None:
    # one sample per bin, each 0.05 or 0.15 away from its outcome
    assert expected_calibration_error([0, 0, 1, 1], [0.05, 0.15, 0.95, 0.85]) == pytest.approx(0.1)


def test_perfectly_calibrated_bins_have_zero_ece() -> None:
    assert expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.0


@pytest.mark.parametrize("n_bins", [5, 10, 15])
def test_reliability_matches_sklearn_and_ece(n_bins: int) -> None:
    rel = reliability_diagram(Y, P, n_bins)
    frac, mean = calibration_curve(Y, P, n_bins=n_bins, strategy="uniform")
    np.testing.assert_allclose(rel.fraction_positive, frac)
    np.testing.assert_allclose(rel.mean_predicted, mean)
    assert rel.count.sum() == P.size
    weighted_gap = np.sum(rel.count * np.abs(rel.fraction_positive - rel.mean_predicted)) / P.size
    assert expected_calibration_error(Y, P, n_bins) == pytest.approx(weighted_gap)


def test_probabilities_out_of_range_are_rejected() -> None:
    with pytest.raises(MetricUndefinedError, match=r"probabilities in \[0, 1\].*probabilities=False"):
        brier_score([0, 1], [0.2, 1.7])
