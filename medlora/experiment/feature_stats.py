"""The familiarity statistics of a trained model, fitted at the end of its run and shipped in its bundle.

The trained model's pooled features of the training studies (one mean feature per study) give the mean
and shrunk covariance; the validation studies' distances set the flag threshold
(:mod:`medlora.evaluate.familiarity`). Below the minimum number of training studies nothing is written:
familiarity is then "not available" downstream, never guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch.utils.data import Dataset

from ..bundle.familiarity import save_feature_stats
from ..config import Config
from ..errors import InputError
from ..evaluate.familiarity import MIN_STUDIES, fit_feature_stats, study_means
from ..train.features import extract_features
from ..train.loaders import make_loader

log = logging.getLogger(__name__)


def write_feature_stats(model: torch.nn.Module, datasets: dict[str, Dataset], cfg: Config, device: torch.device,
                        out: Path) -> Path | None:
    """Fit and write ``feature_stats.safetensors`` into ``out``; None (logged) when there are too few studies."""
    feats = {s: extract_features(model, make_loader(datasets[s], cfg.train, False), device, f"{s} features")
             for s in ("train", "val")}
    _, train = study_means(feats["train"].features.flatten(1).numpy(), feats["train"].keys["study_key"])
    if len(train) < MIN_STUDIES:
        log.info("familiarity statistics not written: %d training studies (at least %d needed)", len(train), MIN_STUDIES)
        return None
    try:
        _, val = study_means(feats["val"].features.flatten(1).numpy(), feats["val"].keys["study_key"])
        stats = fit_feature_stats(train, val)
    except InputError as err:
        log.info("familiarity statistics not written: %s", err)
        return None
    path = save_feature_stats(stats, out)
    log.info("familiarity statistics of %d training studies (flag above distance %.2f) in %s", stats.n_studies,
             stats.threshold, path)
    return path
