"""Size of an exported LoRA adapter against the base checkpoint it is applied to.

The adapter is peft's ``save_pretrained`` layout (what medlora exports), with medlora's default
LoRA config (r 8 on the attention ``qkv``, the classifier head in ``modules_to_save``); the base is
the safetensors file medlora records for a base (:func:`medlora.models.backbone.base_state`).
"""

from __future__ import annotations

import tempfile
from pathlib import Path


def measure_adapter_size(model_name: str, model_kwargs: dict) -> dict:
    from safetensors.torch import save_file

    from benchmarks.train_step import medlora_model
    from medlora.models.backbone import base_state

    base = medlora_model("full", model_name, model_kwargs)
    with tempfile.TemporaryDirectory(prefix="medlora-bench-adapter-") as tmp:
        base_file = Path(tmp) / "base.safetensors"
        save_file(base_state(base), base_file)
        peft_model = medlora_model("lora", model_name, model_kwargs)
        peft_model.save_pretrained(Path(tmp) / "adapter")
        adapter_file = Path(tmp) / "adapter" / "adapter_model.safetensors"
        base_bytes, adapter_bytes = base_file.stat().st_size, adapter_file.stat().st_size
    return {"base_mb": base_bytes / 2**20, "adapter_mb": adapter_bytes / 2**20, "ratio": adapter_bytes / base_bytes}
