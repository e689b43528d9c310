"""One-class anomaly detection: features of normal training studies only → distance-based score.

Binary tasks score abnormal against normal; multi-label and multi-class (with ``data.normal``) tasks
score "any finding" against normal (:func:`medlora.io.findings.normal_vs_abnormal`).

ingest → split → frozen (or LoRA-adapted, ``oneclass.adapter``) ViT features, computed once →
kNN / Mahalanobis fitted on normal training samples → study-level evaluation with the
operating point chosen on validation → MLflow. ``pipeline: oneclass`` (``pipelines/oneclass.py``) runs it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from torch.utils.data import Subset

from ..config import Config
from ..evaluate.plots import plot_roc
from ..evaluate.report import flat_metrics, to_json
from ..evaluate.stage import run_evaluate, study_auroc, test_subgroups
from ..io.findings import normal_vs_abnormal
from ..models.anomaly import AnomalyScorer
from ..models.build import input_config
from ..summary import RunSummary
from ..tracking import mlflow_run as track
from ..train.features import extract_features
from ..train.loaders import make_datasets, make_loader
from .context import start
from .train_eval import study_subgroups


def _feature_model(cfg: Config, out: Path):
    """(model, input config): the frozen base, or the base with a medlora export's adapter merged."""
    if cfg.oneclass.adapter is not None:
        from ..bundle.bundle import open_bundle
        from ..bundle.loading import load_model

        bundle = open_bundle(cfg.oneclass.adapter)
        _, size, mean, std = bundle.preprocess()
        return load_model(bundle, merge=True), {"image_size": size, "mean": mean, "std": std}
    from ..models.backbone import create_base

    base, _ = create_base(cfg.model, len(cfg.data.classes), init_dir=out / "base", seed=cfg.train.seed)
    return base.eval(), input_config(base, cfg.preprocess.image_size)


def _frame(feats, scores: np.ndarray, split: pd.DataFrame, cfg: Config) -> pd.DataFrame:
    """Samples known normal (label 0) or abnormal (label 1) with their scores; neither is left out."""
    if len(split) != len(scores):
        raise ValueError(f"one-class scores of {len(scores)} samples for a split of {len(split)} rows")
    normal, abnormal = normal_vs_abnormal(split, cfg.data)
    frame = pd.DataFrame({**feats.keys, "label": abnormal.astype(int), "score": scores})
    return frame[normal | abnormal].reset_index(drop=True)


def run_oneclass(cfg: Config, out: Path) -> RunSummary:
    """Fit ``cfg.oneclass``'s score on the normal training studies and evaluate it; files under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ctx = start(cfg, out)
    data, device = ctx.data, ctx.device
    with ctx.open_run(f"oneclass-{cfg.oneclass.score}") as mlrun:
        model, input_cfg = _feature_model(cfg, out)
        model.to(device)
        datasets = make_datasets(data, cfg, input_cfg, cache=False)
        train = datasets["train"]
        normal_idx = np.flatnonzero(normal_vs_abnormal(data.split("train"), cfg.data)[0]).tolist()
        feats = {
            "train": extract_features(model, make_loader(Subset(train, normal_idx), cfg.train, False), device, "normal train"),
            "val": extract_features(model, make_loader(datasets["val"], cfg.train, False), device, "val"),
            "test": extract_features(model, make_loader(datasets["test"], cfg.train, False), device, "test"),
        }
        scorer = AnomalyScorer(cfg.oneclass.score, cfg.oneclass.k).fit(feats["train"].features.numpy())
        val, test = (_frame(feats[s], scorer.score(feats[s].features.numpy()), data.split(s), cfg) for s in ("val", "test"))
        evaluation, _, test_studies = run_evaluate(val, test, cfg.evaluate, cfg.preprocess.view.aggregate,
                                                   seed=cfg.train.seed, probabilities=False,
                                                   subgroups=test_subgroups(test, study_subgroups(data, cfg)))
        metrics = {**flat_metrics(evaluation), "val_auroc": study_auroc(val, cfg.preprocess.view.aggregate),
                   "normal_train_samples": len(normal_idx)}
        track.log_metrics(metrics)
        pd.concat([val.assign(split="val"), test.assign(split="test")]).to_csv(out / "predictions.csv", index=False)
        (out / "metrics.json").write_text(json.dumps(to_json(evaluation), indent=2))
        plot_roc(test_studies.label, test_studies.score, out / "roc.png", operating_point=evaluation.operating_point)
        for name in ("predictions.csv", "metrics.json", "roc.png"):
            track.log_artifact(out / name)
    return RunSummary(mlrun.info.run_id, ctx.experiment, ctx.uri, out, metrics, f"one-class {cfg.oneclass.score} on "
                      f"{len(normal_idx)} normal training samples"
                      + ("" if cfg.data.task == "binary" else " (any finding vs no finding)"))
