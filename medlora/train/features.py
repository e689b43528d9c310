"""Frozen computation done once per sample: probe features and frozen-prefix tokens.

A linear probe trains only the classifier head on top of a frozen backbone, so the backbone's
output for a sample never changes: it is computed once (eval mode, no augmentation) and cached per
sample. The probe then trains the head on the cached vectors, which is a few matrix products per
epoch instead of a ViT forward pass per image. Because the features are computed once, the linear
probe sees **no augmentation** (LoRA and full fine-tuning do).

The feature of an image is timm's pre-logits output
(``model.forward_head(model.forward_features(x), pre_logits=True)``), so
``head(feature) == model(image)`` in eval mode. A distilled DeiT has two heads, ``head`` on the
class token and ``head_dist`` on the distillation token, whose logits timm averages (its pre-logits
output, the tokens' mean, feeds neither): its feature is the two tokens and its probe trains both
heads (:class:`DistilledHead`), as its linear probe on images does.

The same holds for LoRA on the upper blocks only (``model.lora.blocks``) without augmentation: the
tokens after the frozen blocks below the first adapted one are computed once
(:func:`prefix_loaders`), and training and evaluation run the remaining blocks on them
(:class:`~medlora.models.prefix.SuffixModel`).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from ..device import autocast_dtype
from ..models.backbone import head_name
from ..models.prefix import SuffixModel, frozen_prefix_depth, prefix_tokens

log = logging.getLogger(__name__)
KEYS = ("sample_id", "study_key", "patient_key")


@dataclass
class FeatureSet:
    """Cached pre-logits features of one dataset, aligned with its samples."""

    features: torch.Tensor  # (n, d) float32, CPU; a distilled DeiT's (n, 2, d): class and distillation token
    label: np.ndarray
    keys: dict[str, list[str]]
    seconds: float = 0.0
    findings: np.ndarray | None = None  # multilabel: (n, findings) targets, NaN = unknown

    def __len__(self) -> int:
        return len(self.label)


def distilled(model: nn.Module) -> bool:
    """Whether ``model`` is timm's distilled DeiT (``head`` and ``head_dist``, logits averaged)."""
    from timm.models.deit import VisionTransformerDistilled

    return isinstance(model, VisionTransformerDistilled)


def pre_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The timm model's input to its classifier head; for a distilled DeiT, the inputs of its two heads
    (class and distillation token, ``(n, 2, d)``)."""
    tokens = model.forward_features(x)
    if distilled(model):
        return tokens[:, :2]  # what its forward_head hands head and head_dist (dropout aside: eval mode)
    return model.forward_head(tokens, pre_logits=True)


class DistilledHead(nn.Module):
    """A distilled DeiT's two heads on its :func:`pre_logits` features, averaged as timm does at inference."""

    def __init__(self, head: nn.Module, head_dist: nn.Module) -> None:
        super().__init__()
        self.head, self.head_dist = head, head_dist

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return (self.head(features[:, 0]) + self.head_dist(features[:, 1])) / 2


@torch.inference_mode()
def extract_features(model: nn.Module, loader, device: torch.device, desc: str = "features",
                     fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = pre_logits) -> FeatureSet:
    """Run the frozen backbone once over ``loader`` (eval mode) and keep ``fn(model, x)`` per sample
    (default: its pre-logits features)."""
    from tqdm.auto import tqdm

    model.eval()
    dtype = autocast_dtype(device)
    t0 = time.perf_counter()
    feats, labels, findings, keys = [], [], [], {k: [] for k in KEYS}
    for batch in tqdm(loader, desc=desc, leave=False, disable=not sys.stderr.isatty()):
        x = batch["image"].to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            f = fn(model, x)
        feats.append(f.float().cpu())
        labels.append(np.asarray(batch["label"]))
        if "findings" in batch:
            findings.append(np.asarray(batch["findings"], dtype=np.float32))
        for k in KEYS:
            keys[k] += list(batch[k])
    out = FeatureSet(torch.cat(feats), np.concatenate(labels).astype(int), keys, time.perf_counter() - t0,
                     np.concatenate(findings) if findings else None)
    log.info("%s: %d samples of shape %s (%.0f MB) in %.1f s", desc, len(out), tuple(out.features.shape[1:]),
             out.features.nbytes / 2**20, out.seconds)
    return out


class FeatureDataset(Dataset):
    """Cached features as a dataset of MONAI-style dicts (``image`` holds the feature vector), so the
    ordinary training loop and :func:`~medlora.train.inference.predict` work on them unchanged."""

    def __init__(self, features: FeatureSet, positions: np.ndarray | None = None) -> None:
        self.features = features
        self.positions = np.arange(len(features)) if positions is None else np.asarray(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i: int) -> Mapping[str, Any]:
        j = int(self.positions[i])
        item = {"image": self.features.features[j], "label": int(self.features.label[j]),
                **{k: v[j] for k, v in self.features.keys.items()}}
        if self.features.findings is not None:
            item["findings"] = self.features.findings[j]
        return item


def probe_head(model: nn.Module) -> nn.Module:
    """The model's classifier head (the module a linear probe trains) on its :func:`pre_logits` features,
    trainable: both heads of a distilled DeiT (:class:`DistilledHead`)."""
    head = DistilledHead(model.head, model.head_dist) if distilled(model) else model.get_submodule(head_name(model))
    for p in head.parameters():
        p.requires_grad = True
    return head


def prefix_token_sets(model: nn.Module, datasets: Mapping[str, Dataset], make_loader: Callable[[Dataset, bool], Any],
                      device: torch.device, depth: int) -> dict[str, FeatureSet] | None:
    """The tokens after the first ``depth`` blocks for every sample of every split, computed once
    (eval mode); ``None`` when they would not fit in memory (:func:`fits_in_memory`)."""
    model.to(device)
    if not fits_in_memory(model, datasets, depth, device):
        return None
    return {s: extract_features(model, make_loader(ds, False), device, f"frozen blocks 0-{depth - 1} {s}",
                                fn=lambda m, x: prefix_tokens(m, x, depth)) for s, ds in datasets.items()}


def prefix_loaders(model: nn.Module, datasets: Mapping[str, Dataset], make_loader: Callable[[Dataset, bool], Any],
                   device: torch.device, augment: bool,
                   every_sample: Callable[[Dataset, bool], Any] | None = None) -> tuple[nn.Module, dict[str, Any]] | None:
    """``(SuffixModel, loaders over cached prefix tokens)`` when ``model`` trains only above a frozen,
    deterministic prefix of blocks and training images are not augmented; ``None`` otherwise (train
    on images). ``make_loader(dataset, shuffle)`` builds each split's loader; ``every_sample`` (default
    ``make_loader``) the loaders of the one pass that computes the tokens, which must cover every
    sample: under torchrun each rank computes all tokens (a rank's training batches may hold any
    sample), while ``make_loader`` would give it only its evaluation shard."""
    depth = 0 if augment else frozen_prefix_depth(model)
    tokens = prefix_token_sets(model, datasets, every_sample or make_loader, device, depth) if depth else None
    if tokens is None:
        return None
    log.info("training starts at block %d: the frozen blocks below run once per sample", depth)
    return SuffixModel(model, depth), {s: make_loader(FeatureDataset(t), s == "train") for s, t in tokens.items()}


def fits_in_memory(model: nn.Module, datasets: Mapping[str, Dataset], depth: int, device: torch.device,
                   share: float = 0.5) -> bool:
    """Whether the prefix tokens of every sample fit in ``share`` of this machine's physical memory
    (measured on one sample); logs why not."""
    import os

    first = next(iter(datasets.values()))
    with torch.inference_mode():
        sample = prefix_tokens(model.eval(), first[0]["image"][None].to(device), depth)
    need = sample.numel() * 4 * sum(len(ds) for ds in datasets.values())
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return True
    if need > share * total:
        log.warning("frozen-prefix tokens would need %.1f GB (more than %.0f %% of %.1f GB memory): training on "
                    "images instead", need / 2**30, 100 * share, total / 2**30)
        return False
    return True
