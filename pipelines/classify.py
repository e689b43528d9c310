"""Study classification (normal vs abnormal) on 2D DICOM images with a LoRA-adapted ViT.

ingest → split → MONAI cached datasets → timm + peft → train → study-level evaluation →
MLflow → adapter export. Wiring only: every step is a library function.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from medlora.config import Config, config_to_dict
from medlora.device import resolve_device
from medlora.evaluate.plots import plot_roc
from medlora.evaluate.report import flat_metrics, to_json
from medlora.evaluate.stage import run_evaluate, study_auroc
from medlora.export.adapter import write_export
from medlora.io.prepare import prepare_dataset
from medlora.models.build import build_model
from medlora.summary import RunSummary
from medlora.tracking import mlflow_run as track
from medlora.train.inference import predict
from medlora.train.loaders import make_loaders
from medlora.train.loop import fit

log = logging.getLogger(__name__)


def run(cfg: Config, out: Path) -> RunSummary:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_dataset(cfg.data)
    uri = track.configure(cfg.tracking)
    experiment = cfg.tracking.experiment or cfg.data.name
    how = cfg.preprocess.view.aggregate
    abnormal = cfg.data.classes.index(cfg.data.abnormal)
    tags = {"medlora.dataset": cfg.data.name, "medlora.dataset_fingerprint": data.fingerprint,
            "medlora.pipeline": cfg.pipeline, "medlora.method": cfg.model.method}
    with track.start_run(experiment, run_name=f"{cfg.model.method}-{cfg.model.backbone}", tags=tags) as mlrun:
        track.log_config(config_to_dict(cfg))
        track.log_table(data.skipped, "ingest_report.csv")
        track.log_table(data.public_manifest(), "manifest.csv")
        built = build_model(cfg, out)
        track.log_metrics({"trainable_params": built.params.trainable, "total_params": built.params.total})
        device = resolve_device(cfg.train.device)
        model = built.model.to(device)
        loaders = make_loaders(data, cfg, built.data_config)
        result = fit(
            model, loaders["train"], loaders["val"], cfg.train, device, abnormal,
            val_metric=lambda p: study_auroc(p.frame(), how),
            on_epoch=lambda e: track.log_metrics({"train_loss": e.train_loss, "val_auroc": e.val_auroc, "lr": e.lr}, step=e.epoch),
        )
        val, test = predict(model, loaders["val"], device, abnormal), predict(model, loaders["test"], device, abnormal)
        evaluation, _, test_studies = run_evaluate(val.frame(), test.frame(), cfg.evaluate, how, seed=cfg.train.seed)
        metrics = {**flat_metrics(evaluation), "val_auroc": result.best_val_auroc, "best_epoch": result.best_epoch,
                   "train_seconds": result.train_seconds, "train_images_per_second": result.images_per_second,
                   "peak_memory_mb": result.peak_memory_mb, "trainable_params": built.params.trainable}
        track.log_metrics(metrics, step=len(result.history))

        frames = [val.frame().assign(split="val"), test.frame().assign(split="test")]
        import pandas as pd

        pd.concat(frames).to_csv(out / "predictions.csv", index=False)
        (out / "metrics.json").write_text(json.dumps(to_json(evaluation), indent=2, default=float))
        op = evaluation.operating_point
        plot_roc(test_studies.label, test_studies.score, out / "roc.png", operating_point=op)
        write_export(out, model, {
            "method": cfg.model.method,
            "base": built.base.to_dict(),
            "lora": cfg.model.lora.model_dump(mode="json") if cfg.model.method == "lora" else None,
            "preprocess": {**built.data_config, **cfg.preprocess.model_dump(mode="json", exclude={"image_size", "augment"})},
            "labels": {"classes": cfg.data.classes, "abnormal": cfg.data.abnormal, "abnormal_index": abnormal},
            "operating_point": {"policy": op.policy, "threshold": op.threshold, "aggregate": how},
            "mlflow_run_id": mlrun.info.run_id,
            "dataset": {"name": cfg.data.name, "fingerprint": data.fingerprint},
        })
        for name in ("predictions.csv", "metrics.json", "roc.png", "medlora.json"):
            track.log_artifact(out / name)
        track.log_artifact(out / "adapter", "adapter")
    return RunSummary(mlrun.info.run_id, experiment, uri, out, metrics, str(built.params))
