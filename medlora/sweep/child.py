"""Where one sweep point runs: its support set drawn, its model trained and evaluated as a child run.

The local executor (:mod:`.driver`) and every Ray task (:mod:`.ray_executor`) call :func:`run_child`,
so a point is trained, evaluated and logged the same way wherever it runs: a nested MLflow run of
the sweep's parent (or the child run a Ray task has claimed, :mod:`.claims`), with the support set's
patients (``support_set.csv``), its size and hash as params, and the metrics and files of
:func:`~medlora.experiment.train_eval.train_and_evaluate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..config import Config
from ..experiment.session import open_run, run_name
from ..experiment.study import study_training
from ..experiment.train_eval import ExperimentResult, evaluate_trained, log_epoch, train_and_evaluate
from ..models.lora import count_params
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from ..train.features import probe_head
from ..train.head import Head
from ..train.inference import Predictions
from ..train.loop import TrainResult
from ..train.support import SupportSet, draw_support
from .points import SweepPoint
from .workbench import Workbench


@contextmanager
def child_run(bench: Workbench, cfg: Config, point: SweepPoint, support: SupportSet, tags: dict[str, str],
              dataset: Any | None = None, run_id: str | None = None) -> Iterator[None]:
    """The point's child run (nested in the active parent, or the claimed ``run_id``), open, with its
    support set's params, tag and ``support_set.csv`` logged."""
    import mlflow

    params = {"shots": point.shots, "seed": point.seed, "support_patients": len(support.patient_keys),
              "support_samples": len(support.positions), "support_hash": support.key_hash}
    with open_run(cfg, bench.data, point.method, role="child", nested=True, params=params, dataset=dataset,
                  name=run_name(cfg, point.method, point.shots, point.seed), run_id=run_id,
                  tags={**tags, T.SUPPORT_HASH: support.key_hash}):
        mlflow.log_text(pd.Series(sorted(support.patient_keys)).to_csv(index=False, header=["patient_key"]),
                        "support_set.csv")
        yield


def run_child(bench: Workbench, cfg: Config, point: SweepPoint, tags: dict[str, str], out: Path,
              dataset: Any | None = None, run_id: str | None = None) -> ExperimentResult:
    """Train and evaluate one point as a nested MLflow run of the active parent (or in the child
    run ``run_id`` a Ray worker has claimed, :mod:`.ray_executor`), with the per-subgroup metrics of
    ``evaluate.subgroups`` as a single run logs them (the workbench's study table, from
    :func:`~medlora.experiment.train_eval.study_subgroups`)."""
    support = draw_support(bench.train_frame, point.shots, point.seed, names=cfg.data.outputs)
    with child_run(bench, cfg, point, support, tags, dataset, run_id):
        model = bench.model_for(cfg, point)
        if point.method == "linear_probe":
            track.log_metrics({"feature_seconds": sum(f.seconds for f in bench.features().values())})
        if cfg.preprocess.view.aggregate == "attention":
            return _study_child(bench, cfg, point, support, model, out)
        trainable = count_params(model).trainable
        split = bench.prefix(model, cfg, support) if cfg.model.method == "lora" else None
        model, loaders = split or (model, bench.loaders(cfg, point, support))
        if point.method == "linear_probe":
            model = probe_head(model)
        torch.manual_seed(point.seed)
        return train_and_evaluate(model.to(bench.device), loaders, cfg, bench.device, trainable, out=out,
                                  augment=point.method != "linear_probe", subgroups=bench.subgroups)


def _study_child(bench: Workbench, cfg: Config, point: SweepPoint, support: SupportSet, model: nn.Module,
                 out: Path) -> ExperimentResult:
    """A study-level point (``aggregate: attention``): the support set's studies as bags; a linear probe's
    pooling trains on the sweep's cached slice features."""
    torch.manual_seed(point.seed)
    study = study_training(model.to(bench.device), bench.sample_sets(point, support), cfg, bench.device,
                           encoded=point.method == "linear_probe")
    trainable = sum(p.numel() for p in study.study_model.parameters() if p.requires_grad)
    return train_and_evaluate(study.trained, study.loaders, cfg, bench.device, trainable, out=out,
                              augment=study.augment, subgroups=bench.subgroups)


def log_trained_child(bench: Workbench, cfg: Config, point: SweepPoint, support: SupportSet, model: nn.Module,
                      result: TrainResult, head: Head, tags: dict[str, str], out: Path,
                      dataset: Any | None = None, test: Predictions | None = None) -> ExperimentResult:
    """A point trained elsewhere (among other LoRA points, :mod:`.together`), in its child run: its
    per-epoch history, then the evaluation, metrics and files of a point trained here (``test``: its test
    predictions, already scored there)."""
    with child_run(bench, cfg, point, support, tags, dataset):
        for entry in result.history:
            log_epoch(entry)
        loaders = bench.loaders(cfg, point, support)
        return evaluate_trained(model.to(bench.device), result, loaders, cfg, bench.device, count_params(model).trainable,
                                head, out=out, subgroups=bench.subgroups, test=test)
