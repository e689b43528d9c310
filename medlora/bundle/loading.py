"""Put a bundle's trained weights back into a model: adapters and heads on their exact base, full
fine-tunes on their own.

A bundle's ``medlora.json`` names its method and artifact (:mod:`medlora.bundle.layout`) and its base
by timm name, kwargs, weight source and two hashes (of the weights file and of the canonical state).
:func:`load_base` rebuilds and checks both through :func:`medlora.models.backbone.rebuild_base`, so an
adapter or a head is never put on a different base (peft alone would only warn about mismatching
shapes, and say nothing about different values). A full fine-tune is a new model: it is rebuilt from
the timm name and its own weights file, checked by that file's sha256, and needs no base. Weights are
read only from safetensors.
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import torch
from torch import nn

from ..errors import BundleError, WeightsError
from ..hashing import sha256_file
from ..models.backbone import head_prefixes
from .bundle import Bundle
from .layout import METADATA_FILE

log = logging.getLogger(__name__)


def load_base(bundle: Bundle) -> nn.Module:
    """The bundle's base, rebuilt and verified by file sha256 and state sha256."""
    from ..models.backbone import rebuild_base

    if not bundle.artifact.needs_base:
        raise BundleError(f"bundle {bundle.path} is a full fine-tune, a new model: it needs no base (load_model loads it)")
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
    """True when two bundles need a base and were trained on bases with the same content."""
    if not (a.artifact.needs_base and b.artifact.needs_base):
        return False
    ka, kb = a.meta["base"], b.meta["base"]
    return (ka["timm_name"], ka["state_sha256"], ka["num_classes"]) == (kb["timm_name"], kb["state_sha256"], kb["num_classes"])


def read_weights(bundle: Bundle) -> dict[str, torch.Tensor]:
    """The bundle's weights file, checked against the sha256 of its ``medlora.json`` when it has one."""
    from safetensors.torch import load_file

    path = bundle.weights_file
    expected = (bundle.meta.get("weights") or {}).get("sha256")
    if expected and sha256_file(path) != expected:
        raise BundleError(f"bundle {bundle.path}: {bundle.artifact.weights_path} does not match its sha256 in "
                          f"{METADATA_FILE}; re-export it")
    return load_file(path)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], bundle: Bundle, strict: bool) -> None:
    """``load_state_dict`` with a readable error: which keys are missing, unexpected or of another shape."""
    own = model.state_dict()
    bad = [f"{k} {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in state.items() if k in own and own[k].shape != v.shape]
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state)) if strict else []
    if bad or unexpected or missing:
        raise BundleError(f"bundle {bundle.path}: {bundle.artifact.weights_path} does not fit timm "
                          f"{bundle.meta['base']['timm_name']} {bundle.meta['base'].get('timm_kwargs', {})}: "
                          f"shapes {bad[:3]}, unexpected {unexpected[:3]}, missing {missing[:3]}")
    model.load_state_dict(state, strict=strict)


def head_state(bundle: Bundle) -> dict[str, torch.Tensor]:
    """The classifier-head tensors of a linear-probe bundle."""
    if bundle.method != "linear_probe":
        raise BundleError(f"bundle {bundle.path} is a {bundle.method} bundle, not a linear probe")
    return read_weights(bundle)


def put_head(model: nn.Module, state: dict[str, torch.Tensor], bundle: Bundle) -> nn.Module:
    """Load a linear probe's head into ``model`` (a base of the same content), in place."""
    heads = head_prefixes(model)
    if not state or not all(k.startswith(heads) for k in state):
        raise BundleError(f"bundle {bundle.path}: {bundle.artifact.weights_path} holds tensors outside the "
                          f"classifier head {heads}: {sorted(state)[:3]}")
    _load_state(model, state, bundle, strict=False)
    return model


def load_full(bundle: Bundle) -> nn.Module:
    """A full fine-tune: timm's architecture from ``medlora.json`` with the bundle's whole state."""
    from ..models.backbone import architecture

    if bundle.method != "full":
        raise BundleError(f"bundle {bundle.path} is a {bundle.method} bundle, not a full fine-tune")
    model = architecture(bundle.meta["base"])
    _load_state(model, read_weights(bundle), bundle, strict=True)
    return model.eval()


def attach_adapters(base: nn.Module, bundles: list[Bundle], names: list[str]) -> nn.Module:
    """One ``PeftModel`` holding each LoRA bundle's adapter under its name (use ``set_adapter`` to switch)."""
    from peft import PeftModel

    model = PeftModel.from_pretrained(base, str(bundles[0].path / "adapter"), adapter_name=names[0])
    for bundle, name in zip(bundles[1:], names[1:], strict=True):
        model.load_adapter(str(bundle.path / "adapter"), adapter_name=name)
    return model.eval()


def refuse_merge(bundle: Bundle) -> None:
    """Merging makes sense for a LoRA adapter only; say why for the other methods."""
    if bundle.method == "full":
        raise BundleError(f"bundle {bundle.path} is a full fine-tune, a new model and not an adapter: there is "
                          "nothing to merge (it already runs at the base model's speed); merging is for LoRA bundles")
    if bundle.method != "lora":
        raise BundleError(f"bundle {bundle.path} is a {bundle.method}: only its classifier head was trained and the "
                          "base is used as is, so there is no adapter to merge; merging is for LoRA bundles")


def merged_model(base: nn.Module, bundle: Bundle) -> nn.Module:
    """A plain timm model with a LoRA adapter (and head) merged in; ``base`` is copied, not changed."""
    from peft import PeftModel

    refuse_merge(bundle)
    model = PeftModel.from_pretrained(copy.deepcopy(base), str(bundle.path / "adapter"))
    return model.merge_and_unload().eval()


def load_model(bundle: Bundle, merge: bool = False) -> nn.Module:
    """The trained model of one bundle, verified base included; ``merge`` only for LoRA."""
    if merge:
        refuse_merge(bundle)
    if bundle.method == "full":
        return load_full(bundle)
    base = load_base(bundle)
    if bundle.method == "linear_probe":
        return put_head(base, head_state(bundle), bundle).eval()
    return merged_model(base, bundle) if merge else attach_adapters(base, [bundle], ["default"])
