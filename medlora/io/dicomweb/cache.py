"""The local cache a pull writes and the ordinary ingest reads (``data.root`` = the cache folder).

Layout::

    CACHE/instances/<study>/<series>/<sop>.dcm   one DICOM file per instance, named by the SHA-256 of its
                                                SOP Instance UID, in folders named by that of its study
                                                and series (16 hex digits each)
    CACHE/sources.csv                  path, server (no credentials), study_uid: where each file came from
    CACHE/failures.csv                 path, server, study/series/SOP UIDs, reason: what could not be fetched

A file is written under a hidden temporary name and renamed into place, so a file that exists is
complete: an interrupted pull resumes by fetching the instances whose file is missing. One folder
holds one series, as in an export: the ingest's leakage audit reads a folder of slices with one
geometry as one scan, so series of different patients must never share a folder. The cache
holds identifiable images and the UIDs in its CSVs: it is the data, kept where the data is kept.
The ingest reads :func:`transfer_failures` (each a report row like an unreadable file, without UIDs)
and :func:`file_sources` (hashed into the manifest's ``origin_key``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

INSTANCES, SOURCES_FILE, FAILURES_FILE = "instances", "sources.csv", "failures.csv"
SOURCE_COLUMNS = ["path", "server", "study_uid"]
FAILURE_COLUMNS = ["path", "server", "study_uid", "series_uid", "sop_uid", "reason"]
TRANSFER_FAILED = "transfer failed"  # the ingest report's category of an instance that never arrived


def _sha(uid: str) -> str:
    return hashlib.sha256(str(uid).strip().encode()).hexdigest()


def instance_name(study_uid: str, series_uid: str, sop_uid: str) -> str:
    """The cache-relative path of an instance: ``instances/<study>/<series>/<sop>.dcm``, each the SHA-256
    of the UID (folders: its first 16 hex digits)."""
    return f"{INSTANCES}/{_sha(study_uid)[:16]}/{_sha(series_uid)[:16]}/{_sha(sop_uid)}.dcm"


def _read(path: Path, columns: list[str]) -> list[dict[str, str]]:
    """The rows of a cache CSV; none when the file is missing or is not one a pull wrote (another
    header: a dataset folder may hold a ``failures.csv`` of its own)."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != columns:
            return []
        return [{c: row.get(c) or "" for c in columns} for row in reader]


def _write(path: Path, columns: list[str], rows: Iterable[dict[str, Any]]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


class Cache:
    """A pull's cache folder: instance files, and the sources and failures of the instances it knows."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        (self.root / INSTANCES).mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.sources = {r["path"]: r for r in _read(self.root / SOURCES_FILE, SOURCE_COLUMNS)}
        self.failures = {r["path"]: r for r in _read(self.root / FAILURES_FILE, FAILURE_COLUMNS)}

    def path(self, study_uid: str, series_uid: str, sop_uid: str) -> Path:
        return self.root / instance_name(study_uid, series_uid, sop_uid)

    def has(self, study_uid: str, series_uid: str, sop_uid: str) -> bool:
        return self.path(study_uid, series_uid, sop_uid).is_file()

    def put(self, study_uid: str, series_uid: str, sop_uid: str, data: bytes) -> Path:
        """Write one instance's Part 10 bytes atomically (temporary hidden file, then rename)."""
        path = self.path(study_uid, series_uid, sop_uid)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.part")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        return path

    def arrived(self, server: str, study_uid: str, series_uid: str, sop_uid: str) -> None:
        """Record where a present instance came from (and forget an earlier failure of it)."""
        rel = instance_name(study_uid, series_uid, sop_uid)
        with self._lock:
            self.sources[rel] = {"path": rel, "server": server, "study_uid": study_uid}
            self.failures.pop(rel, None)

    def failed(self, server: str, study_uid: str, series_uid: str, sop_uid: str, reason: str) -> None:
        rel = instance_name(study_uid, series_uid, sop_uid)
        with self._lock:
            self.failures[rel] = {"path": rel, "server": server, "study_uid": study_uid, "series_uid": series_uid,
                                  "sop_uid": sop_uid, "reason": reason}

    def save(self) -> None:
        """Write ``sources.csv`` and ``failures.csv`` (sorted by path; a failure whose file arrived is dropped)."""
        with self._lock:
            for rel in [r for r in self.failures if (self.root / r).is_file()]:
                del self.failures[rel]
            _write(self.root / SOURCES_FILE, SOURCE_COLUMNS, (self.sources[k] for k in sorted(self.sources)))
            _write(self.root / FAILURES_FILE, FAILURE_COLUMNS, (self.failures[k] for k in sorted(self.failures)))

    def files(self) -> list[Path]:
        """Every complete instance file in the cache."""
        return sorted((self.root / INSTANCES).glob("*/*/*.dcm"))


def transfer_failures(root: Path) -> list[tuple[str, str]]:
    """``(cache-relative path, reason)`` of each instance a pull into ``root`` could not fetch and
    that is still missing; the reason names the server and the failure, never a UID."""
    out = []
    for row in _read(Path(root) / FAILURES_FILE, FAILURE_COLUMNS):
        if not (Path(root) / row["path"]).is_file():
            out.append((row["path"], f"{TRANSFER_FAILED}: WADO-RS retrieve from {row['server']}: {row['reason']}"))
    return out


def file_sources(root: Path) -> dict[str, str]:
    """Cache-relative path → ``server \\x1f study UID`` (raw: the ingest hashes it under the site secret)."""
    return {r["path"]: f"{r['server']}\x1f{r['study_uid']}" for r in _read(Path(root) / SOURCES_FILE, SOURCE_COLUMNS)}


def manifest_origins(manifest: Any, root: Path, key: Callable[[str], str]) -> list[str | None] | None:
    """Per manifest row, ``key(server \\x1f study UID)`` of the pull its (first) file came from; ``None``
    when ``root`` is not a pull's cache (no ``sources.csv``)."""
    sources = file_sources(root)
    if not sources:
        return None
    out: list[str | None] = []
    for kind, path, source in zip(manifest["kind"], manifest["path"], manifest["source"], strict=True):
        first = json.loads(source)[0] if kind == "series" and str(source).startswith("[") else str(path)
        raw = sources.get(first)
        out.append(key(raw) if raw else None)
    return out
