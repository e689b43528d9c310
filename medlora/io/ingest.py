"""Ingest: scan a study folder, join labels, write a de-identified manifest and a skip report.

One manifest row per sample. Raw identifiers (PatientID, UIDs, accession numbers) are read
from the headers only to group and join; they are replaced by salted keys (:mod:`.deid`)
before anything is written. Files that cannot be used are skipped with their reason in the
report, never silently, and never at the cost of the good files beside them (``strict``
turns any skip into a failure).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..config import DataConfig
from ..errors import InputError, MedloraError
from .deid import pseudonym
from .labels import DEFAULT_KEY_COLUMNS, read_labels

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = [
    "sample_id", "path", "patient_key", "study_key", "series_key", "sop_key", "modality", "rows",
    "columns", "frames", "pixel_spacing", "photometric_interpretation", "transfer_syntax_uid", "label",
]
_HEADER_FIELD = {"patient_id": "patient_id", "study_uid": "study_uid", "series_uid": "series_uid", "accession": "accession"}


@dataclass
class IngestResult:
    manifest: pd.DataFrame  # one row per sample, de-identified
    skipped: pd.DataFrame  # columns: path, reason
    root: Path

    def summary(self) -> str:
        m = self.manifest
        parts = [f"{len(m)} samples", f"{m['study_key'].nunique()} studies", f"{m['patient_key'].nunique()} patients"]
        if "label" in m:
            parts.append("labels " + ", ".join(f"{k}: {v}" for k, v in sorted(m["label"].value_counts().items())))
        parts.append(f"{len(self.skipped)} skipped")
        return "; ".join(parts)


def _candidate_files(root: Path) -> list[Path]:
    skip_names = {"labels.csv", "DICOMDIR"}
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in skip_names and p.suffix.lower() not in {".csv", ".md", ".json", ".txt"}
    )


def run_ingest(cfg: DataConfig) -> IngestResult:
    """Scan ``cfg.root`` for DICOM instances, join ``cfg.labels``, return the manifest and skips."""
    from .dicom import read_dicom_header

    root = Path(cfg.root)
    if not root.is_dir():
        raise InputError(f"data.root {root} is not a folder")
    labels_path = Path(cfg.labels) if cfg.labels else root / "labels.csv"
    key_column = cfg.key_column or DEFAULT_KEY_COLUMNS[cfg.label_key]
    labels = read_labels(labels_path, key_column, cfg.label_column, cfg.classes)

    rows, skipped = [], []
    matched: set[str] = set()
    for path in _candidate_files(root):
        rel = path.relative_to(root).as_posix()
        try:
            h = read_dicom_header(path)
        except MedloraError as err:
            skipped.append({"path": rel, "reason": str(err).replace(str(root) + "/", "")})
            continue
        key = rel if cfg.label_key == "path" else str(h.get(_HEADER_FIELD[cfg.label_key]) or "")
        if key not in labels:
            skipped.append({"path": rel, "reason": f"no label for its {cfg.label_key} in {labels_path.name}"})
            continue
        matched.add(key)
        salt = cfg.salt
        rows.append({
            "sample_id": pseudonym(str(h.get("sop_uid") or rel), salt, "smp"),
            "path": rel,
            "patient_key": pseudonym(str(h.get("patient_id") or rel), salt, "pat"),
            "study_key": pseudonym(str(h.get("study_uid") or rel), salt, "stu"),
            "series_key": pseudonym(str(h.get("series_uid") or rel), salt, "ser"),
            "sop_key": pseudonym(str(h.get("sop_uid") or rel), salt, "sop"),
            "modality": h.get("modality"),
            "rows": h.get("rows"),
            "columns": h.get("columns"),
            "frames": h.get("frames") or 1,
            "pixel_spacing": "x".join(f"{float(v):g}" for v in (h.get("pixel_spacing") or [])),
            "photometric_interpretation": h.get("photometric_interpretation"),
            "transfer_syntax_uid": h.get("transfer_syntax_uid"),
            "label": labels[key],
        })
    for key in sorted(set(labels) - matched):
        skipped.append({"path": "", "reason": f"label row with no matching study ({cfg.label_key} #{sorted(labels).index(key)})"})
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    report = pd.DataFrame(skipped, columns=["path", "reason"])
    if manifest.empty:
        raise InputError(f"no usable labelled images under {root} ({len(report)} skipped; first: "
                         f"{report['reason'].iloc[0] if len(report) else 'no files'})")
    if cfg.strict and len(report):
        raise InputError(f"data.strict is set and {len(report)} inputs were skipped, e.g. "
                         f"{report['path'].iloc[0]}: {report['reason'].iloc[0]}")
    result = IngestResult(manifest, report, root)
    log.info("ingest %s: %s", cfg.name, result.summary())
    return result
