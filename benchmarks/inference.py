"""Inference images/s of the base model, the model with an unmerged LoRA adapter, and the merged one.

An unmerged peft adapter adds ``B·(A·x)`` beside every adapted linear layer at every call;
``merge_and_unload`` folds ``W + s·B·A`` into the base weights once, so the merged model has the
base's exact architecture and should run at the base's speed. All three are timed in one process
(same thread settings, same batches), in eval mode under ``torch.inference_mode``.
"""

from __future__ import annotations

import copy

from benchmarks.harness import median, timed


def _interleaved(models: dict, x, batches: int, warmup: int = 2) -> dict[str, list[float]]:
    """Seconds per batch of each model, timed in alternation (drift and noise hit all alike)."""
    import torch

    times: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for m in models.values():
            m.eval()
            for _ in range(warmup):
                m(x)
        for _ in range(batches):
            for name, m in models.items():
                times[name].append(timed(lambda m=m: m(x)))
    return times


def measure_inference(model_name: str, model_kwargs: dict, size: int, batch: int, batches: int) -> dict:
    """images/s of base, unmerged adapter, merged adapter (medlora's LoRA config defaults)."""
    import torch

    from benchmarks.train_step import medlora_model
    from medlora.device import configure_threads

    configure_threads(None)
    kwargs = {**model_kwargs, "img_size": size}
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    base = medlora_model("full", model_name, kwargs)
    peft_model = medlora_model("lora", model_name, kwargs)
    with torch.no_grad():  # a trained adapter: B is non-zero (peft initialises it to zero)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.02)
    peft_model.eval()
    merged = copy.deepcopy(peft_model).merge_and_unload()
    times = _interleaved({"base": base, "unmerged": peft_model, "merged": merged}, x, batches)
    out: dict = {"size": size, "batch": batch, "batches": batches}
    for name, ts in times.items():
        out[name], out[f"{name}_times"] = batch / median(ts), ts
    with torch.inference_mode():
        out["merge_max_abs_diff"] = float((merged(x[:2]) - peft_model(x[:2])).abs().max())
    out["merged_vs_base"] = out["merged"] / out["base"]
    out["unmerged_vs_base"] = out["unmerged"] / out["base"]
    return out
