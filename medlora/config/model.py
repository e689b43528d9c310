"""The ``model:`` section: the timm base, its weights, and how it is adapted (LoRA, linear probe, full)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from ..registry import Method
from .base import Strict, shown

DEFAULT_BACKBONE = "vit_small_patch16_224"


class LoraConfigModel(Strict):
    """The LoRA adapter (peft ``LoraConfig``) of ``model.method: lora``."""

    r: int = Field(8, ge=1, description="rank")
    alpha: float = Field(16.0, description="scaling numerator (alpha / r)")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout on the adapter's input")
    targets: str | list[str] = Field(
        "attn_qkv", description="a preset (`attn_qkv`, `attn_all`, `attn_mlp`) or explicit module names")
    blocks: list[int] | None = Field(
        None, description="adapt only these blocks of the preset (e.g. `[-4, -3, -2, -1]`, the last four; "
        "Swin's counted over all stages)")
    use_dora: bool = Field(False, description="weight-decomposed LoRA (DoRA)")
    use_rslora: bool = Field(False, description="rank-stabilised scaling (alpha / √r)")


class ModelConfig(Strict):
    """The base model and its adaptation. A ``model.weights`` folder's architecture and a base card's
    weights file are read by the loader (:mod:`medlora.config.loader`), not here."""

    backbone: str = Field(
        DEFAULT_BACKBONE, description="any timm model name (`hf-hub:` too); see "
        "[Model families](#model-families-lora-presets-saliency-input-size)",
        json_schema_extra=shown(f"a `model.weights` folder's architecture, else `{DEFAULT_BACKBONE}`"))
    pretrained: bool = Field(
        False, description="hub weights (offline: from the Hugging Face cache); neither this nor `model.weights` = "
        "random init saved with the run")
    weights: Path | None = Field(
        None, description="a local `.safetensors`/`.pth` file, a `save_pretrained` folder, or the `base_card.md` of "
        "a base `medlora pretrain` wrote (it stands for the file it names, which must match its sha256, "
        "`model.backbone` and `model.kwargs`). See [Pretrained bases, also offline](#pretrained-bases-also-offline)")
    cache_dir: Path | None = Field(
        None, description="the Hugging Face cache `model.pretrained` loads from (only with `pretrained: true`)",
        json_schema_extra=shown("`HF_HUB_CACHE`, else `HF_HOME/hub`"))
    kwargs: dict[str, Any] = Field(default_factory=dict, description="passed to `timm.create_model`")
    tubelet: int = Field(
        2, ge=1, description="`preprocess.view.kind: volume`: slices per 3D patch of the ViT's volume patch embedding "
        "(each patch is `tubelet` × patch size × patch size)")
    stem: Literal["patch", "conv"] = Field(
        "patch", description="`preprocess.view.kind: volume`: how the volume becomes tokens: `patch` (one 3D "
        "convolution cutting patches; a 2D base is inflated into it) or `conv` (a convolutional stem of stride-2 3×3×3 "
        "convolutions, trained from random initialisation with `method: full`)")
    method: Method = Field("lora", description="`lora`, `linear_probe`, `full`")
    lora: LoraConfigModel = Field(default_factory=LoraConfigModel, description="the adapter of `method: lora`")
    adapter: Path | None = Field(
        None, description="a received LoRA bundle (`medlora export`) to continue training from on this site's "
        "studies: the base must be the bundle's (sha256 checked) and `model.lora` its settings; the new bundle "
        "records its lineage. In a sweep, the `adapter_continued` method uses it and `lora` starts from the base")

    @model_validator(mode="after")
    def _one_weight_source(self) -> ModelConfig:
        if self.pretrained and self.weights is not None:
            raise ValueError("set model.pretrained: true or model.weights: PATH, not both")
        if self.cache_dir is not None and not self.pretrained:
            raise ValueError("model.cache_dir is where model.pretrained weights are looked up; "
                             "set model.pretrained: true or drop model.cache_dir")
        return self
