"""Score a site's prepared (ingested, labelled) studies with a bundle, exactly as the bundle preprocesses.

``medlora predict`` scores loose files; validation scores a dataset medlora has ingested at the site
(identity rules, the site's own secret, patient keys and labels), so every sample keeps the keys and
label the site's ingest gave it. Images go through the **bundle's** preprocessing (window, view,
size, mean/std of ``medlora.json``), never the site config's. Each sample also yields the model's
pooled (pre-logits) features, from which the study's familiarity is measured.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from ..config import Config
from ..evaluate.familiarity import study_means
from ..io.prepare import PreparedData
from ..train.features import pre_logits
from ..train.loaders import make_datasets, make_loader
from .bundle import Bundle
from .predict import Predictor

log = logging.getLogger(__name__)


@dataclass
class SiteScores:
    samples: pd.DataFrame  # sample_id, study_key, patient_key, label, split, score, score.<output>...
    features: np.ndarray  # (samples, d) pooled pre-logits features, aligned with ``samples``

    def study_features(self) -> tuple[np.ndarray, np.ndarray]:
        """(study keys, mean feature of each study's samples), in sorted key order."""
        return study_means(self.features, self.samples["study_key"].to_numpy())


def bundle_config(cfg: Config, bundle: Bundle) -> tuple[Config, dict]:
    """``cfg`` with the bundle's preprocessing in place of its own, and the bundle's input config."""
    pre, size, mean, std = bundle.preprocess()
    pre = pre.model_copy(update={"image_size": size})
    return cfg.model_copy(update={"preprocess": pre}), {"image_size": size, "mean": mean, "std": std}


def _flat_features(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    f = pre_logits(model, x)
    return f.flatten(1)  # a distilled DeiT's two tokens side by side


@torch.inference_mode()
def score_prepared(predictor: Predictor, data: PreparedData, cfg: Config, splits: tuple[str, ...]) -> SiteScores:
    """Scores and pooled features of every sample of ``splits`` of ``data`` under bundle 0 of ``predictor``."""
    from tqdm.auto import tqdm

    bundle = predictor.bundles[0]
    site_cfg, inputs = bundle_config(cfg, bundle)
    datasets = make_datasets(data, site_cfg, inputs, splits=splits, cache=False)
    slot = predictor.slots[0]
    if slot.activate is not None:
        slot.activate()
    slot.model.eval()
    frames, feats = [], []
    for split in splits:
        loader = make_loader(datasets[split], site_cfg.train.model_copy(update={"batch_size": predictor.batch_size}),
                             shuffle=False)
        for batch in tqdm(loader, desc=f"score {split}", leave=False, disable=not sys.stderr.isatty()):
            x = batch["image"].as_subclass(torch.Tensor)
            score, outputs = predictor.score_outputs(0, x)
            feats.append(_flat_features(slot.model, x).float().numpy())
            frame = {"sample_id": list(batch["sample_id"]), "study_key": list(batch["study_key"]),
                     "patient_key": list(batch["patient_key"]), "label": np.asarray(batch["label"]).astype(int),
                     "split": split, **({"score": score} if bundle.binary_call else {}),
                     **{f"score.{n}": outputs[:, k] for k, n in enumerate(bundle.outputs)}}
            frames.append(pd.DataFrame(frame))
    samples = pd.concat(frames, ignore_index=True)
    if "findings" in data.manifest.columns:  # multi-label targets, for "any finding" and per-finding labels
        samples = samples.merge(data.manifest[["sample_id", "findings"]], on="sample_id", how="left")
    log.info("scored %d samples of %d studies with %s", len(samples), samples["study_key"].nunique(), bundle.name)
    return SiteScores(samples, np.concatenate(feats).astype(np.float64))
