"""LoRA points trained together (``fewshot.together: on``) vs one by one vs the naive loop, side by side.

``python -m benchmarks.together [--device cpu|cuda] [--quick] [--json FILE]`` prints, in one process
(imports paid before any clock starts):

1. the machine: CPU, the flags and the one-off bf16 measurement that decide ``train.precision: auto``
   (AVX-512, AVX512-BF16, AMX; bf16 vs fp32 on a ViT-S MLP block), the precision every row trained in, the 1-minute load and the fp32 GEMM peak before and after;
2. the sweep of :mod:`benchmarks.sweep` (BreastMNIST as DICOM, 3 methods × shots × seeds; ``--demo``: at
   ``configs/fewshot_demo.yaml``'s size) in one process: the naive loop (CPU only), medlora one by one (``together: off``) and medlora together
   (``on``); then the LoRA points alone (one by one vs together); each child's own training time
   (``train_seconds``) summed apart from the rest (evaluation, bootstrap, MLflow: the fixed costs);
3. the scaling table: N = 1, 2, 4, 8, 16 LoRA points of the demo's model (ViT-Ti/8, 6 blocks, 64 px,
   batch 32 each) trained together for a few steps, against N times one point alone (medlora's
   ``fit`` step), both kernels (``loop``: a loop over segments, ``bmm``: padded batched products),
   and the peak memory held by tensors over one step (profiler on CPU, ``max_memory_allocated`` on CUDA);
4. a profile of one 8-point step: where its time goes (top operators by self time).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.harness import format_table, machine_info

SWEEP = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "depth": 6, "global_pool": "avg"},
         "size": 28, "epochs": 2, "batch": 32, "lr": 3e-3, "shots": [1, 5, 10, "all"], "seeds": [0, 1, 2],
         "methods": ["lora", "linear_probe", "full"], "limit": 64, "bootstrap": 200}  # benchmarks/sweep.py's
SMALL = {**SWEEP, "shots": [1, 5, "all"], "seeds": [0, 1]}  # 18 points, for a loaded machine
# configs/fewshot_demo.yaml-size work: its model (ViT-Ti/8, 6 blocks, 64 px), 12 epochs, 36 points, ~360 training images
DEMO = {**SWEEP, "kwargs": {"patch_size": 8, "depth": 6, "global_pool": "avg"}, "size": 64, "epochs": 12,
        "limit": 360, "bootstrap": 500}
QUICK = {**SWEEP, "kwargs": {"patch_size": 4, "depth": 1, "global_pool": "avg"}, "epochs": 1, "shots": [1, "all"],
         "seeds": [0, 1], "limit": 16, "bootstrap": 20}
DEMO_MODEL = {"name": "vit_tiny_patch16_224", "kwargs": {"img_size": 64, "patch_size": 8, "depth": 6, "global_pool": "avg"},
              "size": 64, "batch": 32}


def cpu_flag_report() -> dict[str, Any]:
    from medlora.device import BF16_CPU_FLAGS, cpu_bf16_speed, cpu_flags, cpu_has_bf16

    flags = cpu_flags()
    report: dict[str, Any] = {f: f in flags for f in ("avx512f", *BF16_CPU_FLAGS)}
    if cpu_has_bf16(flags):  # what train.precision: auto decides by on this CPU
        report["bf16_vs_fp32"] = round(cpu_bf16_speed()["speedup"], 3)
    return report


def precision_of(device: str, precision: str) -> str:
    import torch

    from medlora.device import precision_name, training_dtype

    return precision_name(training_dtype(torch.device(device), precision))


def medlora_sweep(root: Path, work: Path, s: dict, methods: list[str], together: str, device: str,
                  precision: str) -> dict:
    """``pipelines.fewshot.run`` of the sweep; wall seconds and the children's summed training seconds."""
    import pandas as pd

    from benchmarks.sweep import medlora_config
    from medlora.config import config_from_dict
    from pipelines.fewshot import run

    raw = medlora_config(root, work, s["model"], {**s["kwargs"], "img_size": s["size"]}, s["size"], s["epochs"],
                         s["batch"], s["lr"], s["shots"], s["seeds"], methods, s["bootstrap"])
    raw["fewshot"]["together"] = together
    raw["train"].update({"device": device, "precision": precision})
    t0 = time.perf_counter()
    run(config_from_dict(raw), work / "out")
    seconds = time.perf_counter() - t0
    children = pd.read_csv(work / "out" / "children.csv")
    lora = children[children["method"] == "lora"]
    return {"seconds": seconds, "points": len(children), "train_s": float(children["train_seconds"].sum()),
            "lora_train_s": float(lora["train_seconds"].sum()),
            "mean_test_auroc": {m: round(float(g["test_auroc"].mean()), 3) for m, g in children.groupby("method")},
            "test_auroc": {f"{r.method}-{r.shots}-{r.seed}": round(float(r.test_auroc), 4) for r in children.itertuples()}}


def sweep_rows(s: dict, device: str, precision: str, naive: bool, lora_only: bool = False) -> list[dict]:
    from benchmarks.datasets import medmnist_study_folder
    from benchmarks.sweep import naive_sweep

    root = medmnist_study_folder(Path(tempfile.mkdtemp(prefix="medlora-bench-together-")), s["limit"])
    prec = precision_of(device, precision)
    rows = []
    if naive:
        t0 = time.perf_counter()
        res = naive_sweep(root, s["model"], {**s["kwargs"], "img_size": s["size"]}, s["size"], s["epochs"],
                          s["batch"], s["lr"], s["shots"], s["seeds"], s["methods"])
        rows.append({"impl": "naive loop", "methods": "all", "points": len(res), "seconds": time.perf_counter() - t0,
                     "device": "cpu", "precision": "fp32"})
        _print_row(rows[-1])
    for methods, label in ((s["methods"], "all"), (["lora"], "lora"))[1 if lora_only else 0:]:
        for together in ("off", "on"):
            with tempfile.TemporaryDirectory(prefix="medlora-bench-together-") as work:
                r = medlora_sweep(root, Path(work), s, methods, together, device, precision)
            impl = "medlora one by one" if together == "off" else "medlora together"
            rows.append({"impl": impl, "methods": label, "device": device, "precision": prec, **r,
                         "fixed_s": r["seconds"] - r["train_s"]})
            _print_row(rows[-1])
    return rows


def _print_row(row: dict) -> None:
    print("  " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)


def _demo_points(n: int, kernel: str, device: Any):
    """A MultiLora of ``n`` points over the demo's model, their optimisers, and one batch per point."""
    import timm
    import torch

    from medlora.config import LoraConfigModel
    from medlora.models.lora import apply_method
    from medlora.models.multi_lora import MultiLora, adapter_weights

    torch.manual_seed(0)
    base = timm.create_model(DEMO_MODEL["name"], pretrained=False, num_classes=2, **DEMO_MODEL["kwargs"])
    base.requires_grad_(False)
    weights = []
    for i in range(n):
        torch.manual_seed(i)
        import copy

        m = copy.deepcopy(base)
        m.reset_classifier(2)
        weights.append(adapter_weights(apply_method(m, "lora", LoraConfigModel())))
    multi = MultiLora(base, weights, kernel=kernel).to(device)
    opts = [torch.optim.AdamW(list(multi.point_parameters(i).values()), lr=1e-3) for i in range(n)]
    g = torch.Generator().manual_seed(0)
    b, size = DEMO_MODEL["batch"], DEMO_MODEL["size"]
    x = torch.randn(n * b, 3, size, size, generator=g).to(device)
    y = torch.randint(0, 2, (n * b,), generator=g).to(device)
    multi.routing.counts = [b] * n
    multi.routing.generators = [torch.Generator(device=device).manual_seed(i) for i in range(n)]
    return multi, opts, x, y


def _step(multi, opts, x, y, dtype) -> None:
    import torch

    b = len(x) // len(opts)
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        logits = multi(x).float()
    loss = sum(torch.nn.functional.cross_entropy(z, t, reduction="sum") / b
               for z, t in zip(logits.split(b), y.split(b), strict=True))
    for o in opts:
        o.zero_grad(set_to_none=True)
    loss.backward()
    for o in opts:
        o.step()


def _peak_mb(fn, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated(device) / 2**20
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    live = peak = 0
    for _, nbytes in sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                            if e.name() == "[memory]"):
        live += nbytes
        peak = max(peak, live)
    return peak / 2**20


def scaling_rows(sizes: list[int], steps: int, device_name: str, precision: str, bmm_max: int = 16) -> list[dict]:
    """Seconds of ``steps`` steps of N points together vs N points' steps one at a time, and peak tensor memory."""
    import torch

    from medlora.device import training_dtype

    device = torch.device(device_name)
    dtype = training_dtype(device, precision)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    alone_step = None
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"points": n}
        for kernel in ("loop", "bmm"):
            if kernel == "bmm" and not 1 < n <= bmm_max:
                continue
            multi, opts, x, y = _demo_points(n, kernel, device)
            multi.train()
            _step(multi, opts, x, y, dtype)  # warm-up: optimiser state, kernels
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                _step(multi, opts, x, y, dtype)
            sync()
            row[f"together_{kernel}_s"] = (time.perf_counter() - t0) / steps
            if kernel == "loop":
                row["peak_tensor_mb"] = _peak_mb(functools.partial(_step, multi, opts, x, y, dtype), device)
            del multi, opts
        if n == 1:
            alone_step = row["together_loop_s"]
        row["one_by_one_s"] = alone_step * n
        best = min(v for k, v in row.items() if k.startswith("together_"))
        row["speedup"] = row["one_by_one_s"] / best
        rows.append(row)
        _print_row(row)
    return rows


def profile_rows(n: int, device_name: str, precision: str, top: int = 10) -> list[dict]:
    """Top operators by self time of one step of ``n`` points together."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from medlora.device import training_dtype

    device = torch.device(device_name)
    dtype = training_dtype(device, precision)
    multi, opts, x, y = _demo_points(n, "loop", device)
    multi.train()
    _step(multi, opts, x, y, dtype)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        _step(multi, opts, x, y, dtype)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, key), reverse=True)
    total = sum(getattr(e, key) for e in events) or 1
    return [{"op": e.key, "calls": e.count, "self_ms": getattr(e, key) / 1e3, "share": getattr(e, key) / total}
            for e in events[:top]]


def gemm(device: str, n: int) -> float:
    from benchmarks.gemm_peak import gemm_peak

    return gemm_peak(n, repeats=3, device=device)["gflops_best"]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu or cuda (bf16 autocast there with train.precision auto)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that everything runs")
    p.add_argument("--no-naive", action="store_true", help="skip the naive loop's sweep (it runs on CPU only)")
    p.add_argument("--only", nargs="*", default=["sweep", "scaling", "profile"])
    p.add_argument("--scaling", nargs="*", type=int, default=[1, 2, 4, 8, 16])
    p.add_argument("--small", action="store_true", help="18 sweep points (shots 1, 5, all; seeds 0, 1) instead of 36")
    p.add_argument("--demo", action="store_true",
                   help="the sweep at configs/fewshot_demo.yaml's size: ViT-Ti/8 at 64 px, 12 epochs, 360 training images")
    p.add_argument("--lora-only", action="store_true", help="the sweep rows of the LoRA points only")
    p.add_argument("--bmm-max", type=int, default=16, help="time the bmm kernel up to this many points")
    p.add_argument("--steps", type=int, default=2, help="timed steps per scaling row (after one warm-up step)")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    s = QUICK if a.quick else SMALL if a.small else DEMO if a.demo else SWEEP
    for module in ("timm", "peft", "pydicom", "monai", "mlflow", "pipelines.fewshot", "benchmarks.naive_loop",
                   "sklearn.metrics", "torchvision.transforms.v2"):
        importlib.import_module(module)  # imports excluded from every clock
    from medlora.device import configure_threads

    configure_threads(None)
    res: dict[str, Any] = {"machine": {**machine_info(), "cpu_flags": cpu_flag_report(),
                                       "precision": precision_of(a.device, a.precision)}}
    gemm_n = 512 if a.quick else 2048
    res["gemm_before"] = gemm(a.device, gemm_n)
    print(json.dumps(res, indent=1), flush=True)
    if "sweep" in a.only:
        print("sweep (one process, imports excluded):", flush=True)
        res["sweep"] = sweep_rows(s, a.device, a.precision, naive=not a.no_naive and a.device == "cpu",
                                  lora_only=a.lora_only)
    if "scaling" in a.only:
        print("scaling (demo model, batch 32 per point):", flush=True)
        res["scaling"] = scaling_rows([1, 2] if a.quick else a.scaling, 1 if a.quick else a.steps, a.device, a.precision,
                                      a.bmm_max)
    if "profile" in a.only:
        res["profile"] = profile_rows(2 if a.quick else 8, a.device, a.precision)
    res["gemm_after"] = gemm(a.device, gemm_n)
    res["load_after"] = os.getloadavg()[0]
    print(report(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1, default=str))


def report(res: dict) -> str:
    m = res["machine"]
    out = [f"machine: {m['cpu']}, {m['cores']} cores, torch {m['torch']}, cuda {m['cuda']}; CPU flags {m['cpu_flags']}; "
           f"train.precision resolved to {m['precision']}; load {m['load_avg_1m']:.2f} → {res['load_after']:.2f}; "
           f"GEMM peak {res['gemm_before']:.0f} → {res['gemm_after']:.0f} GFLOP/s"]
    if "sweep" in res:
        rows = res["sweep"]
        out += ["", format_table(rows, ["impl", "methods", "points", "device", "precision", "seconds", "train_s",
                                        "fixed_s", "mean_test_auroc"])]
        pick = {(r["impl"], r["methods"]): r["seconds"] for r in rows}
        naive = pick.get(("naive loop", "all"))
        for impl in ("medlora one by one", "medlora together"):
            if naive and (impl, "all") in pick:
                out.append(f"{impl} vs naive (all methods): {naive / pick[(impl, 'all')]:.2f}x (target >= 3x)")
        lo, lt = pick[("medlora one by one", "lora")], pick[("medlora together", "lora")]
        out.append(f"LoRA points together vs one by one: {lo / lt:.2f}x end to end (target >= 2.5x)")
        tr = {r["impl"]: r["train_s"] for r in rows if r["methods"] == "lora"}
        out.append(f"  their training alone: {tr['medlora one by one'] / tr['medlora together']:.2f}x")
    if "scaling" in res:
        out += ["", format_table(res["scaling"], ["points", "one_by_one_s", "together_loop_s", "together_bmm_s",
                                                   "speedup", "peak_tensor_mb"])]
    if "profile" in res:
        out += ["", format_table(res["profile"], ["op", "calls", "self_ms", "share"])]
    return "\n".join(out)


if __name__ == "__main__":
    main()
