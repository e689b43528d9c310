"""Group sample (image, slice) scores into study- or patient-level scores.

A study is read as one decision, so clinical metrics are computed per study: several slices or views
of it become one score (``max``: abnormal if any part looks abnormal, the usual choice for lesion
detection; ``mean``: a smoother consensus; ``attention``: a study-level model already scored the
study, and each of its samples carries that one score, taken as it is). Labels must agree within a key; a disagreement means the
label join is wrong and is an error, never silently resolved. Output keys are sorted (``np.unique``
order), so results do not depend on the order samples arrived in.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from medlora.errors import InputError

logger = logging.getLogger(__name__)

AGGREGATIONS = ("max", "mean", "attention")


def _group(keys: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(keys).ravel()
    if k.size != n:
        raise ValueError(f"keys and values differ in length: {k.size} vs {n}")
    return np.unique(k, return_inverse=True)


def aggregate_scores(
    keys: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    how: Literal["max", "mean", "attention"] = "max",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(unique_keys, key_scores, key_labels)``, one row per distinct key (sorted).

    Raises :class:`InputError` naming the key if its samples carry different labels.
    """
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation {how!r} is not supported; allowed: {', '.join(AGGREGATIONS)}")
    s = np.asarray(scores, dtype=float).ravel()
    y = np.asarray(labels).ravel()
    if y.size != s.size:
        raise ValueError(f"scores and labels differ in length: {s.size} vs {y.size}")
    uniq, inv = _group(keys, s.size)
    key_labels = aggregate_attribute(keys, y, name="label")
    if how in ("max", "attention"):  # attention: the samples of a study carry its one score; max keeps it
        key_scores = np.full(uniq.size, -np.inf)
        np.maximum.at(key_scores, inv, s)
    else:
        key_scores = np.bincount(inv, weights=s, minlength=uniq.size) / np.bincount(inv, minlength=uniq.size)
    logger.debug("aggregated %d samples into %d keys by %s", s.size, uniq.size, how)
    return uniq, key_scores, key_labels


def aggregate_attribute(keys: np.ndarray, values: np.ndarray, name: str = "value") -> np.ndarray:
    """One value per distinct key (sorted like :func:`aggregate_scores`), e.g. the patient of a study.

    Use it to carry cluster ids or subgroup columns along with :func:`aggregate_scores`. Raises
    :class:`InputError` naming the key if its samples carry different values.
    """
    v = np.asarray(values).ravel()
    uniq, inv = _group(keys, v.size)
    order = np.argsort(inv, kind="mergesort")
    inv_sorted, v_sorted = inv[order], v[order]
    starts = np.r_[0, np.flatnonzero(np.diff(inv_sorted)) + 1]
    first = v_sorted[starts]
    expected = first[inv_sorted]
    mismatch = v_sorted != expected
    if v.dtype.kind == "f":  # a missing value (NaN) agrees with another missing value
        mismatch &= ~(np.isnan(v_sorted) & np.isnan(expected))
    if mismatch.any():
        bad = int(inv_sorted[np.argmax(mismatch)])
        seen = np.unique(v[inv == bad]).tolist()
        raise InputError(
            f"key {uniq[bad].item()!r} has conflicting {name}s {seen}; every sample of a key must agree"
        )
    return first
