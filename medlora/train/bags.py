"""Studies as bags of samples: the dataset, batches and scores of study-level training.

``preprocess.view.aggregate: attention`` (:mod:`medlora.models.aggregator`) trains on studies. A
:class:`StudyBags` groups the samples of a per-sample dataset (images, or cached features) by their
``study_key``, keeping the samples' order (a volume's views are consecutive, in slice order). A
training bag holds at most ``max_slices`` samples, drawn at random (seeded, kept in slice order)
each time a larger study is read; an evaluation bag holds all of them. :func:`collate_bags` pads a
batch's bags with NaN samples (the pooling's mask) and gives one label, key and ``sample_id`` (the
study key) per study, so the ordinary training loop and :func:`~.inference.predict` run on bags.

:func:`predict_studies` scores bags and writes one row per *sample* again, each carrying its study's
score and its own attention weight (``attention``): evaluation's study aggregation then takes each
study's one score as it is (``aggregate: attention``), and reports show which slices counted.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ..config import TrainConfig
from ..device import autocast_dtype
from ..errors import ConfigError
from ..transforms.augment import BatchAugment
from .distributed import Dist, GlobalBatchSampler, ShardSampler
from .features import FeatureDataset
from .head import Head
from .inference import Predictions

log = logging.getLogger(__name__)


def sample_study_keys(dataset: Dataset) -> list[str]:
    """The ``study_key`` of every sample of a dataset of manifest items (MONAI), cached features, or a
    :class:`~torch.utils.data.Subset` of either, without reading any image."""
    if isinstance(dataset, Subset):
        keys = sample_study_keys(dataset.dataset)
        return [keys[int(i)] for i in dataset.indices]
    if isinstance(dataset, FeatureDataset):
        keys = dataset.features.keys["study_key"]
        return [keys[int(j)] for j in dataset.positions]
    return [str(item["study_key"]) for item in dataset.data]


def group_by_study(keys: Sequence[str]) -> list[list[int]]:
    """Sample positions per study, studies in order of first appearance, samples in dataset order."""
    groups: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    return list(groups.values())


class StudyBags(Dataset):
    """One item per study of ``samples``: its samples stacked ``(n, ...)`` with the study's label and keys.

    ``max_slices`` (training) bounds a bag: a larger study gives a random subset of that many samples, in
    their order, each time it is read; ``None`` (evaluation) keeps every sample. The subset is a function of
    ``seed``, the study and the epoch's draw key (:class:`BagIndex`, from :class:`BagBatchSampler`), so it is
    the same whichever torchrun rank or loader worker reads the study, and after a resume.
    """

    def __init__(self, samples: Dataset, max_slices: int | None = None, seed: int = 0, name: str = "") -> None:
        self.samples, self.max_slices, self.seed = samples, max_slices, seed
        self.groups = group_by_study(sample_study_keys(samples))
        sizes = np.array([len(g) for g in self.groups])
        over = int((sizes > max_slices).sum()) if max_slices else 0
        if over:  # said once, when the bags are made
            log.info("%s%d of %d studies have more than preprocess.view.max_slices=%d samples (up to %d): each "
                     "training step sees %d of them drawn at random; evaluation uses all",
                     f"{name}: " if name else "", over, len(sizes), max_slices, int(sizes.max()), max_slices)

    def __len__(self) -> int:
        return len(self.groups)

    def sizes(self) -> list[int]:
        """Samples per study (before any draw)."""
        return [len(g) for g in self.groups]

    def bag_sizes(self) -> list[int]:
        """Samples per bag as read: each study's, at most ``max_slices``."""
        return [min(n, self.max_slices) if self.max_slices else n for n in self.sizes()]

    def study_order(self) -> dict[str, int]:
        """Each study's position in this dataset, by ``study_key``."""
        keys = sample_study_keys(self.samples)
        return {keys[g[0]]: i for i, g in enumerate(self.groups)}

    def __getitem__(self, index: int | BagIndex) -> dict[str, Any]:
        at = index if isinstance(index, BagIndex) else BagIndex(int(index))
        idx = self.groups[at.study]
        if self.max_slices and len(idx) > self.max_slices:
            rng = np.random.default_rng([self.seed, at.draw, at.study])
            pick = np.sort(rng.choice(len(idx), self.max_slices, replace=False))
            idx = [idx[j] for j in pick]
        items = [self.samples[j] for j in idx]
        first = items[0]
        bag = {"image": torch.stack([torch.as_tensor(it["image"]).as_subclass(torch.Tensor).float() for it in items]),
               "label": int(first["label"]), "study_key": first["study_key"], "patient_key": first["patient_key"],
               "sample_id": first["study_key"], "members": [str(it["sample_id"]) for it in items]}
        if "findings" in first:
            bag["findings"] = np.asarray(first["findings"], dtype=np.float32)
        if at.total is not None:  # its slices' rows among the global batch's slices (augmentation, dropout)
            bag["rows"], bag["rows_total"] = np.arange(at.offset, at.offset + len(items)), at.total
        return bag


def collate_bags(bags: list[dict[str, Any]]) -> dict[str, Any]:
    """A batch of bags: ``image`` ``(studies, longest, ...)`` padded with NaN samples, one label per study."""
    longest = max(len(b["image"]) for b in bags)
    shape = bags[0]["image"].shape[1:]
    images = torch.full((len(bags), longest, *shape), float("nan"))
    for i, b in enumerate(bags):
        images[i, :len(b["image"])] = b["image"]
    batch = {"image": images, "label": torch.tensor([b["label"] for b in bags]),
             **{k: [b[k] for b in bags] for k in ("study_key", "patient_key", "sample_id", "members")}}
    if "findings" in bags[0]:
        batch["findings"] = torch.as_tensor(np.stack([b["findings"] for b in bags]))
    if "rows" in bags[0]:
        batch["share"] = SliceShare(torch.as_tensor(np.concatenate([b["rows"] for b in bags])), bags[0]["rows_total"])
    return batch


def studies_per_step(cfg: TrainConfig, max_slices: int) -> int:
    """Studies in a training batch: ``train.batch_size`` images' worth of full bags, at least one."""
    return max(1, cfg.batch_size // max_slices)


@dataclass(frozen=True)
class BagIndex:
    """What a training loader asks :class:`StudyBags` for: the ``study``, the epoch's ``draw`` key (which
    slices a bag larger than ``max_slices`` gives), and where its slices sit among the ``total`` slices of
    the global batch (from ``offset`` on) for draws made over the whole batch."""

    study: int
    draw: int = 0
    offset: int = 0
    total: int | None = None


@dataclass(frozen=True)
class SliceShare:
    """This rank's real slices in a global batch of bags: their ``rows`` among its ``total`` slices."""

    rows: torch.Tensor
    total: int


class BagBatchSampler(GlobalBatchSampler):
    """:class:`~.distributed.GlobalBatchSampler` over studies, yielding :class:`BagIndex` items: every rank
    knows the whole global batch, so each study carries the epoch's draw key (from the epoch's seeded order,
    the same on every rank and after a resume) and its slices' place among the global batch's slices."""

    def __init__(self, bag_sizes: Sequence[int], batch_size: int, dist: Dist, generator: torch.Generator) -> None:
        super().__init__(len(bag_sizes), batch_size, dist, True, generator)
        self.bag_sizes = list(bag_sizes)

    def __iter__(self) -> Iterator[list[BagIndex]]:
        batches = self._batches()
        order = np.asarray([i for b in batches for i in b], dtype=np.int64)
        draw = zlib.crc32(order.tobytes())
        for batch in batches:
            counts = [self.bag_sizes[i] for i in batch]
            offsets = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(int).tolist()
            yield [BagIndex(batch[j], draw, offsets[j], int(sum(counts)))
                   for j in range(self.dist.rank, len(batch), self.dist.world)]


def bag_loader(bags: StudyBags, cfg: TrainConfig, shuffle: bool, studies: int, dist: Dist | None = None) -> DataLoader:
    """Batches of ``studies`` bags; a training loader (``shuffle``) draws them as
    :func:`~.loaders.make_loader` does (:class:`BagBatchSampler`, seeded by ``train.seed``); under torchrun
    each rank takes every ``world``-th study of a global batch, and evaluation a disjoint shard of the studies
    (gathered with :meth:`~.distributed.Dist.gather_studies`)."""
    dist = dist or Dist()
    workers = {"num_workers": cfg.num_workers, "persistent_workers": cfg.num_workers > 0, "collate_fn": collate_bags}
    if shuffle:
        if dist.enabled and studies < dist.world:
            raise ConfigError(f"study-level training under torchrun: a global batch of {studies} studies "
                              f"(train.batch_size {cfg.batch_size} // preprocess.view.max_slices) cannot give each of "
                              f"the {dist.world} processes a study; raise train.batch_size to at least "
                              f"{dist.world * cfg.batch_size // max(studies, 1)}")
        generator = torch.Generator().manual_seed(cfg.seed)
        sampler = BagBatchSampler(bags.bag_sizes(), studies, dist, generator)
        return DataLoader(bags, batch_sampler=sampler, generator=generator, **workers)
    if dist.enabled:
        return DataLoader(bags, batch_size=studies, sampler=ShardSampler(len(bags), dist), **workers)
    return DataLoader(bags, batch_size=studies, shuffle=False, **workers)


class BagAugment:
    """:class:`~medlora.transforms.augment.BatchAugment` of the real slices of a batch of bags (each slice
    its own draw); padding stays NaN. With a :class:`SliceShare` the draws are made for the global batch's
    slices and each slice keeps its own row's, as in one process. ``generator`` is the augmenter's (saved
    with checkpoints)."""

    def __init__(self, seed: int = 0) -> None:
        self.inner = BatchAugment(seed=seed)
        self.generator = self.inner.generator

    def __call__(self, bags: torch.Tensor, share: SliceShare | None = None) -> torch.Tensor:
        mask = ~torch.isnan(bags.flatten(2)).any(-1)
        real = bags[mask]
        theta = self.inner.matrices(share.total if share is not None else len(real))
        if share is not None:
            if len(share.rows) != len(real):
                raise ValueError(f"{len(real)} real slices in this batch of bags, {len(share.rows)} rows in its share")
            theta = theta[share.rows]
        out = bags.clone()
        out[mask] = self.inner.resample(real.float(), theta.to(bags.device)).to(bags.dtype)
        return out


@torch.inference_mode()
def predict_studies(model: nn.Module, loader, device: torch.device, abnormal_index: int,
                    head: Head | None = None) -> Predictions:
    """Score bags with ``model.attend`` (:class:`~medlora.models.aggregator.StudyModel`, or the pooling
    alone on cached features): one row per sample with its study's score and its ``attention``."""
    model.eval()
    dtype = autocast_dtype(device)
    rows: dict[str, list] = {k: [] for k in ("sample_id", "study_key", "patient_key", "label", "attention")}
    probs, targets = [], []
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            logits, attention = model.attend(x)
        p = head.probabilities(logits) if head is not None else \
            torch.softmax(logits.float(), 1).cpu().numpy().astype(np.float64)
        t = head.targets(batch) if head is not None else np.eye(p.shape[1])[np.asarray(batch["label"]).astype(int)]
        attention = attention.float().cpu().numpy()
        for s, members in enumerate(batch["members"]):
            n = len(members)
            rows["sample_id"] += members
            for k in ("study_key", "patient_key"):
                rows[k] += [batch[k][s]] * n
            rows["label"] += [int(batch["label"][s])] * n
            rows["attention"] += attention[s, :n].tolist()
            probs.append(np.repeat(p[s:s + 1], n, 0))
            targets.append(np.repeat(t[s:s + 1], n, 0))
    p, t = np.concatenate(probs), np.concatenate(targets)
    classes = np.asarray(rows["label"], dtype=int)
    extra = {"attention": np.asarray(rows["attention"], dtype=np.float64)}
    if head is None or not head.multi:
        return Predictions(rows["sample_id"], rows["study_key"], rows["patient_key"],
                           (classes == abnormal_index).astype(int), p[:, abnormal_index], class_index=classes,
                           extra=extra)
    score, label = head.summary(p, t)
    return Predictions(rows["sample_id"], rows["study_key"], rows["patient_key"], label, score, class_index=classes,
                       extra=extra, names=head.names, scores=p, targets=t)
