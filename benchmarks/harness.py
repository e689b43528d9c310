"""Shared measurement plumbing: isolated child processes, timing, FLOP counting, peak memory.

Every configuration that reports a peak memory runs in a fresh Python process
(``python -m benchmarks.harness MODULE:FUNCTION JSON``), so that one configuration's allocations
never raise the next one's peak: on CPU the peak is ``ru_maxrss`` of that child, on CUDA
``torch.cuda.max_memory_allocated``. The child prints one JSON line, read back by the parent.
"""

from __future__ import annotations

import importlib
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULT_PREFIX = "BENCH_RESULT "


def rss_mb() -> float:
    """Current resident set size of this process (MiB), from /proc (Linux) or the peak elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory_mb(device: str = "cpu") -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return peak_rss_mb()


def run_isolated(target: str, kwargs: dict[str, Any], isolate: bool = True, env: dict[str, str] | None = None) -> dict:
    """Call ``target`` (``module:function``) with ``kwargs`` in a fresh process (or here if not ``isolate``).

    The function returns a JSON-able dict; ``rss_peak_mb`` of its process is added to it.
    """
    if not isolate:
        module, func = target.split(":")
        out = getattr(importlib.import_module(module), func)(**kwargs)
        return {**out, "rss_peak_mb": peak_rss_mb(), "isolated": False}
    cmd = [sys.executable, "-m", "benchmarks.harness", target, json.dumps(kwargs)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})})
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"benchmark child {target} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(lines[-1][len(RESULT_PREFIX):]), "isolated": True}


def timed(fn: Callable[[], Any], sync: Callable[[], None] | None = None) -> float:
    """Seconds taken by ``fn()`` (``sync`` waits for an accelerator before reading the clock)."""
    if sync:
        sync()
    t0 = time.perf_counter()
    fn()
    if sync:
        sync()
    return time.perf_counter() - t0


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


class TimedLoader:
    """Wraps a loader (or a list of batches) and times, per batch, the wait for data and the step after it.

    ``data_s[i]`` is the time ``next()`` took for batch ``i``; ``step_s[i]`` the time from handing
    batch ``i`` to the training loop until the loop asked for the next one (the step itself).
    The training loop under test is unchanged: it only sees an iterable with a length.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.data_s: list[float] = []
        self.step_s: list[float] = []
        self.epoch_s: list[float] = []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        start = last = time.perf_counter()
        it = iter(self.loader)
        first = True
        while True:
            t0 = time.perf_counter()
            if not first:
                self.step_s.append(t0 - last)
            first = False
            try:
                batch = next(it)
            except StopIteration:
                self.epoch_s.append(time.perf_counter() - start)
                return
            last = time.perf_counter()
            self.data_s.append(last - t0)
            yield batch


def flop_counter():
    """``FlopCounterMode`` that also counts PyTorch's CPU flash attention (not counted by default).

    The formulas are PyTorch's own SDPA counts (2·b·h·s_q·s_k·d per matmul; the backward
    recomputes the scores), applied to the CPU kernels.
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    aten = torch.ops.aten

    def fwd(q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(q, k, v)

    def bwd(g, q, k, v, *args, out_shape=None, **kwargs) -> int:
        return sdpa_backward_flop_count(g, q, k, v)

    mapping = {}
    if hasattr(aten, "_scaled_dot_product_flash_attention_for_cpu"):
        mapping[aten._scaled_dot_product_flash_attention_for_cpu] = fwd
        mapping[aten._scaled_dot_product_flash_attention_for_cpu_backward] = bwd
    return FlopCounterMode(display=False, custom_mapping=mapping)


def machine_info() -> dict[str, Any]:
    """CPU model, cores, threads, library versions: the context every number needs."""
    import platform

    import torch

    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": model,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": platform.python_version(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    for name in ("timm", "peft", "monai"):
        try:
            info[name] = importlib.import_module(name).__version__
        except ImportError:
            info[name] = None
    return info


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """A GitHub-markdown table of ``rows`` (missing cells empty, floats to 3 significant digits)."""

    def cell(v: Any) -> str:
        if v is None:
            return ""
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def _child(argv: list[str]) -> None:
    target, raw = argv
    module, func = target.split(":")
    out = getattr(importlib.import_module(module), func)(**json.loads(raw))
    out["rss_peak_mb"] = peak_rss_mb()
    print(RESULT_PREFIX + json.dumps(out), flush=True)


if __name__ == "__main__":
    _child(sys.argv[1:])


def allocated_peak_mb(model: Any, batch: int, size: int) -> float:
    """Peak memory held by tensors over one steady-state AdamW training step at ``batch`` (MiB).

    The CPU counterpart of ``torch.cuda.max_memory_allocated``: PyTorch's profiler records every
    tensor allocation and free; their running sum over the step is the memory tensors really hold,
    whatever the C allocator keeps mapped afterwards (which ``ru_maxrss`` counts). The AdamW
    moments alive when the step starts are added; the model's weights are not counted (the same for
    every method). The last step's gradients are dropped before the profiled step (the profiler
    cannot see blocks freed that it did not see allocated), which leaves out the gradients
    medlora's loop still holds during the next forward pass: in full fine-tuning's favour.
    """
    import torch
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 2, (batch,), generator=g)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)

    def step() -> None:  # the order of medlora's fit: forward, drop last step's gradients, backward, update
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    model.train()
    step()  # creates the moments a steady-state step starts with
    opt.zero_grad(set_to_none=True)
    held = sum(t.nbytes for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return (held + peak) / 2**20
