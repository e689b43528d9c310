"""Datasets and DataLoaders for the three splits over cached MONAI datasets.

Datasets are built once (decoding is cached in them); loaders are cheap and made per training
run, e.g. over a :class:`torch.utils.data.Subset` of the training set for a few-shot support set.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config, TrainConfig
from ..io.prepare import PreparedData
from ..transforms.pipeline import build_dataset, build_transforms, manifest_items, transform_fingerprint
from .distributed import Dist, GlobalBatchSampler, ShardSampler, local_batch_size

SPLITS = ("train", "val", "test")


def make_datasets(data: PreparedData, cfg: Config, input_cfg: dict[str, Any], splits: tuple[str, ...] = SPLITS,
                  cache: bool = True) -> dict[str, Dataset]:
    """One dataset per split, all with the same deterministic preprocessing (training augmentation
    runs on batches in the training loop, :mod:`medlora.transforms.augment`).

    ``cache=False`` builds plain datasets whatever ``data.cache`` says (for a single pass, e.g.
    computing features once, where a cache would only hold memory).
    """
    size, mean, std = input_cfg["image_size"], input_cfg["mean"], input_cfg["std"]
    fp = transform_fingerprint(cfg.preprocess, size, mean, std)
    data_cfg = cfg.data if cache else cfg.data.model_copy(update={"cache": "none"})
    out: dict[str, Dataset] = {}
    transform = build_transforms(cfg.preprocess, size, mean, std)
    for split in splits:
        out[split] = build_dataset(manifest_items(data.split(split), data.root), transform, data_cfg, fp)
    return out


def make_loader(dataset: Dataset, cfg: TrainConfig, shuffle: bool, dist: Dist | None = None) -> DataLoader:
    """A loader over ``dataset``; shuffling is seeded by ``cfg.seed``.

    A training loader (``shuffle``) draws its batches with :class:`~.distributed.GlobalBatchSampler`
    whether or not it runs under torchrun: one process gets whole batches, each of N ranks its part
    of the very same batches (the same generator draws the same permutations in every epoch). An
    evaluation loader under torchrun (``dist``) yields this rank's shard of the samples
    (:mod:`.distributed`).
    """
    dist = dist or Dist()
    generator = torch.Generator().manual_seed(cfg.seed)
    workers = {"num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0}
    if shuffle:
        sampler = GlobalBatchSampler(len(dataset), cfg.batch_size, dist, True, generator)
        return DataLoader(dataset, batch_sampler=sampler, generator=generator, **workers)
    if dist.enabled:
        return DataLoader(dataset, batch_size=local_batch_size(cfg.batch_size, dist),
                          sampler=ShardSampler(len(dataset), dist), **workers)
    return DataLoader(dataset, batch_size=cfg.batch_size, shuffle=False, **workers)
