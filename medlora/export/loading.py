"""Put a bundle's adapter back on its exact base: one base per content hash, adapters swapped on it.

A bundle's ``medlora.json`` names its base by timm name, kwargs, weight source and two hashes (of the
weights file and of the canonical state). :func:`load_base` rebuilds and checks both through
:func:`medlora.models.backbone.rebuild_base`, so an adapter is never put on a different base (peft
alone would only warn about mismatching shapes, and say nothing about different values). Weights are
read only from safetensors (or ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import PreprocessConfig
from ..errors import BundleError, WeightsError
from .adapter import METADATA_FILE

log = logging.getLogger(__name__)
BUNDLE_BASE_FILE = "base/base.safetensors"


@dataclass
class Bundle:
    """An exported bundle on disk: its folder and parsed ``medlora.json``."""

    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def threshold(self) -> float:
        return float(self.meta["operating_point"]["threshold"])

    @property
    def aggregate(self) -> str:
        return self.meta["operating_point"].get("aggregate", "max")

    @property
    def abnormal_index(self) -> int:
        return int(self.meta["labels"]["abnormal_index"])

    def base_info(self) -> dict[str, Any]:
        """The base record with a bundle-relative weights path made absolute."""
        info = dict(self.meta["base"])
        path = info.get("weights_path")
        if path and not Path(path).is_absolute():
            info["weights_path"] = str(self.path / path)
        return info

    def preprocess(self) -> tuple[PreprocessConfig, int, list[float], list[float]]:
        """(preprocess config, input size, mean, std) exactly as the run used them."""
        pre = self.meta["preprocess"]
        cfg = PreprocessConfig(**{k: pre[k] for k in ("window", "view", "spacing") if k in pre}, augment=False)
        return cfg, int(pre["image_size"]), list(pre["mean"]), list(pre["std"])


def open_bundle(path: Path) -> Bundle:
    """Read ``path/medlora.json``; raise :class:`BundleError` if it is not a LoRA bundle."""
    path = Path(path)
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise BundleError(f"{path} is not a medlora bundle: {METADATA_FILE} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{meta_file} is not valid JSON: {err}") from None
    for key in ("base", "preprocess", "labels", "operating_point", "method"):
        if key not in meta:
            raise BundleError(f"{meta_file} has no {key!r} entry")
    if meta["method"] != "lora":
        raise BundleError(f"{path}: method {meta['method']!r}; only LoRA bundles can be loaded with peft")
    if not (path / "adapter" / "adapter_model.safetensors").is_file():
        raise BundleError(f"{path}: adapter/adapter_model.safetensors is missing (only safetensors adapters are loaded)")
    return Bundle(path, meta)


def load_base(bundle: Bundle) -> nn.Module:
    """The bundle's base, rebuilt and verified by file sha256 and state sha256."""
    from ..models.backbone import rebuild_base

    info = bundle.base_info()
    if info["source"] != "hub" and not Path(info["weights_path"]).is_file():
        raise BundleError(f"bundle {bundle.path}: base weights {info['weights_path']} are not available "
                          f"(sha256 {info['sha256'][:12]}…); place that file there")
    try:
        return rebuild_base(info).eval()
    except WeightsError as err:
        raise BundleError(f"refusing to load bundle {bundle.path} on a different base: {err}. The adapter is only "
                          "valid on the exact base it was trained on.") from None


def same_base(a: Bundle, b: Bundle) -> bool:
    """True when two bundles were trained on bases with the same content."""
    ka, kb = a.meta["base"], b.meta["base"]
    return (ka["timm_name"], ka["state_sha256"], ka["num_classes"]) == (kb["timm_name"], kb["state_sha256"], kb["num_classes"])


def attach_adapters(base: nn.Module, bundles: list[Bundle], names: list[str]) -> nn.Module:
    """One ``PeftModel`` holding each bundle's adapter under its name (use ``set_adapter`` to switch)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(bundles[0].path / "adapter"), adapter_name=names[0])
    for bundle, name in zip(bundles[1:], names[1:], strict=True):
        model.load_adapter(str(bundle.path / "adapter"), adapter_name=name)
    return model.eval()


def merged_model(base: nn.Module, bundle: Bundle) -> nn.Module:
    """A plain timm model with the adapter (and head) merged in; ``base`` is copied, not changed."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(copy.deepcopy(base), str(bundle.path / "adapter"))
    return model.merge_and_unload().eval()


def load_model(bundle: Bundle, merge: bool = False) -> nn.Module:
    """The adapted model of one bundle, verified base included."""
    base = load_base(bundle)
    return merged_model(base, bundle) if merge else attach_adapters(base, [bundle], ["default"])
