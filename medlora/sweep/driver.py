"""Few-shot sweeps: every (method, shots, seed) trained and evaluated on one shared setup, tracked
as one MLflow parent run with one nested child run per point, resumable after any interruption.

The driver opens (or finds again) the parent run, works out which points still have to run, runs
them (here, one after another, or as Ray tasks, :mod:`.ray_executor`; each point in
:func:`.child.run_child`) and ends with the summary (:mod:`.summary`). The shared setup (base model,
datasets, cached features) is a :class:`~.workbench.Workbench`, built once, on the first point
that still has to run. Resuming follows :mod:`medlora.experiment.resume`: the parent is found again
by the hash of the sweep's config and the dataset fingerprint, a child by the hash of its own
resolved config (:mod:`.points`); FINISHED children are skipped, children left RUNNING by a dead
process are marked KILLED, everything else is trained again; summaries count exactly one FINISHED
child per point.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import ConfigError, MedloraError, TrackingUnavailableError
from ..experiment.context import RunContext, start
from ..experiment.head_input import settle_head_norm
from ..experiment.resume import find_parent, owner_tags, reconcile_children
from ..experiment.session import run_name, run_tags
from ..experiment.train_eval import study_subgroups
from ..io.prepare import PreparedData
from ..summary import RunSummary
from ..tracking import mlflow_run as track
from ..tracking import tags as T
from ..tracking.dataset import mlflow_dataset
from ..train.support import check_shots
from . import compare as cmp
from .child import run_child
from .points import SweepPoint, point_config, point_hash, sweep_hash, sweep_points
from .summary import summarise
from .together import plan_groups, run_group
from .workbench import Workbench

log = logging.getLogger(__name__)
Todo = list[tuple[SweepPoint, Config, str]]  # the points still to run: (point, its config, its hash)


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


def run_sweep(cfg: Config, data: PreparedData, out: Path) -> SweepSummary:
    """Run (or resume) the few-shot sweep of ``cfg.fewshot`` on ``data``; results and summary under ``out``."""
    import mlflow
    from mlflow import MlflowClient

    if cfg.fewshot is None:
        raise ConfigError("the fewshot pipeline needs a 'fewshot:' section in the config")
    cfg = settle_head_norm(cfg)
    t0 = time.perf_counter()
    out = Path(out)
    check_shots(data.split("train"), cfg.fewshot, cfg.data.outputs)
    subgroups = study_subgroups(data, cfg)  # a field no study has fails here, before any training
    ctx = start(cfg, out, data)
    client = MlflowClient(ctx.uri)
    digest = sweep_hash(cfg, data.fingerprint)
    parent = find_parent(client, mlflow.set_experiment(ctx.experiment).experiment_id, digest)
    finished, busy = reconcile_children(client, parent) if parent else (set(), set())
    if parent is not None:
        log.info("resuming sweep run %s: %d child runs already finished", parent.info.run_id, len(finished))
    owner = owner_tags()
    tags = {**run_tags(cfg, data), **owner}
    with ctx.open_run("fewshot", role="sweep", name=run_name(cfg, "fewshot"),
                      run_id=parent.info.run_id if parent else None, log_inputs=parent is None,
                      tags={T.SWEEP_HASH: digest}) as mlparent:
        mlflow.set_tags(owner)
        todo = [(p, c, point_hash(c, p, data.fingerprint)) for p in sweep_points(cfg.fewshot) for c in [point_config(cfg, p)]]
        todo = [(p, c, h) for p, c, h in todo if h not in finished and h not in busy]
        if cfg.fewshot.executor == "ray" and todo:
            from .ray_executor import run_on_ray

            ran, failed = run_on_ray(cfg, data, out, todo, ctx.uri, mlparent.info.run_id, tags)
        else:
            ran, failed = run_local(ctx, out, todo, tags, subgroups)
        children, summary, _ = summarise(client, client.get_run(mlparent.info.run_id), out, cfg.data.outputs)
        track.log_metrics({"children_finished": len(children), "children_failed": len(failed)})
    table = cmp.markdown_table(cmp.format_summary(summary)) if not summary.empty else "(no finished child runs)"
    log.info("sweep finished in %.1f s: %d trained, %d skipped", time.perf_counter() - t0, ran, len(finished))
    return SweepSummary(mlparent.info.run_id, ctx.experiment, ctx.uri, out, {}, "", table, ran, len(finished), failed)


def run_local(ctx: RunContext, out: Path, todo: Todo, tags: dict[str, str], subgroups: Any) -> tuple[int, list[str]]:
    """The local executor: the points ``todo`` one after another in this process, each a nested child
    run of the active parent; ``(trained, failed names)``. A point that cannot be measured (e.g. one
    class in its test split) fails alone; a tracking store that went away stops the sweep."""
    from tqdm.auto import tqdm

    ran, failed = 0, []
    bench: Workbench | None = None
    dataset = None
    groups, todo = plan_groups(ctx.cfg, todo)  # LoRA points trained together (fewshot.together), the rest alone
    for group in groups:
        bench = bench or Workbench(ctx.cfg, ctx.data, out, subgroups=subgroups)
        dataset = dataset or mlflow_dataset(ctx.data, ctx.cfg.data.name)
        trained, lost, alone = run_group(bench, group, tags, out, dataset)
        ran, failed, todo = ran + trained, failed + lost, todo + alone
    for point, pcfg, phash in tqdm(todo, desc="sweep", disable=not sys.stderr.isatty()):
        bench = bench or Workbench(ctx.cfg, ctx.data, out, subgroups=subgroups)
        dataset = dataset or mlflow_dataset(ctx.data, ctx.cfg.data.name)  # built once, logged by every child
        log.info("child %s", point.name)
        try:
            run_child(bench, pcfg, point, {**tags, T.POINT_HASH: phash}, out / "children" / point.name,
                      dataset=dataset)
            ran += 1
        except TrackingUnavailableError:  # the store went away: stop; rerunning resumes
            raise
        except MedloraError as err:  # this point cannot be measured (e.g. one class); the others can
            log.error("child %s failed: %s", point.name, err)
            failed.append(point.name)
    return ran, failed
