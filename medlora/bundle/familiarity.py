"""``feature_stats.safetensors``: the familiarity statistics a bundle carries (mean and shrunk covariance of
its training studies' pooled features, and the flag threshold from its validation studies).

Written by a run beside its weights (:func:`save_feature_stats`), copied into the bundle and covered by its
manifest; read by ``validate`` and ``predict``. A bundle exported before this file existed has none:
familiarity is then "not available", never guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..evaluate.familiarity import FeatureStats
from .bundle import Bundle

log = logging.getLogger(__name__)
FEATURE_STATS_FILE = "feature_stats.safetensors"


def save_feature_stats(stats: FeatureStats, folder: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    path = Path(folder) / FEATURE_STATS_FILE
    save_file({k: torch.from_numpy(v) for k, v in stats.to_arrays().items()}, path,
              metadata={"medlora": "feature-stats", "n_studies": str(stats.n_studies)})
    return path


def load_feature_stats(bundle: Bundle) -> FeatureStats | None:
    """The bundle's statistics, or None (with a log line) when it carries none."""
    path = bundle.path / FEATURE_STATS_FILE
    if not path.is_file():
        log.info("bundle %s carries no feature statistics (exported before they existed?): familiarity is "
                    "not available", bundle.path)
        return None
    from safetensors.numpy import load_file

    return FeatureStats.from_arrays(load_file(path))
