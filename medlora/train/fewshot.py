"""Few-shot support sets and the resolved config of one sweep point (method, shots, seed).

A k-shot support set holds k *patients* per class drawn from the training split, with all their
samples (a patient's label is its most abnormal study's, as in :mod:`medlora.io.split`). Draws are
seeded and nested: for one seed, the 5-shot set contains the 1-shot set, so a learning curve
measures more data rather than other data. ``"all"`` is the whole training split. Validation and
test splits never change.

Every point of a sweep is identified by a hash of everything that changes its result (method,
shots, seed, the resolved train/model/preprocess/evaluate config and the dataset fingerprint):
the hash tags its MLflow run, so a rerun finds what already finished.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import Config, FewShotConfig
from ..errors import ConfigError

Shots = int | str  # a positive int or "all"


@dataclass(frozen=True)
class SweepPoint:
    """One child run of a sweep."""

    method: str
    shots: Shots
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.shots}shot-seed{self.seed}"


@dataclass(frozen=True)
class SupportSet:
    """Row positions (into the training split frame) and the patients they belong to."""

    shots: Shots
    seed: int
    positions: np.ndarray
    patient_keys: tuple[str, ...]

    @property
    def key_hash(self) -> str:
        """A short hash of the sorted patient keys: equal for every method of one (shots, seed)."""
        return hashlib.sha256("\n".join(sorted(self.patient_keys)).encode()).hexdigest()[:12]


def patient_labels(train: pd.DataFrame) -> pd.Series:
    """One label per patient (the maximum over their samples), indexed by sorted patient key."""
    return train.groupby("patient_key")["label"].max().sort_index()


def draw_support(train: pd.DataFrame, shots: Shots, seed: int) -> SupportSet:
    """The ``shots``-patients-per-class support set of ``train`` (a manifest slice) for ``seed``.

    Raises :class:`ConfigError` naming the class when it has fewer than ``shots`` patients.
    """
    train = train.reset_index(drop=True)
    if shots == "all":
        keys = tuple(sorted(train["patient_key"].unique()))
        return SupportSet(shots, seed, np.arange(len(train)), keys)
    labels = patient_labels(train)
    rng = np.random.default_rng(seed)
    chosen: list[str] = []
    for label in sorted(labels.unique()):
        patients = np.array(labels.index[labels == label])
        order = rng.permutation(len(patients))  # a full permutation: smaller k is a prefix (nested)
        if len(patients) < int(shots):
            raise ConfigError(f"fewshot.shots={shots} needs {shots} training patients per class; "
                              f"label {label} has {len(patients)}")
        chosen += list(patients[order[: int(shots)]])
    positions = np.flatnonzero(train["patient_key"].isin(chosen).to_numpy())
    return SupportSet(shots, seed, positions, tuple(sorted(chosen)))


def check_shots(train: pd.DataFrame, fewshot: FewShotConfig) -> None:
    """Fail before any training when a shot count exceeds the patients of a class."""
    counts = patient_labels(train).value_counts()
    for k in fewshot.shots:
        if k != "all" and int(k) > counts.min():
            raise ConfigError(f"fewshot.shots contains {k}, but the training split has only {counts.min()} patients "
                              f"of label {counts.idxmin()}; use at most {counts.min()} or 'all'")


def sweep_points(fewshot: FewShotConfig) -> list[SweepPoint]:
    """Every (method, shots, seed), grouped so the methods of one support set run one after another."""
    return [SweepPoint(m, k, s) for k in fewshot.shots for s in fewshot.seeds for m in fewshot.methods]


def point_config(cfg: Config, point: SweepPoint) -> Config:
    """``cfg`` with the point's method, its ``fewshot.overrides`` train values and its seed applied."""
    train = {**cfg.train.model_dump(), **(cfg.fewshot.overrides.get(point.method, {}) if cfg.fewshot else {}),
             "seed": point.seed}
    model = cfg.model.model_copy(update={"method": point.method})
    out = cfg.model_copy(update={"model": model, "train": type(cfg.train).model_validate(train)})
    return out


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _result_relevant(cfg: Config) -> dict[str, Any]:
    dumped = cfg.model_dump(mode="json")
    # device, worker counts and compilation change speed, not results
    train = {k: v for k, v in dumped["train"].items() if k not in {"device", "num_workers", "threads", "compile"}}
    return {"train": train, "model": dumped["model"], "preprocess": dumped["preprocess"],
            "evaluate": dumped["evaluate"], "classes": dumped["data"]["classes"], "abnormal": dumped["data"]["abnormal"]}


def point_hash(cfg: Config, point: SweepPoint, fingerprint: str) -> str:
    """Hash of one point's resolved config (``cfg`` from :func:`point_config`) and the dataset."""
    return _digest({"point": [point.method, str(point.shots), point.seed], **_result_relevant(cfg),
                    "fingerprint": fingerprint})


def sweep_hash(cfg: Config, fingerprint: str) -> str:
    """Hash of a whole sweep: the parent run is found again by it."""
    # where the points run does not change what they measure: a sweep resumes under another executor
    fewshot = cfg.fewshot.model_dump(mode="json", exclude={"executor", "ray"}) if cfg.fewshot else None
    return _digest({"fewshot": fewshot, **_result_relevant(cfg), "fingerprint": fingerprint})
