"""Few-shot sweeps: every (method, shots, seed) trained and evaluated on one shared setup, tracked
as one MLflow parent run with one nested child run per point, resumable after any interruption.

Built once per sweep: the prepared data, the MONAI datasets (one cached training set; support
sets are :class:`~torch.utils.data.Subset` index views of it), the frozen base model (each child
starts from a deep copy, so LoRA, linear probing and full fine-tuning never see each other's
weights) and, for linear probes, the backbone features of every sample (:mod:`.features`).

Resuming: the parent run is found again by a hash of the sweep's config and the dataset
fingerprint (tag ``medlora.sweep_hash``), a child by the hash of its own resolved config (tag
``medlora.config_hash``). A rerun skips FINISHED children, marks children left RUNNING by a dead
process KILLED, and trains everything else again; summaries count exactly one FINISHED child per
point. MLflow writes each run's status transactionally, so a SIGKILL at any moment leaves at worst
a RUNNING child that the next run marks KILLED.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch import nn
from torch.utils.data import Subset

from ..config import Config, config_to_dict
from ..device import configure_threads, resolve_device
from ..errors import MedloraError
from ..io.prepare import PreparedData
from ..models.backbone import create_base
from ..models.build import input_config
from ..models.lora import apply_method, count_params
from ..models.prefix import SuffixModel, frozen_prefix_depth
from ..summary import RunSummary
from ..tracking import compare as cmp
from ..tracking import mlflow_run as track
from .experiment import (
    ExperimentResult,
    experiment_name,
    log_dataset,
    mlflow_dataset,
    run_tags,
    train_and_evaluate,
)
from .features import FeatureDataset, FeatureSet, extract_features, prefix_token_sets, probe_head
from .fewshot import (
    SupportSet,
    SweepPoint,
    check_shots,
    draw_support,
    point_config,
    point_hash,
    sweep_hash,
    sweep_points,
)
from .loaders import make_datasets, make_loader

log = logging.getLogger(__name__)
HOST_TAG, PID_TAG = "medlora.host", "medlora.pid"


@dataclass
class SweepSummary(RunSummary):
    """What ``medlora run`` prints after a sweep."""

    table: str = ""
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        lines = [f"sweep {self.run_id} in experiment {self.experiment!r} ({self.tracking_uri}): "
                 f"{self.ran} child runs trained, {self.skipped} already finished, {len(self.failed)} failed",
                 self.table, f"summary: {self.out / 'summary.md'}  learning curve: {self.out / 'learning_curve.png'}",
                 f"compare again: medlora compare {self.experiment} --tracking-uri {self.tracking_uri}"]
        if self.failed:
            lines.append("failed: " + ", ".join(self.failed) + " (rerun the same command to retry them)")
        return "\n".join(line for line in lines if line)


class Workbench:
    """What every child of a sweep shares, built once: base model, datasets, cached features."""

    def __init__(self, cfg: Config, data: PreparedData, out: Path) -> None:
        self.cfg, self.data = cfg, data
        self.device = resolve_device(cfg.train.device)
        self.num_classes = len(cfg.data.classes)
        self.base, self.base_info = create_base(cfg.model, self.num_classes, init_dir=Path(out) / "base",
                                                seed=cfg.train.seed)
        self.base.requires_grad_(False)
        self.input_cfg = input_config(self.base, cfg.preprocess.image_size)
        self.train_frame = data.split("train").reset_index(drop=True)
        self.datasets = make_datasets(data, cfg, self.input_cfg)  # augmentation runs on batches, in training
        self._features: dict[str, FeatureSet] | None = None
        self._tokens: dict[int, dict[str, FeatureSet] | None] = {}  # frozen-prefix tokens by depth (None: too big)
        self.mlflow_dataset = mlflow_dataset(data, cfg.data.name)  # every child logs it as its input

    def model_for(self, cfg: Config, point: SweepPoint) -> nn.Module:
        """A fresh copy of the base with a seeded new head and the point's method applied."""
        model = copy.deepcopy(self.base)
        torch.manual_seed(point.seed)
        model.reset_classifier(self.num_classes)
        return apply_method(model, point.method, cfg.model.lora)

    def features(self) -> dict[str, FeatureSet]:
        """Pre-logits features of every train/val/test sample, computed on first use (no augmentation)."""
        if self._features is None:
            model = self.base.to(self.device)
            self._features = {s: extract_features(model, make_loader(ds, self.cfg.train, shuffle=False), self.device,
                                                  desc=f"features {s}") for s, ds in self.datasets.items()}
            self.base.to("cpu")
        return self._features

    def prefix(self, model: nn.Module, cfg: Config, support: SupportSet) -> tuple[nn.Module, dict[str, Any]] | None:
        """``(SuffixModel, loaders over cached tokens)`` when ``model`` trains only above frozen blocks and
        images are not augmented: the tokens below are computed once per sweep, from the shared base."""
        depth = 0 if cfg.preprocess.augment else frozen_prefix_depth(model)
        if not depth:
            return None
        if depth not in self._tokens:  # the frozen blocks are the base's own: one pass serves every child
            self._tokens[depth] = prefix_token_sets(self.base, self.datasets,
                                                    lambda ds, shuffle: make_loader(ds, self.cfg.train, shuffle),
                                                    self.device, depth)
            self.base.to("cpu")
        t = self._tokens[depth]
        if t is None:
            return None
        sets = {"train": FeatureDataset(t["train"], support.positions), "val": FeatureDataset(t["val"]),
                "test": FeatureDataset(t["test"])}
        return SuffixModel(model, depth), {s: make_loader(ds, cfg.train, shuffle=s == "train") for s, ds in sets.items()}

    def loaders(self, cfg: Config, point: SweepPoint, support: SupportSet) -> dict[str, Any]:
        """Loaders of one child: the support set of the training data, all of val and test."""
        if point.method == "linear_probe":
            f = self.features()
            sets = {"train": FeatureDataset(f["train"], support.positions), "val": FeatureDataset(f["val"]),
                    "test": FeatureDataset(f["test"])}
        else:
            sets = {"train": Subset(self.datasets["train"], support.positions.tolist()), "val": self.datasets["val"],
                    "test": self.datasets["test"]}
        return {s: make_loader(ds, cfg.train, shuffle=s == "train") for s, ds in sets.items()}


def child_params(cfg: Config, point: SweepPoint, support: SupportSet) -> dict[str, Any]:
    """Flat params of a child run, the same names for every method (LoRA ones for LoRA only)."""
    params: dict[str, Any] = {"method": point.method, "shots": point.shots, "seed": point.seed,
                              "backbone": cfg.model.backbone, "lr": cfg.train.lr, "epochs": cfg.train.epochs,
                              "batch_size": cfg.train.batch_size, "weight_decay": cfg.train.weight_decay,
                              "augment": cfg.preprocess.augment and point.method != "linear_probe",
                              "support_patients": len(support.patient_keys), "support_samples": len(support.positions),
                              "support_hash": support.key_hash}
    if point.method == "lora":
        lora = cfg.model.lora
        params.update({"lora_r": lora.r, "lora_alpha": lora.alpha, "lora_targets": lora.targets,
                       "lora_dropout": lora.dropout, "lora_use_dora": lora.use_dora, "lora_use_rslora": lora.use_rslora})
    return {k: str(v) for k, v in params.items()}


def _alive_elsewhere(run: Any) -> bool:
    """Whether a RUNNING run belongs to another live process on this host."""
    tags = run.data.tags
    if tags.get(HOST_TAG) != socket.gethostname() or not str(tags.get(PID_TAG, "")).isdigit():
        return False
    pid = int(tags[PID_TAG])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_parent(client: Any, experiment_id: str, digest: str) -> Any | None:
    """The newest parent run of the sweep with hash ``digest``; error when another live process holds it."""
    runs = cmp.search_all(client, experiment_id, f"tags.`{cmp.SWEEP_HASH_TAG}` = '{digest}' and "
                                                 f"tags.`{cmp.ROLE_TAG}` = 'sweep'")
    if not runs:
        return None
    parent = max(runs, key=lambda r: r.info.start_time)
    if parent.info.status == "RUNNING" and _alive_elsewhere(parent):
        raise MedloraError(f"sweep run {parent.info.run_id} is being run by process {parent.data.tags[PID_TAG]}; "
                           "wait for it or stop it first")
    return parent


def reconcile_children(client: Any, parent: Any) -> tuple[set[str], set[str]]:
    """(config hashes already FINISHED, hashes running in another live process); stale RUNNING → KILLED."""
    finished, busy = set(), set()
    for run in cmp.child_runs(client, parent):
        digest = run.data.tags.get(cmp.POINT_HASH_TAG)
        if run.info.status == "FINISHED":
            finished.add(digest)
        elif run.info.status == "RUNNING":
            if _alive_elsewhere(run):
                busy.add(digest)
            else:
                log.warning("child run %s (%s) was left RUNNING by a dead process: marking it KILLED",
                            run.info.run_id, run.info.run_name)
                client.set_terminated(run.info.run_id, status="KILLED")
    return finished, busy


def run_child(bench: Workbench, cfg: Config, point: SweepPoint, experiment: str, tags: dict[str, str],
              out: Path) -> ExperimentResult:
    """Train and evaluate one point as a nested MLflow run of the active parent."""
    import mlflow

    support = draw_support(bench.train_frame, point.shots, point.seed)
    tags = {**tags, cmp.SUPPORT_TAG: support.key_hash}
    with track.start_run(experiment, run_name=point.name, tags=tags, nested=True):
        mlflow.log_params(child_params(cfg, point, support))
        mlflow.log_text(pd.Series(sorted(support.patient_keys)).to_csv(index=False, header=["patient_key"]),
                        "support_set.csv")
        mlflow.log_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False), "config.yaml")
        log_dataset(bench.data, cfg.data.name, context="train", dataset=bench.mlflow_dataset)
        model = bench.model_for(cfg, point)
        trainable = count_params(model).trainable
        split = bench.prefix(model, cfg, support) if point.method == "lora" else None
        model, loaders = split or (model, bench.loaders(cfg, point, support))
        if point.method == "linear_probe":
            track.log_metrics({"feature_seconds": sum(f.seconds for f in bench.features().values())})
            model = probe_head(model)
        torch.manual_seed(point.seed)
        return train_and_evaluate(model.to(bench.device), loaders, cfg, bench.device, trainable, out=out,
                                  augment=point.method != "linear_probe")


def summarise(client: Any, parent: Any, out: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(children, summary, DeLong) of a parent's FINISHED children; writes and logs the summary files."""
    children = cmp.children_frame(cmp.child_runs(client, parent))
    if children.empty:
        return children, pd.DataFrame(), pd.DataFrame()
    studies = {}
    with track.download_bars_on_terminal(), tempfile.TemporaryDirectory() as tmp:
        for row in children.itertuples():
            path = client.download_artifacts(row.run_id, "test_studies.csv", tmp)
            studies[(row.method, row.shots, row.seed)] = pd.read_csv(path, dtype={"study_key": str, "patient_key": str})
    summary = cmp.summary_table(children)
    delong = cmp.paired_delong(studies, reference="lora")
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    delong.to_csv(out / "delong.csv", index=False)
    children.to_csv(out / "children.csv", index=False)
    text = ["# Few-shot sweep summary", "", "mean ± sd over seeds; one FINISHED child run per (method, shots, seed)", "",
            cmp.markdown_table(cmp.format_summary(summary)), "",
            "## DeLong paired tests on the same test studies (clustered by patient)", "",
            cmp.markdown_table(cmp.format_delong(delong)) if not delong.empty else "(no pairs to compare)"]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    cmp.plot_learning_curve(summary, out / "learning_curve.png")
    for name in ("summary.csv", "summary.md", "delong.csv", "children.csv", "learning_curve.png"):
        track.log_artifact(out / name)
    return children, summary, delong


def run_sweep(cfg: Config, data: PreparedData, out: Path) -> SweepSummary:
    """Run (or resume) the few-shot sweep of ``cfg.fewshot`` on ``data``; results and summary under ``out``."""
    import mlflow
    from mlflow import MlflowClient
    from tqdm.auto import tqdm

    if cfg.fewshot is None:
        raise MedloraError("the fewshot pipeline needs a 'fewshot:' section in the config")
    t0 = time.perf_counter()
    out = Path(out)
    check_shots(data.split("train"), cfg.fewshot)
    configure_threads(cfg.train.threads)
    uri = track.configure(cfg.tracking)
    experiment = experiment_name(cfg, data)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = MlflowClient(uri)
    digest = sweep_hash(cfg, data.fingerprint)
    base_tags = run_tags(cfg, data)
    owner = {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())}
    parent = find_parent(client, experiment_id, digest)
    finished, busy = reconcile_children(client, parent) if parent else (set(), set())
    ran, failed = 0, []
    name = f"fewshot-{cfg.model.backbone}"
    with track.start_run(experiment, run_name=name, run_id=parent.info.run_id if parent else None,
                         tags={**base_tags, cmp.ROLE_TAG: "sweep", cmp.SWEEP_HASH_TAG: digest}) as mlparent:
        mlflow.set_tags(owner)
        if parent is None:
            track.log_config(config_to_dict(cfg))
            track.log_table(data.public_manifest(), "manifest.csv")
            log_dataset(data, cfg.data.name, context="sweep")
            track.log_data_card(data.card)
        else:
            log.info("resuming sweep run %s: %d child runs already finished", parent.info.run_id, len(finished))
        bench: Workbench | None = None
        points = sweep_points(cfg.fewshot)
        for point in tqdm(points, desc="sweep", disable=not sys.stderr.isatty()):
            pcfg = point_config(cfg, point)
            phash = point_hash(pcfg, point, data.fingerprint)
            if phash in finished or phash in busy:
                continue
            bench = bench or Workbench(cfg, data, out)
            tags = {**base_tags, **owner, cmp.ROLE_TAG: "child", cmp.POINT_HASH_TAG: phash, "medlora.method": point.method}
            log.info("child %s", point.name)
            try:
                run_child(bench, pcfg, point, experiment, tags, out / "children" / point.name)
                ran += 1
            except MedloraError as err:  # this point cannot be measured (e.g. one class); the others can
                log.error("child %s failed: %s", point.name, err)
                failed.append(point.name)
        children, summary, _ = summarise(client, client.get_run(mlparent.info.run_id), out)
        track.log_metrics({"children_finished": len(children), "children_failed": len(failed)})
    table = cmp.markdown_table(cmp.format_summary(summary)) if not summary.empty else "(no finished child runs)"
    log.info("sweep finished in %.1f s: %d trained, %d skipped", time.perf_counter() - t0, ran, len(finished))
    return SweepSummary(mlparent.info.run_id, experiment, uri, out, {}, "", table, ran, len(finished), failed)
