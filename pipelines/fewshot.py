"""Few-shot comparison of adaptation methods (LoRA, linear probe, full fine-tuning).

ingest → split → for every (shots, seed) a per-patient support set of the training split → every
method trained on it and evaluated on the fixed val/test splits → one MLflow parent run with a
nested child per (method, shots, seed), a summary table, DeLong tests and a learning curve.
Rerunning the same config resumes the sweep. Wiring only: the work is in
:mod:`medlora.sweep` (:func:`medlora.sweep.driver.run_sweep`).
"""

from __future__ import annotations

from pathlib import Path

from medlora.config import Config
from medlora.summary import RunSummary
from medlora.sweep.driver import run_sweep
from medlora.transforms.samples import prepare_samples


def run(cfg: Config, out: Path) -> RunSummary:
    return run_sweep(cfg, prepare_samples(cfg.data, cfg.preprocess, Path(out)), Path(out))
