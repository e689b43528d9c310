"""Ingest: scan a study folder, join labels, write a de-identified manifest and a report of the rest.

One manifest row per *file-level sample*; views of volumes are expanded afterwards
(:func:`medlora.transforms.samples.expand_views`), so the manifest and its fingerprint do not depend on
``preprocess.view``. What a row reads is in ``kind`` and ``source``:

* ``dicom2d``: one DICOM instance (``source`` = its relative path; multi-frame objects give their central
  frame).
* ``series``: a DICOM series assembled into a volume (``source`` = JSON list of the slices' relative
  paths, sorted along the slice normal; ``path`` = their folder). A series is a volume candidate when its
  modality is in ``data.volume_modalities`` and it holds at least ``data.volume_min_slices``
  single-frame slices. Each slice is decoded on its own: a broken one is reported and left out, and
  the rest is assembled when its geometry is still consistent
  (:func:`~medlora.io.series.series_geometry`). When it is not, the series is reported with the reason
  and, with ``data.volume_fallback`` (default), its slices become ``dicom2d`` samples. One multi-frame
  CT/MR object with enough frames is a ``series`` of one file (frames placed by the per-frame functional
  groups); without usable per-frame positions it falls back to ``frames`` (one 2D sample per frame).
* ``nifti``: a ``.nii``/``.nii.gz`` volume, its own study (labels join by path) and, under
  ``data.identity: tags``, its own patient (else the folder level or the labels CSV names it).

``shape`` and ``affine`` (RAS) of a volume let the views be counted later without reading it again;
``scan_key`` (HMAC of folder + geometry) and ``position`` (mm along the slice normal) let the leakage
audit see adjacent slices of one scan in two splits. Who a file belongs to is decided by
:mod:`.identity` (``data.identity``), never by a blank tag. ``label`` is a class index, or with
``data.task: multilabel`` "any finding present" with the findings code in ``findings`` (:mod:`.findings`);
``sex``, ``age_band``, ``manufacturer`` and ``view_position`` are header subgroup fields (:mod:`.subgroups`).

Every file is decoded once here, before its label is looked up (so a reason never depends on the
labels): images/volumes with NaN/inf values or a single value are skipped, and ``pixel_hash`` lets the
leakage audit find one image planted under two patients. Raw identifiers are read only to group and
join; they become HMAC keys under the site secret (:mod:`.deid`) before anything is written, and never
appear in a reason. Every scanned file ends up exactly once in the manifest or in the report
(:mod:`.report`), which are written before the empty-result and ``data.strict`` checks can fail.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..config import DataConfig
from ..errors import InputError, MedloraError
from .deid import SiteKey, load_site_key
from .dicomweb.cache import TRANSFER_FAILED, manifest_origins, transfer_failures
from .findings import read_task_table, split_findings_label
from .identity import (
    Group,
    IdentityMode,
    geometry_signature,
    group_instances,
    parents,
    parse_identity,
    untagged_patient,
)
from .labels import DEFAULT_KEY_COLUMNS, LabelTable, closest_names
from .pixels import pixel_hash, unusable_reason
from .report import LABEL, NOTE, REPORT_COLUMNS, SKIPPED, first_paths, log_summary, write_ingest_files
from .scan import Instance, candidate_files, captured, error_category, scan, strip_path, with_notes
from .subgroups import HEADER_FIELDS

log = logging.getLogger(__name__)

SUBGROUP_COLUMNS = [f for f in HEADER_FIELDS if f != "modality"]  # header fields for evaluate.subgroups
MANIFEST_COLUMNS = [
    "sample_id", "path", "patient_key", "study_key", "series_key", "sop_key", "modality", "rows",
    "columns", "frames", "pixel_spacing", "photometric_interpretation", "transfer_syntax_uid", "label",
    "kind", "source", "shape", "affine", "scan_key", "position", "pixel_hash", *SUBGROUP_COLUMNS,
]
UNKNOWN_MODALITY = "unknown"  # a NIfTI sample whose modality neither data.modality nor the data card names
UNLABELLED = -1  # the label of every sample of an ingest without labels (pretraining)
_HEADER_FIELD = {"patient_id": "patient_id", "study_uid": "study_uid", "series_uid": "series_uid", "accession": "accession"}
UNUSABLE, NO_LABEL, GEOMETRY, FALLBACK, DERIVED = "unusable pixels", "no label", "inconsistent geometry", \
    "volume fallback", "derived identity"
DUPLICATE = "duplicate instance"


@dataclass
class IngestResult:
    manifest: pd.DataFrame  # one row per file-level sample, de-identified
    skipped: pd.DataFrame  # the ingest report (REPORT_COLUMNS): skipped files, notes, unmatched label rows
    root: Path
    key_scheme: str = ""  # how the keys were made (hmac-sha256:<key id>); never the secret
    report_dir: Path | None = None  # where manifest.csv and ingest_report.csv were written

    def summary(self) -> str:
        m, r = self.manifest, self.skipped
        parts = [f"{len(m)} samples", f"{m['study_key'].nunique()} studies", f"{m['patient_key'].nunique()} patients"]
        if "kind" in m and m["kind"].nunique() > 1:
            parts.append("kinds " + ", ".join(f"{k}: {v}" for k, v in sorted(m["kind"].value_counts().items())))
        if "label" in m:
            parts.append("labels " + ", ".join(f"{k}: {v}" for k, v in sorted(m["label"].value_counts().items())))
        parts.append(f"{int((r['status'] == SKIPPED).sum()) if len(r) else 0} files skipped")
        return "; ".join(parts)


@dataclass
class _Collector:
    """Accumulates manifest rows, report rows and the label keys that found an image."""

    cfg: DataConfig
    root: Path
    labels: LabelTable
    site: SiteKey
    mode: IdentityMode
    labelled: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)
    report: list[dict[str, str]] = field(default_factory=list)
    matched: set[str] = field(default_factory=set)
    sops: dict[str, str] = field(default_factory=dict)  # SOPInstanceUID (raw, in memory only) → the file kept

    def key(self, name: str, kind: str) -> str:
        return self.site.key(name, kind)

    @property
    def nifti_modality(self) -> str:
        """NIfTI files carry no modality: ``data.modality``, else the data card's, else ``unknown``."""
        if self.cfg.modality:
            return self.cfg.modality
        if self.cfg.card is not None and Path(self.cfg.card).is_file():
            from .datacard import load_card

            return load_card(self.cfg.card).modality
        return UNKNOWN_MODALITY

    def note(self, path: str, status: str, category: str, reason: str | Exception) -> None:
        text = str(reason).replace(str(self.root) + "/", "")
        self.report.append({"path": path, "file_key": self.key(path, "fil"), "status": status, "category": category,
                            "reason": text})
        log.debug("%s %s: %s", status, path, text)

    def skip(self, path: str, category: str, reason: str | Exception) -> None:
        """Report a file that is not used; its reason starts with its category (what a reader scans for)."""
        text = str(reason)
        self.note(path, SKIPPED, category, text if text.startswith(category) else f"{category}: {text}")

    def label_for(self, paths: list[str], header: dict[str, Any] | None) -> tuple[int | str | None, str]:
        """(label, reason when None) for a sample whose relative path(s) are ``paths``."""
        if not self.labelled:
            return UNLABELLED, ""
        labels, name = self.labels.labels, self.labels.path.name
        if self.cfg.label_key == "path":  # a file's own path, else its nearest labelled folder
            keys = [next((k for k in (p, *parents(p), "") if k in labels), None) for p in paths]
            found = {k: labels[k] for k in keys if k is not None}
            if len(set(found.values())) > 1:
                return None, f"conflicting labels for its files in {', '.join(self.labels.where(k) for k in sorted(found))}"
            self.matched.update(found)
            return (next(iter(found.values())), "") if found else (None, f"no label for its path in {name}")
        if header is None:
            return None, f"NIfTI files carry no {self.cfg.label_key}; join their labels with data.label_key: path"
        value = str(header.get(_HEADER_FIELD[self.cfg.label_key]) or "")
        if value not in labels:
            return None, f"no label for its {self.cfg.label_key} in {name}"
        self.matched.add(value)
        return labels[value], ""

    def group_keys(self, g: Group) -> dict[str, str]:
        return {"patient_key": self.key(g.patient, "pat"), "study_key": self.key(g.study, "stu"),
                "series_key": self.key(g.series, "ser")}

    def decode(self, inst: Instance) -> Any | None:
        """The decoded image of ``inst``, or None after reporting why not (decoder messages included)."""
        from .dicom import read_dicom

        with captured() as notes:
            try:
                image = read_dicom(inst.path)
            except MedloraError as err:
                self.skip(inst.rel, error_category(err), with_notes(strip_path(str(err), inst.path, self.root), notes))
                return None
        if notes:
            log.debug("%s decoded with decoder messages: %s", inst.rel, "; ".join(notes))
        bad = unusable_reason(image.pixels, "image")
        if bad:
            self.skip(inst.rel, UNUSABLE, bad)
            return None
        sop = str(inst.header.get("sop_uid") or "").strip()
        if sop and sop in self.sops:  # the first readable copy is kept, whatever the order of the files
            self.skip(inst.rel, DUPLICATE, f"duplicate instance: same SOPInstanceUID as {self.sops[sop]}, which is kept")
            return None
        if sop:
            self.sops[sop] = inst.rel
        return image

    def add_image(self, inst: Instance, g: Group, image: Any = None, kind: str = "dicom2d") -> None:
        """One DICOM instance as one ``dicom2d`` sample (``frames``: one sample per frame, expanded later)."""
        image = image if image is not None else self.decode(inst)
        if image is None:
            return
        label, why = self.label_for([inst.rel], inst.header)
        if label is None:
            return self.skip(inst.rel, NO_LABEL, why)
        h = inst.header
        sop = str(h.get("sop_uid") or inst.rel)
        frames = h.get("frames") or 1
        self.rows.append({
            "sample_id": self.key(sop, "smp"), "path": inst.rel, **self.group_keys(g), "sop_key": self.key(sop, "sop"),
            **_technical(h), "frames": frames, "label": label, "kind": kind, "source": inst.rel,
            "shape": f"{h.get('rows')}x{h.get('columns')}x{frames}", **self._scan_fields(inst),
            "pixel_hash": pixel_hash(image.pixels),
        })

    def _scan_fields(self, inst: Instance) -> dict[str, Any]:
        h = inst.header
        folder = PurePosixPath(inst.rel).parent.as_posix()
        iop, ipp = h.get("image_orientation_patient"), h.get("image_position_patient")
        position = None
        if iop and ipp and len(iop) == 6 and len(ipp) == 3 and (h.get("frames") or 1) == 1:
            position = round(float(np.dot(np.cross(iop[:3], iop[3:]), ipp)), 4)
        return {"scan_key": self.key(f"{folder}\x1f{geometry_signature(h)}", "scn"), "position": position}

    def add_series(self, g: Group, members: list[Instance]) -> None:
        """A volume candidate: its decodable slices as one ``series`` row, else fallback or skip."""
        from .series import stack_slices

        decoded = [(i, im) for i in members for im in [self.decode(i)] if im is not None]
        multiframe = len(members) == 1
        where = f"{g.folder or '.'} ({len(members)} slices)" if not multiframe else \
            f"{members[0].rel} ({members[0].header.get('frames')} frames)"
        if not decoded:
            return
        if len(decoded) < len(members) and not multiframe:
            where = f"{g.folder or '.'} ({len(decoded)} of {len(members)} slices readable)"
        try:
            vol = stack_slices([i.path for i, _ in decoded], [im for _, im in decoded],
                               self.cfg.slice_spacing_tolerance, name=where)
        except InputError as err:
            return self._fallback(g, decoded, where, str(err).removeprefix(f"{where}: "))
        lost = len(members) - len(decoded)
        bad = unusable_reason(vol.pixels, "volume")
        rels = [i.rel for i, _ in decoded]
        label, why = (None, "") if bad else self.label_for(rels, decoded[0][0].header)
        if label is None:
            for r in rels:
                self.skip(r, UNUSABLE if bad else NO_LABEL, f"series {where}: {bad or why}")
            return
        if lost:
            self.note(g.folder, NOTE, "series without its broken slices",
                      f"series {where}: assembled from {len(decoded)} slices; {lost} slice(s) left out (broken or "
                      "duplicate: see their rows)")
        order = [rels[k] for k in vol.order] if not multiframe else rels
        h = decoded[0][0].header
        folder = g.folder if not multiframe else rels[0]
        self.rows.append({
            "sample_id": self.key(g.series, "smp"), "path": folder, **self.group_keys(g),
            "sop_key": self.key("|".join(sorted(str(i.header.get("sop_uid")) for i, _ in decoded)), "sop"),
            **_technical(h), "frames": h.get("frames") or 1, "label": label, "kind": "series",
            "source": json.dumps(order), "shape": "x".join(str(v) for v in vol.pixels.shape[1:]),
            "affine": json.dumps(np.round(vol.affine_ras, 6).tolist()), "scan_key": None, "position": None,
            "pixel_hash": pixel_hash(vol.pixels),
        })

    def _fallback(self, g: Group, decoded: list[tuple[Instance, Any]], where: str, why: str) -> None:
        """A volume candidate whose geometry is inconsistent: 2D samples (``data.volume_fallback``) or skips."""
        if not self.cfg.volume_fallback:
            for inst, _ in decoded:
                self.skip(inst.rel, GEOMETRY, f"series {where} skipped: {why} (data.volume_fallback: false)")
            return
        multiframe = len(decoded) == 1 and (decoded[0][0].header.get("frames") or 1) > 1
        path = decoded[0][0].rel if multiframe else g.folder
        self.note(path, NOTE, FALLBACK, f"series {where} is not a volume ({why}); its "
                  f"{'frames are' if multiframe else f'{len(decoded)} slices are'} used as 2D samples")
        for inst, image in decoded:
            self.add_image(inst, g, image, kind="frames" if multiframe else "dicom2d")

    def add_nifti(self, path: Path) -> None:
        """A NIfTI volume as one ``nifti`` row."""
        from .nifti import read_nifti

        rel = path.relative_to(self.root).as_posix()
        try:
            img = read_nifti(path)
        except MedloraError as err:
            return self.skip(rel, "unreadable NIfTI", strip_path(str(err), path, self.root))
        bad = unusable_reason(img.data, "volume")
        if bad:
            return self.skip(rel, UNUSABLE, bad)
        patient, why = untagged_patient(rel, self.mode, self.labels.patients)
        if patient is None:
            return self.skip(rel, "no identity", why)
        label, why = self.label_for([rel], None)
        if label is None:
            return self.skip(rel, NO_LABEL, why)
        zooms = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))
        self.rows.append({
            "sample_id": self.key(rel, "smp"), "path": rel, "patient_key": self.key(patient, "pat"),
            "study_key": self.key(rel, "stu"), "series_key": self.key(rel, "ser"), "sop_key": self.key(rel, "sop"),
            "modality": self.nifti_modality, "rows": img.data.shape[0], "columns": img.data.shape[1], "frames": 1,
            "pixel_spacing": "x".join(f"{v:g}" for v in zooms), "photometric_interpretation": None,
            "transfer_syntax_uid": None, "label": label, "kind": "nifti", "source": rel,
            "shape": "x".join(str(v) for v in img.data.shape), "affine": json.dumps(np.round(img.affine, 6).tolist()),
            "scan_key": None, "position": None, "pixel_hash": pixel_hash(img.data),
        })

    def report_labels(self, scanned: list[str], instances: list[Instance]) -> None:
        """One report row per label key that names no scanned file (or study), with its CSV line and the
        closest file names. A key whose files were all skipped is not repeated: their rows say why."""
        if self.cfg.label_key == "path":
            present = {p for rel in scanned for p in (rel, *parents(rel))} | ({""} if scanned else set())
        else:
            present = {str(i.header.get(_HEADER_FIELD[self.cfg.label_key]) or "") for i in instances}
        unmatched = sorted(set(self.labels.labels) - self.matched - present, key=lambda k: self.labels.lines.get(k, 0))
        for n, key in enumerate(unmatched):
            where = self.labels.where(key)
            if self.cfg.label_key != "path":  # the key is an identifier: never written
                self.note("", LABEL, "unmatched label", f"{where}: label row with no matching study (by its "
                                                         f"{self.cfg.label_key})")
                continue
            hint = ""
            if n < 5:  # difflib over every path is slow; the first few tell the pattern
                close = closest_names(key, scanned)
                hint = f"; closest scanned files: {', '.join(close)}" if close else ""
            written = self.labels.written.get(key, key)
            self.note(written, LABEL, "unmatched label", f"{where}: label row with no matching file or folder {written!r}{hint}")


def _technical(h: dict[str, Any]) -> dict[str, Any]:
    return {
        "modality": h.get("modality"), "rows": h.get("rows"), "columns": h.get("columns"),
        "pixel_spacing": "x".join(f"{float(v):g}" for v in (h.get("pixel_spacing") or [])),
        "photometric_interpretation": h.get("photometric_interpretation"),
        "transfer_syntax_uid": h.get("transfer_syntax_uid"),
        **{k: h.get(k) for k in SUBGROUP_COLUMNS},
    }


def _is_volume(members: list[Instance], cfg: DataConfig) -> bool:
    h = members[0].header
    return (len(members) >= cfg.volume_min_slices
            and str(h.get("modality") or "").upper() in {m.upper() for m in cfg.volume_modalities}
            and all((i.header.get("frames") or 1) == 1 for i in members))


def _is_multiframe_volume(inst: Instance, cfg: DataConfig) -> bool:
    h = inst.header
    return ((h.get("frames") or 1) >= cfg.volume_min_slices
            and str(h.get("modality") or "").upper() in {m.upper() for m in cfg.volume_modalities})


def _read_labels(cfg: DataConfig, root: Path, mode: IdentityMode) -> LabelTable:
    labels_path = Path(cfg.labels) if cfg.labels else root / "labels.csv"
    key_column = cfg.key_column or DEFAULT_KEY_COLUMNS[cfg.label_key]
    if mode.kind == "labels" and cfg.label_key != "path":
        raise InputError(f"data.identity: labels needs data.label_key: path (got {cfg.label_key!r}): the labels CSV "
                         "names the patient of each path")
    return read_task_table(labels_path, key_column, cfg, patient_column=mode.column if mode.kind == "labels" else None,
                           root=root if cfg.label_key == "path" else None)


_DERIVED_KINDS = ("series from folder", "series = this", "study from folder", "patient from folder", "patient from the")


def _log_identities(groups: list[Group], manifest: pd.DataFrame) -> None:
    """A warning counting the derived identities by kind (never a folder name: logs may leave the machine),
    and the number of patients really found."""
    derived = [g for g in groups if g.derived]
    if derived:
        kinds = Counter(k for g in derived for p in g.derived for k in _DERIVED_KINDS if p.startswith(k))
        log.warning("ingest: identity derived for %d series (%d files) with blank identifiers (%s); each is a note "
                    "in ingest_report.csv", len(derived), sum(len(g.members) for g in derived),
                    ", ".join(f"{k.replace(' = this', ' = one multi-frame object').replace('from the', 'from its study')}"
                              f": {v}" for k, v in kinds.items()))
    log.info("ingest: %d patients, %d studies found", manifest["patient_key"].nunique(), manifest["study_key"].nunique())


def run_ingest(cfg: DataConfig, report_dir: Path | None = None, labelled: bool = True) -> IngestResult:
    """Scan ``cfg.root`` for DICOM instances, series and NIfTI volumes, join ``cfg.labels``.

    ``labelled=False`` reads no labels file and gives every sample the label :data:`UNLABELLED`
    (images for self-supervised pretraining).

    Returns the manifest (columns :data:`MANIFEST_COLUMNS`, one row per file-level sample) and the
    report (:data:`~medlora.io.report.REPORT_COLUMNS`). With ``report_dir`` both are written there
    (``manifest.csv``, ``ingest_report.csv``) before the checks below can fail.

    Raises:
        InputError: ``root`` is not a folder, no usable labelled sample was found, or ``cfg.strict``
            is set and a file was skipped; the message names the report and the first files.
    """
    root = Path(cfg.root)
    if not root.is_dir():
        raise InputError(f"data.root {root} is not a folder")
    mode = parse_identity(cfg.identity)
    if labelled:
        labels = _read_labels(cfg, root, mode)  # class indices, or findings codes (multilabel)
    else:
        labels = LabelTable(Path(cfg.labels) if cfg.labels else root / "labels.csv", "")
    site = load_site_key(cfg.secret_file)
    col = _Collector(cfg, root, labels, site, mode, labelled)
    files = candidate_files(root, skip={labels.path})
    instances, niftis, skips = scan(root, files)
    for s in skips:
        col.skip(s.rel, s.category, s.reason)
    for rel, reason in transfer_failures(root):  # instances a pull (medlora pull) could not fetch
        col.skip(rel, TRANSFER_FAILED, reason)
    groups, unplaced = group_instances(instances, mode, labels.patients)
    for rel, why in unplaced:
        col.skip(rel, "no identity", why)
    for g in tqdm(groups, desc="decoding", unit="series", disable=not sys.stderr.isatty(), leave=False):
        if g.derived:
            col.note(g.folder if len(g.members) > 1 else g.members[0].rel, NOTE, DERIVED, "; ".join(g.derived))
        if _is_volume(g.members, cfg):
            col.add_series(g, g.members)
            continue
        for inst in g.members:
            col.add_series(g, [inst]) if _is_multiframe_volume(inst, cfg) else col.add_image(inst, g)
    for path in niftis:
        col.add_nifti(path)
    if labelled:
        col.report_labels([p.relative_to(root).as_posix() for p in files], instances)
    manifest = pd.DataFrame(col.rows, columns=MANIFEST_COLUMNS)
    if labelled:  # multilabel: findings codes to ``findings``, ``label`` = any finding present
        manifest = split_findings_label(manifest, cfg)
    origins = manifest_origins(manifest, root, lambda raw: site.key(raw, "src"))
    if origins is not None:  # pulled from a PACS: the (server, study) each row came from, hashed
        manifest["origin_key"] = origins
    report = pd.DataFrame(col.report, columns=REPORT_COLUMNS)
    written = write_ingest_files(report_dir, manifest, report)[1] if report_dir is not None else None
    log_summary(report)
    see = f"; see {written}" if written else ""
    if manifest.empty:
        raise InputError(f"no usable {'labelled ' if labelled else ''}images under {root} ({int((report['status'] != NOTE).sum())} report rows{see}; "
                         f"first: {first_paths(report, 3) or first_paths(report, 3, LABEL) or 'no files'})")
    skipped = report[report["status"] == SKIPPED]
    if cfg.strict and len(skipped):
        raise InputError(f"data.strict is set and {len(skipped)} files were skipped{see}; first: {first_paths(report)}")
    _log_identities(groups, manifest)
    result = IngestResult(manifest, report, root, site.scheme, report_dir)
    log.info("ingest %s: %s", cfg.name, result.summary())
    return result
