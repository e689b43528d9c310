"""The head's input statistics over the training images, for :mod:`medlora.models.head_norm`.

Measured once before training, in eval mode, without augmentation, on the images of the training split
(labels unused). A few-shot support set is an index view of its split: its statistics come from the
whole split's images, since a handful of samples cannot estimate a spread per feature (and using the
unlabelled training images is what pretraining does too; validation and test are never read). At most
``limit`` images, evenly spaced, are read. Every torchrun rank reads the same images, so every rank
has the same statistics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..device import autocast_dtype
from ..models.head_norm import Moments
from .features import FeatureDataset

log = logging.getLogger(__name__)
EPS = 1e-5  # as BatchNorm's


def whole_split(dataset: Dataset) -> Dataset:
    """The dataset a training set is a view of: a :class:`Subset`'s dataset, every cached feature of a
    :class:`FeatureDataset` restricted to some positions; any other dataset itself."""
    if isinstance(dataset, Subset):
        return whole_split(dataset.dataset)
    if isinstance(dataset, FeatureDataset):
        return FeatureDataset(dataset.features)
    return dataset


@torch.no_grad()
def training_batches(loader: Iterable, batch_size: int, limit: int = 4096) -> Iterable:
    """In order, unshuffled, at most ``limit`` samples of the whole split behind a training loader (a
    loader without a dataset, e.g. a list of batches, is read as it is)."""
    dataset = getattr(loader, "dataset", None)
    if dataset is None:
        return loader
    dataset = whole_split(dataset)
    if len(dataset) > limit:
        dataset = Subset(dataset, np.linspace(0, len(dataset) - 1, limit).round().astype(int).tolist())
    return DataLoader(dataset, batch_size=batch_size, shuffle=False)


def feature_moments(model: nn.Module, linears: list[nn.Linear], batches: Iterable,
                    device: torch.device) -> list[Moments]:
    """Mean and ``sqrt(var + eps)`` of each of ``linears``' inputs while ``model`` runs over ``batches``."""
    sums = [torch.zeros(layer.in_features, dtype=torch.float64) for layer in linears]
    squares = [torch.zeros_like(s) for s in sums]
    count = [0] * len(linears)

    def capture(i: int):
        def hook(_module: nn.Module, args: tuple) -> None:
            x = args[0].detach().double().reshape(-1, linears[i].in_features).cpu()
            sums[i] += x.sum(0)
            squares[i] += (x * x).sum(0)
            count[i] += len(x)
        return hook

    handles = [layer.register_forward_pre_hook(capture(i)) for i, layer in enumerate(linears)]
    was_training = model.training
    model.eval()
    dtype = autocast_dtype(device)
    t0 = time.perf_counter()
    try:
        for batch in batches:
            x = batch["image"].as_subclass(torch.Tensor).to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                model(x)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    out = []
    for s, q, c in zip(sums, squares, count, strict=True):
        mean = s / max(c, 1)
        var = (q / max(c, 1) - mean * mean).clamp(min=0) * (c / max(c - 1, 1))
        out.append(Moments(mean.float(), (var + EPS).sqrt().float()))
    log.info("head input statistics from %d training samples (%.1f s)", count[0] if count else 0,
             time.perf_counter() - t0)
    return out
