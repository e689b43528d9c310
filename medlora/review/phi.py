"""Scan a bundle for patient identifiers before it is finalised.

Two kinds of evidence, both reported as (file, kind) and never with the value itself:

* **patterns** in text files: DICOM-style UIDs (``1.2.840...``, 10-64 characters of digits and dots)
  that are not well-known SOP Class / Transfer Syntax UIDs, person names in DICOM's ``Family^Given``
  form, and DICOM dates (``YYYYMMDD``) next to a date-of-birth or study-date word. Inlined images
  (``data:`` URIs) are not pattern-scanned: their base64 text is not language.
* **known values**: the PatientName, PatientID, PatientBirthDate, AccessionNumber and study / series /
  SOP instance UIDs read from source DICOM headers (``known_identifiers``), looked for as whole tokens
  in every file, binary ones included.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import BundleError

log = logging.getLogger(__name__)

TEXT_SUFFIXES = {".json", ".csv", ".md", ".html", ".txt", ".yaml", ".yml", ".sha256"}
UID = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9][0-9]*)){3,}(?![\w.])")
PERSON_NAME = re.compile(r"(?<![\w^])[A-Za-z][A-Za-z'\-]*\^[A-Za-z][A-Za-z'\-]*(?:\^[A-Za-z'\-]*){0,3}")
DATE_NEAR_WORD = re.compile(r"(?i)(?:birth|dob|study[\s_]?date|acquisition[\s_]?date)[^\n]{0,40}?(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")
DATA_URI = re.compile(r"data:[a-z/+.-]+;base64,[A-Za-z0-9+/=]+")
HEADER_FIELDS = {"PatientName": "patient name", "PatientID": "patient id", "PatientBirthDate": "birth date",
                 "AccessionNumber": "accession number", "StudyInstanceUID": "study uid",
                 "SeriesInstanceUID": "series uid", "SOPInstanceUID": "instance uid"}


@dataclass(frozen=True)
class Finding:
    file: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}: {self.kind}"


def _well_known_uids() -> set[str]:
    from pydicom._uid_dict import UID_dictionary

    return set(UID_dictionary)


def known_identifiers(sources: Iterable[Path], limit: int = 100_000) -> dict[str, str]:
    """``{value: kind}`` of the identifying header values of the DICOM files under ``sources``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    values: dict[str, str] = {}
    files = [p for s in map(Path, sources) for p in ([s] if s.is_file() else sorted(s.rglob("*"))) if p.is_file()]
    for path in files[:limit]:
        if path.suffix.lower() in TEXT_SUFFIXES:
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError, EOFError, TypeError, AttributeError):
            continue
        for keyword, kind in HEADER_FIELDS.items():
            raw = str(ds.get(keyword) or "").strip()
            for value in {raw, raw.replace("^", " ").strip()}:
                if len(value) >= 4:
                    values.setdefault(value, kind)
    log.info("PHI scan: %d identifier values from %d source files", len(values), len(files))
    return values


def _token_at(data: bytes, value: bytes) -> bool:
    """True if ``value`` occurs in ``data`` as a whole token (not inside a longer word, number or UID)."""
    start = data.find(value)
    while start != -1:
        before = data[start - 1:start]
        after = data[start + len(value):start + len(value) + 1]
        if not (before.isalnum() or before == b".") and not after.isalnum():
            return True
        start = data.find(value, start + 1)
    return False


def scan_text(text: str, name: str, ignore_uids: set[str]) -> list[Finding]:
    """Pattern findings in one text file's content."""
    text = DATA_URI.sub("data:", text)
    found = []
    if any(u not in ignore_uids and 10 <= len(u) <= 64 for u in UID.findall(text)):
        found.append(Finding(name, "DICOM-style UID"))
    if PERSON_NAME.search(text):
        found.append(Finding(name, "DICOM person name (Family^Given)"))
    if DATE_NEAR_WORD.search(text):
        found.append(Finding(name, "DICOM date next to a birth/study date word"))
    return found


def scan_bundle(folder: Path, known: dict[str, str] | None = None) -> list[Finding]:
    """Every identifier finding in ``folder`` (pattern findings in text files, known values in all files)."""
    folder = Path(folder)
    encoded = {v.encode(): kind for v, kind in (known or {}).items()}
    ignore = _well_known_uids()
    findings: list[Finding] = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        data = path.read_bytes()
        if path.suffix.lower() in TEXT_SUFFIXES:
            findings += scan_text(data.decode("utf-8", errors="replace"), rel, ignore)
        if encoded:
            kinds = sorted({kind for value, kind in encoded.items() if _token_at(data, value)})
            findings += [Finding(rel, f"{kind} from the source DICOM headers") for kind in kinds]
    return findings


def require_no_phi(folder: Path, known: dict[str, str] | None = None) -> None:
    """Raise :class:`BundleError` naming each file and kind of identifier found."""
    findings = scan_bundle(folder, known)
    if findings:
        raise BundleError("possible patient identifiers in the bundle, refusing to finalise it: "
                       + "; ".join(map(str, findings)))
