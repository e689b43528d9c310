"""Run every benchmark side by side and print one report: images/s, step time, peak memory, ratios.

    .venv/bin/python benchmarks/run_all.py            # ViT-S/16 at 224 and 112 px (~10 min on 2 cores)
    .venv/bin/python benchmarks/run_all.py --quick    # a tiny ViT, seconds, in-process (smoke test)

``--json FILE`` keeps every raw number, ``--markdown FILE`` writes the report as markdown.
Each configuration with a memory figure runs in a fresh process (``--no-isolate`` turns that off).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` and ``medlora`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import format_table, machine_info, run_isolated  # noqa: E402

FULL: dict[str, Any] = {
    "model": "vit_small_patch16_224", "kwargs": {}, "sizes": [224, 112], "batch": 32,
    "warmup": 1, "steps": {224: 4, 112: 6}, "gemm_n": 4096, "rounds": 2,
    "pipeline": {"images": 96, "epochs": 2},
    "inference": {"batches": 3},
    "ablation_size": 112,
    "prefix": {"size": 112, "blocks": [-4, -3, -2, -1]},
    "sweep": {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "depth": 6, "global_pool": "avg"},
              "size": 28, "epochs": 2, "batch": 32, "lr": 3e-3, "shots": [1, 5, 10, "all"], "seeds": [0, 1, 2],
              "methods": ["lora", "linear_probe", "full"], "limit": 64, "bootstrap": 200},
}
QUICK: dict[str, Any] = {
    "model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 8, "depth": 2}, "sizes": [32], "batch": 4,
    "warmup": 1, "steps": {32: 2}, "gemm_n": 512,
    "pipeline": {"images": 8, "epochs": 2},
    "inference": {"batches": 2},
    "ablation_size": None,
    "prefix": {"size": 32, "blocks": [-1]},
    "sweep": {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "depth": 1, "global_pool": "avg"},
              "size": 28, "epochs": 1, "batch": 16, "lr": 3e-3, "shots": [1, "all"], "seeds": [0],
              "methods": ["lora", "linear_probe", "full"], "limit": 12, "bootstrap": 20},
}
TARGETS = {
    "lora_gemm_fraction": 0.80, "epoch_speedup": 1.5, "data_share": 0.05, "lora_vs_full_step": 0.7,
    "lora_vs_full_memory": 0.8, "sweep_speedup": 3.0, "merged_vs_base": 0.95, "adapter_ratio": 0.01,
}


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_train_steps(s: dict, gemm: float, isolate: bool) -> list[dict]:
    """Every configuration in ``s["rounds"]`` fresh processes, the order reversed every other round (the
    VM's speed drifts: a fixed order would favour whoever runs first); step times are pooled."""
    from benchmarks.harness import median

    configs = [("naive", "lora"), ("medlora", "lora"), ("medlora", "full"), ("medlora", "linear_probe")]
    rows = []
    for size in s["sizes"]:
        runs: dict[tuple[str, str], list[dict]] = {c: [] for c in configs}
        for round_ in range(s.get("rounds", 1)):
            for impl, method in configs if round_ % 2 == 0 else configs[::-1]:
                _log(f"train step {impl} {method} {size}px (round {round_ + 1})")
                runs[(impl, method)].append(run_isolated("benchmarks.train_step:measure_train_step", {
                    "impl": impl, "method": method, "model_name": s["model"], "model_kwargs": s["kwargs"], "size": size,
                    "batch": s["batch"], "warmup": s["warmup"], "steps": s["steps"][size],
                    "count_flops": round_ == 0}, isolate))
        for config in configs:
            first, *later = runs[config]
            r = dict(first)
            steps = [t for run in runs[config] for t in run["step_s_all"][s["warmup"]:]]
            r.update(step_s=median(steps), step_s_min=min(steps), images_per_s=s["batch"] / median(steps),
                     rounds=len(runs[config]), rss_peak_mb=max(run["rss_peak_mb"] for run in runs[config]))
            if r.get("flops_per_step"):
                r["gflops_achieved"] = r["flops_per_step"] / r["step_s"] / 1e9
                r["gflops_achieved_best"] = r["flops_per_step"] / r["step_s_min"] / 1e9
            r["gemm_fraction"] = r["gflops_achieved"] / gemm if r.get("gflops_achieved") else None
            r["gemm_fraction_best"] = r["gflops_achieved_best"] / gemm if r.get("gflops_achieved_best") else None
            r["rss_train_increment_mb"] = r["rss_peak_mb"] - r["rss_before_train_mb"]
            rows.append(r)
    return rows


def run_ablations(s: dict, gemm: float, isolate: bool) -> list[dict]:
    """One knob at a time on medlora's LoRA step (at ``ablation_size``)."""
    size = s["ablation_size"]
    if not size:
        return []
    variants = [  # (name, measure_train_step kwargs, extra environment of the child process)
        ("config default (lora dropout 0.1)", {"lora": {"dropout": 0.1}}, {}),
        ("lora dropout 0", {"lora": {"dropout": 0.0}}, {}),
        ("dropout 0 + THP_MEM_ALLOC_ENABLE=1", {"lora": {"dropout": 0.0}}, {"THP_MEM_ALLOC_ENABLE": "1"}),
    ]
    rows = []
    for name, kwargs, env in variants:
        _log(f"ablation {name}")
        r = run_isolated("benchmarks.train_step:measure_train_step", {
            "impl": "medlora", "method": "lora", "model_name": s["model"], "model_kwargs": s["kwargs"], "size": size,
            "batch": s["batch"], "warmup": s["warmup"], "steps": s["steps"][size], **kwargs}, isolate, env=env)
        r["variant"] = name
        r["gemm_fraction"] = r["gflops_achieved"] / gemm if r.get("gflops_achieved") else None
        r["gemm_fraction_best"] = r["gflops_achieved_best"] / gemm if r.get("gflops_achieved_best") else None
        rows.append(r)
    return rows


def run_pipelines(s: dict, isolate: bool, data_dir: Path) -> list[dict]:
    rows = []
    for size in s["sizes"]:
        for impl, augment in (("naive", True), ("medlora", True), ("medlora", False)):
            _log(f"data pipeline {impl} {size}px augment={augment}")
            rows.append(run_isolated("benchmarks.data_pipeline:measure_epochs", {
                "impl": impl, "model_name": s["model"], "model_kwargs": s["kwargs"], "size": size, "batch": s["batch"],
                "n_images": s["pipeline"]["images"], "epochs": s["pipeline"]["epochs"],
                "data_dir": str(data_dir / "ct"), "augment": augment}, isolate))
    return rows


def run_prefix(s: dict, isolate: bool, data_dir: Path) -> list[dict]:
    """LoRA on the upper blocks only (no augmentation): on images vs above the cached frozen prefix."""
    p = s["prefix"]
    rows = []
    for cached in (False, True):
        _log(f"frozen prefix {p['size']}px blocks {p['blocks']} cached={cached}")
        rows.append(run_isolated("benchmarks.data_pipeline:measure_prefix", {
            "model_name": s["model"], "model_kwargs": s["kwargs"], "size": p["size"], "batch": s["batch"],
            "n_images": s["pipeline"]["images"], "epochs": s["pipeline"]["epochs"], "blocks": p["blocks"],
            "cached": cached, "data_dir": str(data_dir / "ct")}, isolate))
    return rows


def run_sweeps(s: dict, isolate: bool, data_dir: Path) -> list[dict]:
    w = s["sweep"]
    rows = []
    for mode in ("commands", "in_process"):
        for impl in ("naive", "medlora"):
            _log(f"sweep {impl} {mode} ({len(w['methods'])} methods x {len(w['shots'])} shots x {len(w['seeds'])} seeds)")
            rows.append(run_isolated("benchmarks.sweep:measure_sweep", {
                "impl": impl, "model_name": w["model"], "model_kwargs": w["kwargs"], "size": w["size"],
                "epochs": w["epochs"], "batch": w["batch"], "lr": w["lr"], "shots": w["shots"], "seeds": w["seeds"],
                "methods": w["methods"], "limit": w["limit"], "bootstrap": w["bootstrap"],
                "data_dir": str(data_dir / "breast"), "mode": mode}, isolate))
    return rows


def run_inference(s: dict, isolate: bool) -> list[dict]:
    rows = []
    for size in s["sizes"]:
        _log(f"inference {size}px")
        rows.append(run_isolated("benchmarks.inference:measure_inference", {
            "model_name": s["model"], "model_kwargs": s["kwargs"], "size": size, "batch": s["batch"],
            "batches": s["inference"]["batches"]}, isolate))
    return rows


def _verdict(value: float | None, target: float, higher_is_better: bool) -> str:
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "met" if ok else "missed"


def report(res: dict[str, Any]) -> str:
    gemm = res["gemm"]["gflops_best"]
    out = ["## Machine", "", format_table([res["machine"]], list(res["machine"])), "",
           f"fp32 GEMM peak (torch.mm {res['gemm']['n']}³, best of 8 before and 8 after all other benchmarks): "
           f"**{gemm:.1f} GFLOP/s** (best before {res['gemm'].get('gflops_start', gemm):.1f}, "
           f"after {res['gemm'].get('gflops_end', gemm):.1f})", "", "## Training step", ""]
    cols = ["impl", "method", "size", "batch", "step_s", "step_s_min", "images_per_s", "flops_per_step_g",
            "gflops_achieved", "gemm_fraction", "gemm_fraction_best", "rss_before_train_mb", "rss_peak_mb", "rss_train_increment_mb", "train_state_mb",
            "alloc_peak_mb", "trainable_params"]
    for r in res["train_step"] + res["ablation"]:
        r["flops_per_step_g"] = r["flops_per_step"] / 1e9 if r.get("flops_per_step") else None
    out += [format_table(res["train_step"], cols), ""]
    if res["ablation"]:
        out += ["### One change at a time (medlora LoRA step)", "",
                format_table(res["ablation"], ["variant", "size", "step_s", "step_s_min", "images_per_s", "gemm_fraction",
                                               "rss_peak_mb", "train_state_mb"]), ""]
    out += ["## Epoch time on DICOM and the data pipeline's share (epochs after the first)", "",
            format_table(res["pipeline"], ["impl", "size", "batch", "images", "setup_s", "first_epoch_incl_setup_s",
                                           "epoch_s", "data_s", "data_share"]), "",
            "## LoRA on the upper blocks only, no augmentation: on images vs above the cached frozen blocks", "",
            format_table(res.get("prefix", []), ["impl", "size", "batch", "images", "prefix_depth", "setup_s", "epoch_s"]),
            "",
            "## Few-shot sweep", "",
            format_table([{**r, "runs": None, "mean_test_auroc": json.dumps({k: round(v, 3) for k, v in
                                                                            r["mean_test_auroc"].items()})}
                          for r in res["sweep"]], ["impl", "mode", "points", "seconds", "import_s", "mean_test_auroc"]),
            "", "`commands`: end to end, the naive script once per point vs one `medlora run`; `in_process`: one "
            "process per side, imports paid before the clock starts.", "",
            f"## Inference (images/s, batch {res['settings']['batch']})", "",
            format_table(res["inference"], ["size", "base", "unmerged", "merged", "unmerged_vs_base", "merged_vs_base",
                                            "merge_max_abs_diff"]), "",
            "## Adapter size", "", format_table([res["adapter"]], ["base_mb", "adapter_mb", "ratio"]), "",
            "## Targets", "", format_table(res["targets"], ["target", "goal", "measured", "verdict"]), ""]
    return "\n".join(out)


def targets(res: dict[str, Any]) -> list[dict]:
    big = max(res["settings"]["sizes"])

    def pick(rows, **kv):
        return next((r for r in rows if all(r.get(k) == v for k, v in kv.items())), None)

    lora = pick(res["train_step"], impl="medlora", method="lora", size=big)
    naive = pick(res["train_step"], impl="naive", method="lora", size=big)
    full = pick(res["train_step"], impl="medlora", method="full", size=big)
    rows = []

    def add(name, goal, value, higher):
        rows.append({"target": name, "goal": goal, "measured": value, "verdict": _verdict(value, TARGETS[higher[0]],
                                                                                           higher[1])})

    add(f"LoRA step GEMM fraction @{big}px, median step (naive {naive['gemm_fraction']:.2f})", ">= 0.80",
        lora["gemm_fraction"], ("lora_gemm_fraction", True))
    add(f"LoRA step GEMM fraction @{big}px, fastest step (naive {naive['gemm_fraction_best']:.2f})", ">= 0.80",
        lora["gemm_fraction_best"], ("lora_gemm_fraction", True))
    for size in res["settings"]["sizes"]:
        n, m = pick(res["pipeline"], impl="naive", size=size), pick(res["pipeline"], impl="medlora", size=size)
        add(f"epoch speed-up vs naive on DICOM @{size}px", ">= 1.5x", n["epoch_s"] / m["epoch_s"], ("epoch_speedup", True))
        add(f"medlora data share after epoch 1 @{size}px", "< 5%", m["data_share"], ("data_share", False))
    add(f"LoRA / full step time @{big}px", "<= 0.7", lora["step_s"] / full["step_s"], ("lora_vs_full_step", False))
    add(f"LoRA / full peak RSS @{big}px", "<= 0.8", lora["rss_peak_mb"] / full["rss_peak_mb"],
        ("lora_vs_full_memory", False))
    add(f"LoRA / full training RSS increment @{big}px", "<= 0.8",
        lora["rss_train_increment_mb"] / max(full["rss_train_increment_mb"], 1e-9), ("lora_vs_full_memory", False))
    add(f"LoRA / full training state (saved activations + grads + AdamW) @{big}px", "<= 0.8",
        lora["train_state_mb"] / full["train_state_mb"], ("lora_vs_full_memory", False))
    if lora.get("alloc_peak_mb") and full.get("alloc_peak_mb"):
        add(f"LoRA / full peak memory held by tensors in a step (profiler) @{big}px", "<= 0.8",
            lora["alloc_peak_mb"] / full["alloc_peak_mb"], ("lora_vs_full_memory", False))
    for mode, what in (("commands", "end to end, one command per naive point"),
                       ("in_process", "one process each, imports excluded")):
        sw_n, sw_m = pick(res["sweep"], impl="naive", mode=mode), pick(res["sweep"], impl="medlora", mode=mode)
        if sw_n and sw_m:
            add(f"sweep speed-up vs naive sequence ({what})", ">= 3x", sw_n["seconds"] / sw_m["seconds"],
                ("sweep_speedup", True))
    for r in res["inference"]:
        add(f"merged / base inference @{r['size']}px", ">= 0.95", r["merged_vs_base"], ("merged_vs_base", True))
    add("adapter / base checkpoint size", "<= 1%", res["adapter"]["ratio"], ("adapter_ratio", False))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny model and data: a smoke test, not a measurement")
    p.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                   help="one fresh process per configuration (default: on, off with --quick)")
    p.add_argument("--only", nargs="*", default=None,
                   help="subset of: gemm train ablation pipeline prefix sweep inference adapter")
    p.add_argument("--json", type=Path, help="write every raw number here")
    p.add_argument("--markdown", type=Path, help="write the report here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    warnings.filterwarnings("ignore")
    s = QUICK if args.quick else FULL
    isolate = (not args.quick) if args.isolate is None else args.isolate
    only = set(args.only or ["gemm", "train", "ablation", "pipeline", "prefix", "sweep", "inference", "adapter"])
    t0 = time.perf_counter()
    res: dict[str, Any] = {"settings": {k: v for k, v in s.items() if k != "steps"}, "quick": args.quick,
                           "machine": machine_info(), "train_step": [], "ablation": [], "pipeline": [], "prefix": [],
                           "sweep": [], "inference": []}
    _log("gemm peak")
    res["gemm"] = run_isolated("benchmarks.gemm_peak:gemm_peak", {"n": s["gemm_n"], "repeats": 8}, isolate)
    gemm = res["gemm"]["gflops_best"]
    with tempfile.TemporaryDirectory(prefix="medlora-bench-") as tmp:
        data_dir = Path(tmp)
        if "train" in only:
            res["train_step"] = run_train_steps(s, gemm, isolate)
        if "ablation" in only:
            res["ablation"] = run_ablations(s, gemm, isolate)
        if "pipeline" in only:
            res["pipeline"] = run_pipelines(s, isolate, data_dir)
        if "prefix" in only:
            res["prefix"] = run_prefix(s, isolate, data_dir)
        if "sweep" in only:
            res["sweep"] = run_sweeps(s, isolate, data_dir)
        if "inference" in only:
            res["inference"] = run_inference(s, isolate)
        if "adapter" in only:
            _log("adapter size")
            res["adapter"] = run_isolated("benchmarks.adapter_size:measure_adapter_size",
                                          {"model_name": s["model"], "model_kwargs": s["kwargs"]}, isolate)
    _log("gemm peak again (the best of both measurements is the peak)")
    again = run_isolated("benchmarks.gemm_peak:gemm_peak", {"n": s["gemm_n"], "repeats": 8}, isolate)
    res["gemm"]["gflops_start"], res["gemm"]["gflops_end"] = res["gemm"]["gflops_best"], again["gflops_best"]
    if again["gflops_best"] > res["gemm"]["gflops_best"]:
        res["gemm"]["gflops_best"] = again["gflops_best"]
        for r in res["train_step"] + res["ablation"]:
            for key, flops in (("gemm_fraction", "gflops_achieved"), ("gemm_fraction_best", "gflops_achieved_best")):
                if r.get(flops):
                    r[key] = r[flops] / again["gflops_best"]
    res["seconds"] = time.perf_counter() - t0
    res["machine"]["load_avg_1m_end"] = machine_info()["load_avg_1m"]
    if only >= {"train", "pipeline", "sweep", "inference", "adapter"}:
        res["targets"] = targets(res)
        text = report(res)
    else:
        res["targets"] = []
        text = json.dumps({k: v for k, v in res.items() if k != "settings"}, indent=1, default=str)
    print(text)
    _log(f"done in {res['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(res, indent=1, default=str))
    if args.markdown:
        args.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
