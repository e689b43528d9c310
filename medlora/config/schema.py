"""The root :class:`Config`: one field per top-level section, and the checks that span sections.

This is where every config key is defined and documented: each section's file holds its keys
with their checks and meaning (``Field(description=...)``), from which the README's config
reference is generated (:mod:`medlora.config.docs`). Nothing here reads a file: validating a
mapping touches no disk (the loader, :mod:`medlora.config.loader`, reads the files a config names).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from ..registry import Pipeline
from .base import Strict
from .data import DataConfig
from .evaluate import EvaluateConfig
from .fewshot import FewShotConfig
from .model import ModelConfig
from .oneclass import OneClassConfig
from .preprocess import PreprocessConfig
from .tracking import TrackingConfig
from .train import PretrainConfig, TrainConfig


class Config(Strict):
    """A whole run: what to read, how to preprocess, which model, how to train, evaluate and log."""

    pipeline: Pipeline = Field(
        "classify", description="`classify`, `fewshot` or `oneclass` (names in `medlora/registry.py`): the "
        "pipeline of `pipelines/` (`PIPELINES` in `pipelines/__init__.py`) that wires the stages")
    data: DataConfig = Field(description="the studies, their labels and split")
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig,
                                         description="windowing, views of volumes, input size, augmentation")
    model: ModelConfig = Field(default_factory=ModelConfig, description="the timm base, its weights and adaptation")
    train: TrainConfig = Field(
        default_factory=TrainConfig, description="AdamW, `warmup_epochs` + cosine, early stopping (`patience`) on "
        "validation AUROC (multiclass/multilabel: its mean over findings), `device: auto`; each epoch logs its time "
        "and an ETA for the remaining epochs (at the mean epoch time so far)")
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig, description="scoring the test split")
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="the MLflow store")
    fewshot: FewShotConfig | None = Field(
        None, description="`pipeline: fewshot` (required there): the sweep's `shots`, `seeds`, `methods`, "
        "`overrides`; `fewshot: {}` takes the defaults")
    oneclass: OneClassConfig = Field(default_factory=OneClassConfig,
                                     description="the anomaly score of `pipeline: oneclass`")
    pretrain: PretrainConfig | None = Field(
        None, description="masked-autoencoder pretraining (`medlora pretrain`; with this section `medlora run` "
        "adapts the pretrained base)")

    @model_validator(mode="after")
    def _pipeline_has_its_section(self) -> Config:
        if self.pipeline == "fewshot" and self.fewshot is None:
            raise ValueError("pipeline: fewshot needs a 'fewshot:' section (shots, seeds, methods; "
                             "'fewshot: {}' takes the defaults)")
        return self

    @model_validator(mode="after")
    def _adapter_is_continued_by_lora(self) -> Config:
        methods = list(self.fewshot.methods) if self.pipeline == "fewshot" and self.fewshot else [self.model.method]
        if "adapter_continued" in methods and self.model.adapter is None:
            raise ValueError("fewshot.methods has adapter_continued: set model.adapter to the received LoRA bundle")
        if self.model.adapter is not None and self.pipeline == "classify" and self.model.method != "lora":
            raise ValueError(f"model.adapter continues a LoRA adapter: model.method must be lora, not "
                             f"{self.model.method}")
        if self.model.adapter is not None and self.pipeline == "classify" and self.train.head_norm is True:
            raise ValueError("model.adapter continues a received head trained on raw features: train.head_norm: true "
                             "would standardise them under it; use auto or false")
        return self

    @model_validator(mode="after")
    def _calibration_needs_probabilities(self) -> Config:
        if self.pipeline == "oneclass" and self.evaluate.calibration != "none":
            raise ValueError(f"evaluate.calibration={self.evaluate.calibration!r} with pipeline: oneclass; one-class "
                             "scores are distances, not probabilities, so they are not calibrated (use 'none')")
        return self

    def _conv_stem_fits(self) -> None:
        """``model.stem: conv`` is new weights for whole volumes, trained with the rest of the model."""
        if self.preprocess.view.kind != "volume":
            raise ValueError("model.stem: conv is the volume ViT's convolutional stem: set preprocess.view.kind: "
                             "volume, or drop model.stem for 2D images")
        if self.model.weights is not None or self.model.pretrained or self.pretrain is not None:
            raise ValueError("model.stem: conv starts from random initialisation: a 2D base has no weights for its "
                             "convolutions (use model.stem: patch to inflate a pretrained base into the volume ViT)")
        methods = list(self.fewshot.methods) if self.pipeline == "fewshot" and self.fewshot else [self.model.method]
        others = sorted(set(methods) - {"full"})
        if others:
            raise ValueError(f"model.stem: conv is trained with the whole model (method full); {', '.join(others)} "
                             "would leave its convolutions at their random initialisation (use model.stem: patch)")

    @model_validator(mode="after")
    def _task_fits(self) -> Config:
        if self.train.pos_weight and self.data.task != "multilabel":
            raise ValueError(f"train.pos_weight applies to data.task multilabel, not {self.data.task}")
        if self.pipeline == "oneclass" and self.data.task == "multiclass" and self.data.normal is None:
            raise ValueError("pipeline oneclass scores 'any finding' against normal: data.task multiclass needs "
                             "data.normal (the class of normal studies)")
        if self.data.task != "binary" and self.evaluate.calibration != "none":
            raise ValueError(f"evaluate.calibration={self.evaluate.calibration!r} recalibrates the one score of data.task "
                             f"binary; a {self.data.task} run's per-finding scores are not recalibrated (use 'none')")
        view = self.preprocess.view
        if view.kind == "volume" and view.depth % self.model.tubelet:
            raise ValueError(f"preprocess.view.depth={view.depth} must be a multiple of model.tubelet="
                             f"{self.model.tubelet} (the slices of one 3D patch)")
        if self.model.stem == "conv":
            self._conv_stem_fits()
        if view.kind == "volume" and self.pipeline == "oneclass":
            raise ValueError("preprocess.view.kind: volume trains a 3D ViT; pipeline: oneclass scores 2D images "
                             "(use a 2D view)")
        if self.preprocess.view.aggregate == "attention" and self.pipeline not in ("classify", "fewshot"):
            raise ValueError(f"preprocess.view.aggregate: attention trains one model per study and is available for "
                             f"pipeline: classify and fewshot, not {self.pipeline}; use max or mean there")
        return self


def sections(annotation: object) -> list[type[BaseModel]]:
    """The config sections a field's annotation holds (``X``, ``X | None``)."""
    args = getattr(annotation, "__args__", ()) or (annotation,)
    return [a for a in args if isinstance(a, type) and issubclass(a, BaseModel)]


def path_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[str]:
    """The dotted keys of every path-valued field (``data.root``, ``model.weights`` ...)."""
    keys: list[str] = []
    for name, info in (model or Config).model_fields.items():
        args = getattr(info.annotation, "__args__", ()) or (info.annotation,)
        if Path in args:
            keys.append(prefix + name)
        for section in sections(info.annotation):
            keys += path_keys(section, f"{prefix}{name}.")
    return keys
