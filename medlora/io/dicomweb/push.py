"""Send result objects to the DICOMweb server their study came from (STOW-RS), never twice.

Before sending, QIDO-RS asks whether the server already holds each object's SOP Instance UID; the
UIDs of :mod:`.objects` are derived from the bundle and the content, so an object already there is
the same result and is skipped. Objects are sent study by study; a study that already holds other
results of the same bundle (the same series, another instance) gets the new one beside them and a
log line says so: nothing is replaced. Messages count objects and studies, never identifiers.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from ...errors import PacsError
from .client import (
    TRANSFER_ERRORS,
    check_server,
    describe_failure,
    open_client,
    search_all,
    server_url,
    with_retries,
)

log = logging.getLogger(__name__)


@dataclass
class PushResult:
    server: str
    studies: int
    sent: int
    skipped: int  # already on the server (same bundle, same content)
    seconds: float = 0.0

    def describe(self) -> str:
        rate = self.studies / self.seconds if self.seconds else float("nan")
        return (f"{self.sent} object(s) sent to {self.server}, {self.skipped} already there (skipped), "
                f"{self.studies} studies; {self.seconds:.1f} s, {rate:.2f} studies/s")


def _instances(client: Any, study: str, series: str) -> set[str]:
    rows = search_all(client.search_for_instances, study_instance_uid=study, series_instance_uid=series)
    return {str(((r.get("00080018") or {}).get("Value") or [""])[0]) for r in rows}


def push(url: str, datasets: Sequence[Any], client: Any = None) -> PushResult:
    """STOW-RS ``datasets`` (pydicom/highdicom objects) to ``url``, skipping those already there.

    Raises:
        PacsError: the server does not answer, refuses the credentials, or rejects an object (the
            message names the server, the step and how many studies were done).
    """
    start = time.monotonic()
    server = server_url(url)
    client = client if client is not None else open_client(server)
    check_server(client, server)
    by_study: dict[str, list[Any]] = defaultdict(list)
    for ds in datasets:
        by_study[str(ds.StudyInstanceUID)].append(ds)
    sent = skipped = 0
    for n, (study, group) in enumerate(tqdm(sorted(by_study.items()), desc="pushing", unit="study",
                                            disable=not sys.stderr.isatty()), 1):
        step = "QIDO-RS check for existing results"
        try:
            existing: dict[str, set[str]] = {}
            for series in sorted({str(ds.SeriesInstanceUID) for ds in group}):
                existing[series] = _instances(client, study, series)
            new = [ds for ds in group if str(ds.SOPInstanceUID) not in existing[str(ds.SeriesInstanceUID)]]
            skipped += len(group) - len(new)
            beside = sum(len(existing[s]) for s in {str(ds.SeriesInstanceUID) for ds in new})
            if beside:
                log.info("push: study %d of %d already holds %d other result object(s) of this bundle; the new "
                         "one(s) go beside them", n, len(by_study), beside)
            if new:
                step = "STOW-RS store"
                answer = with_retries(lambda new=new, study=study: client.store_instances(datasets=new,
                                                                                          study_instance_uid=study))
                refused = list(getattr(answer, "FailedSOPSequence", None) or [])
                if refused:
                    reasons = sorted({str(getattr(item, "FailureReason", "?")) for item in refused})
                    raise PacsError(f"DICOMweb server {server}: STOW-RS refused {len(refused)} of {len(new)} object(s) "
                                    f"of study {n} of {len(by_study)} (failure reason {', '.join(reasons)}; "
                                    f"{sent} object(s) sent before)")
                sent += len(new)
        except TRANSFER_ERRORS as err:
            raise PacsError(f"DICOMweb server {server}: {step} of study {n} of {len(by_study)} failed: "
                            f"{describe_failure(err)} ({sent} object(s) sent before)") from None
    result = PushResult(server, len(by_study), sent, skipped, time.monotonic() - start)
    log.info("push: %s", result.describe())
    return result
