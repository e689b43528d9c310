"""The first pass of ingest: which files are there, which are DICOM images, which are NIfTI.

Every file under ``data.root`` except side files (``*.csv``, ``*.md``, ``*.json``, ``*.txt``, hidden
files, ``DICOMDIR``) is *scanned*: it ends up either as an image/volume candidate or as a skip with its
category and reason, never nowhere. Headers are read without pixel data.

Decoders and pydicom speak through warnings and the ``pydicom`` logger; :func:`captured` collects what
they say while one file is read, so it lands in that file's reason instead of on the console.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import MedloraError
from .nifti import is_nifti

log = logging.getLogger(__name__)

SIDE_SUFFIXES = {".csv", ".md", ".json", ".txt"}
SIDE_NAMES = {"DICOMDIR"}
NOT_AN_IMAGE = "not an image"


@dataclass
class Instance:
    """A DICOM file whose header was read: root-relative path, absolute path, header (raw identifiers)."""

    rel: str
    path: Path
    header: dict[str, Any]


@dataclass
class Skip:
    rel: str
    category: str
    reason: str


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            text = record.getMessage().strip().splitlines()
            self.messages.append(text[0] if text else record.levelname)


@contextmanager
def captured() -> Iterator[list[str]]:
    """Collect what is said inside the block: warnings and ``pydicom`` log records (first lines), and
    whatever C decoders (openjpeg, libjpeg) print straight to file descriptor 2."""
    handler, logger = _Collect(), logging.getLogger("pydicom")
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    sys.stderr.flush()
    saved, sink = os.dup(2), tempfile.TemporaryFile()
    os.dup2(sink.fileno(), 2)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield handler.messages
            handler.messages.extend(str(w.message).strip().splitlines()[0] for w in caught if str(w.message).strip())
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        sink.seek(0)
        handler.messages.extend(line.strip() for line in sink.read().decode(errors="replace").splitlines() if line.strip())
        sink.close()
        logger.removeHandler(handler)
        logger.propagate = propagate


def with_notes(reason: str, notes: list[str]) -> str:
    """``reason`` followed by what the decoders said (deduplicated, at most three)."""
    unique = list(dict.fromkeys(n for n in notes if n))
    return reason if not unique else f"{reason} [decoder said: {'; '.join(unique[:3])}]"


def candidate_files(root: Path, skip: set[Path] | None = None) -> list[Path]:
    """Every file ingest scans under ``root`` (sorted), side files and ``skip`` (the labels CSV) excepted."""
    skip = {p.resolve() for p in (skip or set())}
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name not in SIDE_NAMES
        and p.suffix.lower() not in SIDE_SUFFIXES and p.resolve() not in skip
    )


def error_category(err: MedloraError) -> str:
    return getattr(err, "category", "") or "unreadable"


def scan(root: Path, files: list[Path]) -> tuple[list[Instance], list[Path], list[Skip]]:
    """Headers of the DICOM images among ``files``, the NIfTI files, and every other file as a skip."""
    from tqdm.auto import tqdm

    from .dicom import read_dicom_header

    instances, niftis, skips = [], [], []
    for path in tqdm(files, desc="scanning", unit="file", disable=not sys.stderr.isatty(), leave=False):
        rel = path.relative_to(root).as_posix()
        if is_nifti(path):
            niftis.append(path)
            continue
        with captured() as notes:
            try:
                h = read_dicom_header(path)
            except MedloraError as err:
                skips.append(Skip(rel, error_category(err), with_notes(strip_path(str(err), path, root), notes)))
                continue
        if not h.get("rows") or not h.get("columns"):
            skips.append(_not_an_image(path, root, h))
            continue
        instances.append(Instance(rel, path, h))
    return instances, niftis, skips


def _not_an_image(path: Path, root: Path, h: dict[str, Any]) -> Skip:
    """Why a header without Rows/Columns is skipped. A file cut off inside its header reads as one
    (pydicom stops at the cut without a word), so a full read tells truncated pixel data apart, and a
    file meta naming an image class over a dataset without even a SOPClassUID is called truncated."""
    import pydicom
    from pydicom.uid import UID

    from .dicom import NO_PIXELS, TRUNCATED, UNREADABLE, read_dicom

    rel = path.relative_to(root).as_posix()
    with captured() as notes:
        try:
            read_dicom(path)
        except MedloraError as err:
            if error_category(err) in (TRUNCATED, UNREADABLE):
                return Skip(rel, error_category(err), with_notes(strip_path(str(err), path, root), notes))
        meta_sop = pydicom.dcmread(path, stop_before_pixels=True).file_meta.get("MediaStorageSOPClassUID")
    sop = h.get("sop_class_uid")
    name = UID(sop or meta_sop).name if (sop or meta_sop) else "unknown SOP class"
    if not sop and meta_sop and "Image" in name:
        return Skip(rel, UNREADABLE, f"incomplete header: the file meta names {name} but the dataset has no "
                    f"SOPClassUID, Rows/Columns or Pixel Data; the file ends after {path.stat().st_size} bytes (truncated?)")
    if sop and "Image" in name:
        return Skip(rel, NO_PIXELS, f"an image object ({name}) without Rows/Columns or Pixel Data (or cut off before them)")
    return Skip(rel, NOT_AN_IMAGE, f"not an image (SOPClassUID={sop or meta_sop} {name}): no Rows/Columns and no pixel data")


def strip_path(text: str, path: Path, root: Path) -> str:
    """An error message without its leading file path (the report row names the file already)."""
    for prefix in (f"{path}: ", f"{path.relative_to(root).as_posix()}: " if path.is_relative_to(root) else None):
        if prefix and text.startswith(prefix):
            return text[len(prefix):]
    return text.replace(str(root) + "/", "")
