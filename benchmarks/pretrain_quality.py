"""Is a base medlora pretrains on a dataset's own training images worth more than a random base?

For BreastMNIST and PneumoniaMNIST (28 px, the local npz files converted with ``medlora datasets
medmnist``), one run prints side by side the test AUROC (mean ± sd over 3 seeds) of
{random init, medlora-pretrained (masked autoencoder on the training images, labels unused)} ×
{lora, linear_probe, full} × {10 shots per class, all training images}, the pretraining wall time,
and the MAE step cost against a full forward+backward of the same batch (target ≤ 0.5×).

Targets (issue 13): pretrained beats random by ≥ 0.05 AUROC for LoRA and full fine-tuning with all
data on both sets; at 10 shots LoRA on the pretrained base is not worse than full fine-tuning.

Everything goes through the library (``run_pretrain``, ``run_sweep``), tracked in an MLflow store under
``--work``; a rerun reuses the converted data, the pretrained bases and every finished sweep point.
Sizes are chosen for a shared 2-core CPU (see ``SETTINGS``); ``--quick`` is a smoke test.

    nice -n 10 .venv/bin/python benchmarks/pretrain_quality.py [--quick] [--datasets breastmnist ...]

``--protocol medmnist+`` puts the rows on the published MedMNIST+ footing instead: every label, one base per
pretraining seed (each adapted once, so the ± holds the pretraining's variance), fine-tuning run to convergence
(:data:`PROTOCOL`), every base adapted with a standardised head (:data:`PROTOCOL_SETS`); each cell then lists the
seeds' values after mean ± sd. ``--set KEY=VALUE`` overrides the adaptation config further (its sweeps get their own
folders).
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_NPZ = REPO.parent / "shared" / "data" / "medmnist"
NPZ = DEFAULT_NPZ  # --npz-dir
SIZE = 28  # --size: 28 (the npz files above) or 64 (MedMNIST+'s <name>_64.npz), patch 4 or 8
METHODS = ["lora", "linear_probe", "full"]
BASES = ["random init", "medlora-pretrained"]
DATASETS: dict[str, dict[str, Any]] = {
    "breastmnist": {"classes": ["malignant", "normal_or_benign"], "abnormal": "malignant", "limit": None},
    # every image by default (3872 training images: about an hour on one core); --limit 300 for a quick look
    "pneumoniamnist": {"classes": ["normal", "pneumonia"], "abnormal": "pneumonia", "limit": None},
}
# configs/breastmnist.yaml's ViT-Ti/4 at 28 px with 4 blocks ("--width full", 192 wide, 3 heads), or at half
# its width ("--width half", 96 wide) so that 72 trainings and two pretrainings fit in about an hour on a
# busy shared 2-core CPU
WIDTHS = {"full": {"embed_dim": 192, "num_heads": 3}, "half": {"embed_dim": 96, "num_heads": 3}}
MODEL = {"backbone": "vit_tiny_patch16_224",
         "kwargs": {"img_size": 28, "patch_size": 4, "depth": 4, **WIDTHS["full"], "global_pool": "avg"}}
SETTINGS = {
    "pretrain": {"epochs": 30, "batch_size": 64, "lr": 0.0015, "warmup_epochs": 3, "mask_ratio": 0.75,
                 "decoder_dim": 128, "decoder_depth": 1, "decoder_heads": 4},
    "all": {"epochs": 4, "batch_size": 64, "lr": 0.003, "warmup_epochs": 1, "patience": 3},
    "10": {"epochs": 12, "batch_size": 32, "lr": 0.003, "warmup_epochs": 2, "patience": 5},
    "overrides": {"full": {"lr": 0.0003}, "linear_probe": {"lr": 0.01, "epochs": 30, "patience": 10}},
}
# `--protocol medmnist+`: the published rows' footing (every training label, one training per seed, each seed its
# own pretraining) with fine-tuning long enough to converge: the defaults above (4 epochs with all data) stop
# BreastMNIST's random-init LoRA at 0.63, where 40 epochs reach 0.77. Per set: MAE epochs, fine-tuning epochs, patience
# (BreastMNIST's 545 images make 9 steps an epoch: 200 MAE epochs are 1,800 steps; PneumoniaMNIST's 3,872 make 61).
PROTOCOL = {"breastmnist": {"pretrain_epochs": 200, "epochs": 60, "patience": 15},
            "pneumoniamnist": {"pretrain_epochs": 30, "epochs": 15, "patience": 5}}
# `--protocol medmnist+` adapts every base, random or pretrained, with the head trained on standardised features
# (README, "Pretraining a base"): a masked autoencoder's features are far from unit scale, and LoRA on them with a raw
# head gave BreastMNIST 0.839 ± 0.018 where the standardised head gives 0.897 ± 0.012 (benchmarks/RESULTS.md)
PROTOCOL_SETS = ["train.head_norm=true"]
ADAPT_SETS: list[str] = []  # the protocol's and --set's overrides of the adaptation config
QUICK = {"pretrain": {"epochs": 1}, "all": {"epochs": 1}, "10": {"epochs": 1}, "limit": 40, "seeds": [0, 1], "few": "2"}


def npz_file(name: str) -> Path:
    """The local npz of ``name`` at :data:`SIZE` (MedMNIST's 28 px file, or MedMNIST+'s ``_64``)."""
    return NPZ / (f"{name}.npz" if SIZE == 28 else f"{name}_{SIZE}.npz")


def convert(name: str, work: Path, limit: int | None) -> Path:
    """The DICOM study folder of ``name`` under ``work`` (written once)."""
    from medlora.io.medmnist import convert_medmnist

    root = work / "data" / f"{name}-{limit or 'all'}{'' if SIZE == 28 else f'-{SIZE}px'}"
    if not (root / "labels.csv").is_file():
        convert_medmnist(name, root, npz=npz_file(name), size=SIZE, limit=limit, card=REPO / "data_cards" / f"{name}.md")
    return root


def raw_config(name: str, root: Path, work: Path, train: dict[str, Any], quick: bool,
               seeds: list[int]) -> dict[str, Any]:
    info = DATASETS[name]
    return {
        "pipeline": "fewshot",
        "data": {"name": f"{name}_bench", "root": str(root), "label_key": "path", "classes": info["classes"],
                 "abnormal": info["abnormal"], "card": str(REPO / "data_cards" / f"{name}.md"),
                 "split": {"column": "split", "file": str(work / "splits" / f"{root.name}.csv")}},
        "preprocess": {"window": {"mode": "manual", "center": 128, "width": 256}, "image_size": SIZE},
        "model": dict(MODEL),
        "train": {**train, "threads": 1},
        "evaluate": {"bootstrap": 100},
        "tracking": {"uri": f"sqlite:///{work / name / 'mlflow.db'}"},  # one store per set: sets may run in parallel
        "fewshot": {"methods": METHODS, "seeds": seeds, "overrides": SETTINGS["overrides"]},
    }


def step_cost(cfg: Any, batch: int = 64, repeats: int = 4, size: int = 28) -> dict[str, float]:
    """Median seconds of one MAE step and one full fine-tuning step (forward+backward+AdamW) on the same
    batch, interleaved so that load on a shared machine hits both alike; wall time and this process's CPU
    time (with one torch thread, the CPU time is the step's own work, whatever else the machine runs).
    ``ratio`` is of the CPU times."""
    import torch

    from medlora.device import configure_threads
    from medlora.experiment.pretrain import build_mae
    from medlora.models.backbone import create_base
    from medlora.train.pretrain import optimizer_for

    configure_threads(cfg.train.threads)  # one thread: CPU time is the step's work, not other threads' spinning
    mae, _ = build_mae(cfg)
    clf, _ = create_base(cfg.model, 2, seed=0, save_init=False)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 2, (batch,))
    opt_mae, opt_clf = optimizer_for(mae, cfg.pretrain), torch.optim.AdamW(clf.parameters(), lr=1e-4)

    def mae_step() -> None:
        loss = mae(x).loss
        opt_mae.zero_grad()
        loss.backward()
        opt_mae.step()

    def full_step() -> None:
        loss = torch.nn.functional.cross_entropy(clf(x), y)
        opt_clf.zero_grad()
        loss.backward()
        opt_clf.step()

    wall: dict[str, list[float]] = {"mae": [], "full": []}
    cpu: dict[str, list[float]] = {"mae": [], "full": []}
    for i in range(repeats + 2):
        for name, step in (("mae", mae_step), ("full", full_step)):
            t0, c0 = time.perf_counter(), time.process_time()
            step()
            if i >= 2:  # two warm-up rounds
                wall[name].append(time.perf_counter() - t0)
                cpu[name].append(time.process_time() - c0)
    med = {f"{k}_{n}": statistics.median(v[n]) for k, v in (("wall", wall), ("cpu", cpu)) for n in v}
    return {"mae_step_s": med["cpu_mae"], "full_step_s": med["cpu_full"], "ratio": med["cpu_mae"] / med["cpu_full"],
            "wall_ratio": med["wall_mae"] / med["wall_full"], **med}


def sweep(raw: dict[str, Any], shots: str, out: Path) -> list[dict[str, Any]]:
    """One few-shot sweep (one shot count: its own epochs) → rows of method, shots, mean, sd, seeds."""
    import pandas as pd

    from medlora.config import config_from_dict
    from medlora.sweep.driver import run_sweep
    from medlora.transforms.samples import prepare_samples

    cfg = config_from_dict({**raw, "fewshot": {**raw["fewshot"], "shots": [int(shots) if shots != "all" else "all"]}})
    run_sweep(cfg, prepare_samples(cfg.data, cfg.preprocess), out)
    table = pd.read_csv(out / "summary.csv")
    return [{"method": r.method, "shots": str(r.shots), "mean": r.test_auroc_mean, "sd": r.test_auroc_sd,
             "seeds": int(r.n_seeds)} for r in table.itertuples()]


def pretrain(name: str, root: Path, work: Path, quick: bool, seed: int) -> tuple[Any, dict[str, Any]]:
    """The base pretrained (or reused) on ``name``'s training images with ``train.seed = seed``."""
    from medlora.config import config_from_dict
    from medlora.experiment.pretrain import run_pretrain

    q = QUICK if quick else {}
    pre = {**SETTINGS["pretrain"], **q.get("pretrain", {}), "out": str(work / "bases")}
    raw = raw_config(name, root, work, {**SETTINGS["all"], **q.get("all", {})}, quick, [seed])
    cfg = config_from_dict({**raw, "pretrain": pre, "train": {**raw["train"], "seed": seed}})
    t0 = time.perf_counter()
    summary = run_pretrain(cfg)
    info = {"seed": seed, "wall_s": time.perf_counter() - t0, "reused": summary.reused,
            "train_s": summary.record["pretraining"]["seconds"], "images": summary.record["data"]["images"],
            "epochs": pre["epochs"], "final_loss": summary.record["pretraining"]["final_loss"],
            "card": str(summary.card), "weights": str(summary.weights)}
    print(f"[{name}] pretrained base (seed {seed}): {summary.describe()}", flush=True)
    return cfg, info


def bench_dataset(name: str, work: Path, quick: bool, seeds: list[int], pretrain_seeds: list[int] | None = None,
                  shot_counts: tuple[str, ...] = ("all", "10")) -> dict[str, Any]:
    """Random init against medlora-pretrained for every method and shot count. One base, swept with every seed
    in ``seeds``; or, with ``pretrain_seeds``, one base per pretraining seed, each adapted with that seed alone, so
    that the ± holds the pretraining's own variance too (MedMNIST+'s protocol: one training per seed)."""
    from medlora.config import apply_overrides

    root = convert(name, work, QUICK["limit"] if quick else DATASETS[name]["limit"])
    (work / name).mkdir(parents=True, exist_ok=True)
    q = QUICK if quick else {}
    few = q.get("few", "10")
    result: dict[str, Any] = {"dataset": name, "root": root.name, "rows": [], "bases": [], "adapt_sets": list(ADAPT_SETS)}
    pairs = [(s, [s]) for s in pretrain_seeds] if pretrain_seeds else [(0, QUICK["seeds"] if quick else seeds)]
    for pseed, _ in pairs:
        cfg, info = pretrain(name, root, work, quick, pseed)
        result["bases"].append(info)
    result["pretrain"] = {**result["bases"][0], "final_loss": statistics.mean(b["final_loss"] for b in result["bases"]),
                          "train_s": statistics.mean(b["train_s"] for b in result["bases"])}
    result["step_cost"] = step_cost(cfg, size=SIZE)
    print(f"[{name}] step cost: {result['step_cost']}", flush=True)
    # all data first, random and pretrained side by side: the pairs the targets compare come first
    for shots in [few if s == "10" else s for s in shot_counts]:
        kind = "10" if shots == few else "all"
        per_base: dict[str, list[dict[str, Any]]] = {}
        for (pseed, sweep_seeds), info in zip(pairs, result["bases"], strict=True):
            weights_of = {"random init": None, "medlora-pretrained": info["weights"]}
            for base in BASES:
                weights = weights_of[base]
                raw = raw_config(name, root, work, {**SETTINGS[kind], **q.get(kind, {})}, quick, sweep_seeds)
                raw["model"] = {**raw["model"], **({"weights": weights} if weights else {})}
                raw = apply_overrides(copy.deepcopy(raw), ADAPT_SETS)
                tag = ("pretrained" if weights else "random") + (f"-p{pseed}" if pretrain_seeds else "") + sets_tag()
                per_base.setdefault(base, []).extend(sweep(raw, shots, work / "sweeps" / f"{root.name}-{tag}-{shots}"))
                print(f"[{name}] {base} {shots} shots{f' (seed {pseed})' if pretrain_seeds else ''} done", flush=True)
        for base, rows in per_base.items():
            result["rows"] += pooled(base, rows) if pretrain_seeds else [{"base": base, **r} for r in rows]
    return result


def sets_tag() -> str:
    """A sweep folder suffix naming the adaptation overrides (:data:`ADAPT_SETS`; none: no suffix, the folders of
    runs made before there were any), so that differently adapted sweeps never reuse each other's points."""
    if not ADAPT_SETS:
        return ""
    return "-set" + hashlib.sha256("\n".join(ADAPT_SETS).encode()).hexdigest()[:8]


def pooled(base: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method and shot count from one-seed sweeps: mean and sd over the seeds."""
    out = []
    for key in dict.fromkeys((r["method"], r["shots"]) for r in rows):
        means = [r["mean"] for r in rows if (r["method"], r["shots"]) == key]
        out.append({"base": base, "method": key[0], "shots": key[1], "mean": statistics.mean(means),
                    "sd": statistics.stdev(means) if len(means) > 1 else float("nan"), "seeds": len(means),
                    "values": means})
    return out


def cell(rows: list[dict[str, Any]], base: str, method: str, shots: str) -> str:
    for r in rows:
        if (r["base"], r["method"], r["shots"]) == (base, method, shots):
            sd = f" ± {r['sd']:.3f}" if r["sd"] == r["sd"] else ""
            each = f" ({' / '.join(f'{v:.3f}' for v in r['values'])})" if len(r.get("values", [])) > 1 else ""
            return f"{r['mean']:.3f}{sd}{each}"
    return "n/a"


def report(results: list[dict[str, Any]]) -> str:
    lines = ["test AUROC, mean ± sd over seeds (study level)" + (f"; adaptation with {', '.join(ADAPT_SETS)}"
                                                                 if ADAPT_SETS else ""), ""]
    for res in results:
        pre, cost = res["pretrain"], res["step_cost"]
        lines += [f"## {res['dataset']} ({res['root']})",
                  f"pretraining: {pre['images']} training images, {pre['epochs']} epochs, {pre['train_s']:.0f} s of "
                  f"training ({pre['wall_s']:.0f} s wall{', reused' if pre['reused'] else ''}), final loss "
                  f"{pre['final_loss']:.4f}" + (f" (mean of {len(res['bases'])} bases, pretraining seeds "
                                                 f"{[b['seed'] for b in res['bases']]})" if len(res.get('bases', [])) > 1 else ""),
                  f"MAE step {cost['mae_step_s'] * 1000:.0f} ms vs full forward+backward {cost['full_step_s'] * 1000:.0f} ms "
                  f"(CPU time) on the same batch of 64: {cost['ratio']:.2f}x (target <= 0.5x)", "",
                  "| method | shots | random init | medlora-pretrained | gain |", "|---|---|---|---|---|"]
        for shots in sorted({r["shots"] for r in res["rows"]}, key=lambda s: (s == "all", s)):
            for method in METHODS:
                a, b = cell(res["rows"], "random init", method, shots), cell(res["rows"], "medlora-pretrained", method, shots)
                gain = f"{float(b.split()[0]) - float(a.split()[0]):+.3f}" if "n/a" not in (a, b) else "n/a"
                lines.append(f"| {method} | {shots} | {a} | {b} | {gain} |")
        lines.append("")
    return "\n".join(lines)


def bench_config() -> Any:
    """This benchmark's own model and pretrain settings (no data needed to measure a step)."""
    from medlora.config import config_from_dict

    work = Path(tempfile.gettempdir())
    raw = raw_config("breastmnist", work, work, SETTINGS["all"], False, [0])
    return config_from_dict({**raw, "pretrain": SETTINGS["pretrain"]})


def measure_configs(paths: list[str]) -> int:
    """The step cost for each config's own model, input size and decoder (no data needed)."""
    from medlora.config import load_config

    for path in paths:
        cfg = bench_config() if path == "bench" else load_config(path)
        size = cfg.preprocess.image_size
        cost = step_cost(cfg.model_copy(update={"train": cfg.train.model_copy(update={"threads": 1})}), size=size)
        p = cfg.pretrain
        print(f"{path}: {cfg.model.backbone} {cfg.model.kwargs} at {size} px, decoder {p.decoder_dim}x{p.decoder_depth}, "
              f"mask {p.mask_ratio}, batch 64: CPU time per step MAE {cost['mae_step_s'] * 1000:.0f} ms, full "
              f"{cost['full_step_s'] * 1000:.0f} ms, ratio {cost['ratio']:.2f} (wall-time ratio {cost['wall_ratio']:.2f})",
              flush=True)
    return 0


DEFAULTS = {"pretrain": SETTINGS["pretrain"]["epochs"], **{k: SETTINGS["all"][k] for k in ("epochs", "patience",
                                                                                        "warmup_epochs")}}


def settle(pretrain_epochs: int | None, epochs: int | None, patience: int | None) -> None:
    """Set the MAE epochs and the all-data fine-tuning's epochs and patience (None: the short defaults); the
    warm-up is a twentieth of the epochs, at least the default's one."""
    epochs = epochs or DEFAULTS["epochs"]
    SETTINGS["pretrain"]["epochs"] = pretrain_epochs or DEFAULTS["pretrain"]
    SETTINGS["all"].update(epochs=epochs, patience=patience or DEFAULTS["patience"],
                           warmup_epochs=max(DEFAULTS["warmup_epochs"], epochs // 20))


def main(argv: list[str] | None = None) -> int:
    import logging

    global NPZ, SIZE

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    p.add_argument("--work", default=str(REPO / "runs" / "bench" / "pretrain_quality"))
    p.add_argument("--npz-dir", default=str(DEFAULT_NPZ), help="folder of breastmnist.npz / pneumoniamnist.npz")
    p.add_argument("--step-cost", nargs="+", metavar="CONFIG",
                   help="only measure the MAE step against a full step for these configs' model and pretrain settings "
                        "('bench': this benchmark's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="sweep seeds (default 0 1 2)")
    p.add_argument("--quick", action="store_true", help="smoke test: 1 epoch, 40 images per split, 2 seeds")
    p.add_argument("--width", choices=list(WIDTHS), default="full",
                   help="the ViT's width: configs/breastmnist.yaml's (full, default) or half of it")
    p.add_argument("--decoder-depth", type=int, default=SETTINGS["pretrain"]["decoder_depth"],
                   help="MAE decoder blocks (default %(default)s)")
    p.add_argument("--size", type=int, choices=[28, 64], default=28,
                   help="image side: 28 (ViT patch 4) or 64 (MedMNIST+ <name>_64.npz, patch 8: 64 tokens)")
    p.add_argument("--limit", type=int, default=None,
                   help="at most this many images per split (0 or unset: all)")
    p.add_argument("--protocol", choices=["short", "medmnist+"], default="short",
                   help="short (default): one base per set, 4 fine-tuning epochs with all data, 10 shots too; "
                        "medmnist+: all data only, a base per pretraining seed (0 1 2), the epochs of PROTOCOL")
    p.add_argument("--pretrain-seeds", type=int, nargs="+", metavar="SEED",
                   help="one base per pretraining seed, each adapted with its own seed (instead of one base swept "
                        "with --seeds)")
    p.add_argument("--shots", nargs="+", choices=["all", "10"], help="shot counts to run (default: all 10)")
    p.add_argument("--pretrain-epochs", type=int, help=f"masked-autoencoder epochs ({SETTINGS['pretrain']['epochs']})")
    p.add_argument("--epochs-all", type=int,
                   help=f"fine-tuning epochs with all training images ({SETTINGS['all']['epochs']})")
    p.add_argument("--pretrain-lr", type=float, help=f"masked-autoencoder learning rate ({SETTINGS['pretrain']['lr']})")
    p.add_argument("--methods", nargs="+", choices=METHODS, help="adaptation methods (default: all three)")
    p.add_argument("--pretrained-only", action="store_true",
                   help="adapt only the medlora-pretrained bases (the random-init rows of an earlier run stand)")
    p.add_argument("--patience-all", type=int,
                   help=f"early-stopping patience with all training images ({SETTINGS['all']['patience']})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override in the adaptation config, e.g. train.head_norm=true (repeatable; the sweeps get "
                        "their own folders)")
    args = p.parse_args(argv)
    if args.protocol == "medmnist+":
        args.shots = args.shots or ["all"]
        args.pretrain_seeds = args.pretrain_seeds or [0, 1, 2]
    args.shots = args.shots or ["all", "10"]
    SIZE = args.size
    MODEL["kwargs"] = {**MODEL["kwargs"], **WIDTHS[args.width], "img_size": SIZE, "patch_size": 4 if SIZE == 28 else 8}
    SETTINGS["pretrain"]["decoder_depth"] = args.decoder_depth
    if args.pretrain_lr:
        SETTINGS["pretrain"]["lr"] = args.pretrain_lr
    METHODS[:] = args.methods or METHODS
    ADAPT_SETS[:] = (PROTOCOL_SETS if args.protocol == "medmnist+" else []) + args.set
    if args.pretrained_only:
        BASES.remove("random init")
    if args.limit is not None:
        for info in DATASETS.values():
            info["limit"] = args.limit or None
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    NPZ = Path(args.npz_dir)
    if args.step_cost:
        return measure_configs(args.step_cost)
    work = Path(args.work) / ("quick" if args.quick else f"{args.width}-width{'' if SIZE == 28 else f'-{SIZE}px'}")
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDLORA_SECRET_FILE", str(work / "site.key"))
    missing = [n for n in args.datasets if not npz_file(n).is_file()]
    if missing:
        print(f"missing npz files for {missing} under {NPZ}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    results = []
    for name in args.datasets:
        protocol = PROTOCOL[name] if args.protocol == "medmnist+" else {}
        settle(args.pretrain_epochs or protocol.get("pretrain_epochs"), args.epochs_all or protocol.get("epochs"),
               args.patience_all or protocol.get("patience"))
        results.append(bench_dataset(name, work, args.quick, args.seeds, args.pretrain_seeds, tuple(args.shots)))
        (work / f"results-{'-'.join(args.datasets)}.json").write_text(json.dumps(results, indent=2, default=str))
    text = report(results) + f"\ntotal {time.perf_counter() - t0:.0f} s\n"
    (work / f"results-{'-'.join(args.datasets)}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
