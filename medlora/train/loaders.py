"""DataLoaders for the three splits over cached MONAI datasets."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from ..config import Config
from ..io.prepare import PreparedData
from ..transforms.pipeline import build_dataset, build_transforms, manifest_items, transform_fingerprint


def make_loaders(data: PreparedData, cfg: Config, input_cfg: dict[str, Any]) -> dict[str, DataLoader]:
    """``train`` (shuffled, augmented), ``val`` and ``test`` loaders; decoding is cached."""
    size, mean, std = input_cfg["image_size"], input_cfg["mean"], input_cfg["std"]
    fp = transform_fingerprint(cfg.preprocess, size, mean, std)
    loaders = {}
    for split in ("train", "val", "test"):
        train = split == "train"
        items = manifest_items(data.split(split), data.root)
        ds = build_dataset(items, build_transforms(cfg.preprocess, size, mean, std, train=train), cfg.data, fp)
        generator = torch.Generator().manual_seed(cfg.train.seed)
        loaders[split] = DataLoader(
            ds, batch_size=cfg.train.batch_size, shuffle=train, drop_last=False, generator=generator,
            num_workers=cfg.train.num_workers, persistent_workers=cfg.train.num_workers > 0,
        )
    return loaders
