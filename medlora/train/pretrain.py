"""The masked-autoencoder pretraining loop: AdamW, linear warmup + cosine decay, epoch checkpoints.

No labels, no validation: an epoch is one pass over the unlabelled images, its number is the mean
masked-patch loss. Batches are augmented like training batches (:class:`~medlora.transforms.augment.BatchAugment`,
flip and small affine) when ``preprocess.augment``. After every epoch the loop's state (all weights,
optimizer, scheduler, random states, history) is saved with :mod:`.checkpoint`, so an interrupted
pretraining continues where it stopped and computes the same epochs.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import PretrainConfig
from ..device import autocast_dtype
from ..models.mae import MaskedAutoencoder
from . import checkpoint as ckpt
from .loop import warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class PretrainEpoch:
    epoch: int
    loss: float
    lr: float
    seconds: float


@dataclass
class PretrainResult:
    history: list[PretrainEpoch] = field(default_factory=list)
    seconds: float = 0.0
    images: int = 0

    @property
    def final_loss(self) -> float:
        return self.history[-1].loss if self.history else float("nan")


def optimizer_for(mae: MaskedAutoencoder, cfg: PretrainConfig) -> torch.optim.Optimizer:
    """AdamW without weight decay on biases, norms and embeddings-like 1-d tensors (timm's grouping)."""
    from timm.optim import param_groups_weight_decay

    return torch.optim.AdamW(param_groups_weight_decay(mae, cfg.weight_decay), lr=cfg.lr, betas=(0.9, 0.95))


def pretrain_fit(mae: MaskedAutoencoder, loader, cfg: PretrainConfig, device: torch.device,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None, checkpoint: Path | None = None,
                 on_epoch: Callable[[PretrainEpoch], None] | None = None) -> PretrainResult:
    """Train ``mae`` in place for ``cfg.epochs`` epochs over ``loader`` (continuing from ``checkpoint``)."""
    from tqdm.auto import tqdm

    optimizer = optimizer_for(mae, cfg)
    steps = max(1, len(loader))
    scheduler = warmup_cosine(optimizer, int(cfg.warmup_epochs * steps), cfg.epochs * steps)
    weights = dict(mae.named_parameters())
    st = ckpt.LoopState()
    if checkpoint is not None and Path(checkpoint).is_file():
        st = ckpt.load(checkpoint, weights, optimizer, scheduler, loader, augment)
        log.info("resuming pretraining after epoch %d of %d (checkpoint %s)", st.epoch + 1, cfg.epochs, checkpoint)
    dtype = autocast_dtype(device)
    quiet = not sys.stderr.isatty()
    for epoch in range(st.epoch + 1, cfg.epochs):
        t0 = time.perf_counter()
        mae.train()
        total, n = 0.0, 0
        for batch in tqdm(loader, desc=f"pretrain {epoch + 1}/{cfg.epochs}", leave=False, disable=quiet):
            x = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
            if augment is not None:
                x = augment(x)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = mae(x).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(x)
            n += len(x)
        entry = PretrainEpoch(epoch, total / max(n, 1), scheduler.get_last_lr()[0], time.perf_counter() - t0)
        st.history.append(entry)
        st.train_time += entry.seconds
        st.images += n
        st.epoch = epoch
        log.info("pretrain epoch %d/%d: loss=%.4f (%.1f s; about %.0f s left)", epoch + 1, cfg.epochs, entry.loss,
                 entry.seconds, entry.seconds * (cfg.epochs - epoch - 1))
        if on_epoch is not None:
            on_epoch(entry)
        if checkpoint is not None:
            ckpt.save(checkpoint, st, weights, optimizer, scheduler, loader, augment)
    return PretrainResult(list(st.history), st.train_time, st.images)
