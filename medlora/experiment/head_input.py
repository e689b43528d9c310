"""What ``train.head_norm: auto`` means for a run's base.

``auto`` standardises the classifier head's input where the features are frozen (a linear probe; the loop
decides, :func:`medlora.train.loop.standardize_heads`) and, settled here before the run starts, under LoRA
and full fine-tuning too where the base is one medlora pretrained as a masked autoencoder (its base card
says so). Such a base's pooled features have a few dimensions hundreds of times larger than the rest
(:mod:`medlora.models.head_norm`); a head trained on them raw learns mainly from those few. On BreastMNIST
LoRA on the same three such bases gave test AUROC 0.839 with the raw head and 0.897 with the standardised one
(``benchmarks/RESULTS.md``, "The head on standardised features").

A run that continues a received adapter (``model.adapter``) keeps ``auto``: the received head was trained on
raw features. ``true`` and ``false`` are taken as they are.
"""

from __future__ import annotations

import logging

from ..basecard import MAE, pretraining_method
from ..config import Config

log = logging.getLogger(__name__)


def settle_head_norm(cfg: Config) -> Config:
    """``cfg`` with ``train.head_norm: auto`` made ``true`` on a masked autoencoder's base; else ``cfg`` itself.

    The settled value is what the run logs (MLflow param ``train.head_norm``) and what its sweep points and
    result hashes are made from."""
    if cfg.train.head_norm != "auto" or (cfg.pipeline == "classify" and cfg.model.adapter is not None):
        return cfg
    if pretraining_method(cfg.model.weights) != MAE:
        return cfg
    log.info("train.head_norm: auto -> true: %s was pretrained as a masked autoencoder (its base card says so), "
             "whose features are far from unit scale; the head trains on them standardised", cfg.model.weights)
    return cfg.model_copy(update={"train": cfg.train.model_copy(update={"head_norm": True})})
