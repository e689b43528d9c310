"""Pull studies from a DICOMweb server into the local cache the ordinary ingest reads.

QIDO-RS finds the studies (:class:`PullQuery`: a study date range, a modality, accession numbers or
study UIDs, any attribute filter) and lists their instances; WADO-RS retrieves each instance that
is not in the cache yet (:class:`~.cache.Cache`), a few at a time, retrying what is worth retrying
with backoff (:func:`~.client.with_retries`). A pull that was interrupted is resumed by running it
again: instances already in the cache are not fetched again. An instance that fails for good is
recorded in ``failures.csv`` (the ingest report lists it like an unreadable file) and the pull goes
on; a server that stops answering ends the pull with a :class:`~medlora.errors.PacsError` naming the
server and how far it got, and the cache keeps what arrived. Logs and messages hold counts, never
identifiers.
"""

from __future__ import annotations

import csv
import io
import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from ...errors import ConfigError, InputError, PacsError
from .cache import Cache
from .client import (
    TRANSFER_ERRORS,
    check_server,
    describe_failure,
    mask_url,
    open_client,
    search_all,
    server_url,
    unreachable,
    with_retries,
)

log = logging.getLogger(__name__)

ACCESSION_COLUMNS = ("AccessionNumber", "accession", "accession_number")
STUDY_UID_COLUMNS = ("StudyInstanceUID", "study_uid", "study")
_DATE = re.compile(r"^(\d{4})-?(\d{2})-?(\d{2})$")


def dicom_date(text: str | None, what: str) -> str:
    """``YYYY-MM-DD`` or ``YYYYMMDD`` → ``YYYYMMDD`` ("" for none); :class:`ConfigError` otherwise."""
    if not text:
        return ""
    m = _DATE.match(str(text).strip())
    if not m:
        raise ConfigError(f"{what}={text!r} is not a date; give YYYY-MM-DD or YYYYMMDD")
    return "".join(m.groups())


def parse_filters(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` strings → a QIDO-RS filter dict; ``KEY`` must be a DICOM keyword (``PatientSex``)."""
    from pydicom.datadict import tag_for_keyword

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--filter {item!r}: expected KEY=VALUE with a DICOM keyword (e.g. PatientSex=F)")
        if tag_for_keyword(key.strip()) is None:
            raise ConfigError(f"--filter {item!r}: {key.strip()!r} is not a DICOM keyword (e.g. StudyDescription, "
                              "InstitutionName, ModalitiesInStudy)")
        out[key.strip()] = value.strip()
    return out


def read_id_column(path: Path, columns: tuple[str, ...]) -> list[str]:
    """The values of the first of ``columns`` (any case) in the CSV at ``path``, or of its only column."""
    path = Path(path)
    try:
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
            header = [h.strip() for h in (rows[0].keys() if rows else [])]
    except OSError as err:
        raise InputError(f"cannot read {path}: {err.strerror}") from None
    lower = {h.lower(): h for h in header}
    name = next((lower[c.lower()] for c in columns if c.lower() in lower), header[0] if len(header) == 1 else None)
    if name is None:
        raise InputError(f"{path} has none of the columns {', '.join(columns)} (columns: {', '.join(header) or 'none'})")
    return sorted({str(r[name]).strip() for r in rows if str(r.get(name) or "").strip()})


@dataclass
class PullQuery:
    """Which studies to pull; every given criterion must hold (accessions/study UIDs: any of the list)."""

    date_from: str = ""
    date_to: str = ""
    modality: str = ""
    accessions: list[str] = field(default_factory=list)
    study_uids: list[str] = field(default_factory=list)
    filters: dict[str, str] = field(default_factory=dict)

    def searches(self) -> list[dict[str, str]]:
        """One QIDO-RS study search per accession number / study UID (one in all without a list)."""
        base = dict(self.filters)
        date_from, date_to = dicom_date(self.date_from, "--from"), dicom_date(self.date_to, "--to")
        if date_from or date_to:
            base["StudyDate"] = f"{date_from}-{date_to}"
        if self.modality:
            base["ModalitiesInStudy"] = self.modality
        if self.accessions or self.study_uids:
            return [{**base, "AccessionNumber": a} for a in self.accessions] + \
                [{**base, "StudyInstanceUID": u} for u in self.study_uids]
        if not base:
            raise ConfigError("a pull needs at least one criterion (--from/--to, --modality, --accessions, "
                              "--study-uids or --filter): it never pulls a whole PACS")
        return [base]


@dataclass
class PullResult:
    cache: Path
    server: str  # without credentials
    studies: int
    instances: int  # listed by QIDO-RS
    fetched: int  # retrieved now
    present: int  # already in the cache
    failed: list[str] = field(default_factory=list)  # cache-relative paths that failed for good
    seconds: float = 0.0

    def describe(self) -> str:
        rate = self.studies / self.seconds if self.seconds else float("nan")
        return (f"{self.studies} studies, {self.instances} instances from {self.server}: {self.fetched} fetched, "
                f"{self.present} already in the cache, {len(self.failed)} failed ({self.cache / 'failures.csv'}); "
                f"{self.seconds:.1f} s, {rate:.2f} studies/s")


def _value(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    return str(values[0])


def find_studies(client: Any, query: PullQuery, server: str) -> list[str]:
    """Study Instance UIDs matching ``query`` (sorted, without repeats)."""
    found: set[str] = set()
    for search in query.searches():
        try:
            rows = search_all(client.search_for_studies, search_filters=search)
        except TRANSFER_ERRORS as err:
            raise PacsError(f"DICOMweb server {server}: QIDO-RS study search failed: {describe_failure(err)}") from None
        found.update(_value(r, "0020000D") for r in rows)
    found.discard("")
    return sorted(found)


def list_instances(client: Any, study_uid: str, server: str, n: int, total: int) -> list[tuple[str, str]]:
    """``(series UID, SOP instance UID)`` of every instance of one study."""
    try:
        rows = search_all(client.search_for_instances, study_instance_uid=study_uid)
    except TRANSFER_ERRORS as err:
        raise PacsError(f"DICOMweb server {server}: QIDO-RS instance search of study {n} of {total} failed: "
                        f"{describe_failure(err)}") from None
    return sorted({(_value(r, "0020000E"), _value(r, "00080018")) for r in rows if _value(r, "00080018")})


def fetch_instance(client: Any, study: str, series: str, sop: str) -> bytes:
    """One instance by WADO-RS, in its stored transfer syntax, as DICOM Part 10 bytes."""
    ds = client.retrieve_instance(study, series, sop)
    if str(getattr(ds, "SOPInstanceUID", "")) != sop:
        raise ValueError("the server answered with another instance than the one asked for")
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def pull(url: str, out: Path, query: PullQuery, workers: int = 4, attempts: int = 4, backoff: float = 0.5,
         client: Any = None, on_arrival: Callable[[int], None] | None = None) -> PullResult:
    """Pull the studies ``query`` finds on the DICOMweb server ``url`` into the cache ``out``.

    ``workers`` downloads run at once; each is tried ``attempts`` times. ``on_arrival(n)`` is called
    (in this thread) after the ``n``-th instance of this pull arrived: tests interrupt a pull there.

    Raises:
        PacsError: the server does not answer (at the start, or stops during the pull: what arrived
            stays in the cache and a rerun fetches the rest), or refuses the credentials.
    """
    start = time.monotonic()
    server = server_url(url)
    client = client if client is not None else open_client(server)
    check_server(client, server)
    studies = find_studies(client, query, server)
    log.info("pull: %d studies match on %s", len(studies), server)
    cache = Cache(Path(out))
    todo: list[tuple[str, str, str]] = []
    listed = present = 0
    try:
        for n, study in enumerate(tqdm(studies, desc="listing", unit="study", disable=not sys.stderr.isatty(),
                                       leave=False), 1):
            for series, sop in list_instances(client, study, server, n, len(studies)):
                listed += 1
                if cache.has(study, series, sop):
                    cache.arrived(server, study, series, sop)
                    present += 1
                else:
                    todo.append((study, series, sop))
        fetched = _download(client, cache, server, todo, workers, attempts, backoff, on_arrival, present, listed)
    finally:
        cache.save()
    failed = sorted(cache.failures)
    result = PullResult(cache.root, server, len(studies), listed, fetched, present, failed, time.monotonic() - start)
    log.info("pull: %s", result.describe())
    return result


def _download(client: Any, cache: Cache, server: str, todo: list[tuple[str, str, str]], workers: int,
              attempts: int, backoff: float, on_arrival: Callable[[int], None] | None, present: int,
              listed: int) -> int:
    """Retrieve ``todo`` with ``workers`` threads; return how many arrived. A server that stops
    answering stops the pull (:class:`PacsError`) once the downloads in flight have ended."""
    down = threading.Event()
    why: list[str] = []  # the failure that showed the server down

    def one(study: str, series: str, sop: str) -> bool:
        if down.is_set():
            return False
        try:
            data = with_retries(lambda: fetch_instance(client, study, series, sop), attempts, backoff)
        except TRANSFER_ERRORS as err:
            cache.failed(server, study, series, sop, describe_failure(err))
            if unreachable(err):
                why.append(describe_failure(err))
                down.set()
            return False
        cache.put(study, series, sop, data)
        cache.arrived(server, study, series, sop)
        return True

    arrived = 0
    bar = tqdm(total=len(todo), desc="retrieving", unit="instance", disable=not sys.stderr.isatty())
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="wado")
    pending: set[Future[bool]] = set()
    queue = iter(todo)
    try:
        while True:
            while len(pending) < 2 * max(1, workers) and not down.is_set():
                item = next(queue, None)
                if item is None:
                    break
                pending.add(pool.submit(one, *item))
            if not pending:
                break
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                bar.update(1)
                if fut.result():
                    arrived += 1
                    if on_arrival is not None:
                        on_arrival(arrived)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    if down.is_set():
        have = present + arrived
        raise PacsError(f"DICOMweb server {mask_url(server)} stopped answering during the pull (WADO-RS retrieve: "
                        f"{why[0] if why else 'no answer'}); "
                        f"{have} of {listed} instances are in the cache {cache.root} (kept); run the same pull "
                        "again to fetch the rest")
    return arrived
