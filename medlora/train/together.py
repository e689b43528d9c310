"""Several LoRA points trained at once over one frozen base (:class:`~medlora.models.multi_lora.MultiLora`).

Each point keeps everything :func:`~medlora.train.loop.fit` gives a point alone: its own loader (support
set, seeded batch order), batch augmenter, AdamW state, warm-up + cosine schedule (over its own steps
per epoch), early stopping, best-epoch selection and restored best weights, and its own random stream
for dropout masks. A step concatenates the next batch of every point that still has one in the
current epoch and sums the points' mean losses: the gradient of that sum with respect to one point's
parameters is that point's own gradient. Epochs are kept in step: a point whose epoch has fewer
batches waits for the others at the epoch's end, where every live point is validated in one pass
(the validation batch repeated once per point). A point that stops early, or has done its epochs,
leaves the group.

Exactness: a point here and the same point under ``fit`` draw the same batches, augmentations and
dropout masks and take the same optimiser steps; what differs is the summation order inside the
frozen matrix products (the batch is larger) and validation on the unmerged adapter (``fit`` merges
it where that pays, :func:`~medlora.models.lora.merge_pays`): differences of float rounding, 1e-6
relative in fp32 (``tests/train/test_together.py``).
The global random state a point alone starts from (its caller's ``torch.manual_seed(seed)``) is
replayed by a per-point generator; every validation pass of a point alone draws one loader seed from
it, which is drawn here too.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..device import precision_name, training_dtype
from ..models.multi_lora import MultiLora
from .checkpoint import LoopState
from .head import Head
from .inference import Predictions
from .loop import EpochLog, TrainResult, binary_log_loss, peak_memory_mb, warmup_cosine

log = logging.getLogger(__name__)


@dataclass
class PointRun:
    """What :func:`~medlora.train.loop.fit` would get for one point alone."""

    train_loader: Any
    cfg: TrainConfig
    head: Head
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    seed: int  # the global seed set before the point trains alone: its dropout stream


@dataclass
class _Point:
    """A point's running state."""

    run: PointRun
    params: dict[str, torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    generator: torch.Generator
    st: LoopState
    stopped_early: bool = False
    loss: float = 0.0
    seen: int = 0
    epoch_train: float = 0.0
    epoch_data: float = 0.0


def _start(multi: MultiLora, i: int, run: PointRun, device: torch.device) -> _Point:
    params = multi.point_parameters(i)
    optimizer = torch.optim.AdamW(list(params.values()), lr=run.cfg.lr, weight_decay=run.cfg.weight_decay)
    spe = max(1, len(run.train_loader))
    scheduler = warmup_cosine(optimizer, int(run.cfg.warmup_epochs * spe), run.cfg.epochs * spe)
    # alone, dropout draws from the global generator right after torch.manual_seed(seed)
    generator = torch.Generator(device=device).manual_seed(run.seed)
    return _Point(run, params, optimizer, scheduler, generator, LoopState())


def fit_together(multi: MultiLora, runs: Sequence[PointRun], val_loader: Any, device: torch.device,
                 abnormal_index: int, val_metric: Callable[[Predictions], float],
                 precision: str = "auto") -> list[TrainResult]:
    """Train every point of ``multi`` (point ``i`` as ``runs[i]`` says) and restore each point's best
    validation epoch; one :class:`~medlora.train.loop.TrainResult` per point, as ``fit`` returns it."""
    if len(runs) != multi.n_points:
        raise ValueError(f"{len(runs)} runs for a MultiLora of {multi.n_points} points")
    dtype = training_dtype(device, precision)
    points = [_start(multi, i, run, device) for i, run in enumerate(runs)]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    live = list(range(len(points)))
    for epoch in range(max(r.cfg.epochs for r in runs)):
        live = [i for i in live if epoch < runs[i].cfg.epochs]
        if not live:
            break
        _train_epoch(multi, points, live, device, dtype)
        t0 = time.perf_counter()
        vals = predict_together(multi, val_loader, device, abnormal_index, [points[i].run.head for i in live], live)
        share = (time.perf_counter() - t0) / len(live)
        for i, val in zip(live, vals, strict=True):
            _end_epoch(points[i], epoch, val, val_metric(val), share, device)
        live = [i for i in live if not points[i].stopped_early]
    results = []
    for i, p in enumerate(points):
        with torch.no_grad():
            for k, v in p.st.best_state.items():
                p.params[k].copy_(v)
        st = p.st
        results.append(TrainResult(
            best_epoch=st.best_epoch, best_val_auroc=st.best_val_auroc, history=st.history,
            train_seconds=st.train_time, data_seconds=st.data_time,
            images_per_second=st.images / st.train_time if st.train_time > 0 else 0.0,
            peak_memory_mb=peak_memory_mb(device), stopped_early=p.stopped_early, best_val=st.best_val,
            precision=precision_name(dtype)))
        log.info("point %d: best epoch %d, val_auroc=%.4f%s", i, st.best_epoch + 1, st.best_val_auroc,
                 " (stopped early)" if p.stopped_early else "")
    return results


def _train_epoch(multi: MultiLora, points: list[_Point], live: list[int], device: torch.device,
                 dtype: torch.dtype | None) -> None:
    """One epoch of every live point: each takes its own steps; a step holds every point that has a batch left."""
    from tqdm.auto import tqdm

    multi.train()
    routing = multi.routing
    routing.generators = [p.generator for p in points]
    # iterated as fit iterates them: through tqdm.auto, whose asyncio variant makes one extra iterator (one
    # more loader seed drawn from the loader's generator, which also shuffles): the batches stay fit's
    iters = {i: iter(tqdm(points[i].run.train_loader, disable=True)) for i in live}
    for i in live:
        p = points[i]
        p.loss, p.seen, p.epoch_train, p.epoch_data = 0.0, 0, 0.0, 0.0
    while iters:
        t0 = time.perf_counter()
        batches = {}
        for i in list(iters):
            batch = next(iters[i], None)
            if batch is None:
                del iters[i]
            else:
                batches[i] = batch
        if not batches:
            break
        order = sorted(batches)
        xs = []
        for i in order:
            x = batches[i]["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
            aug = points[i].run.augment
            xs.append(aug(x) if aug is not None else x)
        counts = [len(batches[i]["label"]) for i in order]
        t_data = time.perf_counter() - t0
        routing.counts = [0] * len(points)
        for i, n in zip(order, counts, strict=True):
            routing.counts[i] = n
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits = multi(torch.cat(xs)).float()
        sums = [points[i].run.head.loss_sum(part, batches[i], device)
                for i, part in zip(order, logits.split(counts), strict=True)]
        loss = sum(s * (1 / n) for s, n in zip(sums, counts, strict=True))  # each point's mean loss
        for i in order:
            points[i].optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for i in order:
            points[i].optimizer.step()
            points[i].scheduler.step()
        seconds, rows = time.perf_counter() - t0, sum(counts)
        for i, s, n in zip(order, sums, counts, strict=True):
            p = points[i]
            p.loss += s.item()
            p.seen += n
            p.epoch_train += seconds * n / rows  # the step's time, shared by rows
            p.epoch_data += t_data * n / rows


def _end_epoch(p: _Point, epoch: int, val: Predictions, val_auroc: float, val_seconds: float,
               device: torch.device) -> None:
    """The epoch's log entry and ``fit``'s early-stopping rule for one point."""
    st, cfg = p.st, p.run.cfg
    if device.type == "cpu":  # alone, iterating the validation loader draws its seed from the global stream
        torch.empty((), dtype=torch.int64).random_(generator=p.generator)
    st.train_time += p.epoch_train
    st.data_time += p.epoch_data
    st.images += p.seen
    val_loss = binary_log_loss(val) if val.scores is None else p.run.head.log_loss(val.scores, val.targets)
    entry = EpochLog(epoch, p.loss / max(p.seen, 1), val_auroc, val_loss, p.scheduler.get_last_lr()[0],
                     p.epoch_train + val_seconds, p.epoch_data)
    st.history.append(entry)
    st.epoch = epoch
    if val_auroc > st.best_val_auroc or (val_auroc == st.best_val_auroc and val_loss < st.best_loss):
        st.best_epoch, st.best_val_auroc, st.best_loss, st.bad_epochs = epoch, val_auroc, val_loss, 0
        st.best_state = {k: v.detach().clone() for k, v in p.params.items()}
        st.best_val = val
    else:
        st.bad_epochs += 1
    if st.bad_epochs >= cfg.patience:
        p.stopped_early = True


@torch.inference_mode()
def predict_together(multi: MultiLora, loader: Any, device: torch.device, abnormal_index: int, heads: Sequence[Head],
                     points: Sequence[int]) -> list[Predictions]:
    """:func:`~medlora.train.inference.predict` of each of ``points`` (``heads``: theirs) in one pass over
    ``loader``: every batch repeated once per point, in fp32."""
    multi.eval()
    routing = multi.routing
    logits: list[list[torch.Tensor]] = [[] for _ in points]
    ids, studies, patients, labels, batches = [], [], [], [], []
    for batch in loader:
        x = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
        routing.counts = [0] * multi.n_points
        for i in points:
            routing.counts[i] = len(x)
        out = multi(torch.cat([x] * len(points))).float()
        for j, part in enumerate(out.split(len(x))):
            logits[j].append(part)
        labels.append(np.asarray(batch["label"]))
        ids += list(batch["sample_id"])
        studies += list(batch["study_key"])
        patients += list(batch["patient_key"])
        batches.append(batch)
    classes = np.concatenate(labels).astype(int)
    out_preds = []
    for head, parts in zip(heads, logits, strict=True):
        z = torch.cat(parts)
        if head.multi:
            p = head.probabilities(z)
            t = np.concatenate([head.targets(b) for b in batches])
            score, label = head.summary(p, t)
            out_preds.append(Predictions(list(ids), list(studies), list(patients), label, score, class_index=classes,
                                         names=head.names, scores=p, targets=t))
        else:
            score = torch.softmax(z, dim=1)[:, abnormal_index].cpu().numpy().astype(np.float64)
            out_preds.append(Predictions(list(ids), list(studies), list(patients),
                                         (classes == abnormal_index).astype(int), score, class_index=classes))
    return out_preds
