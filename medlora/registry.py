"""The names a config may use for a pipeline or an adaptation method, in one place.

A config's ``pipeline`` and ``model.method`` are validated against these (an unknown name is an
error listing the valid ones), and ``medlora run`` finds a pipeline's module here; nothing else
spells the names out.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Literal, get_args

from .errors import ConfigError

Method = Literal["lora", "linear_probe", "full"]
METHODS: tuple[str, ...] = get_args(Method)  # in the order tables and plots show them

# name → module under ``pipelines/`` with a ``run(cfg, out) -> RunSummary``
PIPELINES: dict[str, str] = {
    "classify": "pipelines.classify",  # train one model (LoRA, linear probe or full fine-tuning)
    "fewshot": "pipelines.fewshot",  # sweep methods × shots × seeds
    "oneclass": "pipelines.oneclass",  # distance-based anomaly score fitted on normal studies
}
Pipeline = Literal["classify", "fewshot", "oneclass"]
assert set(get_args(Pipeline)) == set(PIPELINES)


def pipeline_module(name: str) -> ModuleType:
    """The module of pipeline ``name``; an unknown name is an error listing the known ones."""
    if name not in PIPELINES:
        raise ConfigError(f"pipeline {name!r} does not exist; available: {', '.join(sorted(PIPELINES))}")
    return importlib.import_module(PIPELINES[name])
