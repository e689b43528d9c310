"""Typed, validated configuration: the schema (one file per section group, every key with its
meaning), the root :class:`Config` and its cross-section checks (:mod:`.schema`), and the loader
that reads YAML and the files a config names (:mod:`.loader`).

A config file becomes a :class:`Config` (pydantic models with ``extra="forbid"``): an unknown or
mistyped key is a :class:`~medlora.errors.ConfigError` that names the key and the allowed keys.
The README's config reference is generated from the schema: ``python -m medlora.config.docs --write README.md``.
"""

from __future__ import annotations

from .base import Strict
from .data import DataConfig, LabelKey, SplitConfig, SynthConfig
from .evaluate import EvaluateConfig
from .fewshot import FewShotConfig, RayConfig, ray_endpoint
from .loader import (
    MUST_EXIST,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    folder_architecture,
    load_config,
    read_config_file,
)
from .model import DEFAULT_BACKBONE, LoraConfigModel, ModelConfig
from .oneclass import OneClassConfig
from .preprocess import PreprocessConfig, ViewConfig, WindowConfig
from .schema import Config, path_keys
from .tracking import TrackingConfig, redact_uri
from .train import OPTIMISER_KEYS, PretrainConfig, TrainConfig, optimiser_section

__all__ = [
    "DEFAULT_BACKBONE", "MUST_EXIST", "OPTIMISER_KEYS", "Config", "DataConfig", "EvaluateConfig", "FewShotConfig",
    "LabelKey", "LoraConfigModel", "ModelConfig", "OneClassConfig", "PreprocessConfig", "PretrainConfig",
    "RayConfig", "SplitConfig", "Strict", "SynthConfig", "TrackingConfig", "TrainConfig", "ViewConfig",
    "WindowConfig", "apply_overrides", "config_from_dict", "config_to_dict", "folder_architecture", "load_config",
    "optimiser_section", "path_keys", "ray_endpoint", "read_config_file", "redact_uri",
]
