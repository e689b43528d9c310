"""MONAI transform chains and cached datasets that turn manifest rows into ViT inputs.

The chain is deterministic (decode, Modality LUT, windowing, view, resize, normalisation), so
MONAI's ``CacheDataset``/``PersistentDataset`` store its whole result: each file is decoded once per
process (memory) or once per content and transform config (disk), not once per epoch, and a cached
item is handed out without a copy. Training augmentation is not part of it: it runs on whole batches
in the training loop (:mod:`.augment`).

:class:`LoadSampled` loads a manifest row by its ``kind``: ``dicom2d`` through
``LoadImaged(MedloraDicomReader)`` → ``WindowImaged`` → ``CentralFramed``; ``series``/``nifti`` through
:mod:`.volume` (assemble/read → Orientation RAS → Spacing → window) and :func:`.views.extract_view`.
A volume is preprocessed once and kept in a small per-process LRU cache, so the several views of one
volume (consecutive manifest rows) decode it once while the dataset cache is being built.
"""

from __future__ import annotations

import functools
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform

from ..config import DataConfig, PreprocessConfig
from ..io.findings import decode


def to_channels(image: torch.Tensor | np.ndarray, channels: int) -> torch.Tensor | np.ndarray:
    """Make a channel-first image (2D or 3D) have ``channels`` channels (grey → repeated, RGB → grey mean)."""
    c = image.shape[0]
    if c == channels:
        return image
    if c == 1:
        if isinstance(image, torch.Tensor):
            return image.repeat(channels, *[1] * (image.ndim - 1))
        return np.repeat(image, channels, 0)
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


class LoadSampled(MapTransform):
    """Load a manifest item by its ``kind`` into a windowed channel-first ``(C, H, W)`` image.

    ``dicom2d`` (or no ``kind``): the 2D chain ``LoadImaged(MedloraDicomReader)`` → ``WindowImaged`` →
    ``CentralFramed`` (a MetaTensor, as before); ``frames``: the same chain with frame ``data["view_index"]``
    instead of the central one. ``series``/``nifti``: the volume of ``data[key]`` is
    loaded and preprocessed (:func:`.volume.load_volume`, :func:`.volume.preprocess_volume`) at most
    once while it stays among the ``cache_size`` most recent volumes, then view ``data["view_index"]``
    of ``preprocess.view`` is extracted (:func:`.views.extract_view`) as a float32 tensor (``view.kind: volume``:
    the whole volume, ``(C, D, H, W)``).
    """

    def __init__(self, keys: KeysCollection, preprocess: PreprocessConfig, cache_size: int = 2) -> None:
        from monai.transforms import Compose, LoadImaged

        from ..io.monai_reader import MedloraDicomReader
        from .intensity import WindowImaged

        super().__init__(keys)
        self.pre = preprocess
        self.cache_size = cache_size
        self._load2d = Compose([
            LoadImaged(keys=keys, reader=MedloraDicomReader(), image_only=True, ensure_channel_first=False),
            WindowImaged(keys=keys, window=preprocess.window),
            CentralFramed(keys=keys),
        ])
        self._load_frames = Compose(self._load2d.transforms[:2])
        self._init_cache()

    def _init_cache(self) -> None:
        self._cache: OrderedDict[tuple[str, ...], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, ...], threading.Lock] = {}

    def __getstate__(self) -> dict[str, Any]:  # locks do not pickle (DataLoader workers); caches need not
        state = dict(self.__dict__)
        for name in ("_cache", "_lock", "_key_locks"):
            state.pop(name)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_cache()

    def volume(self, source: str | Sequence[str], kind: str) -> np.ndarray:
        """The preprocessed ``(1, X, Y, Z)`` volume of ``source``, from the cache when possible."""
        from .volume import load_volume, preprocess_volume

        key = (kind, *([source] if isinstance(source, str) else source))
        with self._lock:
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
            array = preprocess_volume(load_volume(source, kind), self.pre)
            with self._lock:
                self._cache[key] = array
                while len(self._cache) > self.cache_size:
                    old, _ = self._cache.popitem(last=False)
                    self._key_locks.pop(old, None)
        return array

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        from .views import extract_view

        kind = data.get("kind") or "dicom2d"
        if kind == "dicom2d":
            return self._load2d(dict(data))
        if kind == "frames":  # one frame of a multi-frame object that is not a volume
            d = self._load_frames(dict(data))
            for key in self.key_iterator(d):
                frames = d[key]
                d[key] = frames[:, min(int(d.get("view_index", 0)), frames.shape[1] - 1)] if frames.ndim == 4 else frames
            return d
        d = dict(data)
        for key in self.key_iterator(d):
            view = extract_view(self.volume(d[key], kind), self.pre.view, int(d.get("view_index", 0)))
            d[key] = torch.from_numpy(view)
        return d


def build_transforms(pre: PreprocessConfig, size: int, mean: Sequence[float], std: Sequence[float]):
    """The transform chain of every split (deterministic). ``size``/``mean``/``std`` come from the
    model's data config. A ``volume`` view is resampled to ``(view.depth, size, size)``."""
    from monai.transforms import Compose, EnsureTyped, NormalizeIntensityd, Resized

    spatial = (pre.view.depth, size, size) if pre.view.kind == "volume" else (size, size)
    return Compose([
        LoadSampled(keys="image", preprocess=pre),
        Resized(keys="image", spatial_size=spatial, mode="area"),
        ToChannelsd(keys="image", channels=len(mean)),
        NormalizeIntensityd(keys="image", subtrahend=np.asarray(mean), divisor=np.asarray(std), channel_wise=True),
        EnsureTyped(keys="image", dtype=torch.float32, track_meta=False),
    ])


def manifest_items(manifest: pd.DataFrame, root: Path) -> list[dict[str, Any]]:
    """Manifest rows → MONAI data dicts (absolute image path(s), kind, view index, int label, keys;
    ``findings``, a float32 vector with NaN for unknown, when the manifest has that column).

    ``image`` is one absolute path (``dicom2d``, ``nifti``) or the list of a series' slice paths; a
    manifest without ``kind`` (written before volumes existed) is read as ``dicom2d`` rows.
    """
    items = []
    for row in manifest.itertuples():
        kind = getattr(row, "kind", None)
        kind = kind if isinstance(kind, str) and kind else "dicom2d"
        if kind == "series":
            image: str | list[str] = [str(root / p) for p in json.loads(row.source)]
        elif kind == "nifti":
            image = str(root / row.source)
        else:
            image = str(root / row.path)
        view_index = getattr(row, "view_index", 0)
        item = {"image": image, "kind": kind, "view_index": 0 if pd.isna(view_index) else int(view_index),
                "label": int(row.label), "sample_id": row.sample_id, "study_key": row.study_key,
                "patient_key": row.patient_key}
        findings = getattr(row, "findings", None)
        if isinstance(findings, str):  # multilabel: one 1/0/NaN (unknown) target per finding
            item["findings"] = decode(findings)
        items.append(item)
    return items


def transform_fingerprint(pre: PreprocessConfig, size: int, mean: Sequence[float], std: Sequence[float]) -> str:
    """A short hash of everything that changes cached pixels (keys the on-disk cache)."""
    blob = json.dumps({"pre": pre.model_dump(mode="json"), "size": size, "mean": list(mean), "std": list(std)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes, computed once per (path, size, mtime) in this process: the on-disk
    cache asks for every sample's key on every access, and re-hashing each epoch would re-read it."""
    st = Path(path).stat()
    return _digest(str(path), st.st_size, st.st_mtime_ns)


@functools.cache
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def build_dataset(items: list[dict[str, Any]], transform, data: DataConfig, fingerprint: str):
    """A MONAI dataset over ``items`` caching the deterministic prefix of ``transform``."""
    from monai.data import CacheDataset, Dataset, PersistentDataset

    if data.cache == "memory":  # nothing random follows the cached chain: no per-access deep copy needed
        return CacheDataset(items, transform=transform, cache_rate=1.0, num_workers=None, progress=False,
                            copy_cache=False)
    if data.cache == "disk":
        # default .medlora/cache/<fingerprint> under the working directory (git-ignored)
        cache_dir = Path(data.cache_dir or Path(".medlora") / "cache") / fingerprint
        cache_dir.mkdir(parents=True, exist_ok=True)

        def content_key(item: Mapping[str, Any]) -> str:
            """The files' bytes (not their names) plus every other field of the item (label, keys,
            view), so a relabelled sample or a duplicate image under another sample never gets a
            stale cached entry."""
            names = [item["image"]] if isinstance(item["image"], str) else item["image"]
            rest = json.dumps({k: v for k, v in item.items() if k != "image"}, sort_keys=True, default=str)
            h = hashlib.sha256(rest.encode())
            for name in names:
                h.update(file_digest(name).encode())
            return h.hexdigest()

        return PersistentDataset(items, transform=transform, cache_dir=cache_dir, hash_func=lambda it: content_key(it).encode())
    return Dataset(items, transform=transform)
