"""One MLflow scheme for every run kind: the same param keys on a single run and a sweep child,
names that tell runs apart, no metric named like a param, experiments that open on the runs table."""

from __future__ import annotations

import re


def _runs(cfg, role: str):
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.data.name)
    return exp, client.search_runs([exp.experiment_id], f"tags.`medlora.role` = '{role}'", max_results=1000)


def _config_keys(params: dict) -> set[str]:
    """Param keys apart from the sweep's own section and its support-set facts."""
    return {k for k in params if not (k == "fewshot" or k.startswith("fewshot.") or k.startswith("support_"))}


def test_single_run_and_sweep_child_log_the_same_param_keys(finished_run, finished_sweep):
    _, (single,) = _runs(finished_run[1], "run")
    _, children = _runs(finished_sweep[0], "child")
    keys = _config_keys(single.data.params)
    assert {"method", "shots", "seed", "backbone", "train.lr", "model.method", "evaluate.calibration"} <= keys
    for child in children:
        assert _config_keys(child.data.params) == keys, child.info.run_name
        assert child.data.params["backbone"] == single.data.params["backbone"] == single.data.params["model.backbone"]
    assert single.data.params["shots"] == "all" and single.data.params["seed"] == single.data.params["train.seed"]


def test_no_metric_shadows_a_param(finished_run, finished_sweep):
    _, (single,) = _runs(finished_run[1], "run")
    _, children = _runs(finished_sweep[0], "child")
    _, (parent,) = _runs(finished_sweep[0], "sweep")
    for run in (single, parent, *children):
        assert not set(run.data.metrics) & set(run.data.params), run.info.run_name
    assert "train_lr" in single.data.metrics and "lr" not in single.data.metrics


def test_run_names_tell_runs_apart(finished_run, finished_sweep):
    cfg = finished_run[1]
    _, (single,) = _runs(cfg, "run")
    sweep_cfg = finished_sweep[0]
    _, children = _runs(sweep_cfg, "child")
    _, (parent,) = _runs(sweep_cfg, "sweep")
    names = [r.info.run_name for r in (single, parent, *children)]
    assert len(set(names)) == len(names)
    assert re.fullmatch(rf"lora-{cfg.model.backbone}-{cfg.data.name}-[0-9a-f]{{6}}", single.info.run_name)
    assert parent.info.run_name.startswith(f"fewshot-{sweep_cfg.model.backbone}-{sweep_cfg.data.name}-")
    for child in children:
        p = child.data.params
        expected = f"{p['method']}-{p['backbone']}-{sweep_cfg.data.name}-{p['shots']}shot-seed{p['seed']}-"
        assert child.info.run_name.startswith(expected), child.info.run_name


def test_sweep_parent_carries_summary_metrics_and_experiments_open_on_runs(finished_run, finished_sweep):
    exp, (parent,) = _runs(finished_sweep[0], "sweep")
    _, children = _runs(finished_sweep[0], "child")
    m = parent.data.metrics
    lora_1 = [c.data.metrics["test_auroc"] for c in children
              if c.data.params["method"] == "lora" and c.data.params["shots"] == "1"]
    assert m["test_auroc_mean.lora.1shot"] == sum(lora_1) / len(lora_1)
    assert m["best_test_auroc_mean.lora"] == max(m["test_auroc_mean.lora.1shot"], m["test_auroc_mean.lora.2shot"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    import json

    from medlora.tracking.view import VIEW_TAG

    shown = json.loads(exp.tags[VIEW_TAG])["selectedColumns"]
    assert {"params.`method`", "params.`shots`", "metrics.`test_auroc`", "metrics.`best_test_auroc_mean.lora`"} <= set(shown)
    assert "metrics.`best_test_auroc_mean.lora`" in {f"metrics.`{k}`" for k in m}  # a column the parent fills
    assert _runs(finished_run[1], "run")[0].tags["mlflow.experimentKind"] == "custom_model_development"
