"""Thin helpers over MLflow's fluent API so stages log in one consistent layout.

The tracking URI is ``tracking.uri`` when set, else ``MLFLOW_TRACKING_URI``, else MLflow's own
default local store. Experiments are named after the dataset. Params are the whole resolved
config, flattened (``train.lr``, ``model.lora.r`` ...), so runs compare column by column in the UI.
A new experiment is tagged as model training (the UI opens on its runs table) and given medlora's
table view (:mod:`.view`). On a local SQLite store a new experiment keeps its artifacts in ``mlruns/``
beside the database file (:func:`artifact_location`), wherever the command runs from: MLflow's own
default, ``./mlruns`` of the working directory, splits a store from its artifacts when the next
command runs elsewhere.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from ..config import TrackingConfig
from ..train.distributed import is_main_process
from . import tags as T
from . import view

log = logging.getLogger(__name__)
MAX_PARAM_CHARS = 6000


def configure(cfg: TrackingConfig) -> str:
    """Point MLflow at the configured store; returns the URI in use."""
    import mlflow

    from .sqlite_seed import seed_sqlite_store
    from .store import check_store

    if cfg.uri:
        mlflow.set_tracking_uri(cfg.uri)
    uri = mlflow.get_tracking_uri()
    check_store(uri)
    seed_sqlite_store(uri)  # a new local store: copied from an empty migrated one, not migrated again  # a team store that is down or refuses the credentials fails in seconds, not minutes
    return uri


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of the store ``uri`` keeps its artifacts: ``mlruns/`` beside a local SQLite
    file; ``None`` (the store's own default) for any other store."""
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme != "sqlite" or not parts.path or parts.path in {"/", "/:memory:"}:
        return None
    path = Path(uri.split("sqlite:///", 1)[1]) if uri.startswith("sqlite:///") else Path(parts.path)
    return (path.resolve().parent / "mlruns").as_uri()


def ensure_experiment(experiment: str) -> None:
    """Create ``experiment`` with its artifacts beside a local SQLite store, if it does not exist yet."""
    import mlflow
    from mlflow.exceptions import MlflowException

    where = artifact_location(mlflow.get_tracking_uri())
    if where is None or mlflow.get_experiment_by_name(experiment) is not None:
        return
    try:
        mlflow.create_experiment(experiment, artifact_location=where)
    except MlflowException:  # created meanwhile by another process of the same sweep
        if mlflow.get_experiment_by_name(experiment) is None:
            raise


@contextmanager
def start_run(experiment: str, run_name: str | None = None, tags: Mapping[str, str] | None = None,
              nested: bool = False, run_id: str | None = None, task: str = "binary") -> Iterator[Any]:
    """Start (or resume) an MLflow run in ``experiment``; ends it FAILED/KILLED on errors. ``task``
    (``data.task``) decides the headline columns of the experiment's table view (:mod:`.view`)."""
    import mlflow

    if run_id is None and not (nested and mlflow.active_run()):  # a nested run goes with its parent
        ensure_experiment(experiment)
        exp = mlflow.set_experiment(experiment)
        if T.EXPERIMENT_KIND not in exp.tags:
            mlflow.set_experiment_tag(T.EXPERIMENT_KIND, T.MODEL_TRAINING)
        state = view.updated_state(exp.tags.get(view.VIEW_TAG), task)
        if state is not None:
            mlflow.set_experiment_tag(view.VIEW_TAG, state)
        log.info("MLflow runs table of %r with medlora's columns: <UI address>/%s", experiment,
                 view.table_path(exp.experiment_id))
    status = "FINISHED"
    with mlflow.start_run(run_name=run_name, tags=dict(tags or {}), nested=nested, run_id=run_id) as run:
        try:
            yield run
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            try:
                mlflow.end_run(status=status)
            except Exception:  # noqa: BLE001 - the store went away: the error already raised tells more
                if status == "FINISHED":
                    raise
                log.warning("could not mark run %s %s: the tracking store did not answer", run.info.run_id, status)


@contextmanager
def download_bars_on_terminal() -> Iterator[None]:
    """MLflow's per-download progress bars only when stderr is a terminal, not in a log file."""
    import os
    import sys

    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    os.environ[name] = str(sys.stderr.isatty()).lower()
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into ``a.b.c`` keys (MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def log_config(config: Mapping[str, Any], name: str = "config.yaml") -> None:
    """Log the resolved config as flattened params and as a YAML artifact."""
    import mlflow

    params = {k: ("" if v is None else str(v))[:MAX_PARAM_CHARS] for k, v in flatten(dict(config)).items()}
    items = list(params.items())
    for i in range(0, len(items), 100):
        mlflow.log_params(dict(items[i : i + 100]))
    mlflow.log_text(yaml.safe_dump(dict(config), sort_keys=False), name)


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite numeric metrics (NaN/None are skipped: MLflow cannot compare them)."""
    import math

    import mlflow

    clean = {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(float(v))}
    if clean and is_main_process():  # under torchrun, only rank 0 logs
        mlflow.log_metrics(clean, step=step)


def log_table(frame, name: str) -> None:
    """Log a pandas frame as a CSV artifact."""
    import mlflow

    if not is_main_process():
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        frame.to_csv(path, index=False)
        mlflow.log_artifact(str(path))


def log_artifact(path: Path, artifact_path: str | None = None) -> None:
    import mlflow

    if not is_main_process():
        return
    if Path(path).is_dir():
        mlflow.log_artifacts(str(path), artifact_path=artifact_path)
    else:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)


def log_data_card(card: Any | None) -> None:
    """Log a validated :class:`~medlora.io.datacard.DataCard` with the active run: its text as the
    artifact ``data_card.md`` and tags ``medlora.data_card.name`` / ``medlora.data_card.version``.
    ``None`` (no ``data.card`` configured) logs nothing."""
    import mlflow

    if card is None:
        return
    mlflow.log_text(card.text, "data_card.md")
    mlflow.set_tags({T.DATA_CARD_NAME: card.name, T.DATA_CARD_VERSION: str(card.version)})
