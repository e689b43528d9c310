"""A few-shot sweep (methods × shots × seeds) run by medlora vs the same runs one after another naively.

medlora: ``pipelines/fewshot.py`` (:func:`medlora.sweep.driver.run_sweep`): one ingest, one cached
dataset, one base model, linear probes on features computed once, every point an MLflow child
run with study-level evaluation (AUROC with bootstrap intervals, operating point, DeLong tests).
Naive: :func:`benchmarks.naive_loop.naive_run` per point, each decoding its DICOM files every epoch
and building its own model, reporting validation and test AUROC.

Two ways of timing, both reported (``mode``):

* ``commands`` (end to end): what a user waits for. The naive sequence is the naive script run once
  per point (``python -m benchmarks.naive_loop ROOT METHOD SHOTS SEED``, 36 commands one after
  another, each paying Python start-up and its imports); medlora is one ``medlora run CONFIG``.
* ``in_process``: both sides in one process with imports paid before the clock starts: the
  naive sequence as a loop over :func:`~benchmarks.naive_loop.naive_run`, medlora as
  :func:`pipelines.fewshot.run`. The strictest comparison: only the sweep's own work is timed.

Both sides use the same DICOM files (BreastMNIST written by medlora's converter, official split),
model, epochs, batch size, learning rate and support-set sizes (k images per class; MedMNIST has one
image per patient). No early stopping on either side (patience = epochs): both keep the best
validation epoch. Imports are timed apart (``import_s``: MONAI and MLflow take seconds). The support sets are drawn by each side's own seeded rule, so the images (and
AUROCs) differ run by run; the mean test AUROC per method is reported as a sanity check.
"""

from __future__ import annotations

import importlib
import tempfile
import time
from pathlib import Path

from benchmarks.study_folder import CLASSES, study_splits, support_indices

IMPORTS = {"naive": ["timm", "peft", "pydicom", "PIL.Image", "torchvision.transforms.v2", "sklearn.metrics",
                     "benchmarks.naive_loop"],
           "medlora": ["timm", "peft", "pydicom", "monai", "mlflow", "pipelines.fewshot"]}


def naive_sweep(root: Path, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int, lr: float,
                shots: list, seeds: list[int], methods: list[str]) -> list[dict]:
    splits = study_splits(root)
    tr_paths, tr_labels = splits["train"]
    rows = []
    for k in shots:
        for seed in seeds:
            pos = support_indices(tr_labels, k, seed)
            train = ([tr_paths[i] for i in pos], [tr_labels[i] for i in pos])
            for method in methods:
                from benchmarks.naive_loop import naive_run

                res = naive_run(train, splits["val"], splits["test"], method, size, model_name, model_kwargs,
                                epochs, batch, lr, seed, abnormal=0)
                rows.append({"method": method, "shots": str(k), "seed": seed, **res})
    return rows


def medlora_config(root: Path, work: Path, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int,
                   lr: float, shots: list, seeds: list[int], methods: list[str], bootstrap: int) -> dict:
    return {
        "pipeline": "fewshot",
        "data": {"name": "breastmnist_bench", "root": str(root), "label_key": "path", "classes": CLASSES,
                 "abnormal": "malignant", "split": {"column": "split", "file": str(work / "split.csv")}},
        "preprocess": {"window": {"mode": "manual", "center": 128, "width": 256}, "image_size": size},
        "model": {"backbone": model_name, "kwargs": model_kwargs},
        "train": {"epochs": epochs, "batch_size": batch, "lr": lr, "warmup_epochs": 0, "patience": epochs},
        "evaluate": {"bootstrap": bootstrap},
        "tracking": {"uri": f"sqlite:///{work / 'mlflow.db'}"},
        "fewshot": {"shots": shots, "seeds": seeds, "methods": methods},
    }


def medlora_rows(out: Path) -> list[dict]:
    import pandas as pd

    children = pd.read_csv(out / "children.csv")
    cols = [c for c in ("method", "shots", "seed", "val_auroc", "test_auroc") if c in children.columns]
    return children[cols].to_dict("records")


def medlora_sweep(root: Path, work: Path, *args) -> list[dict]:
    from medlora.config import config_from_dict
    from pipelines.fewshot import run

    run(config_from_dict(medlora_config(root, work, *args)), work / "out")
    return medlora_rows(work / "out")


def _command(cmd: list[str]) -> str:
    import subprocess
    import sys

    from benchmarks.harness import REPO

    proc = subprocess.run([sys.executable, *cmd], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def naive_commands(root: Path, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int, lr: float,
                   shots: list, seeds: list[int], methods: list[str]) -> list[dict]:
    """The naive script once per point, one command after another."""
    import json

    rows = []
    for k in shots:
        for seed in seeds:
            for method in methods:
                out = _command(["-m", "benchmarks.naive_loop", str(root), method, str(k), str(seed), "--model", model_name,
                                "--kwargs", json.dumps(model_kwargs), "--size", str(size), "--epochs", str(epochs),
                                "--batch", str(batch), "--lr", str(lr)])
                rows.append({"method": method, "shots": str(k), "seed": seed, **json.loads(out.splitlines()[-1])})
    return rows


def medlora_command(root: Path, work: Path, *args) -> list[dict]:
    """``medlora run CONFIG``: the whole sweep as one command."""
    import yaml

    cfg_file = work / "sweep.yaml"
    cfg_file.write_text(yaml.safe_dump(medlora_config(root, work, *args), sort_keys=False))
    _command(["-m", "medlora.cli", "run", str(cfg_file), "--out", str(work / "out")])
    return medlora_rows(work / "out")


def measure_sweep(impl: str, model_name: str, model_kwargs: dict, size: int, epochs: int, batch: int, lr: float,
                  shots: list, seeds: list[int], methods: list[str], limit: int | None, bootstrap: int = 200,
                  data_dir: str | None = None, mode: str = "in_process") -> dict:
    """Wall-clock seconds of the whole sweep and each point's validation/test AUROC (``mode``: see above)."""
    from benchmarks.datasets import medmnist_study_folder
    from medlora.device import configure_threads

    root = medmnist_study_folder(Path(data_dir or tempfile.mkdtemp(prefix="medlora-bench-breast-")), limit)
    kwargs = {**model_kwargs, "img_size": size}
    if mode == "commands":
        with tempfile.TemporaryDirectory(prefix="medlora-bench-sweep-") as work:
            t0 = time.perf_counter()
            if impl == "naive":
                rows = naive_commands(root, model_name, kwargs, size, epochs, batch, lr, shots, seeds, methods)
            else:
                rows = medlora_command(root, Path(work), model_name, kwargs, size, epochs, batch, lr, shots, seeds,
                                       methods, bootstrap)
            seconds = time.perf_counter() - t0
        return _result(impl, mode, seconds, None, rows)
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
    return _result(impl, mode, seconds, import_s, rows)


def _result(impl: str, mode: str, seconds: float, import_s: float | None, rows: list[dict]) -> dict:
    by_method: dict[str, list[float]] = {}
    for r in rows:
        by_method.setdefault(r["method"], []).append(float(r["test_auroc"]))
    return {"impl": impl, "mode": mode, "seconds": seconds, "import_s": import_s, "points": len(rows), "runs": rows,
            "mean_test_auroc": {m: round(sum(v) / len(v), 3) for m, v in by_method.items()}}
