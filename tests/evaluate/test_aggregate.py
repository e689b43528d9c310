"""Sample scores become study/patient scores; conflicting labels are errors."""

from __future__ import annotations

import numpy as np
import pytest

from medlora.errors import InputError
from medlora.evaluate.aggregate import aggregate_attribute, aggregate_scores

KEYS = np.array(["s2", "s1", "s2", "s3", "s1", "s2"])
SCORES = np.array([0.2, 0.9, 0.6, 0.3, 0.1, 0.4])
LABELS = np.array([1, 0, 1, 0, 0, 1])


@pytest.mark.parametrize(("how", "expected"), [("max", [0.9, 0.6, 0.3]), ("mean", [0.5, 0.4, 0.3])])
def test_aggregate_scores(how: str, expected: list[float]) -> None:
    keys, scores, labels = aggregate_scores(KEYS, SCORES, LABELS, how=how)
    assert keys.tolist() == ["s1", "s2", "s3"]
    np.testing.assert_allclose(scores, expected)
    assert labels.tolist() == [0, 1, 0]


def test_conflicting_labels_name_the_key() -> None:
    labels = LABELS.copy()
    labels[2] = 0
    with pytest.raises(InputError, match=r"key 's2' has conflicting labels \[0, 1\]"):
        aggregate_scores(KEYS, SCORES, labels)


def test_unknown_aggregation() -> None:
    with pytest.raises(ValueError, match="allowed: max, mean"):
        aggregate_scores(KEYS, SCORES, LABELS, how="median")  # type: ignore[arg-type]


def test_attribute_follows_key_order_and_missing_values_agree() -> None:
    patients = np.array(["p9", "p1", "p9", "p3", "p1", "p9"])
    assert aggregate_attribute(KEYS, patients).tolist() == ["p1", "p9", "p3"]
    ages = np.array([np.nan, 40.0, np.nan, 70.0, 40.0, np.nan])
    np.testing.assert_array_equal(aggregate_attribute(KEYS, ages), [40.0, np.nan, 70.0])
