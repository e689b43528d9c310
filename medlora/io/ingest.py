"""Ingest: scan a study folder, join labels, write a de-identified manifest and a skip report.

One manifest row per *sample* (one model input). What a row reads is in ``kind`` and ``source``:

* ``dicom2d``: one DICOM instance (``source`` = its relative path; multi-frame objects give their central
  frame). Every instance of a series that is not a volume (see below) is its own sample, as before.
* ``series``: a DICOM series assembled into a volume (``source`` = JSON list of the slices' relative
  paths, sorted along the slice normal; ``path`` = their folder). A series is a volume when its modality
  is in ``data.volume_modalities`` (CT, MR), it holds at least ``data.volume_min_slices`` single-frame
  slices and its geometry is consistent (:func:`~medlora.io.series.series_geometry`); a candidate whose
  geometry is not (gap, uneven spacing, mixed orientation/size) is skipped as a whole, with the reason.
  One multi-frame CT/MR object with at least ``volume_min_slices`` frames is a ``series`` of one file,
  its frames placed by the per-frame functional groups.
* ``nifti``: a ``.nii``/``.nii.gz`` volume (``source`` = its relative path). NIfTI files carry no DICOM
  identifiers: their labels join by relative path (``data.label_key: path``; ``data.key_column`` names
  the CSV column) and each file is its own patient and study.

A volume yields one row per view (``preprocess.view``: ``view`` = its kind, ``view_index`` = 0..n-1,
``slices`` = slices along ``view.axis`` after orientation/spacing), all sharing the volume's
``study_key`` so that evaluation aggregates view scores into a study score.

Every sample is decoded once here: images/volumes with NaN/inf values or a single value are skipped, and
``pixel_hash`` (:func:`~medlora.io.pixels.pixel_hash` of the decoded pixels; of the whole volume for
volume rows) lets the leakage audit find one image planted under two patients. Raw identifiers
(PatientID, UIDs, accession numbers) are read only to group and join; they are replaced by HMAC keys under the site secret
(:mod:`.deid`) before anything is written, and never appear in a skip reason. Files that cannot be used
are skipped with their reason, never silently and never at the cost of the good files beside them
(``strict`` turns any skip into a failure).
"""

from __future__ import annotations

import json
import logging
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd

from ..config import DataConfig, PreprocessConfig
from ..errors import InputError, MedloraError
from .deid import SiteKey, load_site_key
from .findings import read_task_labels
from .labels import DEFAULT_KEY_COLUMNS
from .nifti import is_nifti
from .pixels import pixel_hash, unusable_reason
from .subgroups import HEADER_FIELDS

log = logging.getLogger(__name__)

SUBGROUP_COLUMNS = [f for f in HEADER_FIELDS if f != "modality"]  # header fields for evaluate.subgroups
MANIFEST_COLUMNS = [
    "sample_id", "path", "patient_key", "study_key", "series_key", "sop_key", "modality", "rows",
    "columns", "frames", "pixel_spacing", "photometric_interpretation", "transfer_syntax_uid", "label",
    "kind", "source", "view", "view_index", "slices", "pixel_hash", *SUBGROUP_COLUMNS,
]
REPORT_COLUMNS = ["path", "reason"]
_HEADER_FIELD = {"patient_id": "patient_id", "study_uid": "study_uid", "series_uid": "series_uid", "accession": "accession"}


@dataclass
class IngestResult:
    manifest: pd.DataFrame  # one row per sample, de-identified
    skipped: pd.DataFrame  # columns: path, reason
    root: Path
    key_scheme: str = ""  # how the keys were made (hmac-sha256:<key id>); never the secret

    def summary(self) -> str:
        m = self.manifest
        parts = [f"{len(m)} samples", f"{m['study_key'].nunique()} studies", f"{m['patient_key'].nunique()} patients"]
        if "kind" in m and m["kind"].nunique() > 1:
            parts.append("kinds " + ", ".join(f"{k}: {v}" for k, v in sorted(m["kind"].value_counts().items())))
        if "label" in m:
            parts.append("labels " + ", ".join(f"{k}: {v}" for k, v in sorted(m["label"].value_counts().items())))
        parts.append(f"{len(self.skipped)} skipped")
        return "; ".join(parts)


@dataclass
class _Instance:
    rel: str
    path: Path
    header: dict[str, Any]


@dataclass
class _Collector:
    """Accumulates manifest rows, skip reasons and the label keys that found an image."""

    cfg: DataConfig
    pre: PreprocessConfig
    root: Path
    labels: dict[str, int]
    labels_name: str
    site: SiteKey
    rows: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    matched: set[str] = field(default_factory=set)

    def skip(self, path: str, reason: str | Exception) -> None:
        text = str(reason).replace(str(self.root) + "/", "")
        self.skipped.append({"path": path, "reason": text})
        log.debug("skipped %s: %s", path, text)

    def key(self, name: str, kind: str) -> str:
        return self.site.key(name, kind)

    def label_for(self, paths: list[str], header: dict[str, Any] | None) -> tuple[int | None, str]:
        """(label, reason when None) for a sample whose relative path(s) are ``paths``."""
        if self.cfg.label_key == "path":  # a file's own path, else its nearest labelled folder
            keys = [next((k for k in (p, *_parents(p)) if k in self.labels), None) for p in paths]
            found = {k: self.labels[k] for k in keys if k is not None}
            if len(set(found.values())) > 1:
                return None, f"conflicting labels for its files in {self.labels_name}"
            self.matched.update(found)
            return (next(iter(found.values())), "") if found else (None, f"no label for its path in {self.labels_name}")
        if header is None:
            return None, f"NIfTI files carry no {self.cfg.label_key}; join their labels with data.label_key: path"
        value = str(header.get(_HEADER_FIELD[self.cfg.label_key]) or "")
        if value not in self.labels:
            return None, f"no label for its {self.cfg.label_key} in {self.labels_name}"
        self.matched.add(value)
        return self.labels[value], ""

    def header_keys(self, h: dict[str, Any], fallback: str) -> dict[str, str]:
        return {
            "patient_key": self.key(str(h.get("patient_id") or fallback), "pat"),
            "study_key": self.key(str(h.get("study_uid") or fallback), "stu"),
            "series_key": self.key(str(h.get("series_uid") or fallback), "ser"),
        }

    def add_image(self, inst: _Instance) -> None:
        """One DICOM instance as one ``dicom2d`` sample."""
        from .dicom import read_dicom

        label, why = self.label_for([inst.rel], inst.header)
        if label is None:
            return self.skip(inst.rel, why)
        try:
            pixels = read_dicom(inst.path).pixels
        except MedloraError as err:
            return self.skip(inst.rel, err)
        bad = unusable_reason(pixels, "image")
        if bad:
            return self.skip(inst.rel, bad)
        h = inst.header
        sop = str(h.get("sop_uid") or inst.rel)
        self.rows.append({
            "sample_id": self.key(sop, "smp"), "path": inst.rel, **self.header_keys(h, inst.rel),
            "sop_key": self.key(sop, "sop"), **_technical(h), "frames": h.get("frames") or 1, "label": label,
            "kind": "dicom2d", "source": inst.rel, "view": "image", "view_index": 0, "slices": h.get("frames") or 1,
            "pixel_hash": pixel_hash(pixels),
        })

    def add_series(self, group: list[_Instance]) -> None:
        """A volume-candidate series as one ``series`` row per view, or one skip for the whole series."""
        from ..transforms.volume import oriented_shape
        from .series import assemble_series

        rels = [i.rel for i in group]
        if len(group) == 1:  # one multi-frame object
            folder, where = rels[0], f"{rels[0]} ({group[0].header.get('frames')} frames)"
        else:
            folder = _common_folder(rels)
            where = f"{folder or '.'} ({len(group)} slices)"
        label, why = self.label_for(rels, group[0].header)
        if label is None:
            return self.skip(where, f"series: {why}")
        try:
            vol = assemble_series([i.path for i in group], self.cfg.slice_spacing_tolerance, name=folder or ".")
        except MedloraError as err:
            return self.skip(where, f"series skipped: {err}")
        bad = unusable_reason(vol.pixels, "volume")
        if bad:
            return self.skip(where, bad)
        order = rels if len(group) == 1 else [group[i].rel for i in vol.order]
        h = group[0].header
        series_uid = str(h.get("series_uid"))
        shape = oriented_shape(vol.pixels.shape[1:], vol.affine_ras, self.pre.spacing)
        meta = {**_technical(h), "frames": h.get("frames") or 1}
        self._add_views(
            base={"path": folder, **self.header_keys(h, folder), "sop_key": self.key("|".join(sorted(
                str(i.header.get("sop_uid")) for i in group)), "sop"), **meta, "label": label, "kind": "series",
                "source": json.dumps(order), "pixel_hash": pixel_hash(vol.pixels)},
            sample_name=series_uid, n=shape[self.pre.view.axis],
        )

    def add_nifti(self, path: Path) -> None:
        """A NIfTI volume as one ``nifti`` row per view."""
        from ..transforms.volume import oriented_shape
        from .nifti import read_nifti

        rel = path.relative_to(self.root).as_posix()
        label, why = self.label_for([rel], None)
        if label is None:
            return self.skip(rel, why)
        try:
            img = read_nifti(path)
        except MedloraError as err:
            return self.skip(rel, err)
        bad = unusable_reason(img.data, "volume")
        if bad:
            return self.skip(rel, bad)
        zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
        shape = oriented_shape(img.data.shape, img.affine, self.pre.spacing)
        self._add_views(
            base={"path": rel, "patient_key": self.key(rel, "pat"), "study_key": self.key(rel, "stu"),
                  "series_key": self.key(rel, "ser"), "sop_key": self.key(rel, "sop"), "modality": None,
                  "rows": img.data.shape[0], "columns": img.data.shape[1], "frames": 1,
                  "pixel_spacing": "x".join(f"{v:g}" for v in zooms), "photometric_interpretation": None,
                  "transfer_syntax_uid": None, "label": label, "kind": "nifti", "source": rel,
                  "pixel_hash": pixel_hash(img.data)},
            sample_name=rel, n=shape[self.pre.view.axis],
        )

    def _add_views(self, base: dict[str, Any], sample_name: str, n: int) -> None:
        from ..transforms.views import view_count

        view = self.pre.view.kind
        for i in range(view_count(n, self.pre.view)):
            self.rows.append({**base, "sample_id": self.key(f"{sample_name}#{view}#{i}", "smp"), "view": view,
                              "view_index": i, "slices": n})


def _technical(h: dict[str, Any]) -> dict[str, Any]:
    return {
        "modality": h.get("modality"), "rows": h.get("rows"), "columns": h.get("columns"),
        "pixel_spacing": "x".join(f"{float(v):g}" for v in (h.get("pixel_spacing") or [])),
        "photometric_interpretation": h.get("photometric_interpretation"),
        "transfer_syntax_uid": h.get("transfer_syntax_uid"),
        **{k: h.get(k) for k in SUBGROUP_COLUMNS},
    }


def _parents(rel: str) -> list[str]:
    return [p.as_posix() for p in PurePosixPath(rel).parents if p.as_posix() != "."]


def _common_folder(rels: list[str]) -> str:
    parents = {PurePosixPath(r).parent.as_posix() for r in rels}
    folder = parents.pop() if len(parents) == 1 else PurePosixPath(*_common_parts(rels)).as_posix()
    return "" if folder == "." else folder


def _common_parts(rels: list[str]) -> tuple[str, ...]:
    parts = [PurePosixPath(r).parent.parts for r in rels]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return tuple(common) or (".",)


def _candidate_files(root: Path) -> list[Path]:
    skip_names = {"labels.csv", "DICOMDIR"}
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in skip_names and p.suffix.lower() not in {".csv", ".md", ".json", ".txt"}
    )


def _is_volume(group: list[_Instance], cfg: DataConfig) -> bool:
    h = group[0].header
    return (
        h.get("series_uid") is not None
        and len(group) >= cfg.volume_min_slices
        and str(h.get("modality") or "").upper() in {m.upper() for m in cfg.volume_modalities}
        and all((i.header.get("frames") or 1) == 1 for i in group)
    )


def _is_multiframe_volume(inst: _Instance, cfg: DataConfig) -> bool:
    h = inst.header
    return ((h.get("frames") or 1) >= cfg.volume_min_slices
            and str(h.get("modality") or "").upper() in {m.upper() for m in cfg.volume_modalities})


def _scan(col: _Collector) -> tuple[list[_Instance], list[Path]]:
    """Headers of every DICOM file (raw identifiers stay in memory), NIfTI paths; the rest skipped."""
    from pydicom.uid import UID
    from tqdm.auto import tqdm

    from .dicom import read_dicom_header

    instances, niftis = [], []
    for path in tqdm(_candidate_files(col.root), desc="ingest", unit="file", disable=not sys.stderr.isatty()):
        rel = path.relative_to(col.root).as_posix()
        if is_nifti(path):
            niftis.append(path)
            continue
        try:
            h = read_dicom_header(path)
        except MedloraError as err:
            col.skip(rel, err)
            continue
        if not h.get("rows") or not h.get("columns"):
            sop = h.get("sop_class_uid")
            name = UID(sop).name if sop else "unknown SOP class"
            col.skip(rel, f"not an image (SOPClassUID={sop} {name}): no Rows/Columns and no pixel data")
            continue
        instances.append(_Instance(rel, path, h))
    return instances, niftis


def run_ingest(cfg: DataConfig, preprocess: PreprocessConfig | None = None) -> IngestResult:
    """Scan ``cfg.root`` for DICOM instances, series and NIfTI volumes, join ``cfg.labels``.

    ``preprocess`` (its ``view`` and ``spacing``) decides how many samples a volume yields; default
    :class:`~medlora.config.PreprocessConfig()`. Returns the manifest (columns :data:`MANIFEST_COLUMNS`)
    and the skip report (``path``, ``reason``).

    Raises:
        InputError: ``root`` is not a folder, no usable labelled sample was found, or ``cfg.strict``
            is set and something was skipped.
    """
    root = Path(cfg.root)
    if not root.is_dir():
        raise InputError(f"data.root {root} is not a folder")
    labels_path = Path(cfg.labels) if cfg.labels else root / "labels.csv"
    key_column = cfg.key_column or DEFAULT_KEY_COLUMNS[cfg.label_key]
    labels = read_task_labels(labels_path, key_column, cfg)  # class indices, or findings codes (multilabel)
    site = load_site_key(cfg.secret_file)
    col = _Collector(cfg, preprocess or PreprocessConfig(), root, labels, labels_path.name, site)

    instances, niftis = _scan(col)
    series: dict[str, list[_Instance]] = defaultdict(list)
    for inst in instances:
        series[str(inst.header.get("series_uid") or f"\x00{inst.rel}")].append(inst)
    for group in series.values():
        if _is_volume(group, cfg):
            col.add_series(group)
            continue
        for inst in group:
            if _is_multiframe_volume(inst, cfg):
                col.add_series([inst])
            else:
                col.add_image(inst)
    for path in niftis:
        col.add_nifti(path)
    ordered = sorted(labels)
    for key in sorted(set(labels) - col.matched):
        col.skipped.append({"path": "", "reason": f"label row with no matching study ({cfg.label_key} #{ordered.index(key)})"})

    manifest = pd.DataFrame(col.rows, columns=MANIFEST_COLUMNS)
    report = pd.DataFrame(col.skipped, columns=REPORT_COLUMNS)
    if manifest.empty:
        raise InputError(f"no usable labelled images under {root} ({len(report)} skipped; first: "
                         f"{report['reason'].iloc[0] if len(report) else 'no files'})")
    if cfg.strict and len(report):
        raise InputError(f"data.strict is set and {len(report)} inputs were skipped, e.g. "
                         f"{report['path'].iloc[0]}: {report['reason'].iloc[0]}")
    result = IngestResult(manifest, report, root, site.scheme)
    log.info("ingest %s: %s", cfg.name, result.summary())
    return result
