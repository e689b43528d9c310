"""The start every run kind shares: data, tracking store, experiment, device, threads, then the MLflow run.

A single run, a sweep's parent, a one-class run and a pretraining all begin with :func:`start` and
open their MLflow run with :meth:`RunContext.open_run`, so the same steps happen once, in the same
order, everywhere: the tracking store is configured and checked once per run (a team store that is
down fails in seconds, :func:`medlora.tracking.store.check_store`), before the data are prepared when
this function prepares them; the experiment is named after the data (:func:`.session.experiment_name`);
the device is resolved (this rank's own GPU under torchrun) and torch's threads set. What a run logs
when it opens (params, tags, config, data card, dataset) is :mod:`.session`'s.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..config import Config
from ..device import configure_threads, resolve_device
from ..io.prepare import PreparedData
from ..tracking import mlflow_run as track
from ..train.distributed import Dist
from ..transforms.samples import prepare_samples
from .session import experiment_name, open_run


@dataclass
class RunContext:
    """What a run starts from; ``data`` are the prepared samples (or images) the run logs as its input."""

    cfg: Config
    data: PreparedData
    uri: str  # the tracking store in use
    experiment: str
    device: torch.device

    def open_run(self, method: str, role: str = "run", **kwargs: Any) -> AbstractContextManager[Any]:
        """The run's MLflow run (:func:`.session.open_run`; ``run_id`` resumes one)."""
        return open_run(self.cfg, self.data, method, role, **kwargs)


def start(cfg: Config, out: Path | None = None, data: PreparedData | None = None, dist: Dist | None = None,
          ) -> RunContext:
    """Configure tracking (the store checked once), prepare ``cfg``'s samples into ``out`` unless
    ``data`` are given (under torchrun on rank 0, sent to the others), name the experiment, resolve
    the device and set the threads."""
    dist = dist or Dist()
    uri = track.configure(cfg.tracking)
    if data is None:
        if out is None:
            raise ValueError("start() prepares the samples into an output folder: give out (or data)")
        data = dist.main_first(lambda: prepare_samples(cfg.data, cfg.preprocess, Path(out)))
    device = dist.place(resolve_device(cfg.train.device))
    configure_threads(cfg.train.threads)
    return RunContext(cfg, data, uri, experiment_name(cfg, data), device)

