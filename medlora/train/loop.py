"""One training run: AdamW, linear warmup + cosine decay, early stopping on validation AUROC.

The same loop serves LoRA, linear probing and full fine-tuning: the method only decides which
parameters require gradients. Training augmentation, when given, runs on each whole batch on the
training device (:class:`~medlora.transforms.augment.BatchAugment`). At the end the best epoch's
trainable weights are restored. The time spent waiting for batches and augmenting them is
reported apart from the steps (``data_seconds``). Each epoch logs its time and an ETA for the rest.
With ``train.head_norm`` the classifier head trains on standardised features and the standardisation
is folded into it at the end (:mod:`medlora.models.head_norm`).
"""

from __future__ import annotations

import logging
import math
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..device import maybe_compile, precision_name, training_dtype
from ..models.dropout import batch_share, share_dropout
from ..models.head_norm import StandardizedHeads, head_linears
from ..models.lora import for_inference, merge_pays
from . import checkpoint as ckpt
from .distributed import Dist, wrap
from .head import Head
from .inference import Predictions, predict
from .standardize import feature_moments, training_batches

log = logging.getLogger(__name__)


@dataclass
class EpochLog:
    epoch: int
    train_loss: float
    val_auroc: float
    val_loss: float
    lr: float
    seconds: float
    data_seconds: float = 0.0  # waiting for this epoch's training batches and augmenting them


@dataclass
class TrainResult:
    best_epoch: int
    best_val_auroc: float
    history: list[EpochLog] = field(default_factory=list)
    train_seconds: float = 0.0
    data_seconds: float = 0.0  # of train_seconds: waiting for batches and augmenting them
    images_per_second: float = 0.0
    peak_memory_mb: float = 0.0
    stopped_early: bool = False
    best_val: Predictions | None = None  # validation predictions of the restored best epoch
    precision: str = "fp32"  # the training steps' arithmetic (train.precision resolved): fp32 or bf16


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warmup to the base LR, then cosine decay to zero."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def binary_log_loss(pred: Predictions) -> float:
    """Mean cross-entropy of the abnormal-class probability against abnormal-vs-rest labels."""
    p = np.clip(pred.score, 1e-7, 1 - 1e-7)
    y = pred.label.astype(float)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``."""
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def eta_text(history: list[EpochLog], remaining: int) -> str:
    """Time left if the remaining epochs take as long as the mean epoch of this run so far (early
    stopping can end sooner); ``last epoch`` when none remain."""
    if remaining <= 0 or not history:
        return "last epoch"
    mean = sum(e.seconds for e in history) / len(history)
    return f"ETA {duration(mean * remaining)} for {remaining} more epoch{'s' if remaining > 1 else ''} at most"


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def standardize_heads(model: nn.Module, train_loader, cfg: TrainConfig,
                      device: torch.device) -> StandardizedHeads | None:
    """Standardise the head's input by the training images' statistics (:mod:`medlora.models.head_norm`);
    ``None`` when the model has no linear head to standardise, or (``head_norm: auto``) when more than
    the head trains: the statistics are measured once, and features that move under training drift
    away from them."""
    linears = head_linears(model)
    if not linears:
        log.debug("train.head_norm: no linear classifier head found in %s; features left as they are",
                  type(model).__name__)
        return None
    if cfg.head_norm == "auto":
        head_params = {id(p) for layer in linears for p in layer.parameters()}
        if any(p.requires_grad and id(p) not in head_params for p in model.parameters()):
            return None
    moments = feature_moments(model, linears, training_batches(train_loader, cfg.batch_size), device)
    log.info("train.head_norm=%s: the head trains on its input standardised by the training images' statistics",
             cfg.head_norm)
    return StandardizedHeads(linears, moments)


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    cfg: TrainConfig,
    device: torch.device,
    abnormal_index: int,
    val_metric: Callable[[Predictions], float],
    on_epoch: Callable[[EpochLog], None] | None = None,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    checkpoint: Path | None = None,
    dist: Dist | None = None,
    head: Head | None = None,
) -> TrainResult:
    """Train ``model`` in place; returns the history and restores the best validation epoch.

    With ``checkpoint``, the loop's state is saved there after every epoch and, when the file
    already exists, training continues after the epoch it holds (:mod:`.checkpoint`). Under
    torchrun (``dist``), the loaders come from :func:`~medlora.train.loaders.make_loader` with the
    same ``dist``: the model is wrapped in DistributedDataParallel and each global batch's loss is
    weighted so that the all-reduced gradient is the single-process one; validation is scored on
    shards and gathered, so every rank takes the same early-stopping decisions. Dropout layers draw
    the global batch's masks (:mod:`medlora.models.dropout`, from rank 0's random state on every
    rank), so each image is dropped out as in a single process. ``head``
    (:mod:`.head`) sets the loss and the scores of a multiclass or multilabel task; ``val_metric``
    then usually averages the per-finding AUROC.
    """
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = max(1, len(train_loader))
    scheduler = warmup_cosine(optimizer, int(cfg.warmup_epochs * steps_per_epoch), cfg.epochs * steps_per_epoch)
    dist = dist or Dist()
    head = head or Head("binary", (), abnormal=abnormal_index)
    dtype = training_dtype(device, cfg.precision)
    log.info("training steps in %s (train.precision=%s; evaluation in fp32)", precision_name(dtype), cfg.precision)
    standardized = standardize_heads(model, train_loader, cfg, device) if cfg.head_norm is not False else None
    share_dropout(model)  # dropout masks per image, however the batch is split over ranks
    dist.same_random_state(device)
    step_model = maybe_compile(wrap(model, dist, device), cfg.compile)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    # validation scores a merged copy where that is faster, else the training model itself in eval mode
    samples = len(getattr(val_loader, "dataset", None) or ())
    scorer = for_inference if merge_pays(model, samples) else (lambda m: m)
    st = ckpt.LoopState()
    if checkpoint is not None and Path(checkpoint).is_file():
        st = ckpt.load(checkpoint, trainable, optimizer, scheduler, train_loader, augment)
        log.info("resuming training after epoch %d of %d (checkpoint %s)", st.epoch + 1, cfg.epochs, checkpoint)
    quiet = not sys.stderr.isatty()
    stopped_early = st.bad_epochs >= cfg.patience  # a checkpoint written by the epoch that stopped the run
    for epoch in range(cfg.epochs if stopped_early else st.epoch + 1, cfg.epochs):
        t0 = time.perf_counter()
        model.train()
        total, n, epoch_data = 0.0, 0, 0.0
        waited = time.perf_counter()
        for batch in tqdm(train_loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=quiet):
            # plain tensors, whatever the dataset returns: no metadata carried through the model
            x = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
            n_batch = len(batch["label"])
            batch_n = int(dist.sum(n_batch)[0]) if dist.enabled else n_batch  # the global batch's size
            share = batch.get("share")  # bags of studies: this rank's slices among the global batch's
            if augment is not None:  # this rank's images move as in a single process's global batch
                x = augment(x, share) if share is not None else \
                    augment(x, dist.rank, dist.world, batch_n) if dist.enabled else augment(x)
            epoch_data += time.perf_counter() - waited
            # the global batch's mean loss: DDP averages the ranks' gradients, hence x world / global size
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None), \
                    batch_share(dist.rank, dist.world, batch_n, rows=None if share is None else share.rows,
                                rows_total=None if share is None else share.total):
                loss_sum = head.loss_sum(step_model(x).float(), batch, device)
            loss = loss_sum * (dist.world / batch_n)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss_sum.item()
            n += n_batch
            waited = time.perf_counter()
        if dist.enabled:
            total, n = dist.sum(total, n)
        st.train_time += time.perf_counter() - t0
        st.data_time += epoch_data
        st.images += int(n)
        val = dist.gather_predictions(predict(scorer(model), val_loader, device, abnormal_index, head, autocast=False))
        val_auroc = val_metric(val)
        val_loss = binary_log_loss(val) if val.scores is None else head.log_loss(val.scores, val.targets)
        entry = EpochLog(epoch, total / max(n, 1), val_auroc, val_loss, scheduler.get_last_lr()[0], time.perf_counter() - t0,
                         epoch_data)
        st.history.append(entry)
        log.info("epoch %d/%d: train_loss=%.4f val_loss=%.4f val_auroc=%.4f (%.1f s; %s)", epoch + 1, cfg.epochs,
                 entry.train_loss, val_loss, val_auroc, entry.seconds, eta_text(st.history, cfg.epochs - epoch - 1))
        if on_epoch is not None:
            on_epoch(entry)
        st.epoch = epoch
        # AUROC saturates on easy data: equal AUROC with a lower validation loss is still progress
        if val_auroc > st.best_val_auroc or (val_auroc == st.best_val_auroc and val_loss < st.best_loss):
            st.best_epoch, st.best_val_auroc, st.best_loss, st.bad_epochs = epoch, val_auroc, val_loss, 0
            st.best_state = {k: p.detach().clone() for k, p in trainable.items()}
            st.best_val = val
        else:
            st.bad_epochs += 1
        if checkpoint is not None and dist.is_main:
            ckpt.save(checkpoint, st, trainable, optimizer, scheduler, train_loader, augment)
        if st.bad_epochs >= cfg.patience:
            stopped_early = True
            log.info("early stopping after epoch %d (best %d)", epoch + 1, st.best_epoch + 1)
            break
    with torch.no_grad():
        for k, p in st.best_state.items():
            trainable[k].copy_(p)
    if standardized is not None:
        standardized.fold()
    return TrainResult(
        best_epoch=st.best_epoch, best_val_auroc=st.best_val_auroc, history=st.history, train_seconds=st.train_time,
        data_seconds=st.data_time, images_per_second=st.images / st.train_time if st.train_time > 0 else 0.0,
        peak_memory_mb=peak_memory_mb(device), stopped_early=stopped_early, best_val=st.best_val,
        precision=precision_name(dtype))
