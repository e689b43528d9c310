"""Runnable pipelines, one module per kind of study. Each only wires library stages together.

A config names its pipeline (``pipeline: classify``); :data:`PIPELINES` maps the name to the
pipeline's ``run(cfg, out) -> RunSummary``, and ``medlora run`` calls it. The names a config may
use are :data:`medlora.registry.PIPELINE_NAMES` (the config is validated without importing the
pipelines); a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from medlora.config import Config
from medlora.errors import ConfigError
from medlora.summary import RunSummary

from . import classify, fewshot, oneclass

PIPELINES: dict[str, Callable[[Config, Path], RunSummary]] = {
    "classify": classify.run,  # train one model (LoRA, linear probe or full fine-tuning)
    "fewshot": fewshot.run,  # sweep methods × shots × seeds
    "oneclass": oneclass.run,  # distance-based anomaly score fitted on normal studies
}


def pipeline(name: str) -> Callable[[Config, Path], RunSummary]:
    """The ``run`` of pipeline ``name``; an unknown name is an error listing the known ones."""
    if name not in PIPELINES:
        raise ConfigError(f"pipeline {name!r} does not exist; available: {', '.join(sorted(PIPELINES))}")
    return PIPELINES[name]
