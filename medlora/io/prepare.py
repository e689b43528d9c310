"""The data stage of a run: (synthesise) → ingest → patient-level split → leakage audit.

Returns a manifest with a ``split`` column and a fingerprint of manifest + split, which tags
MLflow runs so that runs on the same data can be recognised as such.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import DataConfig, PreprocessConfig
from ..errors import ConfigError
from .datacard import DataCard, card_for_run
from .findings import split_findings_label
from .ingest import IngestResult, run_ingest
from .labels import DEFAULT_KEY_COLUMNS
from .split import assign_splits, audit_leakage, check_splits_usable, splits_from_column

log = logging.getLogger(__name__)

# columns that describe a sample without identifying anyone: safe to log
PUBLIC_COLUMNS = ["sample_id", "patient_key", "study_key", "series_key", "modality", "rows", "columns", "frames",
                  "pixel_spacing", "photometric_interpretation", "transfer_syntax_uid", "label", "split",
                  "kind", "view", "view_index", "slices", "findings",
                  "sex", "age_band", "manufacturer", "view_position"]  # not path/source (folder names can identify)


@dataclass
class PreparedData:
    manifest: pd.DataFrame
    skipped: pd.DataFrame
    root: Path
    fingerprint: str
    split_file: Path
    card: DataCard | None = None  # the validated data.card, logged with the run
    key_scheme: str = ""  # hmac-sha256:<key id> of the site secret that made the keys (tag medlora.key_scheme)

    def split(self, name: str) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == name]

    def public_manifest(self) -> pd.DataFrame:
        """The manifest without file paths (folder names can carry identifiers)."""
        return self.manifest[[c for c in PUBLIC_COLUMNS if c in self.manifest.columns]]


def fingerprint(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (sample, patient, study, label, findings, split) rows."""
    cols = [c for c in ("sample_id", "patient_key", "study_key", "label", "findings", "split") if c in manifest.columns]
    blob = manifest[cols].sort_values(cols).to_csv(index=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def default_split_file(cfg: DataConfig) -> Path:
    """``data.split.file``, else ``.medlora/splits/<data.name>.csv`` under the working directory: the
    split is drawn once and reused by every later run from there (``.medlora/`` is git-ignored)."""
    return Path(cfg.split.file) if cfg.split.file else Path(".medlora") / "splits" / f"{cfg.name}.csv"


def prepare_dataset(cfg: DataConfig, preprocess: PreprocessConfig | None = None) -> PreparedData:
    """Validate the data card, synthesise the phantoms if configured and missing, ingest, split by patient, audit.

    The split is drawn (stratified, seeded, persisted) unless ``split.column`` names a labels-CSV column
    holding an official split, which is then used as given. ``preprocess`` (its ``view`` and ``spacing``)
    decides how many samples each volume yields (default: one central slice).
    """
    card = card_for_run(cfg)
    if cfg.split.column and cfg.label_key != "path":
        raise ConfigError(f"data.split.column={cfg.split.column!r} needs data.label_key: path (got {cfg.label_key!r})")
    root = Path(cfg.root)
    if cfg.synth is not None and not (root / "labels.csv").exists():
        from .synth import write_phantoms

        write_phantoms(root, cfg.synth)
    ingest: IngestResult = run_ingest(cfg, preprocess)
    ingest.manifest = split_findings_label(ingest.manifest, cfg)
    split_file = default_split_file(cfg)
    if cfg.split.column:
        labels = Path(cfg.labels) if cfg.labels else root / "labels.csv"
        key_column = cfg.key_column or DEFAULT_KEY_COLUMNS[cfg.label_key]
        manifest = splits_from_column(ingest.manifest, labels, key_column, cfg.split.column, split_file)
    else:
        manifest = assign_splits(ingest.manifest, cfg.split, split_file)
    audit_leakage(manifest)
    check_splits_usable(manifest, len(cfg.classes))
    counts = manifest.groupby("split")["patient_key"].nunique().to_dict()
    log.info("split (patients): %s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return PreparedData(manifest, ingest.skipped, root, fingerprint(manifest), split_file, card, ingest.key_scheme)
