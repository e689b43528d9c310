"""The ``train:`` and ``pretrain:`` sections, and the optimiser keys they share.

Both loops use AdamW with a linear warm-up then cosine decay to zero
(:func:`medlora.train.loop.warmup_cosine`); their optimiser keys are defined once, by
:func:`optimiser_section`, and each section inherits them with its own defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from .base import Strict, shown

OPTIMISER_KEYS = ("epochs", "batch_size", "lr", "weight_decay", "warmup_epochs")


def optimiser_section(*, epochs: int, batch_size: int, lr: float, weight_decay: float,
                      warmup_epochs: float) -> type[Strict]:
    """The base class of a section that trains with AdamW + warm-up + cosine: the keys of
    :data:`OPTIMISER_KEYS`, with their checks and meaning, and these defaults."""
    d = {"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay,
         "warmup_epochs": warmup_epochs}

    class OptimiserConfig(Strict):
        """AdamW, linear warm-up then cosine decay to zero."""

        epochs: int = Field(d["epochs"], ge=1, description="passes over the training images")
        batch_size: int = Field(d["batch_size"], ge=1, description="images per optimiser step")
        lr: float = Field(d["lr"], gt=0, description="AdamW's peak learning rate, reached after the warm-up")
        weight_decay: float = Field(d["weight_decay"], ge=0, description="AdamW's decoupled weight decay")
        warmup_epochs: float = Field(d["warmup_epochs"], ge=0,
                                     description="epochs of linear warm-up before the cosine decay (may be a fraction)")

    return OptimiserConfig


class TrainConfig(optimiser_section(epochs=10, batch_size=32, lr=1e-3, weight_decay=0.05, warmup_epochs=1.0)):
    """AdamW, warm-up + cosine, early stopping on validation AUROC (multiclass/multilabel: its mean over
    findings); each epoch logs its time and an ETA for the remaining epochs."""

    patience: int = Field(5, ge=1, description="early stopping: epochs without a better validation AUROC")
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes")
    device: str = Field("auto", description="`auto` (cuda, then mps, then cpu), or a torch device name")
    compile: bool = Field(False, description="`torch.compile` the training forward; a compile failure is logged and "
                          "training continues eagerly (no gain measured on CPU)")
    threads: int | None = Field(None, description="torch intra/inter-op threads (the process's CPU affinity)",
                                json_schema_extra=shown("one per available CPU"))
    seed: int = Field(0, description="seed of initialisation, batch order and augmentation")
    precision: Literal["auto", "fp32", "bf16"] = Field(
        "auto", description="training steps' arithmetic: `auto` = bf16 autocast on CUDA, and on CPUs reporting "
        "AVX512-BF16 or AMX where a one-off measurement on the machine found bf16 at least 1.2x faster than fp32 (kept "
        "in `~/.cache/medlora/cpu-bf16.json`), fp32 otherwise; `fp32`; `bf16` (also where it is emulated: slow). The "
        "choice and the measurement are logged; validation, test and the exported adapter are fp32")
    pos_weight: bool = Field(False, description="multilabel: weigh each finding's positives by negatives/positives "
                             "of the training split (BCE `pos_weight`)")
    head_norm: Literal["auto"] | bool = Field(
        "auto", description="the classifier head trains on its input features standardised by their mean and spread "
        "over the training split's images (measured once before training, labels unused; MAE's linear-probe "
        "protocol), then the standardisation is folded into the head's weights, so what is saved and exported is the "
        "plain timm head (`medlora/models/head_norm.py`). `auto`: where the features are frozen (linear probe), and "
        "under LoRA and full fine-tuning too where `model.weights` is a base medlora pretrained as a masked "
        "autoencoder (its base card says so; its features are far from unit scale), except when continuing a "
        "received adapter (`medlora/experiment/head_input.py`); the run logs the settled value. `true`: always, "
        "also under LoRA and full fine-tuning on other bases, where the features drift from the statistics measured "
        "at the start; `false`: never")


class PretrainConfig(optimiser_section(epochs=20, batch_size=64, lr=5e-4, weight_decay=0.05, warmup_epochs=2.0)):
    """Masked-autoencoder pretraining of the base on a site's unlabelled studies (He et al. 2022).

    ``medlora pretrain CONFIG`` trains it; a config with this section makes ``medlora run`` adapt
    the pretrained base (pretrained once, then reused from ``out`` while data and settings are the
    same). The encoder is ``model.backbone`` with ``model.kwargs``, starting from ``model.weights`` /
    ``model.pretrained`` when set; the input is ``preprocess`` as for training; ``train.device``,
    ``train.threads``, ``train.num_workers`` and ``train.seed`` apply.
    """

    mask_ratio: float = Field(0.75, gt=0, lt=1,
                              description="fraction of patches hidden from the encoder (strictly between 0 and 1)")
    decoder_dim: int = Field(128, ge=8, description="width of the decoder")
    decoder_depth: int = Field(2, ge=1, description="transformer blocks of the decoder")
    decoder_heads: int = Field(4, ge=1, description="attention heads of the decoder (divides `decoder_dim`)")
    norm_pix_loss: bool = Field(True, description="the target is each patch's pixels normalised by its own mean/std")
    out: Path | None = Field(
        None, description="where bases are kept: `<out>/<data.name>-<key>/`, the key over the data fingerprint and "
        "these settings", json_schema_extra=shown("`runs/pretrain`"))

    @model_validator(mode="after")
    def _heads_divide(self) -> PretrainConfig:
        if self.decoder_dim % self.decoder_heads:
            raise ValueError(f"pretrain.decoder_dim={self.decoder_dim} is not divisible by "
                             f"pretrain.decoder_heads={self.decoder_heads}")
        return self
