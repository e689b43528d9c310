"""Device and dtype resolution, in one place."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import ConfigError

log = logging.getLogger(__name__)

# what a failing torch.compile raises: dynamo/inductor errors (RuntimeError subclasses, incl. a
# missing or failing C++ compiler), and import/OS errors of optional backends
_COMPILE_ERRORS: tuple[type[BaseException], ...] = (RuntimeError, ImportError, OSError, AssertionError, NotImplementedError)


def resolve_device(name: str = "auto") -> torch.device:
    """Return the torch device for ``name``; ``auto`` picks cuda, then mps, then cpu."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available; use 'auto' or 'cpu'")
    if name not in {"cpu", "mps"} and not name.startswith("cuda"):
        raise ConfigError(f"train.device={name!r} is not one of: auto, cpu, cuda, cuda:N, mps")
    return torch.device(name)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA (where it is fast and safe for ViTs); none elsewhere."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with native bf16 matrix products


def _cpuinfo(field: str) -> str | None:
    """The first ``field`` line of ``/proc/cpuinfo`` (``flags``, ``model name``); ``None`` where there is none."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field):
            return line.split(":", 1)[1].strip()
    return None


def cpu_flags() -> frozenset[str]:
    """The CPU feature flags Linux reports (``/proc/cpuinfo``); empty where it is not readable."""
    return frozenset((_cpuinfo("flags") or "").split())


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 matrix products natively (AVX512-BF16 or AMX); without them torch
    emulates bf16 on CPU, slower than fp32."""
    return bool(set(BF16_CPU_FLAGS) & (cpu_flags() if flags is None else flags))


BF16_MIN_SPEEDUP = 1.2  # auto takes bf16 on a CPU only where the probe measured it at least this much faster
_PROBE_VERSION = 1


def _cpu_model() -> str:
    return _cpuinfo("model name") or "unknown"


def measure_cpu_bf16(repeats: int = 3) -> dict[str, float]:
    """Seconds of one forward + backward of a ViT-S-sized MLP block (512 tokens of 384, hidden 1536) in
    fp32 and under ``torch.autocast("cpu", bf16)``, best of ``repeats`` each, and their ratio.

    A CPU that reports AVX512-BF16 is not always faster in bf16: measured on 2-core VMs, an AMD EPYC
    ran a 2048² ``torch.mm`` 2.3x faster in bf16, an Intel Xeon with AVX512-BF16 but no AMX 0.54x
    (slower). The probe takes about a tenth of a second and leaves torch's global random state as it found
    it (it may run inside a seeded training run)."""
    import time

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        x = torch.randn(512, 384)
        block = nn.Sequential(nn.Linear(384, 1536), nn.GELU(), nn.Linear(1536, 384))
    seconds = {}
    for name, enabled in (("fp32", False), ("bf16", True)):
        best = float("inf")
        for i in range(repeats + 1):  # the first is a warm-up
            xi = x.clone().requires_grad_(True)
            t0 = time.perf_counter()
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=enabled):
                out = block(xi)
            out.float().square().mean().backward()
            if i:
                best = min(best, time.perf_counter() - t0)
        seconds[name] = best
    return {"fp32_s": seconds["fp32"], "bf16_s": seconds["bf16"], "speedup": seconds["fp32"] / seconds["bf16"]}


_measured: dict[str, dict[str, Any]] = {}


def cpu_bf16_speed() -> dict[str, Any]:
    """:func:`measure_cpu_bf16` for this CPU, torch version and thread count, measured once per machine and
    kept in medlora's cache folder (``cpu-bf16.json``), so that ``train.precision: auto`` resolves the same
    way in every run on a machine; the file may be deleted to measure again."""
    import json

    from .cache import cache_dir

    key = f"v{_PROBE_VERSION}|{_cpu_model()}|{'/'.join(sorted(set(BF16_CPU_FLAGS) & cpu_flags()))}|" \
          f"torch {torch.__version__}|threads {torch.get_num_threads()}"
    if key in _measured:
        return _measured[key]
    path = cache_dir() / "cpu-bf16.json"
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        known = {}
    if not isinstance(known, dict):
        known = {}
    if isinstance(known.get(key), dict) and "speedup" in known[key]:
        _measured[key] = known[key]
        return known[key]
    result = {**measure_cpu_bf16(), "cpu": _cpu_model(), "threads": torch.get_num_threads()}
    _measured[key] = result
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**known, key: result}, indent=1), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as err:  # a read-only home: measured again next process, nothing else changes
        log.debug("could not keep the bf16 measurement in %s: %s", path, err)
    return result


def training_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype of training steps (config ``train.precision``); ``None``: fp32.

    ``auto``: bf16 on CUDA (where the card supports it); on a CPU with AVX512-BF16 or AMX, bf16 where a
    one-off measurement on this machine (:func:`cpu_bf16_speed`) found it at least
    ``BF16_MIN_SPEEDUP`` times faster than fp32, else fp32; fp32 everywhere else. ``bf16`` asks for it
    anywhere (on a CPU without those flags it is emulated and slow: a warning says so); ``fp32`` never
    autocasts. Evaluation and exported adapters stay fp32.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"train.precision={precision!r}; allowed: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if device.type == "cuda":
        native = torch.cuda.is_bf16_supported()
    elif device.type == "cpu":
        native = cpu_has_bf16()
    else:
        native = False
    if precision == "bf16":
        if not native:
            log.warning("train.precision=bf16 on %s without native bf16 (%s): emulated, likely slower than fp32",
                        device, "CPU flags " + "/".join(BF16_CPU_FLAGS) + " absent" if device.type == "cpu"
                        else "not supported")
        return torch.bfloat16
    if native and device.type == "cpu":
        speed = cpu_bf16_speed()
        pays = speed["speedup"] >= BF16_MIN_SPEEDUP
        if _said.get("cpu") is not pays:  # once per process
            _said["cpu"] = pays
            log.info("train.precision=auto: bf16 measured %.2fx fp32 on this CPU (%s): training in %s",
                     speed["speedup"], speed.get("cpu", "?"), "bf16" if pays else "fp32")
        return torch.bfloat16 if pays else None
    return torch.bfloat16 if native else None


_said: dict[str, bool] = {}


def precision_name(dtype: torch.dtype | None) -> str:
    """``bf16`` or ``fp32``: how a training run's steps were computed (logged with the run)."""
    return "bf16" if dtype == torch.bfloat16 else "fp32"


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask, e.g. a container's cpuset), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads to ``threads`` (config ``train.threads``), default one per available CPU.

    ``os.cpu_count()`` counts the host's CPUs, not a container's share of them; oversubscribed
    threads spin against each other, so the default is the affinity mask. Inter-op threads are
    set to the same number only while torch still allows it (before any inter-op work).
    Returns the number of intra-op threads now in use.
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"train.threads={threads} must be a positive integer or null (one per available CPU)")
    n = threads or available_cpus()
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
    try:
        if torch.get_num_interop_threads() != n:
            torch.set_num_interop_threads(n)
    except RuntimeError:  # torch allows it once, before inter-op parallel work has started
        log.debug("inter-op threads already fixed at %d", torch.get_num_interop_threads())
    return torch.get_num_threads()


class _CompiledOrEager:
    """Calls the ``torch.compile``-d module; on a compile failure logs it once and runs eagerly from then on.

    ``torch.compile`` is lazy: a missing C++ compiler or an unsupported op only shows at the
    first call, so the fallback has to wrap the call, not the ``torch.compile`` itself. Errors of
    the model itself are not hidden: the eager retry raises them again.
    """

    def __init__(self, model: nn.Module, compiled: Callable[..., Any]) -> None:
        self.model = model
        self.compiled: Callable[..., Any] | None = compiled

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except _COMPILE_ERRORS as err:
                log.warning("torch.compile failed (%s: %s); training continues without it",
                            type(err).__name__, str(err).splitlines()[0] if str(err) else "")
                self.compiled = None
        return self.model(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:  # train()/eval()/parameters() reach the module itself
        return getattr(self.model, name)


def maybe_compile(model: nn.Module, enabled: bool) -> Callable[..., Any]:
    """``model`` itself, or (config ``train.compile: true``) a callable running ``torch.compile(model)``.

    Use the result for the training forward only; keep ``model`` for state dicts, peft
    merging and saving (the compiled wrapper shares its parameters). A compile failure, at wrap
    time or at the first call, is logged and the eager model is used instead.
    """
    if not enabled:
        return model
    try:
        compiled = torch.compile(model)
    except _COMPILE_ERRORS as err:
        log.warning("torch.compile is unavailable (%s: %s); training continues without it", type(err).__name__, err)
        return model
    return _CompiledOrEager(model, compiled)

