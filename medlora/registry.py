"""The names a config may use for a pipeline or an adaptation method, in one place.

A config's ``pipeline`` and ``model.method`` are validated against these (an unknown name is an
error listing the valid ones). The pipelines themselves are :data:`pipelines.PIPELINES`, a mapping of
these names to their ``run`` functions (imported only by ``medlora run``: a config loads without
torch); a test keeps the two name sets equal.
"""

from __future__ import annotations

from typing import Literal, get_args

Method = Literal["lora", "linear_probe", "full"]
METHODS: tuple[str, ...] = get_args(Method)  # in the order tables and plots show them
# a sweep may also compare continuing a received LoRA adapter (model.adapter) with training from the base
SweepMethod = Literal["lora", "linear_probe", "full", "adapter_continued"]
SWEEP_METHODS: tuple[str, ...] = get_args(SweepMethod)
CONTINUED = "adapter_continued"

Pipeline = Literal["classify", "fewshot", "oneclass"]
PIPELINE_NAMES: tuple[str, ...] = get_args(Pipeline)
