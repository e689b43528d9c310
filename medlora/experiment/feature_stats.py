"""The familiarity statistics of a trained model, fitted at the end of its run and shipped in its bundle.

The trained model's pooled features of the training studies (one mean feature per study) give the mean
and shrunk covariance; the validation studies' distances set the flag threshold
(:mod:`medlora.evaluate.familiarity`). Below the minimum number of training studies nothing is written:
familiarity is then "not available" downstream, never guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..bundle.familiarity import save_feature_stats
from ..config import Config
from ..errors import InputError
from ..evaluate.familiarity import MIN_STUDIES, fit_feature_stats
from ..train.features import extract_features
from ..train.loaders import make_loader

log = logging.getLogger(__name__)


def study_means(features: torch.Tensor, study_keys: list[str]) -> np.ndarray:
    """One mean feature per study (flattened: a distilled DeiT's two tokens side by side)."""
    x = features.flatten(1).double().numpy()
    _, inverse = np.unique(np.asarray(study_keys), return_inverse=True)
    sums = np.zeros((inverse.max() + 1, x.shape[1]))
    np.add.at(sums, inverse, x)
    return sums / np.bincount(inverse)[:, None]


def write_feature_stats(model: torch.nn.Module, datasets: dict[str, Dataset], cfg: Config, device: torch.device,
                        out: Path) -> Path | None:
    """Fit and write ``feature_stats.safetensors`` into ``out``; None (logged) when there are too few studies."""
    feats = {s: extract_features(model, make_loader(datasets[s], cfg.train, False), device, f"{s} features")
             for s in ("train", "val")}
    train = study_means(feats["train"].features, feats["train"].keys["study_key"])
    if len(train) < MIN_STUDIES:
        log.info("familiarity statistics not written: %d training studies (at least %d needed)", len(train), MIN_STUDIES)
        return None
    try:
        stats = fit_feature_stats(train, study_means(feats["val"].features, feats["val"].keys["study_key"]))
    except InputError as err:
        log.info("familiarity statistics not written: %s", err)
        return None
    path = save_feature_stats(stats, out)
    log.info("familiarity statistics of %d training studies (flag above distance %.2f) in %s", stats.n_studies,
             stats.threshold, path)
    return path
