"""Study classification (normal vs abnormal) on 2D DICOM images with a LoRA-adapted ViT.

ingest → split → MONAI cached datasets → timm + peft → train → study-level evaluation →
MLflow → export → review bundle, on one process or on the ranks torchrun starts. Wiring only:
the work is in :func:`medlora.experiment.single.run_single`.
"""

from __future__ import annotations

from pathlib import Path

from medlora.config import Config
from medlora.experiment.single import run_single
from medlora.summary import RunSummary


def run(cfg: Config, out: Path) -> RunSummary:
    return run_single(cfg, Path(out))
