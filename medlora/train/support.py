"""Few-shot support sets: k patients per class (or per finding) drawn from the training split.

A k-shot support set holds k *patients* per class drawn from the training split, with all their
samples (a patient's label is its most abnormal study's, as in :mod:`medlora.io.split`). A
multi-label split gets at least k patients positive for each finding and k with no finding
(patients often carry several findings, so a common finding may get more than k), chosen greedily
from the rarest finding up; an unknown finding is not a positive. Draws are seeded and nested: for
one seed, the 5-shot set contains the 1-shot set, so a learning curve measures more data rather
than other data. ``"all"`` is the whole training split. Validation and
test splits never change. A sweep (:mod:`medlora.sweep`) trains every method on these sets.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..config import FewShotConfig
from ..errors import ConfigError
from ..io.split import patient_findings

Shots = int | str  # a positive int or "all"


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


NO_FINDING = "no finding"  # the stratum of multi-label patients with every finding known absent


def finding_strata(train: pd.DataFrame, names: Sequence[str] | None = None) -> pd.DataFrame:
    """Multi-label patients (sorted keys) × strata: one boolean column per finding (a positive study;
    unknown is not positive), named by ``names`` (default ``finding 1``, ...), and ``no finding`` (every
    finding known absent), left out when no patient has it."""
    findings = patient_findings(train)
    values = findings.to_numpy()
    names = list(names) if names is not None else [f"finding {j + 1}" for j in range(values.shape[1])]
    if len(names) != values.shape[1]:
        raise ConfigError(f"the manifest's findings codes hold {values.shape[1]} findings, but {len(names)} names "
                          f"were given ({names})")
    strata = pd.DataFrame(values == 1.0, index=findings.index, columns=names)
    normal = (values == 0.0).all(axis=1)
    return strata.assign(**{NO_FINDING: normal}) if normal.any() else strata


def _strata_counts(train: pd.DataFrame, names: Sequence[str] | None) -> pd.Series:
    """Patients per class (``label <value>``) or per multi-label stratum (:func:`finding_strata`)."""
    if "findings" in train.columns:
        return finding_strata(train, names).sum().astype(int)
    counts = patient_labels(train).value_counts().sort_index()
    return counts.set_axis([_class_name(v, names) for v in counts.index])


def _class_name(label: Any, names: Sequence[str] | None) -> str:
    """``label 1``, or ``label 1 (abnormal)`` with the class names (``data.classes``)."""
    named = names is not None and 0 <= int(label) < len(names)
    return f"label {label}" + (f" ({names[int(label)]})" if named else "")


def _greedy_findings(strata: pd.DataFrame, shots: int, seed: int) -> list[str]:
    """Round r = 1..``shots``: for each stratum, rarest first, while it has fewer than r chosen patients,
    add the unchosen patient of it that adds fewest positives to strata already at r (then by a seeded
    order). The rounds do not depend on ``shots``, so a smaller k's set is a subset of a larger k's."""
    member = strata.to_numpy(dtype=bool)
    counts = member.sum(axis=0)
    rank = np.random.default_rng(seed).permutation(len(member))  # the seeded preference among equals
    chosen, have = np.zeros(len(member), bool), np.zeros(member.shape[1], int)
    for r in range(1, shots + 1):
        for s in np.lexsort((np.arange(len(counts)), counts)):  # rarest stratum first
            while have[s] < r:
                surplus = (member & (have >= r)).sum(axis=1)  # strata a patient would push past this round's k
                candidates = np.flatnonzero(member[:, s] & ~chosen)
                if not len(candidates):
                    raise ConfigError(f"fewshot.shots={shots} needs {shots} training patients per finding; "
                                      f"{strata.columns[s]} has {counts[s]}")
                pick = candidates[np.lexsort((rank[candidates], surplus[candidates]))[0]]
                chosen[pick] = True
                have += member[pick]
    return list(strata.index[chosen])


def draw_support(train: pd.DataFrame, shots: Shots, seed: int, names: Sequence[str] | None = None) -> SupportSet:
    """The ``shots``-patients-per-class support set of ``train`` (a manifest slice) for ``seed``.

    Multi-label (a ``findings`` column): at least ``shots`` patients positive for each finding plus
    ``shots`` with no finding, when the split has such patients (:func:`_greedy_findings`). ``names``
    (``data.outputs``: the findings, or the classes) only name a finding or class in errors. Raises :class:`ConfigError` naming the class or
    finding when it has fewer than ``shots`` patients.
    """
    train = train.reset_index(drop=True)
    if shots == "all":
        keys = tuple(sorted(train["patient_key"].unique()))
        return SupportSet(shots, seed, np.arange(len(train)), keys)
    if "findings" in train.columns:
        chosen = _greedy_findings(finding_strata(train, names), int(shots), seed)
    else:
        labels = patient_labels(train)
        rng = np.random.default_rng(seed)
        chosen = []
        for label in sorted(labels.unique()):
            patients = np.array(labels.index[labels == label])
            order = rng.permutation(len(patients))  # a full permutation: smaller k is a prefix (nested)
            if len(patients) < int(shots):
                raise ConfigError(f"fewshot.shots={shots} needs {shots} training patients per class; "
                                  f"{_class_name(label, names)} has {len(patients)}")
            chosen += list(patients[order[: int(shots)]])
    positions = np.flatnonzero(train["patient_key"].isin(chosen).to_numpy())
    return SupportSet(shots, seed, positions, tuple(sorted(chosen)))


def check_shots(train: pd.DataFrame, fewshot: FewShotConfig, names: Sequence[str] | None = None) -> None:
    """Fail before any training when a shot count exceeds the patients of a class, or of a finding
    (or of "no finding") of a multi-label split; ``names`` (``data.outputs``) name them."""
    counts = _strata_counts(train, names)
    for k in fewshot.shots:
        if k != "all" and int(k) > counts.min():
            what = f"of {counts.idxmin()}" if "findings" not in train.columns else (
                f"with {counts.idxmin()}" if counts.idxmin() == NO_FINDING else f"positive for {counts.idxmin()}")
            raise ConfigError(f"fewshot.shots contains {k}, but the training split has only {counts.min()} patients "
                              f"{what}; use at most {counts.min()} or 'all'")
