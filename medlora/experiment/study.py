"""Study-level training (``preprocess.view.aggregate: attention``): what a run trains, and on what.

The timm model of the run (LoRA, linear probe or full fine-tune, :mod:`medlora.models.build`) becomes
the slice encoder of a :class:`~medlora.models.aggregator.StudyModel`, and each split's samples become
bags of studies (:mod:`medlora.train.bags`). A linear probe's encoder never changes, so its slices are
encoded once (:func:`~medlora.train.features.extract_features`, as in the few-shot sweeps) and only
the pooling trains, on bags of cached features. The loss is on each study's label.

Refused, with the reason, when no study has more than one sample: every study a single 2D image (or
one view of a volume) leaves nothing to pool.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from ..config import Config
from ..errors import ConfigError
from ..models.aggregator import GatedAttentionPool, StudyModel, feature_dim
from ..train.bags import StudyBags, bag_loader, studies_per_step
from ..train.distributed import Dist
from ..train.features import FeatureDataset, extract_features
from ..train.loaders import make_loader

log = logging.getLogger(__name__)


@dataclass
class StudySetup:
    """``trained``: the module the loop trains (the study model, or a probe's pooling on features);
    ``study_model``: the encoder + pooling that scores images (exported); ``loaders``: bags per split;
    ``augment``: whether training bags are images that can be augmented."""

    trained: nn.Module
    study_model: StudyModel
    loaders: dict[str, Any]
    augment: bool


def attention_pool(model: nn.Module, cfg: Config) -> GatedAttentionPool:
    """A fresh pooling for ``model``'s features with one output per class/finding of ``cfg``."""
    return GatedAttentionPool(feature_dim(model), len(cfg.data.outputs), cfg.preprocess.view.attention_dim)


def require_bags(sizes: Mapping[str, list[int]], cfg: Config) -> None:
    """Refuse attention pooling when every study of every split has one sample."""
    if any(max(s, default=0) > 1 for s in sizes.values()):
        return
    view = cfg.preprocess.view
    raise ConfigError(
        f"preprocess.view.aggregate: attention pools the slices or images of a study, but every study of data "
        f"{cfg.data.name!r} has one sample (preprocess.view.kind: {view.kind}): nothing to pool. For volumes use a "
        "view with several slices (every_k, slab, 2.5d); for single 2D images use aggregate: max or mean")


def study_training(model: nn.Module, datasets: Mapping[str, Dataset], cfg: Config, device: Any,
                   dist: Dist | None = None, encoded: bool = False) -> StudySetup:
    """The study model of ``model`` and the bag loaders of ``datasets`` (per-sample datasets of each split).
    ``encoded``: a linear probe's ``datasets`` are already its encoder's slice features (a sweep's cache,
    :meth:`medlora.sweep.workbench.Workbench.features`), not images."""
    view = cfg.preprocess.view
    pool = attention_pool(model, cfg).to(device)
    study_model = StudyModel(model, pool)
    samples: dict[str, Dataset] = dict(datasets)
    probe = cfg.model.method == "linear_probe"
    if encoded and not probe:
        raise ValueError("encoded slice features train a linear probe's pooling only")
    if probe and not encoded:  # the encoder is frozen: its features once, then only the pooling trains
        samples = {s: FeatureDataset(extract_features(model.to(device), make_loader(ds, cfg.train, False), device,
                                                      f"{s} slice features")) for s, ds in datasets.items()}
    bags = {s: StudyBags(ds, view.max_slices if s == "train" else None, cfg.train.seed, s) for s, ds in samples.items()}
    require_bags({s: b.sizes() for s, b in bags.items()}, cfg)
    step = studies_per_step(cfg.train, view.max_slices)
    eval_studies = max(1, cfg.train.batch_size // max(max(b.sizes()) for b in bags.values()))
    loaders = {s: bag_loader(b, cfg.train, s == "train", step if s == "train" else eval_studies, dist)
               for s, b in bags.items()}
    log.info("study-level training: %d/%d/%d studies (train/val/test), %d per step, at most %d slices each; "
             "gated-attention pooling over %d-dim features (%s)", *(len(bags[s]) for s in ("train", "val", "test")),
             step, view.max_slices, pool.dim, "cached: linear probe" if probe else cfg.model.method)
    return StudySetup(pool if probe else study_model, study_model, loaders, augment=not probe)
