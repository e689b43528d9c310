"""Benchmark inputs written into a temporary folder (never into the repository).

* :func:`ct_study_folder`: the shared 512×512 CT slices (``shared/data/dicom/ct_3slice``) copied
  ``n`` times, with a ``labels.csv`` keyed by path, alternating labels. Real DICOM decoding cost,
  any dataset size.
* :func:`medmnist_study_folder`: BreastMNIST written as DICOM by medlora's own converter, with
  MedMNIST's official split (the few-shot sweep's data).
* :func:`phantom_study_folder`: medlora's synthetic CT phantoms, where the shared data is absent.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

from benchmarks.harness import REPO

# the shared data beside the repository, or where MEDLORA_SHARED_DATA says (e.g. from a git worktree)
SHARED_DATA = Path(os.environ.get("MEDLORA_SHARED_DATA", REPO.parent / "shared" / "data"))
CT_DIR = SHARED_DATA / "dicom" / "ct_3slice"
BREAST_NPZ = SHARED_DATA / "medmnist" / "breastmnist.npz"


def ct_study_folder(out: Path, n: int) -> tuple[list[Path], list[int]]:
    """``n`` DICOM files (copies of the shared CT slices, else 64 px phantoms) and their labels."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sources = sorted(CT_DIR.glob("*.dcm")) if CT_DIR.is_dir() else []
    if not sources:
        sources = phantom_study_folder(out / "_phantoms", 6)
    paths, labels = [], []
    for i in range(n):
        dst = out / f"img{i:04d}.dcm"
        if not dst.exists():
            shutil.copyfile(sources[i % len(sources)], dst)
        paths.append(dst)
        labels.append(i % 2)
    with (out / "labels.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label"])
        w.writerows((p.name, lab) for p, lab in zip(paths, labels, strict=True))
    return paths, labels


def phantom_study_folder(out: Path, patients: int, size: int = 64) -> list[Path]:
    """medlora's synthetic phantoms (real DICOM files) as a stand-in for the shared CT slices."""
    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms

    write_phantoms(out, SynthConfig(patients=max(patients, 6), images_per_patient=1, size=size, seed=0))
    return sorted(p for p in out.rglob("*") if p.is_file() and p.suffix not in {".csv", ".json", ".md"})


def medmnist_study_folder(out: Path, limit: int | None) -> Path:
    """BreastMNIST (28 px) as DICOM + labels.csv (official split) via :func:`medlora.io.medmnist.convert_medmnist`."""
    from medlora.io.medmnist import convert_medmnist

    out = Path(out)
    if not (out / "labels.csv").exists():
        convert_medmnist("breastmnist", out, npz=BREAST_NPZ, limit=limit, card=REPO / "data_cards" / "breastmnist.md")
    return out
