"""Is the demo's pretrained base worth adapting, and is it stable? (issue 27)

The demo's story is a site with many unlabelled studies and a few labelled patients. This benchmark
pretrains the demo's base (``configs/demo_base.yaml``: a masked autoencoder on 2,700 unlabelled
phantom images) once per (pretraining seed, torch thread count), adapts each base with LoRA on the
demo's own labelled patients (``configs/demo.yaml``: 40 training, 60 validation, 100 test patients),
and compares with LoRA on a randomly initialised base of the same architecture, and with full
fine-tuning and a linear probe of the shipped base. Every row: test AUROC with its DeLong and
bootstrap 95 % intervals.

Target: pretrained + LoRA ≥ random + LoRA + 0.05 for each of the 3 seeds × {1, 2} threads.

Each step writes one JSON file under ``--work`` and is skipped when that file exists, so the steps can
run in separate processes (one per core) and a rerun picks up where it stopped::

    nice -n 10 .venv/bin/python benchmarks/demo_pretrain.py pretrain --seeds 0 --threads 1
    nice -n 10 .venv/bin/python benchmarks/demo_pretrain.py adapt --seeds 0 --threads 1 [--random]
    nice -n 10 .venv/bin/python benchmarks/demo_pretrain.py adapt --shipped --methods full linear_probe
    .venv/bin/python benchmarks/demo_pretrain.py report
    .venv/bin/python benchmarks/demo_pretrain.py table runs/demo runs/demo-random ...   # what make demo prints
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's medlora, whichever one the interpreter has installed
BASE_CONFIG = REPO / "configs" / "demo_base.yaml"
DEMO_CONFIG = REPO / "configs" / "demo.yaml"
SHIPPED = REPO / "bases" / "demo" / "base_card.md"
OVERRIDES = {"full": ["train.lr=0.0003"], "linear_probe": ["train.lr=0.01", "train.epochs=30", "train.patience=10"]}
INTERVALS = ("test_auroc", "test_auroc_delong_ci_low", "test_auroc_delong_ci_high", "test_auroc_ci_low",
             "test_auroc_ci_high", "val_auroc")


def _track(work: Path, tag: str) -> str:
    """One SQLite store per step: steps in parallel processes never share a database file."""
    return f"tracking.uri=sqlite:///{work / 'mlflow' / f'{tag}.db'}"


def pretrain(work: Path, seed: int, threads: int, extra: list[str]) -> dict[str, Any]:
    """Pretrain the demo's base with this seed and thread count (or reuse it) → its card's record."""
    from medlora.config import load_config
    from medlora.experiment.pretrain import run_pretrain

    tag = f"base-s{seed}-t{threads}"
    done = work / "results" / f"{tag}.json"
    if done.is_file():
        return json.loads(done.read_text())
    (work / "mlflow").mkdir(parents=True, exist_ok=True)
    cfg = load_config(BASE_CONFIG, [f"train.seed={seed}", f"train.threads={threads}", _track(work, tag), *extra])
    t0 = time.perf_counter()
    summary = run_pretrain(cfg, out=work / "bases" / tag)
    record = {"tag": tag, "seed": seed, "threads": threads, "card": str(summary.card), "wall_s": time.perf_counter() - t0,
              "reused": summary.reused, "images": summary.record["data"]["images"],
              "seconds": summary.record["pretraining"]["seconds"], "final_loss": summary.record["pretraining"]["final_loss"],
              "fingerprint": summary.record["data"]["fingerprint"], "sha256": summary.record["sha256"]}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=1))
    print(f"[{tag}] {summary.describe()}", flush=True)
    return record


def adapt(work: Path, tag: str, weights: str | None, method: str, threads: int, extra: list[str]) -> dict[str, Any]:
    """Adapt ``weights`` (None: random init) with ``method`` on the demo's labelled patients → metrics."""
    from medlora.config import load_config
    from medlora.experiment.single import run_single

    name = f"{method}-{tag}-t{threads}"
    done = work / "results" / f"{name}.json"
    if done.is_file():
        return json.loads(done.read_text())
    sets = [f"model.weights={weights or 'null'}", f"model.method={method}", f"train.threads={threads}",
            f"data.split.file={work / 'splits' / 'synthetic_phantoms-few.csv'}", _track(work, name),
            *OVERRIDES.get(method, []), *extra]
    cfg = load_config(DEMO_CONFIG, sets)
    t0 = time.perf_counter()
    summary = run_single(cfg, work / "runs" / name)
    m = summary.metrics
    record = {"name": name, "base": tag, "method": method, "threads": threads, "wall_s": time.perf_counter() - t0,
              **{k: m.get(k) for k in INTERVALS}, "test_studies": int(m.get("test_tp", 0) + m.get("test_fn", 0)
                                                                       + m.get("test_tn", 0) + m.get("test_fp", 0))}
    done.parent.mkdir(parents=True, exist_ok=True)
    done.write_text(json.dumps(record, indent=1))
    print(f"[{name}] test AUROC {record['test_auroc']:.3f} ({record['wall_s']:.0f} s)", flush=True)
    return record


def _ci(r: dict[str, Any]) -> str:
    def f(k: str) -> str:
        return "n/a" if r.get(k) is None else f"{r[k]:.2f}"

    return (f"{r['test_auroc']:.3f} [{f('test_auroc_delong_ci_low')}, {f('test_auroc_delong_ci_high')}] "
            f"(bootstrap [{f('test_auroc_ci_low')}, {f('test_auroc_ci_high')}])")


def report(work: Path) -> str:
    rows = [json.loads(p.read_text()) for p in sorted((work / "results").glob("*.json"))]
    bases = {r["tag"]: r for r in rows if "tag" in r}
    runs = [r for r in rows if "method" in r]
    random = {r["threads"]: r for r in runs if r["base"] == "random" and r["method"] == "lora"}
    lines = ["| base | threads | pretraining (s, final loss) | method | test AUROC [DeLong 95 %] | vs random + LoRA |",
             "|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["base"] == "random", r["base"], r["threads"], r["method"])):
        b = bases.get(r["base"])
        pre = f"{b['seconds']:.0f} s, {b['final_loss']:.4f}" if b else "—"
        ref = random.get(r["threads"])
        gain = f"{r['test_auroc'] - ref['test_auroc']:+.3f}" if ref and r is not ref else "—"
        lines.append(f"| {r['base']} | {r['threads']} | {pre} | {r['method']} | {_ci(r)} | {gain} |")
    return "\n".join(lines)


def table(folders: list[Path]) -> str:
    """The comparison ``make demo`` prints: one row per ``medlora run`` output folder (its metrics.json
    and medlora.json), test AUROC with the DeLong and bootstrap 95 % intervals."""
    lines = ["| base | method | test AUROC | 95 % CI (DeLong) | 95 % CI (bootstrap) | run folder |",
             "|---|---|---|---|---|---|"]
    for folder in folders:
        metrics = json.loads((folder / "metrics.json").read_text())
        meta = json.loads((folder / "medlora.json").read_text())
        base = meta["base"]
        name = "random init" if base["source"] == "init" else f"pretrained ({Path(base['weights_path']).parent.name})"
        dl, boot = metrics["delong"], metrics["intervals"]["auroc"]
        lines.append(f"| {name} | {meta['method']} | {metrics['metrics']['auroc']:.3f} | [{dl['ci_low']:.2f}, "
                     f"{dl['ci_high']:.2f}] | [{boot[0]:.2f}, {boot[1]:.2f}] | {folder} |")
    n = json.loads((folders[0] / "metrics.json").read_text())["counts"]
    return "\n".join([f"test AUROC on the same {n['n']} test studies ({n['n_positive']} abnormal):", *lines])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("step", choices=["pretrain", "adapt", "report", "table"])
    p.add_argument("folders", nargs="*", type=Path, help="table: the output folders of `medlora run`")
    p.add_argument("--work", default=str(REPO / "runs" / "bench" / "demo_pretrain"))
    p.add_argument("--seeds", type=int, nargs="*", default=[], help="pretraining seeds (train.seed of demo_base.yaml)")
    p.add_argument("--threads", type=int, nargs="+", default=[1], help="torch threads (train.threads)")
    p.add_argument("--methods", nargs="+", default=["lora"], choices=["lora", "full", "linear_probe"])
    p.add_argument("--random", action="store_true", help="adapt: also a randomly initialised base")
    p.add_argument("--shipped", action="store_true", help="adapt: also the shipped base (bases/demo)")
    p.add_argument("--pretrain-set", action="append", default=[], metavar="KEY=VALUE",
                   help="override in configs/demo_base.yaml (repeatable)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override in configs/demo.yaml")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname).1s %(name)s: %(message)s")
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MEDLORA_SECRET_FILE", str(work / "site.key"))
    if args.step == "table":
        print(table(args.folders))
        return 0
    if args.step == "report":
        print(report(work))
        return 0
    for threads in args.threads:
        for seed in args.seeds:
            base = pretrain(work, seed, threads, args.pretrain_set)
            if args.step == "adapt":
                for method in args.methods:
                    adapt(work, base["tag"], base["card"], method, threads, args.set)
        if args.step == "adapt" and args.random:
            adapt(work, "random", None, "lora", threads, args.set)
        if args.step == "adapt" and args.shipped:
            for method in args.methods:
                adapt(work, "shipped", str(SHIPPED), method, threads, args.set)
    return 0


if __name__ == "__main__":
    sys.exit(main())
