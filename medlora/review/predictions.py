"""The prediction tables of a review bundle: one row per study, and one per image.

Everything here is computed from the run's per-sample ``predictions.csv`` (pseudonymous keys only):
study scores aggregated with the run's rule, put through its recalibration map, and called at its
frozen operating point; a multi-label or multi-class run adds each output's score, target and call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from ..evaluate.stage import study_scores


def study_predictions(samples: pd.DataFrame, threshold: float | None, how: str,
                      calibrate: Callable[[Any], Any] | None = None) -> pd.DataFrame:
    """One row per study and split: pseudonymous keys, label, aggregated score and call.

    ``calibrate`` maps aggregated study scores into the threshold's units (the run's recalibration,
    :meth:`medlora.bundle.bundle.Bundle.study_scores`); without it scores are used as they are.
    Without a ``threshold`` (a multi-class model without ``data.normal``) there is no abnormal score,
    label or call: only the keys are returned, for :func:`output_studies` to complete.
    """
    frames = []
    for split, part in samples.groupby("split", sort=False):
        frames.append(study_scores(part, how).frame().assign(split=split))
    studies = pd.concat(frames, ignore_index=True)
    if threshold is None:
        return studies[["split", "study_key", "patient_key"]]
    if calibrate is not None:
        studies["score"] = calibrate(studies["score"].to_numpy())
    studies["call"] = (studies["score"] >= threshold).astype(int)
    return studies[["split", "study_key", "patient_key", "label", "score", "call"]]


def output_studies(samples: pd.DataFrame, outputs: list[str], how: str, thresholds: dict[str, float],
                   multiclass: bool) -> pd.DataFrame:
    """Per split and study of a multi-label/multi-class run: each output's aggregated ``score.<name>``,
    its target ``label.<name>`` (empty where unknown) and ``call.<name>`` at the output's own threshold
    (empty where it has none); a multi-class run adds ``true_class`` and ``class`` (the arg-max call)."""
    import numpy as np

    from ..evaluate.findings import study_matrix

    frames = []
    for split, part in samples.groupby("split", sort=False):
        m = study_matrix(part, tuple(outputs), how)
        cols: dict[str, Any] = {"split": split, "study_key": m.study_key}
        for k, name in enumerate(outputs):
            t = thresholds.get(name)
            cols[f"score.{name}"], cols[f"label.{name}"] = m.scores[:, k], pd.array(
                [pd.NA if np.isnan(v) else int(v) for v in m.targets[:, k]], dtype="Int64")
            cols[f"call.{name}"] = pd.array([pd.NA if t is None or np.isnan(t) else int(v >= t) for v in m.scores[:, k]],
                                            dtype="Int64")
        if multiclass:
            cols["true_class"] = [outputs[i] for i in np.nan_to_num(m.targets).argmax(axis=1)]
            cols["class"] = [outputs[i] for i in m.scores.argmax(axis=1)]
        frames.append(pd.DataFrame(cols))
    return pd.concat(frames, ignore_index=True)


def sample_predictions(samples: pd.DataFrame, threshold: float | None, outputs: list[str] | None = None) -> pd.DataFrame:
    """Per-sample rows with the image-level call at the same threshold (none without one), and each
    output's ``score.<name>`` for a multi-label/multi-class run, and a study model's slice ``attention``."""
    keys = ["split", "sample_id", "study_key", "patient_key"]
    out = samples[keys + ([] if threshold is None else ["label", "score"])].copy()
    if threshold is not None:
        out["call"] = (out["score"] >= threshold).astype(int)
    for name in outputs or []:
        out[f"score.{name}"] = samples[f"score.{name}"].to_numpy()
    if "attention" in samples:  # a study model: each slice's weight in its study's score
        out["attention"] = samples["attention"].to_numpy()
    return out
