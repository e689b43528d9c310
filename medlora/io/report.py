"""The ingest report: every scanned file not in the manifest, every derived identity, every label row
that found nothing; written (with the manifest) before any check can fail.

Columns (:data:`REPORT_COLUMNS`): ``path`` (root-relative; for a label row the key as written),
``file_key`` (HMAC of the path under the site secret: joins the local report to the public one),
``status`` (``skipped``: the file is not used; ``note``: kept, but something was derived or changed;
``label``: a labels-CSV row), ``category`` (what kind of problem, for counting) and ``reason``.

The local files keep paths: they must lead a person back to the files. What leaves the machine is
:func:`public_report`: no ``path`` column, and every folder or file name in a reason replaced by
``<path>``.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

import pandas as pd

log = logging.getLogger(__name__)

REPORT_COLUMNS = ["path", "file_key", "status", "category", "reason"]
SKIPPED, NOTE, LABEL = "skipped", "note", "label"
MANIFEST_FILE, REPORT_FILE = "manifest.csv", "ingest_report.csv"
_TOKEN = re.compile(r"[^\s,;:()\[\]'\"]+")


def write_ingest_files(folder: Path, manifest: pd.DataFrame, report: pd.DataFrame) -> tuple[Path, Path]:
    """Write ``manifest.csv`` and ``ingest_report.csv`` into ``folder`` (created); return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    m, r = folder / MANIFEST_FILE, folder / REPORT_FILE
    manifest.to_csv(m, index=False)
    report.to_csv(r, index=False)
    return m, r


def manifest_files(manifest: pd.DataFrame) -> list[str]:
    """Every root-relative file a manifest uses (a series row's slices from ``source``)."""
    out: list[str] = []
    for kind, path, source in zip(manifest.get("kind", []), manifest["path"], manifest.get("source", manifest["path"]),
                                  strict=True):
        out += json.loads(source) if kind == "series" and str(source).startswith("[") else [str(path)]
    return out


def public_report(report: pd.DataFrame, manifest: pd.DataFrame) -> pd.DataFrame:
    """``report`` without paths: the ``path`` column dropped, folder and file names in reasons redacted."""
    names = _path_parts([*report["path"].astype(str), *manifest_files(manifest), *manifest["path"].astype(str)])
    out = report.drop(columns=["path"]).copy()
    out["reason"] = [redact(str(r), names) for r in report["reason"]]
    return out


def redact(text: str, names: set[str]) -> str:
    """``text`` with every token that is (or whose ``/``-parts include) one of ``names`` as ``<path>``."""
    def swap(m: re.Match[str]) -> str:
        token = m.group(0)
        parts = {token, *token.strip("./").split("/")}
        return "<path>" if parts & names else token

    return _TOKEN.sub(swap, text)


def _path_parts(paths: Iterable[str]) -> set[str]:
    parts: set[str] = set()
    for p in paths:
        if p and p != "nan":
            parts.update(x for x in PurePosixPath(p).parts if x not in ("/", ".", ".."))
    return parts


def log_summary(report: pd.DataFrame) -> None:
    """One console line per (status, category) with its count; no paths (logs may leave the machine)."""
    for (status, category), n in report.groupby(["status", "category"]).size().sort_index().items():
        if status == LABEL:
            log.warning("ingest: %d labels-CSV row(s) match no scanned file or study", n)
        else:
            log.warning("ingest: %d %s: %s", n, "file(s) skipped" if status == SKIPPED else "note(s)", category)


def first_paths(report: pd.DataFrame, n: int = 5, status: str = SKIPPED) -> str:
    """``a.dcm (reason); b.dcm (reason)`` for the first ``n`` rows of ``status``, for error messages."""
    rows = report[report["status"] == status].head(n)
    return "; ".join(f"{r.path or '<labels>'} ({r.reason})" for r in rows.itertuples())
