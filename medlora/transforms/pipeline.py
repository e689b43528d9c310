"""MONAI transform chains and cached datasets that turn manifest rows into ViT inputs.

Deterministic work (decode, Modality LUT, windowing, resize, normalisation) comes first so that
MONAI's ``CacheDataset``/``PersistentDataset`` store its result: each file is decoded once per
process (memory) or once per content and transform config (disk), not once per epoch. Random
augmentation follows the cached prefix and runs every epoch on training data only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.transforms import MapTransform

from ..config import DataConfig, PreprocessConfig


def to_channels(image: torch.Tensor | np.ndarray, channels: int) -> torch.Tensor | np.ndarray:
    """Make a channel-first image have ``channels`` channels (grey → repeated, RGB → grey mean)."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1:
        return image.repeat(channels, 1, 1) if isinstance(image, torch.Tensor) else np.repeat(image, channels, 0)
    if channels == 1:
        return image.mean(0, keepdims=True) if isinstance(image, np.ndarray) else image.mean(0, keepdim=True)
    raise ValueError(f"cannot map {c} channels to {channels}")


class ToChannelsd(MapTransform):
    """Dictionary wrapper of :func:`to_channels`."""

    def __init__(self, keys: Sequence[Hashable], channels: int) -> None:
        super().__init__(keys)
        self.channels = channels

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = to_channels(d[key], self.channels)
        return d


def central_frame(image: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """(C, F, H, W) → (C, H, W) taking the middle frame; (C, H, W) passes through."""
    return image[:, image.shape[1] // 2] if image.ndim == 4 else image


class CentralFramed(MapTransform):
    """Dictionary wrapper of :func:`central_frame` (multi-frame objects until views are configured)."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = central_frame(d[key])
        return d


def build_transforms(pre: PreprocessConfig, size: int, mean: Sequence[float], std: Sequence[float], train: bool):
    """The transform chain for one split. ``size``/``mean``/``std`` come from the model's data config."""
    from monai.transforms import (
        Compose,
        EnsureTyped,
        LoadImaged,
        NormalizeIntensityd,
        RandAffined,
        RandFlipd,
        Resized,
    )

    from ..io.monai_reader import MedloraDicomReader
    from .intensity import WindowImaged

    chain = [
        LoadImaged(keys="image", reader=MedloraDicomReader(), image_only=True, ensure_channel_first=False),
        WindowImaged(keys="image", window=pre.window),
        CentralFramed(keys="image"),
        Resized(keys="image", spatial_size=(size, size), mode="area"),
        ToChannelsd(keys="image", channels=len(mean)),
        NormalizeIntensityd(keys="image", subtrahend=np.asarray(mean), divisor=np.asarray(std), channel_wise=True),
        EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
    ]
    if train and pre.augment:
        chain += [
            RandFlipd(keys="image", prob=0.5, spatial_axis=1),
            RandAffined(keys="image", prob=0.5, rotate_range=0.15, scale_range=0.1, translate_range=(0.05 * size,) * 2, padding_mode="border"),
        ]
    return Compose(chain)


def manifest_items(manifest: pd.DataFrame, root: Path) -> list[dict[str, Any]]:
    """Manifest rows → MONAI data dicts (absolute image path, int label, pseudonymous keys)."""
    return [
        {"image": str(root / row.path), "label": int(row.label), "sample_id": row.sample_id,
         "study_key": row.study_key, "patient_key": row.patient_key}
        for row in manifest.itertuples()
    ]


def transform_fingerprint(pre: PreprocessConfig, size: int, mean: Sequence[float], std: Sequence[float]) -> str:
    """A short hash of everything that changes cached pixels (keys the on-disk cache)."""
    blob = json.dumps({"pre": pre.model_dump(mode="json"), "size": size, "mean": list(mean), "std": list(std)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_dataset(items: list[dict[str, Any]], transform, data: DataConfig, fingerprint: str):
    """A MONAI dataset over ``items`` caching the deterministic prefix of ``transform``."""
    from monai.data import CacheDataset, Dataset, PersistentDataset

    if data.cache == "memory":
        return CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=None, progress=False)
    if data.cache == "disk":
        cache_dir = Path(data.cache_dir or Path(".medlora") / "cache") / fingerprint
        cache_dir.mkdir(parents=True, exist_ok=True)

        def content_key(item: Mapping[str, Any]) -> str:  # the file's bytes, not its name
            digest = hashlib.sha256(Path(item["image"]).read_bytes()).hexdigest()
            return digest

        return PersistentDataset(items, transform=transform, cache_dir=cache_dir, hash_func=lambda it: content_key(it).encode())
    return Dataset(items, transform=transform)
