"""Build the model of a run: timm base from its weight source + the adaptation method."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..config import Config
from .backbone import BaseInfo, create_base
from .lora import ParamCount, apply_method, count_params

log = logging.getLogger(__name__)


@dataclass
class BuiltModel:
    model: nn.Module
    base: BaseInfo
    data_config: dict[str, Any]  # timm's resolved input size, mean, std, interpolation
    params: ParamCount


def input_config(model: nn.Module, image_size: int | None) -> dict[str, Any]:
    """Input size, mean and std derived from the model (timm's data config), size overridable."""
    from timm.data import resolve_model_data_config

    dc = resolve_model_data_config(model)
    size = image_size or int(dc["input_size"][-1])
    return {"image_size": size, "channels": int(dc["input_size"][0]), "mean": [float(m) for m in dc["mean"]],
            "std": [float(s) for s in dc["std"]], "interpolation": dc.get("interpolation", "bicubic")}


def build_model(cfg: Config, out: Path) -> BuiltModel:
    """The base (saved under ``out/base`` when randomly initialised) with ``cfg.model.method`` applied."""
    base, info = create_base(cfg.model, len(cfg.data.outputs), init_dir=Path(out) / "base", seed=cfg.train.seed)
    data_config = input_config(base, cfg.preprocess.image_size)
    model = apply_method(base, cfg.model.method, cfg.model.lora)
    params = count_params(model)
    log.info("%s %s: %s", cfg.model.backbone, cfg.model.method, params)
    return BuiltModel(model, info, data_config, params)
