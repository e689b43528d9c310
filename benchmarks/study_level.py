"""Study-level training (``preprocess.view.aggregate: attention``) against slice-level training + ``max`` / ``mean``.

Two data sets, each run through ``medlora run``'s own function (:func:`medlora.experiment.single.run_single`),
one configuration per fresh process (so its peak memory is its own):

* ``phantoms``: synthetic CT phantom *volumes* (``data.synth.lesion_slices``): every study is a series of
  ``--slices`` slices and an abnormal study shows its nodule on about ``--lesion-slices`` of them, so most
  slices of an abnormal study look normal. Slice-level training gives every slice its study's label.
* ``adrenal``: AdrenalMNIST3D (28³ shape masks, MedMNIST's official split), converted once with
  ``medlora datasets medmnist`` from ``../shared/data/medmnist/adrenalmnist3d.npz``.

For each aggregation (``max``, ``mean`` of slice scores; ``attention``) and seed it prints test AUROC with its
DeLong interval, the training time per epoch and the process's peak memory, then mean ± sd over seeds.
Every ``--k``-th slice of a volume is a sample (``view.kind: every_k``) for all three. The fourth row,
``volume``, is the volume ViT (``view.kind: volume``, :mod:`medlora.models.volume`): each volume resampled to
``--depth`` slices is one sample, cut into 3D patches of ``--tubelet`` slices × ``--volume-patch`` pixels,
with in-plane augmentation (the other rows train without; ``--volume-augment 0`` turns it off); ``--stem conv``
makes its tokens with a convolutional stem instead (random init, ``--methods full``). The reference row for
AdrenalMNIST3D is MedMNIST v2 (Yang et al. 2023) Table: ResNet-18 + 3D, AUROC 0.863, ACC 0.721.

    nice -n 10 .venv/bin/python benchmarks/study_level.py [--sets phantoms adrenal] [--seeds 0 1 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.harness import run_isolated  # noqa: E402

NPZ = REPO.parent / "shared" / "data" / "medmnist" / "adrenalmnist3d.npz"  # --npz elsewhere
AGGREGATIONS = ["max", "mean", "attention", "volume"]
MODEL = {"backbone": "vit_tiny_patch16_224", "pretrained": False,
         "kwargs": {"img_size": 32, "patch_size": 8, "depth": 4, "embed_dim": 96, "num_heads": 3, "global_pool": "avg"},
         "lora": {"r": 8, "alpha": 16, "targets": "attn_qkv"}}
PUBLISHED = {"adrenal": "MedMNIST v2 (Yang et al. 2023) Table, ResNet-18 + 3D: AUROC 0.863, ACC 0.721"}


def raw_config(dataset: str, work: Path, how: str, method: str, seed: int, epochs: int, args: Any) -> dict[str, Any]:
    """The run's config: the same model, optimiser and views for every aggregation."""
    base = {
        "pipeline": "classify",
        "preprocess": {"view": {"kind": "every_k", "k": args.k, "axis": 2, "aggregate": how, "max_slices": args.max_slices},
                       "image_size": args.size, "augment": False},
        "model": {**MODEL, "method": method, "kwargs": {**MODEL["kwargs"], "img_size": args.size}},
        "train": {"epochs": epochs, "batch_size": 32, "lr": args.lr, "warmup_epochs": 1, "patience": epochs,
                  "seed": seed, "threads": 1},
        "evaluate": {"bootstrap": 200},
        "tracking": {"uri": f"sqlite:///{work / 'mlflow.db'}"},
    }
    if dataset == "phantoms":
        synth = {"patients": args.patients, "images_per_patient": args.slices, "size": args.size, "abnormal_fraction": 0.5,
                 "seed": 7, "difficulty": args.difficulty, "lesion_slices": args.lesion_slices}
        data = {"name": "phantom_volumes", "root": str(work / "phantoms"), "synth": synth,
                "volume_min_slices": min(8, args.slices), "split": {"file": str(work / "phantoms_split.csv")}}
        base["preprocess"]["window"] = {"mode": "preset", "preset": "lung"}
    else:
        data = {"name": "adrenalmnist3d", "root": str(work / "adrenal"), "label_key": "path",
                "classes": ["normal", "hyperplasia"], "abnormal": "hyperplasia",
                "split": {"column": "split", "file": str(work / "adrenal_split.csv")}}
        base["preprocess"]["window"] = {"mode": "manual", "center": 128, "width": 256}
        base["model"]["kwargs"] = {**MODEL["kwargs"], "img_size": 28, "patch_size": 4}
        base["preprocess"]["image_size"] = 28
    if args.base:  # a pretrained 2D base (its card): its architecture, inflated for the volume rows
        from medlora.basecard import read

        base["model"]["weights"] = str(args.base.resolve())
        base["model"]["kwargs"] = dict(read(args.base)["timm_kwargs"])
        base["train"]["head_norm"] = True  # a masked autoencoder's features are far from unit scale (as the demo)
    if how == "volume":
        base["preprocess"]["view"] = {"kind": "volume", "depth": args.depth, "axis": 2}
        base["preprocess"]["augment"] = bool(args.volume_augment)
        base["model"]["tubelet"] = args.tubelet
        base["model"]["stem"] = args.stem
        base["model"]["kwargs"] = {**base["model"]["kwargs"], "patch_size": args.volume_patch}
    return {**base, "data": data}


def one_run(raw: dict[str, Any], out: str) -> dict[str, Any]:
    """Child process: one ``medlora run``; its test AUROC (DeLong interval), seconds per epoch, memory."""
    import logging

    logging.basicConfig(level=logging.WARNING)
    from medlora.config import config_from_dict
    from medlora.experiment.single import run_single

    cfg = config_from_dict(raw)
    m = run_single(cfg, Path(out)).metrics
    return {"auroc": m["test_auroc"], "lo": m.get("test_auroc_delong_ci_low", m["test_auroc_ci_low"]),
            "hi": m.get("test_auroc_delong_ci_high", m["test_auroc_ci_high"]), "val_auroc": m["val_auroc"],
            "epoch_s": m["train_seconds"] / cfg.train.epochs, "peak_mb": m["peak_memory_mb"],
            "trainable": m["trainable_params"]}


def convert_adrenal(work: Path, npz: Path = NPZ) -> None:
    from medlora.io.medmnist import convert_medmnist

    if not (work / "adrenal" / "labels.csv").is_file():
        convert_medmnist("adrenalmnist3d", work / "adrenal", npz=npz, size=28)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sets", nargs="+", default=["phantoms"], choices=["phantoms", "adrenal"])
    ap.add_argument("--aggregations", nargs="+", default=AGGREGATIONS, choices=AGGREGATIONS)
    ap.add_argument("--methods", nargs="+", default=["lora"], choices=["lora", "linear_probe", "full"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--patients", type=int, default=80)
    ap.add_argument("--slices", type=int, default=16)
    ap.add_argument("--lesion-slices", type=int, default=3)
    ap.add_argument("--difficulty", default="subtle", choices=["easy", "subtle"])
    ap.add_argument("--size", type=int, default=32, help="phantom image side (pixels)")
    ap.add_argument("--max-slices", type=int, default=16)
    ap.add_argument("--k", type=int, default=1, help="every k-th slice of a volume is a sample")
    ap.add_argument("--depth", type=int, default=28, help="volume: slices each volume is resampled to")
    ap.add_argument("--tubelet", type=int, default=7, help="volume: slices per 3D patch")
    ap.add_argument("--volume-patch", type=int, default=7, help="volume: in-plane patch size (7: 4 x 4 per slab at 28 px)")
    ap.add_argument("--stem", default="patch", choices=["patch", "conv"],
                    help="volume: one patchify convolution, or a convolutional stem (random init, --methods full)")
    ap.add_argument("--volume-augment", type=int, default=1, help="volume: in-plane flip and affine (1) or none (0)")
    ap.add_argument("--base", type=Path, default=None,
                    help="base_card.md of a pretrained 2D base for every row (its timm kwargs; inflated for volume)")
    ap.add_argument("--npz", type=Path, default=NPZ, help="adrenalmnist3d.npz")
    ap.add_argument("--work", type=Path, default=None, help="folder for data, runs and the MLflow store")
    ap.add_argument("--results", type=Path, default=None, help="also write the rows as JSON here")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 epochs, 24 patients, 8 slices, one seed")
    args = ap.parse_args(argv)
    if args.quick:
        args.epochs, args.patients, args.slices, args.seeds = 2, 24, 8, [0]
    work = args.work or Path(tempfile.mkdtemp(prefix="study-level-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for dataset in args.sets:
        if dataset == "adrenal":
            convert_adrenal(work, args.npz)
        for method in args.methods:
            for how in args.aggregations:
                for seed in args.seeds:
                    raw = raw_config(dataset, work, how, method, seed, args.epochs, args)
                    stem = "-conv" if args.stem == "conv" else ""
                    shape = f"-d{args.depth}t{args.tubelet}p{args.volume_patch}{stem}" if how == "volume" else ""
                    shape += f"-{args.base.parent.name}" if args.base else ""
                    name = f"{dataset}-{method}-{how}{shape}-e{args.epochs}-{seed}"
                    r = run_isolated("benchmarks.study_level:one_run", {"raw": raw, "out": str(work / "runs" / name)})
                    rows.append({"set": dataset, "method": method, "aggregate": how, "seed": seed, **r})
                    print(f"{dataset:9} {method:12} {how:9} seed {seed}: AUROC {r['auroc']:.3f} "
                          f"[{r['lo']:.3f}, {r['hi']:.3f}]  {r['epoch_s']:.1f} s/epoch  peak {r['rss_peak_mb']:.0f} MB",
                          flush=True)
                    if args.results:
                        args.results.write_text(json.dumps(rows, indent=1))
    print_table(rows)
    for dataset in args.sets:
        if dataset in PUBLISHED:
            print(f"reference ({dataset}): {PUBLISHED[dataset]}")
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    """Mean ± sd of test AUROC over seeds per set, method and aggregation, with time per epoch and memory."""
    print("\n| set | method | aggregate | test AUROC (mean ± sd) | per seed [DeLong 95 %] | s/epoch | peak MB |")
    print("|---|---|---|---|---|---|---|")
    keys = dict.fromkeys((r["set"], r["method"], r["aggregate"]) for r in rows)
    for key in keys:
        part = [r for r in rows if (r["set"], r["method"], r["aggregate"]) == key]
        a = [r["auroc"] for r in part]
        sd = statistics.stdev(a) if len(a) > 1 else 0.0
        seeds = "; ".join(f"{r['auroc']:.3f} [{r['lo']:.2f}, {r['hi']:.2f}]" for r in part)
        print(f"| {key[0]} | {key[1]} | {key[2]} | {statistics.mean(a):.3f} ± {sd:.3f} | {seeds} | "
              f"{statistics.mean(r['epoch_s'] for r in part):.1f} | {max(r['rss_peak_mb'] for r in part):.0f} |")


if __name__ == "__main__":
    sys.exit(main())
