"""The de-identified manifest as the run's MLflow dataset input (``mlflow.log_input``)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def _no_integer_schema_hint() -> Iterator[None]:
    """MLflow's hint about integer columns concerns model signatures, not dataset inputs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer", category=UserWarning)
        yield


def mlflow_dataset(data: Any, name: str) -> Any:
    """The de-identified manifest of ``data`` (a :class:`~medlora.io.prepare.PreparedData`) as an
    MLflow dataset, with its schema and profile computed once, here."""
    import mlflow

    frame = data.public_manifest()
    with _no_integer_schema_hint():
        dataset = mlflow.data.from_pandas(frame, name=name, targets="label" if "label" in frame else None,
                                          digest=data.fingerprint)
        _ = dataset.schema, dataset.profile
    return dataset


def log_dataset(data: Any, name: str, context: str, dataset: Any | None = None) -> None:
    """Log the manifest as the active run's dataset input; ``dataset`` reuses one built by
    :func:`mlflow_dataset` (a sweep logs the same one with every child)."""
    import mlflow

    with _no_integer_schema_hint():
        mlflow.log_input(dataset if dataset is not None else mlflow_dataset(data, name), context=context)
