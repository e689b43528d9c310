"""One-class anomaly detection: features of normal training studies only → distance-based score.

ingest → split → frozen (or LoRA-adapted) ViT features → kNN / Mahalanobis fitted on normal training
samples → study-level evaluation → MLflow. Wiring only: the work is in
:func:`medlora.experiment.oneclass.run_oneclass`.
"""

from __future__ import annotations

from pathlib import Path

from medlora.config import Config
from medlora.experiment.oneclass import run_oneclass
from medlora.summary import RunSummary


def run(cfg: Config, out: Path) -> RunSummary:
    return run_oneclass(cfg, Path(out))
