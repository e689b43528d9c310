"""A few-shot sweep (methods × shots × seeds) run by medlora vs the same runs one after another naively.

medlora: ``pipelines/fewshot.py`` (:func:`medlora.train.sweep.run_sweep`): one ingest, one cached
dataset, one base model, linear probes on features computed once, every point an MLflow child
run with study-level evaluation (AUROC with bootstrap intervals, operating point, DeLong tests).
Naive: :func:`benchmarks.naive_loop.naive_run` per point, each decoding its DICOM files every epoch
and building its own model, reporting validation and test AUROC.

Both sides use the same DICOM files (BreastMNIST written by medlora's converter, official split),
model, epochs, batch size, learning rate and support-set sizes (k images per class; MedMNIST has one
image per patient). No early stopping on either side (patience = epochs): both keep the best
validation epoch. Imports are timed apart (``import_s``: MONAI and MLflow take seconds). The support sets are drawn by each side's own seeded rule, so the images (and
AUROCs) differ run by run; the mean test AUROC per method is reported as a sanity check.
"""

from __future__ import annotations

import csv
import importlib
import tempfile
import time
from pathlib import Path

CLASSES = ["malignant", "normal_or_benign"]  # BreastMNIST, label-index order; malignant is abnormal
IMPORTS = {"naive": ["timm", "peft", "pydicom", "PIL.Image", "torchvision.transforms.v2", "sklearn.metrics",
                     "benchmarks.naive_loop"],
           "medlora": ["timm", "peft", "pydicom", "monai", "mlflow", "pipelines.fewshot"]}


def _splits(root: Path) -> dict[str, tuple[list[Path], list[int]]]:
    out: dict[str, tuple[list[Path], list[int]]] = {s: ([], []) for s in ("train", "val", "test")}
    with (root / "labels.csv").open() as f:
        for row in csv.DictReader(f):
            out[row["split"]][0].append(root / row["path"])
            out[row["split"]][1].append(CLASSES.index(row["label"]))
    return out


def _support(labels: list[int], shots: int | str, seed: int) -> list[int]:
    """k images per class (nested across k for one seed), or all."""
    import numpy as np

    if shots == "all":
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in sorted(set(labels)):
        idx = np.flatnonzero(np.asarray(labels) == c)
        chosen += idx[rng.permutation(len(idx))[: int(shots)]].tolist()
    return sorted(chosen)


def naive_sweep(root: Path, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int, lr: float,
                shots: list, seeds: list[int], methods: list[str]) -> list[dict]:
    splits = _splits(root)
    tr_paths, tr_labels = splits["train"]
    rows = []
    for k in shots:
        for seed in seeds:
            pos = _support(tr_labels, k, seed)
            train = ([tr_paths[i] for i in pos], [tr_labels[i] for i in pos])
            for method in methods:
                from benchmarks.naive_loop import naive_run

                res = naive_run(train, splits["val"], splits["test"], method, size, model_name, model_kwargs,
                                epochs, batch, lr, seed, abnormal=0)
                rows.append({"method": method, "shots": str(k), "seed": seed, **res})
    return rows


def medlora_sweep(root: Path, work: Path, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int,
                  lr: float, shots: list, seeds: list[int], methods: list[str], bootstrap: int) -> list[dict]:
    import pandas as pd

    from medlora.config import config_from_dict
    from pipelines.fewshot import run

    cfg = config_from_dict({
        "pipeline": "fewshot",
        "data": {"name": "breastmnist_bench", "root": str(root), "label_key": "path", "classes": CLASSES,
                 "abnormal": "malignant", "split": {"column": "split", "file": str(work / "split.csv")}},
        "preprocess": {"window": {"mode": "manual", "center": 128, "width": 256}, "image_size": size},
        "model": {"backbone": model_name, "kwargs": model_kwargs},
        "train": {"epochs": epochs, "batch_size": batch, "lr": lr, "warmup_epochs": 0, "patience": epochs},
        "evaluate": {"bootstrap": bootstrap},
        "tracking": {"uri": f"sqlite:///{work / 'mlflow.db'}"},
        "fewshot": {"shots": shots, "seeds": seeds, "methods": methods},
    })
    run(cfg, work / "out")
    children = pd.read_csv(work / "out" / "children.csv")
    cols = [c for c in ("method", "shots", "seed", "val_auroc", "test_auroc") if c in children.columns]
    return children[cols].to_dict("records")


def measure_sweep(impl: str, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int, lr: float,
                  shots: list, seeds: list[int], methods: list[str], limit: int | None, bootstrap: int = 200,
                  data_dir: str | None = None) -> dict:
    """Wall-clock seconds of the whole sweep and each point's validation/test AUROC."""
    from benchmarks.datasets import medmnist_study_folder
    from medlora.device import configure_threads

    root = medmnist_study_folder(Path(data_dir or tempfile.mkdtemp(prefix="medlora-bench-breast-")), limit)
    kwargs = {**model_kwargs, "img_size": size}
    t_import = time.perf_counter()
    for module in IMPORTS[impl]:  # import cost is paid once per process, not per sweep: timed apart
        importlib.import_module(module)
    import_s = time.perf_counter() - t_import
    with tempfile.TemporaryDirectory(prefix="medlora-bench-sweep-") as work:
        t0 = time.perf_counter()
        if impl == "naive":
            rows = naive_sweep(root, model_name, kwargs, size, epochs, batch, lr, shots, seeds, methods)
        else:
            configure_threads(None)
            rows = medlora_sweep(root, Path(work), model_name, kwargs, size, epochs, batch, lr, shots, seeds,
                                 methods, bootstrap)
        seconds = time.perf_counter() - t0
    by_method: dict[str, list[float]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(float(r["test_auroc"]))
    return {"impl": impl, "seconds": seconds, "import_s": import_s, "points": len(rows), "runs": rows,
            "mean_test_auroc": {m: sum(v) / len(v) for m, v in by_method.items()}}
