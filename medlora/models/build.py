"""Build the model of a run: timm base from its weight source + the adaptation method."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from ..errors import ConfigError
from .backbone import BaseInfo, create_base
from .families import check_image_size, require_targets, transformer_blocks
from .lora import ParamCount, apply_method, count_params, resolve_targets
from .volume import volume_input

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    model: nn.Module
    base: BaseInfo
    data_config: dict[str, Any]  # timm's resolved input size, mean, std, interpolation
    params: ParamCount


def input_config(model: nn.Module, image_size: int | None) -> dict[str, Any]:
    """Input size, mean and std derived from the model (timm's data config), size overridable.

    The size is the model's own input size when it was built for one (a ViT's ``img_size``), else
    its pretrained config's; ``image_size`` must agree with a fixed-size model and be a multiple of a
    patch-based model's patch size (:func:`~medlora.models.families.check_image_size`).
    """
    from timm.data import resolve_model_data_config

    dc = resolve_model_data_config(model)
    size = image_size or _model_size(model) or int(dc["input_size"][-1])
    fixed = _model_size(model)
    if fixed and size != fixed:
        raise ConfigError(f"preprocess.image_size={size} but timm {type(model).__name__} is built for {fixed} px "
                          f"inputs: set model.kwargs.img_size: {size} as well (timm resizes pretrained position "
                          "embeddings), or leave preprocess.image_size unset to use the model's size")
    check_image_size(model, size)
    return {"image_size": size, "channels": int(dc["input_size"][0]), "mean": [float(m) for m in dc["mean"]],
            "std": [float(s) for s in dc["std"]], "interpolation": dc.get("interpolation", "bicubic")}


def _model_size(model: nn.Module) -> int | None:
    """The one input size a fixed-size model (a strict patch embedding) accepts, None for flexible models."""
    pe = getattr(model, "patch_embed", None)
    img = getattr(pe, "img_size", None)
    if img is None or not getattr(pe, "strict_img_size", False) or getattr(model, "dynamic_img_size", False):
        return None
    img = (img, img) if isinstance(img, int) else tuple(img)
    if img[0] != img[1]:
        raise ConfigError(f"timm {type(model).__name__} is built for non-square {img} inputs; medlora feeds square "
                          "images: set model.kwargs.img_size to one number")
    return int(img[0])


def check_model(cfg: Config) -> BaseInfo:
    """Build the base from its weight source and check that it fits the run (input size, method, LoRA
    targets) without keeping anything: what :func:`build_model` would refuse, in seconds, before any data."""
    base, info = create_base(cfg.model, len(cfg.data.classes), seed=cfg.train.seed, save_init=False,
                             volume=volume_input(cfg.preprocess, cfg.model))
    input_config(base, cfg.preprocess.image_size)
    methods = {"classify": [cfg.model.method], "fewshot": list(cfg.fewshot.methods) if cfg.fewshot else []}
    if {"lora", "adapter_continued"} & set(methods.get(cfg.pipeline, [])):
        lora = cfg.model.lora
        targets = resolve_targets(lora.targets, lora.blocks, transformer_blocks(base))
        require_targets(base, targets, lora.targets)
    return info


def build_model(cfg: Config, out: Path) -> BuiltModel:
    """The base (saved under ``out/base`` when randomly initialised) with ``cfg.model.method`` applied."""
    base, info = create_base(cfg.model, len(cfg.data.outputs), init_dir=Path(out) / "base", seed=cfg.train.seed,
                             volume=volume_input(cfg.preprocess, cfg.model))
    data_config = input_config(base, cfg.preprocess.image_size)
    model = apply_method(base, cfg.model.method, cfg.model.lora)
    params = count_params(model)
    log.info("%s %s: %s", cfg.model.backbone, cfg.model.method, params)
    return BuiltModel(model, info, data_config, params)
