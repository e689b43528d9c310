"""Resuming unfinished work, one set of rules for every run kind (a single run, a sweep, pretraining).

How unfinished work is found:

- **in a folder** (a single run in its ``--out``; a pretraining in its base folder): while the work
  trains, the folder holds its epoch checkpoint (:mod:`medlora.train.checkpoint`) and a small state
  file with the MLflow run id and the work's *identity* (:func:`remember`). Running the same command
  again continues that MLflow run from the last epoch (:func:`find_unfinished`). Both files are
  removed once the work has finished (:func:`forget`).
- **in the tracking store** (a sweep's parent run and its children): by tags, the hash of the
  identity (``medlora.sweep_hash`` for the parent, ``medlora.config_hash`` for a child:
  :mod:`medlora.sweep.points`). A run left RUNNING by a process that no longer exists is marked
  KILLED; one RUNNING in another live process on this host is left to it (:func:`alive_elsewhere`).

When other work is refused: the identity is what changes the result (the resolved config without
the settings that change only speed, :data:`SPEED_ONLY`; for pretraining, the data fingerprint and
the settings that change the weights). Unfinished work of another identity in the same folder is
refused with a :class:`ConfigError` naming the keys that differ (:func:`refusal`); in the store,
another identity simply has another hash, so it is another sweep or point.

When a finished result is reused instead of computed again: a sweep point with a FINISHED child
of its hash (:func:`reconcile_children`); a pretrained base whose card carries the same key
(:mod:`.pretrain`). A finished single run is never reused: a new run starts.

MLflow writes each run's status transactionally, so a SIGKILL at any moment leaves at worst a RUNNING
run that the next attempt finds again (a folder's state) or marks KILLED (a sweep's child).
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TrackingError
from ..tracking import tags as T
from ..tracking.mlflow_run import flatten
from ..tracking.runs import child_runs, search_all

log = logging.getLogger(__name__)
STATE, CHECKPOINT = "resume.json", "checkpoint.pt"  # a single run's files in its --out
SPEED_ONLY = {"train.device", "train.num_workers", "train.threads", "train.compile"}  # change speed, not results


# --- the identity of unfinished work, and refusing another ---------------------------------------------

def differing_keys(before: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """The flattened keys (``train.lr``) whose values differ, speed-only settings left out, sorted."""
    a, b = ({k: v for k, v in flatten(dict(d)).items() if k not in SPEED_ONLY} for d in (before, now))
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def refusal(holds: str, before: Mapping[str, Any], now: Mapping[str, Any], remedy: str) -> ConfigError:
    """The error for unfinished work of another identity: ``holds`` says where and what, then up to
    five differing keys with both values, then ``remedy``."""
    differ = differing_keys(before, now)
    a, b = flatten(dict(before)), flatten(dict(now))
    shown = "; ".join(f"{k}: {a.get(k)!r} in the checkpoint, {b.get(k)!r} now" for k in differ[:5])
    return ConfigError(f"{holds} with another config ({len(differ)} keys differ: {shown}); {remedy}")


# --- in a folder: a single run, a pretraining ----------------------------------------------------------

def find_unfinished(folder: Path, identity: Mapping[str, Any], *, what: str = "run", state: str = STATE,
                    checkpoint: str = CHECKPOINT, remedy: str | None = None) -> str | None:
    """The MLflow run id of the unfinished ``what`` of ``identity`` in ``folder``; ``None`` to start afresh.

    Unfinished work of another identity there is refused (:func:`refusal`); ``remedy`` says what to do
    instead (default: another output folder, or deleting the checkpoint)."""
    state_file, ckpt = Path(folder) / state, Path(folder) / checkpoint
    if not (state_file.is_file() and ckpt.is_file()):
        return None
    saved = json.loads(state_file.read_text())
    if differing_keys(saved["config"], identity):
        remedy = remedy or f"use the same config to resume it, or another output folder (or delete {ckpt})"
        raise refusal(f"{folder} holds an interrupted {what} (MLflow run {saved['run_id']})", saved["config"],
                      identity, remedy)
    log.info("resuming interrupted %s %s from %s", what, saved["run_id"], ckpt)
    return str(saved["run_id"])


def remember(folder: Path, run_id: str, identity: Mapping[str, Any], *, state: str = STATE,
             checkpoint: str = CHECKPOINT, **extra: Any) -> Path:
    """Record the work being trained in ``folder`` (run id, identity, ``extra`` fields); returns the
    checkpoint path the training loop writes."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    record = {"run_id": run_id, **extra, "config": dict(identity)}
    (Path(folder) / state).write_text(json.dumps(record, indent=2, default=str))
    return Path(folder) / checkpoint


def forget(folder: Path, *, state: str = STATE, checkpoint: str = CHECKPOINT) -> None:
    """The work in ``folder`` has finished: nothing to resume any more."""
    for name in (checkpoint, state):
        (Path(folder) / name).unlink(missing_ok=True)


# --- in the tracking store: a sweep's parent and children ----------------------------------------------

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
        raise TrackingError(f"sweep run {parent.info.run_id} is being run by process {parent.data.tags[T.PID]}; "
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
