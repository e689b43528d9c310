"""A site's labelled studies prepared for validating a received bundle (not for training).

Every readable labelled study is evaluated: there is no train/validation/test split, because nothing is
trained or tuned on them. The one exception is a **site calibration subset** (``--calibrate-on``): a
patient-level, label-stratified share of the site's patients (persisted beside the outputs and reused)
on which a site-adjusted threshold and calibration map may be refitted; those studies are then left
out of the evaluation. In the returned data the calibration studies are the ``val`` split and the
evaluated studies the ``test`` split, the names every other stage reads.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from ..config import DataConfig, SplitConfig
from ..errors import ConfigError
from .datacard import card_for_run
from .ingest import run_ingest
from .prepare import PreparedData, default_split_file, fingerprint
from .report import write_ingest_files
from .split import SPLITS, assign_splits, audit_leakage

log = logging.getLogger(__name__)
CALIBRATION, EVALUATION = "val", "test"
SPLIT_FILE = "calibration_split.csv"


def parse_calibrate_on(value: str | None) -> float | str | None:
    """``--calibrate-on``: a fraction of the site's patients in (0, 1), or a split name of ``data.split``."""
    if value is None:
        return None
    if value in SPLITS:
        return value
    try:
        fraction = float(value)
    except ValueError:
        raise ConfigError(f"--calibrate-on {value!r} is neither a fraction in (0, 1) nor a split name "
                          f"({', '.join(SPLITS)})") from None
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"--calibrate-on {value!r}: a fraction must lie strictly between 0 and 1")
    return fraction


def _calibration_split(manifest: pd.DataFrame, cfg: DataConfig, calibrate_on: float | str, out: Path) -> pd.Series:
    """Per row: ``val`` (calibration subset) or ``test`` (evaluated)."""
    if isinstance(calibrate_on, str):  # one split of the site's own data.split
        split = assign_splits(manifest, cfg.split, default_split_file(cfg))["split"]
        return split.map(lambda s: CALIBRATION if s == calibrate_on else EVALUATION)
    rest = (1.0 - calibrate_on) / 2
    drawn = assign_splits(manifest, SplitConfig(train=calibrate_on, val=rest, test=rest, seed=cfg.split.seed),
                          out / SPLIT_FILE)["split"]
    return drawn.map(lambda s: CALIBRATION if s == "train" else EVALUATION)


def prepare_site_data(cfg: DataConfig, out: Path, calibrate_on: float | str | None = None) -> PreparedData:
    """Ingest the site's labelled studies (its own identity rules and secret) for validation.

    ``manifest.csv`` and ``ingest_report.csv`` go to ``out`` before any check can fail.
    """
    out = Path(out)
    card = card_for_run(cfg)
    if cfg.synth is not None:
        from .synth import ensure_phantoms

        ensure_phantoms(Path(cfg.root), cfg.synth)
    ingest = run_ingest(cfg, out)
    manifest = ingest.manifest.copy()
    manifest["split"] = EVALUATION if calibrate_on is None else _calibration_split(manifest, cfg, calibrate_on, out)
    manifest_file, _ = write_ingest_files(out, manifest, ingest.skipped)
    if calibrate_on is not None:
        audit_leakage(manifest, where=manifest_file)  # no patient both calibrates and is evaluated
        counts = manifest.groupby("split")["patient_key"].nunique().to_dict()
        log.info("site calibration subset: %d patients; evaluated: %d patients", counts.get(CALIBRATION, 0),
                 counts.get(EVALUATION, 0))
    return PreparedData(manifest, ingest.skipped, Path(cfg.root), fingerprint(manifest), out / SPLIT_FILE, card,
                        ingest.key_scheme, report_dir=out)
