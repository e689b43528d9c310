"""The ``fewshot:`` section of ``pipeline: fewshot``, and where its points run (``fewshot.ray``)."""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from ..registry import METHODS, SWEEP_METHODS, SweepMethod
from .base import Strict, shown
from .train import TrainConfig

RAY_ADDRESS_FORMS = "host:port, ray://host:port or auto"


def ray_endpoint(address: str) -> tuple[str, int] | None:
    """(host, port) of a Ray ``address`` written ``host:port`` or ``ray://host:port``; ``None`` for
    ``auto`` (Ray finds the cluster). Any other form is a ``ValueError`` naming the accepted ones."""
    if address == "auto":
        return None
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    try:
        port = parts.port
    except ValueError:  # not a number, or out of range
        port = None
    if parts.scheme != "ray" or not parts.hostname or port is None or port == 0 or parts.path not in ("", "/"):
        raise ValueError(f"fewshot.ray.address={address!r} is not {RAY_ADDRESS_FORMS}")
    return parts.hostname, port


class RayConfig(Strict):
    """Where a sweep's points run with ``fewshot.executor: ray``, and what each point asks for."""

    address: str | None = Field(
        None, description="a running cluster: `host:port`, `ray://host:10001` or `auto`; its form is checked when "
        "the config loads, whether it answers when the sweep starts",
        json_schema_extra=shown("a Ray of this machine"))
    cpus_per_point: float = Field(1.0, gt=0, description="Ray CPUs reserved by each (method, shots, seed) task")
    gpus_per_point: float = Field(0.0, ge=0, description="Ray GPUs reserved by each task")
    max_retries: int = Field(1, ge=0, description="reruns of a point whose worker process or node died")
    connect_timeout: float = Field(5.0, gt=0, description="seconds to wait for `address` to answer")

    @field_validator("address")
    @classmethod
    def _address_form(cls, v: str | None) -> str | None:
        if v is not None:
            ray_endpoint(v)
        return v


class FewShotConfig(Strict):
    """A sweep of methods × shots × seeds, each point one training run (``pipeline: fewshot``)."""

    shots: list[int | Literal["all"]] = Field(default_factory=lambda: [1, 5, 10, "all"],
                                              description="patients per class in the training split (`all`: every one)")
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2], description="seeds of each (method, shots) point")
    methods: list[SweepMethod] = Field(
        default_factory=lambda: list(METHODS), description="adaptation methods compared; `adapter_continued` "
        "continues the received adapter of `model.adapter` (LoRA), beside `lora` from the base")
    overrides: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                 description="per-method `train.*` values, e.g. `{full: {lr: 1e-4}}`")
    executor: Literal["local", "ray"] = Field(
        "local", description="where the points run: `local` (this process) or `ray` (Ray tasks); see "
        "[More than one machine](#more-than-one-machine)")
    ray: RayConfig = Field(default_factory=RayConfig, description="the cluster of `executor: ray`")
    together: Literal["auto", "on", "off"] = Field(
        "auto", description="`on`: the local executor trains the sweep's LoRA points of one training config "
        "together, over one frozen base (each point keeps its own batches, optimiser, schedule, early stopping and "
        "child run); `auto`: `on` where the sweep trains on CUDA, one by one on a CPU (where it measured 0.88-1.15x: "
        "a CPU has no idle capacity for the points to share); `off`: every point alone. See "
        "[Training LoRA points together](#training-lora-points-together)")
    group_size: int = Field(8, ge=1, description="most LoRA points trained together in one group (memory grows "
                            "with it: one batch per point per step)")

    @field_validator("together", mode="before")
    @classmethod
    def _yaml_off(cls, v: Any) -> Any:
        """YAML reads an unquoted ``off`` as ``false`` and ``on`` as ``true``."""
        return {False: "off", True: "on"}.get(v, v) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _overrides_are_train_keys(self) -> FewShotConfig:
        """``overrides`` maps a method to ``train.*`` values; anything else names the allowed keys."""
        allowed = sorted(set(TrainConfig.model_fields) - {"seed"})  # the sweep sets the seed
        for method, values in self.overrides.items():
            if method not in SWEEP_METHODS:
                raise ValueError(f"fewshot.overrides.{method}: unknown method; allowed: {', '.join(sorted(SWEEP_METHODS))}")
            for key in values:
                if key not in allowed:
                    raise ValueError(f"fewshot.overrides.{method}.{key}: not a train key; allowed: {', '.join(allowed)}")
            try:
                TrainConfig.model_validate(values)  # types and ranges, like train.* itself
            except ValidationError as err:
                first = err.errors()[0]
                raise ValueError(f"fewshot.overrides.{method}.{first['loc'][0]}: {first['msg']}") from None
        if any(isinstance(k, int) and k < 1 for k in self.shots) or not self.shots or not self.seeds or not self.methods:
            raise ValueError("fewshot.shots (>= 1 or 'all'), seeds and methods must be non-empty")
        return self
