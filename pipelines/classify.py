"""Study classification (normal vs abnormal) on 2D DICOM images with a LoRA-adapted ViT.

ingest → split → MONAI cached datasets → timm + peft → train → study-level evaluation →
MLflow → adapter export → review bundle. Wiring only: every step is a library function.
"""

from __future__ import annotations

import logging
from pathlib import Path

from medlora.config import Config
from medlora.device import configure_threads, resolve_device
from medlora.evaluate.plots import plot_roc
from medlora.experiment import resume
from medlora.experiment.session import experiment_name, open_run
from medlora.experiment.train_eval import train_and_evaluate
from medlora.export.metadata import run_metadata
from medlora.export.stage import run_export
from medlora.io.prepare import prepare_dataset
from medlora.models.build import build_model
from medlora.summary import RunSummary
from medlora.tracking import mlflow_run as track
from medlora.train.features import prefix_loaders
from medlora.train.loaders import make_datasets, make_loader
from medlora.transforms.pipeline import manifest_items

log = logging.getLogger(__name__)


def run(cfg: Config, out: Path) -> RunSummary:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prior = resume.resumable_run(cfg, out)  # an interrupted run of this config in out: continue it
    data = prepare_dataset(cfg.data, cfg.preprocess)
    uri = track.configure(cfg.tracking)
    experiment = experiment_name(cfg, data)
    with open_run(cfg, data, cfg.model.method, run_id=prior, log_inputs=prior is None) as mlrun:
        checkpoint = resume.remember(out, mlrun.info.run_id, cfg)
        built = build_model(cfg, out)
        track.log_metrics({"trainable_params": built.params.trainable, "total_params": built.params.total})
        device = resolve_device(cfg.train.device)
        configure_threads(cfg.train.threads)
        model = built.model.to(device)
        datasets = make_datasets(data, cfg, built.data_config)
        loaders = {s: make_loader(ds, cfg.train, shuffle=s == "train") for s, ds in datasets.items()}
        # LoRA on the upper blocks only, no augmentation: the frozen blocks below run once per image
        split = prefix_loaders(model, datasets, lambda ds, shuffle: make_loader(ds, cfg.train, shuffle), device,
                               augment=cfg.preprocess.augment)
        trained, loaders = split or (model, loaders)
        result = train_and_evaluate(trained, loaders, cfg, device, built.params.trainable, out=out,
                                    checkpoint=checkpoint)

        op = result.evaluation.operating_point
        plot_roc(result.test_studies.label, result.test_studies.score, out / "roc.png", operating_point=op)
        track.log_artifact(out / "roc.png")
        # the bundle is written inside the run: FINISHED only with a bundle, FAILED with the reason otherwise
        items = {item["sample_id"]: item for item in manifest_items(data.manifest, data.root)}
        run_export(out, model, run_metadata(cfg, built, op, mlrun.info.run_id, data.fingerprint), uri, items=items)
        resume.forget(out)
    return RunSummary(mlrun.info.run_id, experiment, uri, out, result.metrics, str(built.params))
