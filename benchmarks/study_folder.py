"""The benchmark's study folder as both sides of the sweep benchmark read it: BreastMNIST written as DICOM
with a ``labels.csv`` (``path,label,split``), and the naive side's seeded k-per-class support sets.

Shared by :mod:`benchmarks.sweep` (the whole comparison) and :mod:`benchmarks.naive_loop` (one naive
point as a command), so neither imports the other.
"""

from __future__ import annotations

import csv
from pathlib import Path

CLASSES = ["malignant", "normal_or_benign"]  # BreastMNIST, label-index order; malignant is abnormal


def study_splits(root: Path) -> dict[str, tuple[list[Path], list[int]]]:
    out: dict[str, tuple[list[Path], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    with (root / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            out[row["split"]][0].append(root / row["path"])
            out[row["split"]][1].append(CLASSES.index(row["label"]))
    return out


def support_indices(labels: list[int], shots: int | str, seed: int) -> list[int]:
    """k images per class (nested across k for one seed), or all."""
    import numpy as np

    if str(shots) == "all":
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in sorted(set(labels)):
        idx = np.flatnonzero(np.asarray(labels) == c)
        chosen += idx[rng.permutation(len(idx))[: int(shots)]].tolist()
    return sorted(chosen)
