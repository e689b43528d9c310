"""Few-shot sweeps: every (method, shots, seed) trained and evaluated on one shared setup, tracked
as one MLflow parent run with one nested child run per point, resumable after any interruption.

The shared setup (base model, datasets, cached features) is a :class:`~medlora.train.workbench.Workbench`,
built once, on the first point that still has to run. Resuming (:mod:`medlora.tracking.resume`): the
parent is found again by the hash of the sweep's config and the dataset fingerprint, a child by the
hash of its own resolved config; FINISHED children are skipped, children left RUNNING by a dead
process are marked KILLED, everything else is trained again; summaries count exactly one FINISHED
child per point.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..config import Config
from ..device import configure_threads
from ..errors import MedloraError, TrackingUnavailableError
from ..io.prepare import PreparedData
from ..models.lora import count_params
from ..summary import RunSummary
from ..tracking import compare as cmp
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from ..tracking.dataset import mlflow_dataset
from ..tracking.resume import find_parent, owner_tags, reconcile_children
from ..train.features import probe_head
from ..train.fewshot import (
    SweepPoint,
    check_shots,
    draw_support,
    point_config,
    point_hash,
    sweep_hash,
    sweep_points,
)
from ..train.workbench import Workbench
from .session import experiment_name, open_run, run_name, run_tags
from .train_eval import ExperimentResult, study_subgroups, train_and_evaluate

log = logging.getLogger(__name__)


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


def run_child(bench: Workbench, cfg: Config, point: SweepPoint, tags: dict[str, str], out: Path,
              dataset: Any | None = None, run_id: str | None = None) -> ExperimentResult:
    """Train and evaluate one point as a nested MLflow run of the active parent (or in the child
    run ``run_id`` a Ray worker has claimed, :mod:`.ray_executor`), with the per-subgroup metrics of
    ``evaluate.subgroups`` as a single run logs them (the workbench's study table, from
    :func:`~medlora.experiment.train_eval.study_subgroups`)."""
    import mlflow

    support = draw_support(bench.train_frame, point.shots, point.seed, names=cfg.data.outputs)
    params = {"shots": point.shots, "seed": point.seed, "support_patients": len(support.patient_keys),
              "support_samples": len(support.positions), "support_hash": support.key_hash}
    with open_run(cfg, bench.data, point.method, role="child", nested=True, params=params, dataset=dataset,
                  name=run_name(cfg, point.method, point.shots, point.seed), run_id=run_id,
                  tags={**tags, T.SUPPORT_HASH: support.key_hash}):
        mlflow.log_text(pd.Series(sorted(support.patient_keys)).to_csv(index=False, header=["patient_key"]),
                        "support_set.csv")
        model = bench.model_for(cfg, point)
        trainable = count_params(model).trainable
        split = bench.prefix(model, cfg, support) if point.method == "lora" else None
        model, loaders = split or (model, bench.loaders(cfg, point, support))
        if point.method == "linear_probe":
            track.log_metrics({"feature_seconds": sum(f.seconds for f in bench.features().values())})
            model = probe_head(model)
        torch.manual_seed(point.seed)
        return train_and_evaluate(model.to(bench.device), loaders, cfg, bench.device, trainable, out=out,
                                  augment=point.method != "linear_probe", subgroups=bench.subgroups)


def summarise(client: Any, parent: Any, out: Path, outputs: Sequence[str] | None = None,
              ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(children, summary, DeLong) of a parent's FINISHED children; writes and logs the summary files
    and logs the summary as parent metrics (``<metric>_mean.<method>.<shots>shot``).

    Binary sweeps summarise ``test_auroc`` and the operating-point metrics; multi-class/multi-label
    sweeps (:func:`~medlora.tracking.compare.summary_metric_names`) the macro AUROC and each
    finding's (``outputs``: the findings or classes, for their order), with a learning curve of the
    macro AUROC and small multiples per finding (``learning_curves_findings.png``).
    """
    from mlflow.exceptions import MlflowException

    children = cmp.children_frame(cmp.child_runs(client, parent))
    if children.empty:
        return children, pd.DataFrame(), pd.DataFrame()
    summary = cmp.summary_table(children, cmp.summary_metric_names(children, outputs))
    multi = cmp.headline_metric(summary) == cmp.MACRO
    studies, findings = {}, {}
    keys = {"study_key": str, "patient_key": str}
    with track.download_bars_on_terminal(), tempfile.TemporaryDirectory() as tmp:
        for row in children.itertuples():
            point = (row.method, row.shots, row.seed)
            studies[point] = pd.read_csv(client.download_artifacts(row.run_id, "test_studies.csv", tmp), dtype=keys)
            if multi and outputs:
                try:
                    findings[point] = pd.read_csv(client.download_artifacts(row.run_id, "test_findings.csv", tmp),
                                                  dtype=keys)
                except (OSError, MlflowException) as err:  # a child logged before per-finding tables existed
                    log.warning("child %s has no test_findings.csv (%s): left out of the per-finding DeLong tests",
                                row.run_id, type(err).__name__)
    delong = cmp.paired_delong(studies, reference="lora")
    delong_findings = cmp.paired_delong_findings(findings, outputs or [], reference="lora")
    out.mkdir(parents=True, exist_ok=True)
    summary.to_csv(out / "summary.csv", index=False)
    delong.to_csv(out / "delong.csv", index=False)
    children.to_csv(out / "children.csv", index=False)
    note = ("test AUROC per finding (test_auroc.<finding>) and their mean (test_auroc_macro); " if multi else "")
    text = ["# Few-shot sweep summary", "", note + "mean ± sd over seeds; one FINISHED child run per (method, shots, seed)",
            "", cmp.markdown_table(cmp.format_summary(summary)), "",
            "## DeLong paired tests on the same test studies (clustered by patient)"
            + (" of the any-finding score" if multi else ""), "",
            cmp.markdown_table(cmp.format_delong(delong)) if not delong.empty else "(no pairs to compare)"]
    if not delong_findings.empty:
        delong_findings.to_csv(out / "delong_findings.csv", index=False)
        text += ["", "## DeLong paired tests per finding (studies with the finding unknown left out)", "",
                 cmp.markdown_table(cmp.format_delong(delong_findings))]
    (out / "summary.md").write_text("\n".join(text) + "\n")
    cmp.plot_learning_curve(summary, out / "learning_curve.png")
    files = ["summary.csv", "summary.md", "delong.csv", "children.csv", "learning_curve.png"]
    if not delong_findings.empty:
        files.append("delong_findings.csv")
    if multi:
        cmp.plot_finding_curves(summary, out / "learning_curves_findings.png")
        files.append("learning_curves_findings.png")
    for name in files:
        track.log_artifact(out / name)
    track.log_metrics(cmp.summary_metrics(summary))
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
    check_shots(data.split("train"), cfg.fewshot, cfg.data.outputs)
    subgroups = study_subgroups(data, cfg)  # a field no study has fails here, before any training
    configure_threads(cfg.train.threads)
    uri = track.configure(cfg.tracking)
    experiment = experiment_name(cfg, data)
    client = MlflowClient(uri)
    digest = sweep_hash(cfg, data.fingerprint)
    parent = find_parent(client, mlflow.set_experiment(experiment).experiment_id, digest)
    finished, busy = reconcile_children(client, parent) if parent else (set(), set())
    if parent is not None:
        log.info("resuming sweep run %s: %d child runs already finished", parent.info.run_id, len(finished))
    ran, failed = 0, []
    owner = owner_tags()
    base_tags = run_tags(cfg, data)
    with open_run(cfg, data, "fewshot", role="sweep", name=run_name(cfg, "fewshot"),
                  run_id=parent.info.run_id if parent else None, log_inputs=parent is None,
                  tags={T.SWEEP_HASH: digest}) as mlparent:
        mlflow.set_tags(owner)
        bench: Workbench | None = None
        dataset = None
        todo = [(p, c, point_hash(c, p, data.fingerprint)) for p in sweep_points(cfg.fewshot) for c in [point_config(cfg, p)]]
        todo = [(p, c, h) for p, c, h in todo if h not in finished and h not in busy]
        if cfg.fewshot.executor == "ray" and todo:  # the points as Ray tasks; the local loop below then has none
            from .ray_executor import run_on_ray

            ran, failed = run_on_ray(cfg, data, out, todo, uri, mlparent.info.run_id, {**base_tags, **owner})
            todo = []
        for point, pcfg, phash in tqdm(todo, desc="sweep", disable=not sys.stderr.isatty()):
            bench = bench or Workbench(cfg, data, out, subgroups=subgroups)
            dataset = dataset or mlflow_dataset(data, cfg.data.name)  # built once, logged by every child
            log.info("child %s", point.name)
            try:
                run_child(bench, pcfg, point, {**base_tags, **owner, T.POINT_HASH: phash},
                          out / "children" / point.name, dataset=dataset)
                ran += 1
            except TrackingUnavailableError:  # the store went away: stop; rerunning resumes
                raise
            except MedloraError as err:  # this point cannot be measured (e.g. one class); the others can
                log.error("child %s failed: %s", point.name, err)
                failed.append(point.name)
        children, summary, _ = summarise(client, client.get_run(mlparent.info.run_id), out, cfg.data.outputs)
        track.log_metrics({"children_finished": len(children), "children_failed": len(failed)})
    table = cmp.markdown_table(cmp.format_summary(summary)) if not summary.empty else "(no finished child runs)"
    log.info("sweep finished in %.1f s: %d trained, %d skipped", time.perf_counter() - t0, ran, len(finished))
    return SweepSummary(mlparent.info.run_id, experiment, uri, out, {}, "", table, ran, len(finished), failed)
