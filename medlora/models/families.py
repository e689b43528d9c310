"""timm model families: which LoRA presets fit them, which saliency explains them, which input sizes they take.

A family is recognised by the timm class of the model (its MRO, so subclasses such as DeiT's
``VisionTransformerDistilled`` count as ViTs). The LoRA presets are regular expressions over timm's
module names that hold across the attention families: ViT/DeiT/DINOv2 and BEiT name their attention
``blocks.N.attn.qkv``/``attn.proj``, Swin ``layers.S.blocks.N.attn.qkv``, EVA ``blocks.N.attn.qkv``
(or ``q_proj``/``k_proj``/``v_proj`` when not fused); MLPs are ``mlp.fc1``/``fc2`` (EVA's SwiGLU
``fc1_g``/``fc1_x``). A model without attention blocks (ConvNeXt, ResNet, …) is refused for LoRA with
an error naming ``linear_probe`` and ``full``. ``model.lora.blocks`` counts blocks as
:func:`transformer_blocks` lists them: over all of Swin's stages, in order.

The input size a family takes: patch-based models need a size their patch size divides (timm's
patch embedding would silently drop the remaining border pixels); a model built for a fixed size
takes that size only (:func:`check_image_size`). Swin pads a stage whose grid its window does not
divide: that works, with a warning.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

_QKV = r"(qkv|q_proj|k_proj|v_proj)"
LORA_TARGET_PRESETS: dict[str, str] = {
    "attn_qkv": rf".*blocks\.\d+\.attn\.{_QKV}",
    "attn_all": rf".*blocks\.\d+\.attn\.({_QKV}|proj)",
    "attn_mlp": rf".*blocks\.\d+\.(attn\.({_QKV}|proj)|mlp\.(fc1|fc2|fc1_g|fc1_x))",
}


@dataclass(frozen=True)
class Family:
    """What medlora knows about one timm family (the README table is this one)."""

    name: str
    timm_classes: tuple[str, ...]
    example: str
    lora: bool  # has attention blocks the presets adapt
    saliency: str  # "attention rollout" | "Grad-CAM"
    frozen_prefix: bool  # models/prefix.py may run its frozen lower blocks once


FAMILIES: tuple[Family, ...] = (
    Family("ViT / DeiT / DINOv2", ("VisionTransformer",), "vit_small_patch16_224, deit_small_patch16_224, "
           "vit_small_patch14_reg4_dinov2", True, "attention rollout", True),
    Family("EVA-02", ("Eva",), "eva02_tiny_patch14_224", True, "Grad-CAM", False),
    Family("BEiT", ("Beit",), "beit_base_patch16_224", True, "Grad-CAM", False),
    Family("Swin", ("SwinTransformer",), "swin_tiny_patch4_window7_224", True, "Grad-CAM", False),
    Family("CNN (ConvNeXt, ResNet, …)", (), "convnext_atto, resnet18", False, "Grad-CAM", False),
)


def family_of(model: nn.Module) -> Family:
    """The family of a (possibly peft-wrapped) timm model; CNNs and unknown models fall into the last row."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = {cls.__name__ for cls in type(inner).__mro__}
    return next((f for f in FAMILIES if names & set(f.timm_classes)), FAMILIES[-1])


def transformer_blocks(model: nn.Module) -> list[str]:
    """Module names of the transformer blocks of a timm model, in the order the input passes them: what
    ``model.lora.blocks`` indexes. ViT/DeiT/DINOv2, EVA and BEiT: ``blocks.N``. Swin: the blocks of every
    stage, flattened (``layers.0.blocks.0``, ``layers.0.blocks.1``, ``layers.1.blocks.0``, …), so index
    ``i`` is the ``i``-th block counted over all stages and ``-1`` the last block of the last stage.
    Empty for models without transformer blocks (CNNs)."""
    blocks = getattr(model, "blocks", None)
    if isinstance(blocks, nn.Sequential | nn.ModuleList):
        return [f"blocks.{i}" for i in range(len(blocks))]
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.Sequential | nn.ModuleList):
        return []
    return [f"layers.{s}.blocks.{i}" for s, layer in enumerate(layers)
            if isinstance(getattr(layer, "blocks", None), nn.Sequential | nn.ModuleList)
            for i in range(len(layer.blocks))]


def _matches(name: str, targets: str | list[str]) -> bool:
    if isinstance(targets, str):
        return re.fullmatch(targets, name) is not None
    return any(name == t or name.endswith("." + t) for t in targets)


def require_targets(model: nn.Module, targets: str | list[str], written: str | list[str]) -> None:
    """Refuse LoRA when ``targets`` (a resolved regex or module names) match no linear layer of ``model``,
    before peft would fail with its own error; ``written`` is the config value, for the message."""
    layers = [n for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)]
    if any(_matches(n, targets) for n in layers):
        return
    family = family_of(model)
    arch = type(model).__name__
    if not family.lora:
        raise ConfigError(f"model.method=lora: timm {arch} ({family.name}) has no attention blocks for LoRA to "
                          f"adapt (model.lora.targets={written!r} matched nothing). Use model.method: linear_probe "
                          "(train the classifier head on frozen features) or model.method: full (fine-tune every "
                          f"weight) for this backbone, or name its layers in model.lora.targets (e.g. {layers[-3:]}).")
    raise ConfigError(f"model.lora.targets={written!r} matched no layer of timm {arch} ({family.name}); "
                      f"its linear layers include {layers[:4]}")


def patch_size(model: nn.Module) -> tuple[int, int] | None:
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "patch_size", None)
    if size is None:
        return None
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def check_image_size(model: nn.Module, size: int, key: str = "preprocess.image_size") -> None:
    """Refuse an input size the patch size does not divide (timm would crop silently); warn when Swin's
    windows will be padded."""
    patch = patch_size(model)
    if patch is None:
        return
    step = max(patch)
    if size % patch[0] or size % patch[1]:
        lo, hi = (size // step) * step, (size // step + 1) * step
        raise ConfigError(f"{key}={size} is not a multiple of the patch size {step} of timm {type(model).__name__}: "
                          f"its patch embedding would silently drop the last {size % step} pixel rows and columns. "
                          f"Use {lo or hi} or {hi} (in preprocess.image_size and, for a fixed-size model, "
                          "model.kwargs.img_size)")
    for i, layer in enumerate(getattr(model, "layers", []) or []):
        blocks = getattr(layer, "blocks", None)
        block = blocks[0] if blocks is not None and len(blocks) else None
        res, win = getattr(block, "input_resolution", None), getattr(block, "window_size", None)
        if res is not None and win is not None and (res[0] % win[0] or res[1] % win[1]):
            log.warning("Swin stage %d: its %sx%s grid is not a multiple of the window %s; timm pads the windows "
                        "(image sizes that are multiples of %d avoid this)", i, res[0], res[1], win[0],
                        step * win[0] * 2 ** i)
            break
