"""Continue training a received LoRA adapter at the site that received it (``model.adapter``).

The adapter is only valid on the exact base it was trained on: the run's base must have the bundle's
base content (``state_sha256``) and timm name, and ``model.lora`` the bundle's LoRA settings; either
difference is refused before any data is read, naming both sides. The adapter's tensors (LoRA matrices
and the classifier head peft saved beside them) are loaded into the run's freshly built peft model,
which then trains on the site's studies. The lineage returned here is written to the new bundle's
``medlora.json``: the parent adapter's sha256, the parent bundle's, its training run and its data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..config import LoraConfigModel
from ..errors import ConfigError
from ..hashing import sha256_file
from ..models.backbone import BaseInfo
from .adjust import bundle_sha256
from .bundle import Bundle, open_bundle
from .loading import read_weights
from .manifest import require_verified


def check_continuable(bundle: Bundle, base: BaseInfo, lora: LoraConfigModel) -> None:
    """Refuse (:class:`ConfigError`) a bundle that is not LoRA, was trained on another base, or other LoRA settings."""
    if bundle.method != "lora":
        raise ConfigError(f"model.adapter {bundle.path} is a {bundle.method} bundle: only a LoRA adapter is continued")
    theirs = bundle.meta["base"]
    if (theirs.get("timm_name"), theirs.get("state_sha256")) != (base.timm_name, base.state_sha256):
        raise ConfigError(f"model.adapter {bundle.path} was trained on base {theirs.get('timm_name')} (state sha256 "
                          f"{theirs.get('state_sha256')}); this run's base is {base.timm_name} (state sha256 "
                          f"{base.state_sha256}). Set model.weights to the bundle's base "
                          f"({theirs.get('weights_path') or 'its hub weights'})")
    ours, given = lora.model_dump(mode="json"), bundle.meta.get("lora") or {}
    differ = [k for k in ours if k in given and given[k] != ours[k]]
    if differ:
        wanted = ", ".join(f"model.lora.{k}: {given[k]!r}" for k in differ)
        raise ConfigError(f"model.adapter {bundle.path} has other LoRA settings than model.lora; set {wanted}")


def continue_adapter(model: nn.Module, base: BaseInfo, lora: LoraConfigModel, path: Path) -> dict[str, Any]:
    """Load the received adapter of the bundle at ``path`` into ``model`` (a peft LoRA model of ``base``)
    and return its lineage record."""
    from peft import set_peft_model_state_dict

    require_verified(Path(path))
    bundle = open_bundle(Path(path))
    check_continuable(bundle, base, lora)
    result = set_peft_model_state_dict(model, read_weights(bundle))
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise ConfigError(f"model.adapter {bundle.path}: its tensors do not fit this model ({unexpected[:3]} ...)")
    return {"parent_adapter_sha256": sha256_file(bundle.weights_file), "parent_bundle_sha256": bundle_sha256(bundle.path),
            "parent_run_id": bundle.meta.get("mlflow_run_id"), "parent_dataset": bundle.meta.get("dataset"),
            "continued_on": "this run's training split"}
