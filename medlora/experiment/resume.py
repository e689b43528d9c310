"""Resuming an interrupted single run in the same MLflow run, from its last epoch checkpoint.

While a run trains, its output folder holds ``checkpoint.pt`` (:mod:`medlora.train.checkpoint`)
and ``resume.json`` (the MLflow run id and the resolved config). ``medlora run`` with the same
config and ``--out`` continues that run; a different config is refused, naming the keys that
differ. Both files are removed when the run has finished.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ..config import Config, config_to_dict
from ..errors import ConfigError
from ..tracking.mlflow_run import flatten

log = logging.getLogger(__name__)
STATE, CHECKPOINT = "resume.json", "checkpoint.pt"
SPEED_ONLY = {"train.device", "train.num_workers", "train.threads", "train.compile"}  # change speed, not results


def _comparable(config: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in flatten(config).items() if k not in SPEED_ONLY}


def resumable_run(cfg: Config, out: Path) -> str | None:
    """The MLflow run id an interrupted run of ``cfg`` left in ``out``, or ``None`` to start afresh."""
    state, checkpoint = Path(out) / STATE, Path(out) / CHECKPOINT
    if not (state.is_file() and checkpoint.is_file()):
        return None
    saved = json.loads(state.read_text())
    before, now = _comparable(saved["config"]), _comparable(config_to_dict(cfg))
    differ = sorted(k for k in before.keys() | now.keys() if before.get(k) != now.get(k))
    if differ:
        shown = "; ".join(f"{k}: {before.get(k)!r} in the checkpoint, {now.get(k)!r} now" for k in differ[:5])
        raise ConfigError(f"{out} holds an interrupted run (MLflow run {saved['run_id']}) with another config "
                          f"({len(differ)} keys differ: {shown}); use the same config to resume it, or another "
                          f"--out (or delete {checkpoint}) to start a new run")
    log.info("resuming interrupted run %s from %s", saved["run_id"], checkpoint)
    return str(saved["run_id"])


def remember(out: Path, run_id: str, cfg: Config) -> Path:
    """Record the run being trained in ``out``; returns the checkpoint path the loop writes."""
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / STATE).write_text(json.dumps({"run_id": run_id, "config": config_to_dict(cfg)}, indent=2))
    return Path(out) / CHECKPOINT


def forget(out: Path) -> None:
    """The run in ``out`` has finished: nothing to resume any more."""
    for name in (CHECKPOINT, STATE):
        (Path(out) / name).unlink(missing_ok=True)
