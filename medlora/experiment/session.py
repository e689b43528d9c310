"""The start of every tracked run: experiment, name, tags, params, config, data card, ingest report, dataset.

Every run kind (a single run, a sweep parent, a sweep child, one-class, pretraining) opens its
MLflow run through :func:`open_run` (the parents by way of :class:`.context.RunContext`), so they log the same names and compare column by column in the
MLflow UI: params are the flattened resolved config (``train.lr``, ``model.lora.r`` ...) plus the
short keys ``method``, ``backbone``, ``shots`` and ``seed``; run names say the method, backbone and
dataset (and shots/seed in a sweep) plus a short hash of the resolved config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from .. import __version__
from ..config import Config, config_to_dict
from ..provenance import git_commit
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from ..tracking.dataset import log_dataset
from ..train.distributed import is_main_process


def experiment_name(cfg: Config, data: Any) -> str:
    """The MLflow experiment: ``tracking.experiment``, else the data card's name, else ``data.name``."""
    card = getattr(data, "card", None)
    return cfg.tracking.experiment or (getattr(card, "name", None) if card is not None else None) or cfg.data.name


def run_tags(cfg: Config, data: Any) -> dict[str, str]:
    """Tags that say which data and code produced a run (dataset fingerprint, card, git commit, version)."""
    tags = {T.DATASET: cfg.data.name, T.DATASET_FINGERPRINT: data.fingerprint, T.PIPELINE: cfg.pipeline,
            T.VERSION: __version__}
    commit = git_commit()
    if commit:
        tags[T.GIT_COMMIT] = commit
    scheme = getattr(data, "key_scheme", None)
    if scheme:
        tags[T.KEY_SCHEME] = str(scheme)
    card = getattr(data, "card", None)
    if card is not None:
        tags[T.DATA_CARD_NAME] = str(card.name)
        tags[T.DATA_CARD_VERSION] = str(card.version)
    return tags


def config_hash(cfg: Config) -> str:
    """Six hex digits of the resolved config: runs that differ in any setting get different names."""
    return hashlib.sha256(json.dumps(config_to_dict(cfg), sort_keys=True).encode()).hexdigest()[:6]


def short_params(cfg: Config, method: str, shots: Any = "all", seed: int | None = None) -> dict[str, Any]:
    """The short keys every run kind logs beside the flattened config."""
    return {"method": method, "backbone": cfg.model.backbone, "shots": shots,
            "seed": cfg.train.seed if seed is None else seed}


def run_name(cfg: Config, method: str, shots: Any = None, seed: int | None = None) -> str:
    """``method-backbone-dataset[-Kshot-seedS]-hash``: tells runs apart in the MLflow table."""
    parts = [method, cfg.model.backbone, cfg.data.name]
    if shots is not None:
        parts.append(f"{shots}shot")
    if seed is not None:
        parts.append(f"seed{seed}")
    return "-".join([*parts, config_hash(cfg)])


@contextmanager
def open_run(cfg: Config, data: Any, method: str, role: str = "run", *, name: str | None = None,
             params: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None,
             nested: bool = False, run_id: str | None = None, dataset: Any | None = None,
             log_inputs: bool = True) -> Iterator[Any]:
    """Start (or, with ``run_id``, resume) the MLflow run of ``cfg`` on ``data`` and log what every
    run logs: the resolved config (flattened params + ``config.yaml``), the short params, the data
    card, the ingest report, the de-identified manifest and the dataset input.

    ``role`` is the ``medlora.role`` tag (``run``, ``sweep``, ``child``); ``params`` are extra
    params; ``dataset`` reuses an MLflow dataset built once (a sweep's children);
    ``log_inputs=False`` skips the data logging (a resumed run already has it). The run ends
    FINISHED when the block completes, FAILED (or KILLED on Ctrl-C) when it raises. Under
    torchrun only rank 0 has a run: the other ranks get ``None`` and log nothing. The tracking store
    is the one :func:`.context.start` configured (once per run: a sweep's children share it).
    """
    import mlflow

    if not is_main_process():
        yield None
        return
    all_tags = {**run_tags(cfg, data), T.ROLE: role, T.METHOD: method, **(tags or {})}
    with track.start_run(experiment_name(cfg, data), run_name=name or run_name(cfg, method), tags=all_tags,
                         nested=nested, run_id=run_id, task=cfg.data.task) as run:
        if log_inputs:
            # the short keys first: a process killed while the long config is logged still leaves a run
            # (KILLED by the next sweep) whose method/shots/seed/backbone columns are filled
            extra = {**short_params(cfg, method), **(params or {})}
            mlflow.log_params({k: str(v) for k, v in extra.items()})
            track.log_config(config_to_dict(cfg))
            if not nested:  # children share their parent's data: the parent holds card and tables
                track.log_data_card(getattr(data, "card", None))
                track.log_table(data.public_report(), "ingest_report.csv")  # no paths: they stay local
                track.log_table(data.public_manifest(), "manifest.csv")
            log_dataset(data, cfg.data.name, context="sweep" if role == "sweep" else "train", dataset=dataset)
        yield run
