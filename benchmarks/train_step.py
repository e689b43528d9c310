"""Training-step speed and peak memory: the naive timm+peft loop vs medlora's LoRA, full fine-tune
and linear probe, on the same model, batch and step count.

Each configuration runs in its own process (peak RSS is per configuration). The medlora side
trains with the library's own loop (:func:`medlora.train.loop.fit`, one epoch over the benchmark
batches) after the library's runtime setup (:func:`medlora.device.configure_threads`); the naive
side is :mod:`benchmarks.naive_loop`. Batches are fixed random tensors: a step's compute does not
depend on pixel values, and data loading is measured separately (:mod:`benchmarks.data_pipeline`).

FLOPs of one step are counted with ``torch.utils.flop_counter.FlopCounterMode`` (matmuls, convolutions
and attention, forward and backward, as executed: frozen weights get no weight-gradient GEMMs)
on a batch of 2 and scaled to the batch size (every counted op is linear in the batch). The same
pass sums the tensors autograd saves for backward (``train_state_mb``, see :func:`step_flops_and_state`).
After the timed steps, one more step at the full batch is profiled for the peak memory tensors
hold (``alloc_peak_mb``, :func:`~benchmarks.harness.allocated_peak_mb`).
"""

from __future__ import annotations

import time
from typing import Any

from benchmarks.harness import TimedLoader, allocated_peak_mb, flop_counter, median, rss_mb


def _batches(batch: int, size: int, steps: int, seed: int = 0) -> list[dict[str, Any]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 3, size, size, generator=g)
    y = torch.randint(0, 2, (batch,), generator=g)
    return [{"image": x, "label": y} for _ in range(steps)]


def _val_batch(size: int) -> list[dict[str, Any]]:
    import torch

    return [{"image": torch.zeros(2, 3, size, size), "label": torch.tensor([0, 1]), "sample_id": ["a", "b"],
             "study_key": ["a", "b"], "patient_key": ["a", "b"]}]


def step_flops_and_state(model, size: int, batch: int) -> tuple[float, float]:
    """(FLOPs of one training step, MiB of training state) at ``batch``, measured at batch 2 and scaled.

    Training state = the tensors autograd saves for backward (activations; parameters excluded) scaled
    to ``batch``, plus a gradient and two AdamW moments per trainable parameter: the memory a step
    needs beyond the model, independent of the allocator (``ru_maxrss`` also counts what glibc kept).
    """
    import torch

    x = torch.randn(2, 3, size, size)
    y = torch.tensor([0, 1])
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in params:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    model.train()
    with flop_counter() as counter:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
    model.zero_grad(set_to_none=True)
    trainable = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    state = sum(saved.values()) * batch / 2 + 3 * trainable
    return counter.get_total_flops() * batch / 2, state / 2**20


def medlora_model(method: str, model_name: str, model_kwargs: dict, lora: dict | None = None, seed: int = 0):
    """A timm base made trainable by medlora's :func:`~medlora.models.lora.apply_method` (config defaults)."""
    import timm
    import torch

    from medlora.config import LoraConfigModel
    from medlora.models.lora import apply_method

    torch.manual_seed(seed)
    base = timm.create_model(model_name, pretrained=False, num_classes=2, **model_kwargs)
    return apply_method(base, method, LoraConfigModel(**(lora or {})))


def measure_train_step(impl: str, method: str, model_name: str, model_kwargs: dict, size: int, batch: int,
                       warmup: int, steps: int, lora: dict | None = None, count_flops: bool = True) -> dict:
    """Median (and fastest) seconds per training step after ``warmup`` steps, FLOPs per step, memory.

    ``lora`` overrides medlora's LoRA config defaults (for one-change-at-a-time comparisons).
    """
    import torch

    from medlora.device import configure_threads, resolve_device

    kwargs = {**model_kwargs, "img_size": size}
    if impl == "naive":
        from benchmarks.naive_loop import naive_model, naive_optimizer, naive_step

        model = naive_model(method, model_name, kwargs)
    else:
        configure_threads(None)
        model = medlora_model(method, model_name, kwargs, lora)
    flops, state_mb = step_flops_and_state(model, size, batch) if count_flops else (None, None)
    rss_before = rss_mb()
    loader = TimedLoader(_batches(batch, size, warmup + steps))
    t0 = time.perf_counter()
    if impl == "naive":
        opt = naive_optimizer(model)
        model.train()
        for b in loader:
            naive_step(model, opt, b["image"], b["label"])
    else:
        from medlora.config import TrainConfig
        from medlora.train.loop import fit

        cfg = TrainConfig(epochs=1, batch_size=batch, warmup_epochs=0, patience=1)
        fit(model, loader, _val_batch(size), cfg, resolve_device("cpu"), 1, val_metric=lambda p: 0.5)
    wall = time.perf_counter() - t0
    alloc_peak = allocated_peak_mb(model, batch, size) if count_flops else None  # after timing: not in it
    step = median(loader.step_s[warmup:])
    step_min = min(loader.step_s[warmup:])
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"impl": impl, "method": method, "size": size, "batch": batch, "steps": steps, "step_s": step, "step_s_min": step_min,
            "step_s_all": loader.step_s, "images_per_s": batch / step, "flops_per_step": flops,
            "gflops_achieved": flops / step / 1e9 if flops else None,
            "gflops_achieved_best": flops / step_min / 1e9 if flops else None, "rss_before_train_mb": rss_before,
            "train_state_mb": state_mb, "alloc_peak_mb": alloc_peak,
            "threads": torch.get_num_threads(), "trainable_params": trainable, "wall_s": wall}
