"""The data stage of a run: (synthesise) → ingest → patient-level split → leakage audit.

Returns a manifest with a ``split`` column and a fingerprint of manifest + split, which tags
MLflow runs so that runs on the same data can be recognised as such. The manifest holds one row per
file-level sample (views of volumes are expanded later, :mod:`medlora.transforms.samples`), so the
fingerprint does not depend on ``preprocess.view``.

``manifest.csv`` and ``ingest_report.csv`` are written to the report folder (the run's output folder,
else :func:`default_report_dir`) after the ingest and again with the split, *before* the leakage audit
and the split checks, so a failing check leaves the files that explain it.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import DataConfig
from ..errors import ConfigError
from .datacard import DataCard, card_for_run
from .ingest import IngestResult, run_ingest
from .labels import DEFAULT_KEY_COLUMNS
from .report import public_report, write_ingest_files
from .split import assign_splits, audit_leakage, check_splits_usable, splits_from_column

log = logging.getLogger(__name__)

# columns that describe a sample without identifying anyone: safe to log
PUBLIC_COLUMNS = ["sample_id", "patient_key", "study_key", "series_key", "modality", "rows", "columns", "frames",
                  "pixel_spacing", "photometric_interpretation", "transfer_syntax_uid", "label", "split",
                  "kind", "view", "view_index", "slices", "findings", "sex", "age_band", "manufacturer",
                  "view_position"]  # not path/source (folder names can identify), nor geometry


@dataclass
class PreparedData:
    manifest: pd.DataFrame
    skipped: pd.DataFrame
    root: Path
    fingerprint: str
    split_file: Path
    card: DataCard | None = None  # the validated data.card, logged with the run
    key_scheme: str = ""  # hmac-sha256:<key id> of the site secret that made the keys (tag medlora.key_scheme)
    files: pd.DataFrame | None = None  # the file-level manifest when ``manifest`` holds expanded views
    report_dir: Path | None = None  # where manifest.csv and ingest_report.csv were written

    def split(self, name: str) -> pd.DataFrame:
        return self.manifest[self.manifest["split"] == name]

    @property
    def file_manifest(self) -> pd.DataFrame:
        """One row per file-level sample (the fingerprinted manifest), whatever the views."""
        return self.files if self.files is not None else self.manifest

    def public_manifest(self) -> pd.DataFrame:
        """The file-level manifest without file paths (folder names can carry identifiers)."""
        m = self.file_manifest
        return m[[c for c in PUBLIC_COLUMNS if c in m.columns]]

    def public_report(self) -> pd.DataFrame:
        """The ingest report without paths (:func:`medlora.io.report.public_report`)."""
        return public_report(self.skipped, self.file_manifest)


def fingerprint(manifest: pd.DataFrame) -> str:
    """sha256 over the sorted (sample, patient, study, label, findings, split, pixel hash) rows.

    The pixel hash makes new pixels under the same identifiers (a re-export, another reconstruction)
    another dataset: sweeps and the pretraining cache then train again instead of reusing results."""
    cols = [c for c in ("sample_id", "patient_key", "study_key", "label", "findings", "split", "pixel_hash")
            if c in manifest.columns]
    blob = manifest[cols].sort_values(cols).to_csv(index=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def default_split_file(cfg: DataConfig) -> Path:
    """``data.split.file``, else ``.medlora/splits/<data.name>.csv`` under the working directory: the
    split is drawn once and reused by every later run from there (``.medlora/`` is git-ignored)."""
    return Path(cfg.split.file) if cfg.split.file else Path(".medlora") / "splits" / f"{cfg.name}.csv"


def default_report_dir(cfg: DataConfig) -> Path:
    """Where a data stage without an output folder writes ``manifest.csv`` and ``ingest_report.csv``:
    ``ingest-<data.name>/`` beside ``data.split.file``, else ``.medlora/ingest/<data.name>/`` (git-ignored)."""
    if cfg.split.file:
        return Path(cfg.split.file).parent / f"ingest-{cfg.name}"
    return Path(".medlora") / "ingest" / cfg.name


def prepare_dataset(cfg: DataConfig, out: Path | None = None) -> PreparedData:
    """Validate the data card, synthesise the phantoms if configured (and missing or written with other settings), ingest, split by patient, audit.

    The split is drawn (stratified, seeded, persisted) unless ``split.column`` names a labels-CSV column
    holding an official split, which is then used as given. ``manifest.csv`` (with its split) and
    ``ingest_report.csv`` are written to ``out`` (default :func:`default_report_dir`) before the audit.
    """
    card = card_for_run(cfg)
    if cfg.split.column and cfg.label_key != "path":
        raise ConfigError(f"data.split.column={cfg.split.column!r} needs data.label_key: path (got {cfg.label_key!r})")
    root = Path(cfg.root)
    if cfg.synth is not None:
        from .synth import ensure_phantoms

        ensure_phantoms(root, cfg.synth)
    report_dir = Path(out) if out is not None else default_report_dir(cfg)
    ingest: IngestResult = run_ingest(cfg, report_dir)
    split_file = default_split_file(cfg)
    if cfg.split.column:
        labels = Path(cfg.labels) if cfg.labels else root / "labels.csv"
        key_column = cfg.key_column or DEFAULT_KEY_COLUMNS[cfg.label_key]
        manifest = splits_from_column(ingest.manifest, labels, key_column, cfg.split.column, split_file, root)
    else:
        manifest = assign_splits(ingest.manifest, cfg.split, split_file)
    manifest_file, _ = write_ingest_files(report_dir, manifest, ingest.skipped)
    audit_leakage(manifest, where=manifest_file)
    check_splits_usable(manifest, len(cfg.classes), manifest_file)
    counts = manifest.groupby("split")["patient_key"].nunique().to_dict()
    log.info("split (patients): %s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    return PreparedData(manifest, ingest.skipped, root, fingerprint(manifest), split_file, card, ingest.key_scheme,
                        report_dir=report_dir)
