"""Train one model, evaluate it at the study level and log both to the active MLflow run.

Shared by every run that trains a model (a single run trains one, a sweep one per point), so the
metric names, artifacts and evaluation protocol are the same everywhere: per-epoch
``train_loss``/``val_auroc``/``train_lr``; at the end ``val_auroc``, ``best_epoch``,
:func:`~medlora.evaluate.report.flat_metrics` (``test_auroc``, ``test_auprc``, ``test_sensitivity``,
``test_specificity`` with ``_ci_low``/``_ci_high``, ...), ``trainable_params``, ``train_seconds``,
``train_data_seconds`` (of it, waiting for and augmenting batches), ``train_images_per_second`` and
``peak_memory_mb``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Subset

from ..config import Config
from ..evaluate.findings import MultiResult, evaluate_findings, flat_multi_metrics, mean_auroc, study_matrix
from ..evaluate.findings import to_json as multi_to_json
from ..evaluate.report import EvaluationResult, flat_metrics, to_json
from ..evaluate.stage import StudyScores, run_evaluate, study_auroc, study_scores, test_subgroups
from ..io.findings import decode_column
from ..io.prepare import PreparedData
from ..io.subgroups import subgroup_table
from ..models.lora import for_inference
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from ..train.bags import BagAugment, predict_studies
from ..train.distributed import Dist
from ..train.features import FeatureDataset
from ..train.head import Head, head_for
from ..train.inference import Predictions, predict
from ..train.loop import EpochLog, TrainResult, fit
from ..transforms.augment import BatchAugment

log = logging.getLogger(__name__)


@dataclass
class ExperimentResult:
    """What :func:`train_and_evaluate` measured; ``metrics`` is exactly what was logged at the end."""

    fit: TrainResult
    val: Predictions
    test: Predictions
    evaluation: EvaluationResult | None  # binary; for multiclass/multilabel the "any finding" evaluation, if any
    test_studies: StudyScores
    metrics: dict[str, float]
    multi: MultiResult | None = None  # multiclass/multilabel: per finding (class), macro and micro

    def predictions(self) -> pd.DataFrame:
        """Per-sample validation and test scores with a ``split`` column."""
        return pd.concat([self.val.frame().assign(split="val"), self.test.frame().assign(split="test")])


def train_and_evaluate(model: nn.Module, loaders: Mapping[str, Any], cfg: Config, device: torch.device,
                       trainable_params: int, out: Path | None = None, augment: bool = True,
                       checkpoint: Path | None = None, dist: Dist | None = None, head: Head | None = None,
                       subgroups: pd.DataFrame | None = None) -> ExperimentResult:
    """Train ``model`` on ``loaders['train']`` (early stopping on ``loaders['val']``), evaluate on
    ``loaders['test']`` and log per-epoch and final metrics to the active MLflow run.

    Training batches are augmented (seeded by ``train.seed``) when ``preprocess.augment`` and
    ``augment`` (``False`` where the loader yields features rather than images). With
    ``checkpoint``, training saves its state there after every epoch and continues from it. Under
    torchrun (``dist``) every rank trains and scores its shard; scores are gathered on every rank and
    only rank 0 writes files and logs.

    With ``out``, ``predictions.csv`` (per sample), ``test_studies.csv`` (per test study: the scores a
    paired DeLong test compares; several findings: ``test_findings.csv`` too, per study and finding) and
    ``metrics.json`` are written there and logged as artifacts.

    ``head`` (:func:`~medlora.train.head.head_for`; default from ``cfg`` without positive weights)
    decides the task: multiclass and multilabel runs are evaluated per finding
    (:mod:`medlora.evaluate.findings`), logged as ``test_auroc.<finding>``, ``test_auroc_macro``, ...
    ``subgroups`` (one row per study: ``study_key`` and the ``evaluate.subgroups`` columns) gives
    per-subgroup metrics (``test_subgroup_<column>_<value>_...``; multi-label: of "any finding").
    With ``preprocess.view.aggregate: attention`` the loaders yield bags of studies
    (:mod:`medlora.experiment.study`) and the predictions carry each slice's ``attention``.
    """
    head = head or head_for(cfg, train_findings(loaders["train"]) if cfg.train.pos_weight else None)
    study = cfg.preprocess.view.aggregate == "attention"  # a study-level model on bags of slices (experiment.study)
    augmenter = (BagAugment if study else BatchAugment)(seed=cfg.train.seed) if augment and cfg.preprocess.augment \
        else None
    result = fit(
        model, loaders["train"], loaders["val"], cfg.train, device, abnormal_index(cfg), val_metric=val_metric(cfg, head),
        on_epoch=log_epoch, augment=augmenter, checkpoint=checkpoint, dist=dist, head=head,
    )
    return evaluate_trained(model, result, loaders, cfg, device, trainable_params, head, out=out, dist=dist,
                            subgroups=subgroups)


def abnormal_index(cfg: Config) -> int:
    """The abnormal class's output index (binary), else 0."""
    return cfg.data.classes.index(cfg.data.abnormal) if cfg.data.task == "binary" else 0


def val_metric(cfg: Config, head: Head) -> Callable[[Predictions], float]:
    """Early stopping's metric: the study-level AUROC, or its mean over findings."""
    how, names = cfg.preprocess.view.aggregate, head.names

    def metric(p: Predictions) -> float:
        return mean_auroc(study_matrix(p.frame(), names, how)) if head.multi else study_auroc(p.frame(), how)

    return metric


def log_epoch(e: EpochLog) -> None:
    """One epoch's metrics in the active MLflow run, at step ``epoch``."""
    track.log_metrics({"train_loss": e.train_loss, "val_auroc": e.val_auroc, "train_lr": e.lr}, step=e.epoch)


def evaluate_trained(model: nn.Module, result: TrainResult, loaders: Mapping[str, Any], cfg: Config,
                     device: torch.device, trainable_params: int, head: Head, out: Path | None = None,
                     dist: Dist | None = None, subgroups: pd.DataFrame | None = None,
                     test: Predictions | None = None) -> ExperimentResult:
    """The second half of :func:`train_and_evaluate`: ``model``, trained (``result``), evaluated on
    ``loaders['test']`` and its final metrics and files logged, as after ``fit`` (also for a model trained
    elsewhere, e.g. among other LoRA points: :mod:`medlora.train.together`, which passes the ``test``
    predictions it scored for all its points in one pass)."""
    how, names, abnormal = cfg.preprocess.view.aggregate, head.names, abnormal_index(cfg)
    # the best epoch's validation predictions are those of the restored weights (eval mode is deterministic)
    dist = dist or Dist()
    # a study model's final scores: one row per slice with its study's score and the slice's attention
    study = how == "attention"
    if study:
        val = dist.gather_studies(predict_studies(model, loaders["val"], device, abnormal, head),
                                  loaders["val"].dataset.study_order())
        test = dist.gather_studies(predict_studies(for_inference(model), loaders["test"], device, abnormal, head),
                                   loaders["test"].dataset.study_order())
    else:  # evaluation in fp32 whatever the training precision
        val = result.best_val or dist.gather_predictions(predict(model, loaders["val"], device, abnormal, head,
                                                                 autocast=False))
        test = test or dist.gather_predictions(predict(for_inference(model), loaders["test"], device, abnormal, head,
                                                       autocast=False))
    multi = test_matrix = None
    if head.multi:
        test_matrix = study_matrix(test.frame(), names, how)
        multi = evaluate_findings(study_matrix(val.frame(), names, how), test_matrix,
                                  names, cfg.evaluate, cfg.data.task, head.normal, cfg.data.ordinal, cfg.train.seed,
                                  subgroups=test_subgroups(test.frame(), subgroups))
        evaluation, test_studies = multi.any_finding, study_scores(test.frame(), how)
        scores = flat_multi_metrics(multi)
    else:
        evaluation, _, test_studies = run_evaluate(val.frame(), test.frame(), cfg.evaluate, how, seed=cfg.train.seed,
                                                   subgroups=test_subgroups(test.frame(), subgroups))
        scores = flat_metrics(evaluation)
    metrics = {**scores, "val_auroc": result.best_val_auroc, "best_epoch": result.best_epoch,
               "train_seconds": result.train_seconds, "train_data_seconds": result.data_seconds,
               "train_images_per_second": result.images_per_second,
               "peak_memory_mb": result.peak_memory_mb, "trainable_params": trainable_params}
    track.log_metrics(metrics, step=len(result.history))
    if dist.is_main:
        import mlflow

        mlflow.set_tag(T.PRECISION, result.precision)
    done = ExperimentResult(result, val, test, evaluation, test_studies, metrics, multi)
    if out is not None and dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        done.predictions().to_csv(out / "predictions.csv", index=False)
        test_studies.frame().to_csv(out / "test_studies.csv", index=False)
        # multiclass/multilabel: the "any finding" evaluation at the top (what reports read), per finding under "multi"
        doc = {**(to_json(evaluation) if evaluation is not None else {}),
               **({"multi": {**multi_to_json(multi), "settings": multi_settings(cfg)}} if multi is not None else {})}
        (out / "metrics.json").write_text(json.dumps(doc, indent=2, default=float))
        files = ["predictions.csv", "test_studies.csv", "metrics.json"]
        if test_matrix is not None:  # per finding, for the sweep's paired DeLong tests
            test_matrix.frame(names).to_csv(out / "test_findings.csv", index=False)
            files.append("test_findings.csv")
        for name in files:
            track.log_artifact(out / name)
    log.info("val_auroc=%.3f test_auroc=%.3f (%.1f s training)", result.best_val_auroc,
             metrics.get("test_auroc", metrics.get("test_auroc_macro", float("nan"))), result.train_seconds)
    return done


def multi_settings(cfg: Config) -> dict[str, Any]:
    """How the per-finding numbers were computed (interval level, resamples, operating-point policy):
    what a report needs to label them, also when there is no "any finding" evaluation."""
    ev = cfg.evaluate
    return {"policy": ev.operating_point, "n_bootstrap": ev.bootstrap, "ci": ev.ci, "seed": cfg.train.seed,
            "min_per_class": ev.min_per_class}


def train_findings(loader: Any) -> np.ndarray:
    """The ``(n, findings)`` targets of a training loader's samples (a dataset of manifest items, cached
    features, or a few-shot subset of either), for ``train.pos_weight``."""
    ds, pick = loader.dataset, slice(None)
    if isinstance(ds, Subset):
        ds, pick = ds.dataset, np.asarray(ds.indices)
    if isinstance(ds, FeatureDataset):
        matrix = ds.features.findings[ds.positions]
    else:  # a MONAI dataset: its ``data`` are the manifest items
        matrix = np.stack([np.asarray(item["findings"], dtype=float) for item in ds.data])
    return matrix[pick]


def run_head(cfg: Config, data: PreparedData) -> Head:
    """The head of ``cfg`` with positive weights from ``data``'s training split (``train.pos_weight``)."""
    train = data.split("train")
    findings = decode_column(train["findings"], len(cfg.data.outputs)) if "findings" in train.columns else None
    return head_for(cfg, findings if cfg.train.pos_weight else None)


def study_subgroups(data: PreparedData, cfg: Config) -> pd.DataFrame | None:
    """One row per study with its ``evaluate.subgroups`` fields (:func:`~medlora.io.subgroups.subgroup_table`)."""
    return subgroup_table(data.manifest, cfg.data, cfg.evaluate.subgroups) if cfg.evaluate.subgroups else None
