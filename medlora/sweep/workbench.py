"""What every point of a few-shot sweep shares, built once: the base model, the datasets, cached features.

Support sets are :class:`~torch.utils.data.Subset` index views of one cached training set; each
point starts from a deep copy of the frozen base (so LoRA, linear probing and full fine-tuning never
see each other's weights); linear probes train on the backbone features of every sample, computed
once (:mod:`medlora.train.features`); LoRA on the upper blocks trains on frozen-prefix tokens computed once per depth.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Subset

from ..config import Config
from ..device import resolve_device
from ..io.prepare import PreparedData
from ..models.backbone import create_base
from ..models.build import input_config
from ..models.lora import apply_method
from ..models.prefix import SuffixModel, frozen_prefix_depth
from ..models.volume import volume_input
from ..registry import CONTINUED
from ..train.features import FeatureDataset, FeatureSet, extract_features, prefix_token_sets
from ..train.loaders import make_datasets, make_loader
from ..train.support import SupportSet
from .points import SweepPoint


class Workbench:
    """What every child of a sweep shares, built once: base model, datasets, cached features, and the
    study table of ``evaluate.subgroups`` (built where the labels and site key are: in the driver)."""

    def __init__(self, cfg: Config, data: PreparedData, out: Path, subgroups: pd.DataFrame | None = None) -> None:
        self.cfg, self.data, self.subgroups = cfg, data, subgroups
        self.device = resolve_device(cfg.train.device)
        self.num_classes = len(cfg.data.outputs)  # one output per class, or per finding (multilabel)
        self.base, self.base_info = create_base(cfg.model, self.num_classes, init_dir=Path(out) / "base",
                                                seed=cfg.train.seed, volume=volume_input(cfg.preprocess, cfg.model))
        self.base.requires_grad_(False)
        self.input_cfg = input_config(self.base, cfg.preprocess.image_size)
        self.train_frame = data.split("train").reset_index(drop=True)
        self.datasets = make_datasets(data, cfg, self.input_cfg)  # augmentation runs on batches, in training
        self._features: dict[str, FeatureSet] | None = None
        self._tokens: dict[int, dict[str, FeatureSet] | None] = {}  # frozen-prefix tokens by depth (None: too big)

    def model_for(self, cfg: Config, point: SweepPoint) -> nn.Module:
        """A fresh copy of the base with a seeded new head and the point's method applied."""
        model = copy.deepcopy(self.base)
        torch.manual_seed(point.seed)
        model.reset_classifier(self.num_classes)
        model = apply_method(model, cfg.model.method, cfg.model.lora)  # adapter_continued: LoRA (point_config)
        if point.method == CONTINUED:  # the received adapter and head, then trained on the support set
            from ..bundle.continued import continue_adapter

            continue_adapter(model, self.base_info, cfg.model.lora, cfg.model.adapter)
        return model

    def features(self) -> dict[str, FeatureSet]:
        """Pre-logits features of every train/val/test sample, computed on first use (no augmentation)."""
        if self._features is None:
            model = self.base.to(self.device)
            self._features = {s: extract_features(model, make_loader(ds, self.cfg.train, shuffle=False), self.device,
                                                  desc=f"features {s}") for s, ds in self.datasets.items()}
            self.base.to("cpu")
        return self._features

    def prefix(self, model: nn.Module, cfg: Config, support: SupportSet) -> tuple[nn.Module, dict[str, Any]] | None:
        """``(SuffixModel, loaders over cached tokens)`` when ``model`` trains only above frozen blocks and
        images are not augmented: the tokens below are computed once per sweep, from the shared base."""
        depth = 0 if cfg.preprocess.augment else frozen_prefix_depth(model)
        if not depth:
            return None
        if depth not in self._tokens:  # the frozen blocks are the base's own: one pass serves every child
            self._tokens[depth] = prefix_token_sets(self.base, self.datasets,
                                                    lambda ds, shuffle: make_loader(ds, self.cfg.train, shuffle),
                                                    self.device, depth)
            self.base.to("cpu")
        t = self._tokens[depth]
        if t is None:
            return None
        sets = {"train": FeatureDataset(t["train"], support.positions), "val": FeatureDataset(t["val"]),
                "test": FeatureDataset(t["test"])}
        return SuffixModel(model, depth), {s: make_loader(ds, cfg.train, shuffle=s == "train") for s, ds in sets.items()}

    def sample_sets(self, point: SweepPoint, support: SupportSet) -> dict[str, Any]:
        """One child's samples: the support set of the training data, all of val and test (a linear probe's
        as cached features)."""
        if point.method == "linear_probe":
            f = self.features()
            return {"train": FeatureDataset(f["train"], support.positions), "val": FeatureDataset(f["val"]),
                    "test": FeatureDataset(f["test"])}
        return {"train": Subset(self.datasets["train"], support.positions.tolist()), "val": self.datasets["val"],
                "test": self.datasets["test"]}

    def loaders(self, cfg: Config, point: SweepPoint, support: SupportSet) -> dict[str, Any]:
        """Loaders of one child's :meth:`sample_sets`."""
        return {s: make_loader(ds, cfg.train, shuffle=s == "train") for s, ds in self.sample_sets(point, support).items()}
