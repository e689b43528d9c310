"""The ``preprocess:`` section: intensity windowing, how a volume becomes 2D samples, size, augmentation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import Strict, shown


class WindowConfig(Strict):
    """Intensity windowing. ``mode``: ``dicom`` (the file's VOI LUT / window, else min-max),
    ``preset`` (named CT window), ``manual`` (center/width), ``percentile`` (lower/upper)."""

    mode: Literal["dicom", "preset", "manual", "percentile"] = Field(
        "dicom", description="`dicom` (file's VOI LUT/window, else min-max), `preset` (a named CT window), "
        "`manual` (`center`/`width`), `percentile` (`lower`/`upper`)")
    preset: str | None = Field(None, description="`mode: preset`: `lung`, `mediastinum`, `brain`, `bone`, ...")
    center: float | None = Field(None, description="`mode: manual`: window center")
    width: float | None = Field(None, description="`mode: manual`: window width (positive)")
    lower: float = Field(0.5, description="`mode: percentile`: intensity percentile mapped to 0")
    upper: float = Field(99.5, description="`mode: percentile`: intensity percentile mapped to 1")

    @model_validator(mode="after")
    def _complete(self) -> WindowConfig:
        if self.mode == "preset" and not self.preset:
            raise ValueError("preprocess.window.mode=preset needs preprocess.window.preset")
        if self.mode == "manual" and (self.center is None or self.width is None or self.width <= 0):
            raise ValueError("preprocess.window.mode=manual needs center and a positive width")
        return self


class ViewConfig(Strict):
    """How a volume becomes samples: 2D ``slice`` (central), ``every_k``, ``slab``, ``2.5d``, ``mip`` across
    ``axis`` of the RAS volume (2 axial, 1 coronal, 0 sagittal), or the whole ``volume`` as one 3D sample;
    see :mod:`medlora.transforms.views`."""

    kind: Literal["slice", "every_k", "slab", "2.5d", "mip", "volume"] = Field(
        "slice", description="`slice` (central), `every_k`, `slab` (central `slab` slices), `2.5d` (each central "
        "slice with its neighbours as 3 channels), `mip`, or `volume`: the whole volume, resampled to `depth` slices "
        "of `image_size`², is one sample and the ViT takes it whole (3D patches of `model.tubelet` slices; a 2D "
        "base's patch and position embeddings are inflated, `medlora/models/volume.py`)")
    k: int = Field(4, ge=1, description="`every_k`: take every k-th slice")
    slab: int = Field(5, ge=1, description="`slab`: slices of the central slab")
    axis: int = Field(2, ge=0, le=2, description="axis of the RAS volume: 2 axial, 1 coronal, 0 sagittal")
    aggregate: Literal["max", "mean", "attention"] = Field(
        "max", description="how sample scores become a study score: `max`, `mean` (of per-slice scores, training per "
        "slice), or `attention`: trained per study, a gated-attention pooling over the pooled features of its "
        "slices/images gives one output per study (`medlora/models/aggregator.py`)")
    max_slices: int = Field(
        16, ge=1, description="`aggregate: attention`: slices (samples) of a study per training step, drawn at random "
        "each time from a larger study; evaluation uses all; a step holds `train.batch_size // max_slices` studies "
        "(at least one)")
    attention_dim: int = Field(128, ge=1, description="`aggregate: attention`: hidden size of the attention pooling")
    depth: int = Field(16, ge=1, description="`kind: volume`: slices (along `axis`) every volume is resampled to; a "
                       "multiple of `model.tubelet`")

    @model_validator(mode="after")
    def _volume_is_one_sample(self) -> ViewConfig:
        if self.kind == "volume" and self.aggregate == "attention":
            raise ValueError("preprocess.view.kind: volume makes each volume one 3D sample: there are no slices for "
                             "aggregate: attention to pool; use aggregate: max (a study of several volumes takes the "
                             "highest score)")
        return self


class PreprocessConfig(Strict):
    """What happens to an image between the reader and the model."""

    window: WindowConfig = Field(default_factory=WindowConfig, description="intensity windowing")
    view: ViewConfig = Field(default_factory=ViewConfig, description="how a volume becomes 2D samples")
    image_size: int | None = Field(
        None, description="input size: a fixed-size model's own (`model.kwargs.img_size`), else its pretrained "
        "config's; must be a multiple of the patch size", json_schema_extra=shown("model's"))
    spacing: list[float] | None = Field(None, description="resample volumes to these mm (RAS order) before taking views")
    augment: bool = Field(
        True, description="training batches only: random left-right flip (p 0.5) and affine (p 0.5; rotation "
        "±0.15 rad, scale ±10 %, shift ±5 %), one matrix per image, resampled per batch on the training device, "
        "seeded by `train.seed`")
