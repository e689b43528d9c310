"""One tracked run: ingest → model → train → study-level evaluation → MLflow → export → review bundle.

The MLflow run is marked FINISHED only once the bundle is written (a failure anywhere marks it
FAILED with the reason). An interrupted run continues from its last epoch in the same MLflow run
(:mod:`.resume`). Under torchrun the same function runs on every rank (:mod:`medlora.train.distributed`):
rank 0 ingests and sends the prepared data to the others, all ranks train and score their shards,
and only rank 0 writes files, logs and exports.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

from ..bundle.continued import continue_adapter
from ..bundle.metadata import run_metadata
from ..config import Config, config_to_dict
from ..evaluate.plots import plot_roc
from ..models.build import build_model
from ..summary import RunSummary
from ..tracking import mlflow_run as track
from ..train.distributed import from_env, local_batch_size
from ..train.features import prefix_loaders
from ..train.loaders import make_datasets, make_loader
from ..transforms.pipeline import manifest_items
from . import resume
from .context import start
from .export import run_export
from .feature_stats import write_feature_stats
from .head_input import settle_head_norm
from .study import study_training
from .train_eval import run_head, study_subgroups, train_and_evaluate

log = logging.getLogger(__name__)
# what to do instead of resuming an interrupted run of another config in the same --out
REMEDY = "use the same config to resume it, or another --out (or delete {}) to start a new run"


def run_single(cfg: Config, out: Path) -> RunSummary:
    """Train, evaluate and export ``cfg``'s model; everything under ``out``, tracked in MLflow."""
    cfg = settle_head_norm(cfg)
    dist = from_env()
    local_batch_size(cfg.train.batch_size, dist)  # refuse an uneven split before any work
    out = Path(out)
    prior = None
    if dist.is_main:
        out.mkdir(parents=True, exist_ok=True)
        prior = resume.find_unfinished(out, config_to_dict(cfg), remedy=REMEDY.format(out / resume.CHECKPOINT))
    ctx = start(cfg, out, dist=dist)
    data, device = ctx.data, ctx.device
    with ctx.open_run(cfg.model.method, run_id=prior, log_inputs=prior is None) as mlrun, \
            tempfile.TemporaryDirectory() as scratch:
        checkpoint = resume.remember(out, mlrun.info.run_id, config_to_dict(cfg)) if dist.is_main else None
        built = build_model(cfg, out if dist.is_main else Path(scratch))  # the same seeded base on every rank
        lineage = continue_adapter(built.model, built.base, cfg.model.lora, cfg.model.adapter) \
            if cfg.model.adapter is not None else None  # a received adapter, continued on this site's studies
        track.log_metrics({"trainable_params": built.params.trainable, "total_params": built.params.total})
        model = built.model.to(device)
        datasets = make_datasets(data, cfg, built.data_config)

        def loader(ds, shuffle: bool):
            return make_loader(ds, cfg.train, shuffle, dist)

        loaders = {s: loader(ds, s == "train") for s, ds in datasets.items()}
        study = study_training(model, datasets, cfg, device, dist) \
            if cfg.preprocess.view.aggregate == "attention" else None  # trained on bags of studies
        trainable = built.params.trainable
        if study is not None:
            trained, loaders = study.trained, study.loaders
            trainable = sum(p.numel() for p in study.study_model.parameters() if p.requires_grad)
        else:  # LoRA on the upper blocks only, no augmentation: the frozen blocks below run once per image
            split = prefix_loaders(model, datasets, loader, device, augment=cfg.preprocess.augment,
                                   every_sample=lambda ds, shuffle: make_loader(ds, cfg.train, shuffle))
            trained, loaders = split or (model, loaders)
        result = train_and_evaluate(trained, loaders, cfg, device, trainable,
                                    out=out if dist.is_main else None, checkpoint=checkpoint, dist=dist,
                                    head=run_head(cfg, data), subgroups=study_subgroups(data, cfg),
                                    augment=study.augment if study is not None else True)
        if dist.is_main:
            stats = write_feature_stats(model, datasets, cfg, device, out)  # familiarity, shipped in the bundle
            if stats is not None:
                track.log_artifact(stats)
            op = result.evaluation.operating_point if result.evaluation is not None else None
            if op is not None:  # the binary task, or "any finding" of a multi-label/multi-class one
                plot_roc(result.test_studies.label, result.test_studies.score, out / "roc.png", operating_point=op)
                track.log_artifact(out / "roc.png")
            items = {item["sample_id"]: item for item in manifest_items(data.manifest, data.root)}
            thresholds = {f.name: f.threshold for f in result.multi.findings} if result.multi else None
            modalities = data.manifest["modality"].fillna("unknown").astype(str).value_counts().to_dict()
            # a multi-class run without data.normal has no operating point: its bundle calls the arg-max class
            calibration = result.evaluation.calibration if result.evaluation is not None else {"method": "none"}
            meta = run_metadata(cfg, built, op, mlrun.info.run_id, data.fingerprint, calibration,
                                {str(k): int(v) for k, v in modalities.items()}, thresholds)
            if lineage is not None:
                meta["lineage"] = {**lineage, "data": {"name": cfg.data.name, "fingerprint": data.fingerprint}}
            run_export(out, model, meta, ctx.uri, items=items,
                       aggregator=study.study_model.pool if study is not None else None)
            resume.forget(out)
        dist.barrier()  # the other ranks end with rank 0, after its export
    return RunSummary(mlrun.info.run_id if mlrun else "", ctx.experiment, ctx.uri, out, result.metrics, str(built.params))
