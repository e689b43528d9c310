"""The evaluation stage of a run: sample scores → study scores → frozen operating point → metrics.

Labels belong to studies, so sample (slice) scores are aggregated per study (``max`` or
``mean``) before anything is measured. A calibration map (``evaluate.calibration``), when asked
for, is fitted on the validation study scores and applied to both splits; the operating point is
chosen on the validation studies alone and then applied, frozen, to the test studies; confidence
intervals resample patients (clusters), not images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..config import EvaluateConfig
from ..errors import ConfigError
from .aggregate import aggregate_attribute, aggregate_scores
from .metrics import auroc
from .recalibrate import calibration_summary, fit_calibrator
from .report import EvaluationResult, evaluate_binary


@dataclass
class StudyScores:
    study_key: np.ndarray
    patient_key: np.ndarray
    label: np.ndarray
    score: np.ndarray

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame({"study_key": self.study_key, "patient_key": self.patient_key,
                             "label": self.label, "score": self.score})


def study_scores(frame: pd.DataFrame, how: str = "max") -> StudyScores:
    """Aggregate a per-sample frame (``study_key, patient_key, label, score``) to one row per study."""
    keys, scores, labels = aggregate_scores(frame["study_key"].to_numpy(), frame["score"].to_numpy(),
                                            frame["label"].to_numpy(), how=how)
    patients = aggregate_attribute(frame["study_key"].to_numpy(), frame["patient_key"].to_numpy(), name="patient_key")
    return StudyScores(keys, patients, labels.astype(int), scores)


def study_auroc(frame: pd.DataFrame, how: str = "max") -> float:
    """Study-level AUROC (the validation metric for early stopping)."""
    s = study_scores(frame, how)
    return auroc(s.label, s.score)


def test_subgroups(frame: pd.DataFrame, subgroups: pd.DataFrame | None) -> dict[str, np.ndarray] | None:
    """The subgroup columns of ``subgroups`` (one row per study: ``study_key`` and a column per field)
    aligned with the studies of a per-sample ``frame`` in :func:`study_scores` order."""
    if subgroups is None or subgroups.empty or len(subgroups.columns) < 2:
        return None
    keys = np.unique(frame["study_key"].to_numpy())
    table = subgroups.drop_duplicates("study_key").set_index("study_key").reindex(keys)
    return {str(c): table[c].to_numpy(dtype=object) for c in table.columns}


def run_evaluate(val: pd.DataFrame, test: pd.DataFrame, cfg: EvaluateConfig, how: str = "max", seed: int = 0,
                 probabilities: bool = True, subgroups: dict[str, np.ndarray] | None = None,
                 ) -> tuple[EvaluationResult, StudyScores, StudyScores]:
    """Evaluate per-sample validation and test frames at the study level; ``subgroups`` maps a field to
    values aligned with the test studies (:func:`test_subgroups`).

    The returned study scores are calibrated when ``cfg.calibration`` asks for it (the map is in
    ``result.calibration``, with validation log-loss and test Brier/ECE before and after).
    """
    v, t = study_scores(val, how), study_scores(test, how)
    summary = {}
    if cfg.calibration != "none":
        if not probabilities:
            raise ConfigError(f"evaluate.calibration={cfg.calibration!r} on unbounded scores: distances are not "
                              "probabilities and are not calibrated (use 'none')")
        cal = fit_calibrator(cfg.calibration, v.label, v.score)  # validation only
        summary = calibration_summary(cal, v.label, v.score, t.label, t.score)
        v = StudyScores(v.study_key, v.patient_key, v.label, cal.apply(v.score))
        t = StudyScores(t.study_key, t.patient_key, t.label, cal.apply(t.score))
    result = evaluate_binary(v.label, v.score, t.label, t.score, clusters_test=t.patient_key, policy=cfg.operating_point,
                             n_bootstrap=cfg.bootstrap, ci=cfg.ci, seed=seed, probabilities=probabilities,
                             subgroups=subgroups, min_per_class=cfg.min_per_class)
    result.calibration = summary or {"method": "none"}
    return result, v, t
