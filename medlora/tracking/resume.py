"""Resuming sweeps from what the tracking store already holds.

A sweep's parent run is found again by the hash of its config and data (tag
``medlora.sweep_hash``), a child by the hash of its resolved config (``medlora.config_hash``).
FINISHED children are kept, children left RUNNING by a process that no longer exists are marked
KILLED, and children RUNNING in another live process on this host are left to it. MLflow writes
each run's status transactionally, so a SIGKILL at any moment leaves at worst a RUNNING child that
the next run marks KILLED.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from ..errors import MedloraError
from . import tags as T
from .compare import child_runs, search_all

log = logging.getLogger(__name__)


def owner_tags() -> dict[str, str]:
    """Tags naming this process (host and pid), so a later run can tell a live owner from a dead one."""
    return {T.HOST: socket.gethostname(), T.PID: str(os.getpid())}


def alive_elsewhere(run: Any) -> bool:
    """Whether a RUNNING run belongs to another live process on this host."""
    tags = run.data.tags
    if tags.get(T.HOST) != socket.gethostname() or not str(tags.get(T.PID, "")).isdigit():
        return False
    pid = int(tags[T.PID])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_parent(client: Any, experiment_id: str, digest: str) -> Any | None:
    """The newest parent run of the sweep with hash ``digest``; error when another live process holds it."""
    runs = search_all(client, experiment_id, f"tags.`{T.SWEEP_HASH}` = '{digest}' and tags.`{T.ROLE}` = 'sweep'")
    if not runs:
        return None
    parent = max(runs, key=lambda r: r.info.start_time)
    if parent.info.status == "RUNNING" and alive_elsewhere(parent):
        raise MedloraError(f"sweep run {parent.info.run_id} is being run by process {parent.data.tags[T.PID]}; "
                           "wait for it or stop it first")
    return parent


def reconcile_children(client: Any, parent: Any) -> tuple[set[str], set[str]]:
    """(config hashes already FINISHED, hashes running in another live process); stale RUNNING → KILLED."""
    finished, busy = set(), set()
    for run in child_runs(client, parent):
        digest = run.data.tags.get(T.POINT_HASH)
        if run.info.status == "FINISHED":
            finished.add(digest)
        elif run.info.status == "RUNNING":
            if alive_elsewhere(run):
                busy.add(digest)
            else:
                log.warning("child run %s (%s) was left RUNNING by a dead process: marking it KILLED",
                            run.info.run_id, run.info.run_name)
                client.set_terminated(run.info.run_id, status="KILLED")
    return finished, busy
