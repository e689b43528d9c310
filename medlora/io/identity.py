"""Who a DICOM instance belongs to, even when its identifiers are blank (``data.identity``).

De-identification tools often blank PatientID, StudyInstanceUID and SeriesInstanceUID. An instance
must then never become a patient of its own (one scan spread over train, val and test). The rules:

* **Series**: the SeriesInstanceUID; when blank, the instances of one folder with the same geometry
  (modality, Rows x Columns, ImageOrientationPatient, PixelSpacing) and the same (or no) study form one
  series. A multi-frame object with a blank series is a series of its own.
* **Study**: the StudyInstanceUID; when blank, the series' folder (everything blank in one folder is one
  study).
* **Patient**, by ``data.identity`` (a NIfTI file, which has no tags, is its own patient under ``tags``
  and follows the folder or labels rule otherwise, :func:`untagged_patient`):

  - ``tags`` (default): the PatientID; when blank, the nearest identified level (another instance of
    the same study or series that has one), else the series' folder.
  - ``folder:N``: the first ``N`` folder levels under ``data.root`` (``folder:1`` = the top folder),
    whatever the tags say: for exports laid out one patient per folder.
  - ``labels`` or ``labels:COLUMN``: the labels CSV's ``COLUMN`` (default ``patient``) on the row of
    the file's path or of its nearest labelled folder (``data.label_key: path``).

Every identity derived from a folder is returned as a note, so the ingest report lists it. The values
returned here are raw (folder names, identifiers): callers hash them with the site secret.
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import ConfigError

log = logging.getLogger(__name__)

IDENTITY_HELP = "tags, folder:N (N >= 1) or labels[:COLUMN]"


@dataclass(frozen=True)
class IdentityMode:
    kind: str  # tags | folder | labels
    level: int = 0  # folder:N
    column: str = "patient"  # labels:COLUMN


def parse_identity(text: str) -> IdentityMode:
    """``tags`` | ``folder:N`` | ``labels[:COLUMN]`` → :class:`IdentityMode`.

    Raises:
        ConfigError: anything else (the message lists the accepted forms).
    """
    kind, _, arg = text.partition(":")
    if kind == "tags" and not arg:
        return IdentityMode("tags")
    if kind == "folder" and arg.isdigit() and int(arg) >= 1:
        return IdentityMode("folder", level=int(arg))
    if kind == "labels":
        return IdentityMode("labels", column=arg or "patient")
    raise ConfigError(f"data.identity={text!r}; accepted: {IDENTITY_HELP}")


@dataclass
class Group:
    """One series (by UID, or derived) with the raw names its keys are made from: the identifier itself
    when the tag holds one, ``folder\x1f<path>``-style names when derived."""

    members: list[Any]  # ingest instances (``rel``, ``header``)
    patient: str = ""
    study: str = ""
    series: str = ""
    derived: list[str] = field(default_factory=list)  # human phrases, e.g. "patient from folder a/b"

    @property
    def folder(self) -> str:
        return common_folder([m.rel for m in self.members])


def _blank(value: Any) -> bool:
    return value is None or not str(value).strip()


def geometry_signature(h: Mapping[str, Any]) -> tuple:
    """What slices of one scan share: modality, size, orientation, pixel spacing (rounded)."""
    iop = h.get("image_orientation_patient") or []
    spacing = h.get("pixel_spacing") or []
    return (str(h.get("modality") or ""), h.get("rows"), h.get("columns"), tuple(round(float(v), 3) for v in iop),
            tuple(round(float(v), 4) for v in spacing))


def _series_key(inst: Any) -> tuple:
    h = inst.header
    if not _blank(h.get("series_uid")):
        return ("uid", str(h["series_uid"]))
    parent = PurePosixPath(inst.rel).parent.as_posix()
    if (h.get("frames") or 1) > 1:
        return ("object", inst.rel)
    return ("folder", parent, str(h.get("study_uid") or ""), geometry_signature(h))


def _first(values: Sequence[Any]) -> str | None:
    present = [str(v) for v in values if not _blank(v)]
    return Counter(present).most_common(1)[0][0] if present else None


def group_instances(instances: Sequence[Any], mode: IdentityMode, patient_of_path: Mapping[str, str] | None = None,
                    ) -> tuple[list[Group], list[tuple[str, str]]]:
    """Series groups of ``instances`` with their raw patient/study/series names, and the files that
    cannot be given a patient (``(rel, reason)``; folder:N too shallow, no patient in the labels CSV)."""
    by_series: dict[tuple, list[Any]] = defaultdict(list)
    for inst in instances:
        by_series[_series_key(inst)].append(inst)
    study_patient: dict[str, str] = {}
    for inst in instances:
        h = inst.header
        if not _blank(h.get("study_uid")) and not _blank(h.get("patient_id")):
            study_patient.setdefault(str(h["study_uid"]), str(h["patient_id"]))
    groups, unplaced = [], []
    for key, members in by_series.items():
        g = Group(members)
        blank = [name for name, field_ in (("PatientID", "patient_id"), ("StudyInstanceUID", "study_uid"),
                                           ("SeriesInstanceUID", "series_uid"))
                 if any(_blank(m.header.get(field_)) for m in members)]
        if key[0] == "uid":
            g.series = key[1]  # raw UIDs name the keys exactly as predict names them
        else:
            g.series = f"folder\x1f{key[1]}\x1f{key[2]}\x1f{key[3]}" if key[0] == "folder" else f"object\x1f{key[1]}"
            g.derived.append(f"series from folder {g.folder or '.'} and its geometry" if key[0] == "folder"
                             else "series = this multi-frame object")
        study = _first([m.header.get("study_uid") for m in members])
        if study:
            g.study = study
        else:
            g.study = f"folder\x1f{g.folder}"
            g.derived.append(f"study from folder {g.folder or '.'}")
        why = _patient(g, study, mode, study_patient, patient_of_path or {})
        if why:
            unplaced += [(m.rel, why) for m in members]
            continue
        if g.derived:
            g.derived.insert(0, f"{'/'.join(blank)} blank in {len(members)} file(s)")
        groups.append(g)
    return groups, unplaced


def _patient(g: Group, study: str | None, mode: IdentityMode, study_patient: Mapping[str, str],
             patient_of_path: Mapping[str, str]) -> str:
    """Set ``g.patient``; return why it cannot be set (or "")."""
    if mode.kind == "folder":
        levels = {PurePosixPath(m.rel).parts[:-1][: mode.level] for m in g.members}
        if any(len(lv) < mode.level for lv in levels):
            return f"identity: fewer than {mode.level} folder levels under data.root (data.identity: folder:{mode.level})"
        if len(levels) > 1:
            return f"identity: one series spans {len(levels)} patient folders (data.identity: folder:{mode.level})"
        g.patient = "folder\x1f" + "/".join(levels.pop())
        return ""
    if mode.kind == "labels":
        found = {patient_of_path[k] for m in g.members
                 for k in [next((p for p in (m.rel, *parents(m.rel)) if p in patient_of_path), None)] if k}
        if len(found) != 1:
            return (f"identity: no patient for its path in column {mode.column!r} of the labels CSV (data.identity: labels)"
                    if not found else f"identity: {len(found)} different patients for the files of one series in the labels CSV")
        g.patient = found.pop()  # the same key as a PatientID of that value
        return ""
    patient = _first([m.header.get("patient_id") for m in g.members])
    if patient:
        g.patient = patient
    elif study and study in study_patient:
        g.patient = study_patient[study]
        g.derived.append("patient from the PatientID of its study's other instances")
    else:
        g.patient = f"folder\x1f{g.folder}"
        g.derived.append(f"patient from folder {g.folder or '.'} (data.identity: folder:N if the patient is a higher folder)")
    return ""


def untagged_patient(rel: str, mode: IdentityMode, patient_of_path: Mapping[str, str]) -> tuple[str | None, str]:
    """(raw patient name, or None and why) of a file without DICOM tags (a NIfTI volume): its own
    patient under ``tags``, else its folder level or its labels-CSV patient, like a DICOM file."""
    if mode.kind == "folder":
        levels = PurePosixPath(rel).parts[:-1][: mode.level]
        if len(levels) < mode.level:
            return None, f"identity: fewer than {mode.level} folder levels under data.root (data.identity: folder:{mode.level})"
        return "folder\x1f" + "/".join(levels), ""
    if mode.kind == "labels":
        key = next((p for p in (rel, *parents(rel)) if p in patient_of_path), None)
        if key is None:
            return None, f"identity: no patient for its path in column {mode.column!r} of the labels CSV (data.identity: labels)"
        return patient_of_path[key], ""
    return rel, ""


def parents(rel: str) -> list[str]:
    """The folders above a root-relative path, nearest first (``a/b/c.dcm`` → ``a/b``, ``a``)."""
    return [p.as_posix() for p in PurePosixPath(rel).parents if p.as_posix() != "."]


def common_folder(rels: Sequence[str]) -> str:
    """The deepest folder holding every path of ``rels`` (``""`` for the root itself)."""
    parts = [PurePosixPath(r).parent.parts for r in rels]
    common: list[str] = []
    for level in zip(*parts, strict=False):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return Path(*common).as_posix() if common else ""
