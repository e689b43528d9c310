"""A tiny few-shot sweep (2 shot counts x 2 seeds x 3 methods) tracked as MLflow parent + child runs."""

import math
import socket
import subprocess
import sys

import pandas as pd
import pytest

# the flattened config plus the short keys, as on single runs
CHILD_PARAMS = {"method", "shots", "seed", "backbone", "train.lr", "train.epochs", "model.lora.r", "model.backbone",
                "support_hash", "support_patients"}
CHILD_METRICS = {"val_auroc", "test_auroc", "test_auprc", "test_sensitivity", "test_specificity",
                 "test_auroc_ci_low", "test_auroc_ci_high", "test_sensitivity_ci_low", "test_specificity_ci_high",
                 "trainable_params", "train_seconds", "train_images_per_second", "peak_memory_mb"}


def sweep_runs(cfg):
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.data.name)
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("medlora.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("medlora.role") == "child"]
    return client, parents, children


def test_parent_and_nested_children_carry_the_comparison_names(finished_sweep):
    cfg, _, _, _ = finished_sweep
    client, parents, children = sweep_runs(cfg)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    assert len(children) == 12 and {r.info.status for r in children} == {"FINISHED"}
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    keys = {(r.data.params["method"], r.data.params["shots"], r.data.params["seed"]) for r in children}
    assert keys == {(m, k, s) for m in ("lora", "linear_probe", "full") for k in ("1", "2") for s in ("0", "1")}
    for r in children:
        assert CHILD_PARAMS <= set(r.data.params), r.info.run_name
        assert r.data.params["model.method"] == r.data.params["method"]
        assert r.data.params["train.seed"] == r.data.params["seed"]
        assert "lr" not in r.data.metrics and "train_lr" in r.data.metrics  # no metric shadows a param
        assert CHILD_METRICS <= set(r.data.metrics), CHILD_METRICS - set(r.data.metrics)
        assert 0.0 <= r.data.metrics["test_auroc"] <= 1.0 and r.data.metrics["trainable_params"] > 0
        assert r.data.tags["medlora.config_hash"] and r.data.tags["medlora.dataset_fingerprint"]
        (dataset,) = [d.dataset for d in r.inputs.dataset_inputs]
        assert dataset.digest == r.data.tags["medlora.dataset_fingerprint"] and dataset.name == cfg.data.name
    tags = parent.data.tags
    assert {"medlora.sweep_hash", "medlora.dataset_fingerprint", "medlora.version"} <= set(tags)
    from medlora.provenance import git_commit

    assert tags.get("medlora.git_commit") == git_commit()  # None outside a git checkout
    lp = {r.data.params["method"]: r.data.metrics["trainable_params"] for r in children}
    assert lp["linear_probe"] < lp["lora"] < lp["full"]
    assert len({r.info.run_name for r in children}) == 12  # names tell the runs apart
    assert all(cfg.data.name in r.info.run_name for r in [parent, *children])
    best = {m: parent.data.metrics[f"best_test_auroc_mean.{m}"] for m in ("lora", "linear_probe", "full")}
    assert all(0.0 <= v <= 1.0 for v in best.values())
    assert parent.data.metrics["test_auroc_mean.lora.2shot"] <= best["lora"]


def test_every_method_sees_the_same_support_set_and_seeds_differ(finished_sweep):
    cfg, _, _, _ = finished_sweep
    _, _, children = sweep_runs(cfg)
    frame = pd.DataFrame([{**r.data.params, "tag": r.data.tags["medlora.support_hash"]} for r in children])
    assert (frame["support_hash"] == frame["tag"]).all()
    per_point = frame.groupby(["shots", "seed"])["support_hash"].nunique()
    assert (per_point == 1).all()  # one support set per (shots, seed), whatever the method
    assert frame.groupby("shots")["support_hash"].nunique().to_dict() == {"1": 2, "2": 2}
    assert set(frame.loc[frame.shots == "1", "support_patients"]) == {"2"}  # 1 patient x 2 classes


def test_parent_holds_summary_delong_and_learning_curve(finished_sweep):
    cfg, _, out, printed = finished_sweep
    client, (parent,), _ = sweep_runs(cfg)
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "delong.csv", "learning_curve.png", "config.yaml"} <= artifacts
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 6 and set(summary["n_seeds"]) == {2}
    assert {"test_auroc_mean", "test_auroc_sd", "test_auprc_mean", "test_sensitivity_mean"} <= set(summary.columns)
    delong = pd.read_csv(out / "delong.csv")
    assert set(zip(delong.method_a, delong.method_b, strict=True)) == {("lora", "linear_probe"), ("lora", "full")}
    assert len(delong) == 8 and delong["n_studies"].min() >= 10  # (2 shots x 2 seeds) x 2 comparisons
    md = (out / "summary.md").read_text()
    assert "± " in md and "DeLong" in md and "| lora | linear_probe |" in md
    assert (out / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| linear_probe | 2 | 2 |" in printed  # the CLI prints the same table


def test_rerun_skips_finished_children_and_marks_stale_running_ones_killed(finished_sweep):
    """Resume in-process: a RUNNING child of a dead process becomes KILLED; nothing is trained or counted twice."""
    from medlora.cli import main

    cfg, cfg_file, out, _ = finished_sweep
    client, (parent,), children = sweep_runs(cfg)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = client.create_run(parent.info.experiment_id, run_name="lora-1shot-seed0", tags={
        "mlflow.parentRunId": parent.info.run_id, "medlora.role": "child", "medlora.host": socket.gethostname(),
        "medlora.pid": str(dead.pid), "medlora.config_hash": children[0].data.tags["medlora.config_hash"]})
    client.log_param(stale.info.run_id, "method", "lora")  # a process killed while it logged the child's params
    try:
        assert main(["run", str(cfg_file), "--out", str(out)]) == 0
        client, parents, after = sweep_runs(cfg)
        assert [p.info.run_id for p in parents] == [parent.info.run_id]
        assert client.get_run(stale.info.run_id).info.status == "KILLED"
        finished = [r for r in after if r.info.status == "FINISHED"]
        assert sorted(r.info.run_id for r in finished) == sorted(r.info.run_id for r in children)
        assert len(pd.read_csv(out / "summary.csv")) == 6 and not math.isnan(pd.read_csv(out / "summary.csv").n_seeds.sum())
    finally:  # the session's sweep is shared: later tests read its children as the sweep logged them
        client.delete_run(stale.info.run_id)
    assert sorted(r.info.run_id for r in sweep_runs(cfg)[2]) == sorted(r.info.run_id for r in children)


def test_upper_block_lora_children_share_one_pass_over_the_frozen_blocks(phantom_root, finished_run, tmp_path,
                                                                        sweep_config, caplog):
    """LoRA on the last block, no augmentation: the tokens below it are computed once for the whole
    sweep (per split), and every child trains on them."""
    import logging

    from mlflow import MlflowClient

    from medlora.sweep.driver import run_sweep
    from medlora.transforms.samples import prepare_samples

    cfg, _ = sweep_config(phantom_root, tmp_path, **{
        "data.name": "phantoms_prefix", "tracking.uri": finished_run[1].tracking.uri, "fewshot.methods": "[lora]",
        "fewshot.seeds": "[0]", "model.lora.blocks": "[-1]", "preprocess.augment": "false"})
    with caplog.at_level(logging.INFO, logger="medlora.train.features"):
        summary = run_sweep(cfg, prepare_samples(cfg.data, cfg.preprocess), tmp_path / "out")
    passes = [r.getMessage() for r in caplog.records if r.getMessage().startswith("frozen blocks 0-0 ")]
    assert sorted(m.split(":")[0] for m in passes) == ["frozen blocks 0-0 test", "frozen blocks 0-0 train",
                                                        "frozen blocks 0-0 val"]
    assert summary.ran == 2 and not summary.failed
    children = MlflowClient(cfg.tracking.uri).search_runs(
        [MlflowClient(cfg.tracking.uri).get_experiment_by_name("phantoms_prefix").experiment_id],
        "tags.`medlora.role` = 'child'")
    assert len(children) == 2 and all(0.0 <= r.data.metrics["test_auroc"] <= 1.0 for r in children)


FINDINGS = ("nodule", "effusion", "cardiomegaly")


def test_multilabel_sweep_summarises_per_finding_and_macro_with_subgroups(finished_run, tmp_path, sweep_config):
    """A multi-label sweep: support sets per finding, children with per-finding, macro and per-subgroup
    metrics, a summary per finding and macro, macro parent metrics and per-finding learning curves."""
    from mlflow import MlflowClient

    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms
    from medlora.sweep.driver import run_sweep
    from medlora.transforms.samples import prepare_samples

    root = tmp_path / "data"
    write_phantoms(root, SynthConfig(patients=40, images_per_patient=1, size=32, seed=3, findings=list(FINDINGS)))
    cfg, _ = sweep_config(root, tmp_path, **{
        "data.name": "phantoms_multilabel_sweep", "tracking.uri": finished_run[1].tracking.uri,
        "data.task": "multilabel", "data.findings": f"[{', '.join(FINDINGS)}]", "fewshot.methods": "[lora, linear_probe]",
        "evaluate.subgroups": "[sex]"})
    result = run_sweep(cfg, prepare_samples(cfg.data, cfg.preprocess), tmp_path / "out")
    assert result.ran == 8 and not result.failed
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.data.name)
    children = client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'child'")
    (parent,) = client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'sweep'")
    for r in children:
        m = r.data.metrics
        assert {f"test_auroc.{f}" for f in FINDINGS} | {"test_auroc_macro"} <= set(m)
        # evaluate.subgroups as a single multi-label run logs them: the any-finding metrics per sex
        assert m["test_any_subgroup_sex_F_n"] + m["test_any_subgroup_sex_M_n"] == m["test_n.nodule"] > 0
        assert "test_any_subgroup_sex_F_specificity" in m
        patients = int(r.data.params["support_patients"])
        shots = int(r.data.params["shots"])
        assert shots + 1 <= patients <= 4 * shots  # >= k per finding (shared patients) and k with no finding
    hashes = pd.DataFrame([{**r.data.params} for r in children]).groupby(["shots", "seed"])["support_hash"].nunique()
    assert (hashes == 1).all()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", dtype={"shots": str})
    assert len(summary) == 4 and set(summary["n_seeds"]) == {2}
    assert [c for c in summary.columns if c.endswith("_mean")] == [
        "test_auroc_macro_mean", *(f"test_auroc.{f}_mean" for f in FINDINGS), "val_auroc_mean", "train_seconds_mean"]
    lora_1 = [r.data.metrics["test_auroc_macro"] for r in children
              if (r.data.params["method"], r.data.params["shots"]) == ("lora", "1")]
    pm = parent.data.metrics
    assert pm["test_auroc_macro_mean.lora.1shot"] == pytest.approx(sum(lora_1) / 2)
    assert pm["best_test_auroc_macro_mean.lora"] == max(pm["test_auroc_macro_mean.lora.1shot"],
                                                         pm["test_auroc_macro_mean.lora.2shot"])
    assert not any(k.startswith("test_auroc_mean.") for k in pm)
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| method | shots | n_seeds | test_auroc_macro | test_auroc.nodule | test_auroc.effusion |" in md
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"learning_curve.png", "learning_curves_findings.png", "summary.md", "delong_findings.csv"} <= artifacts
    # paired DeLong per finding: lora against linear_probe for every finding, shot count and seed, on the
    # studies whose finding is known; lora's AUROC there is the child's own test_auroc.<finding>
    per_finding = pd.read_csv(tmp_path / "out" / "delong_findings.csv", dtype={"shots": str})
    assert len(per_finding) == len(FINDINGS) * 2 * 2 and set(per_finding["method_b"]) == {"linear_probe"}
    lora = {(r.data.params["shots"], int(r.data.params["seed"])): r.data.metrics for r in children
            if r.data.params["method"] == "lora"}
    for row in per_finding.itertuples():
        assert row.auroc_a == pytest.approx(lora[(row.shots, row.seed)][f"test_auroc.{row.finding}"])
    assert "## DeLong paired tests per finding" in md
    for name in ("learning_curve.png", "learning_curves_findings.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from medlora.sweep.compare import compare, format_summary, markdown_table

    assert markdown_table(format_summary(summary)) in compare(cfg.data.name, cfg.tracking.uri)  # findings in config order


def test_lora_points_train_together_and_measure_what_they_measure_alone(finished_sweep, phantom_root, tmp_path,
                                                                        sweep_config):
    """The session sweep (``fewshot.together: on``) trained its 4 LoRA points as one group; the same
    points one by one (``off``) log the same metrics, up to float rounding."""
    from medlora.cli import main

    cfg, _, _, _ = finished_sweep
    _, _, children = sweep_runs(cfg)
    lora = {(r.data.params["shots"], r.data.params["seed"]): r for r in children if r.data.params["method"] == "lora"}
    assert {r.data.tags.get("medlora.trained_together") for r in lora.values()} == {"4"}
    assert not any("medlora.trained_together" in r.data.tags for r in children if r.data.params["method"] != "lora")
    from medlora.device import precision_name, resolve_device, training_dtype

    expected = precision_name(training_dtype(resolve_device(cfg.train.device), "auto"))  # fp32 on CPUs without bf16
    assert {r.data.tags["medlora.precision"] for r in children} == {expected}
    off_cfg, off_file = sweep_config(phantom_root, tmp_path, **{"fewshot.methods": "[lora]", "fewshot.together": "off",
                                                                "data.name": "phantoms_fewshot_off"})
    assert main(["run", str(off_file), "--out", str(tmp_path / "out")]) == 0
    _, _, alone = sweep_runs(off_cfg)
    assert len(alone) == 4 and not any("medlora.trained_together" in r.data.tags for r in alone)
    for r in alone:
        twin = lora[(r.data.params["shots"], r.data.params["seed"])]
        for name in ("test_auroc", "val_auroc", "best_epoch", "test_sensitivity", "trainable_params"):
            assert twin.data.metrics[name] == pytest.approx(r.data.metrics[name], rel=1e-5), name


def test_study_level_sweep_trains_each_point_on_bags_of_its_support_studies(finished_run, tmp_path, sweep_config,
                                                                           caplog):
    """``aggregate: attention`` in a few-shot sweep: every point is a study model trained on its support
    set's studies as bags (LoRA alone, not among other LoRA points; the probe's pooling on the sweep's
    cached slice features), scored one score per study with each slice's attention."""
    import logging

    import pandas as pd

    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms
    from medlora.sweep.driver import run_sweep
    from medlora.transforms.samples import prepare_samples

    root = tmp_path / "volumes"
    write_phantoms(root, SynthConfig(patients=24, images_per_patient=4, size=16, abnormal_fraction=0.5, seed=5,
                                     lesion_slices=2))
    cfg, _ = sweep_config(root, tmp_path, **{
        "data.name": "phantom_volumes_sweep", "tracking.uri": finished_run[1].tracking.uri,
        "data.volume_min_slices": 4, "preprocess.image_size": 16,
        "model.kwargs": "{img_size: 16, patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2, global_pool: avg}",
        "preprocess.view": "{kind: every_k, k: 1, aggregate: attention, max_slices: 3, attention_dim: 8}",
        "fewshot.methods": "[lora, linear_probe]", "fewshot.shots": "[2, all]", "fewshot.seeds": "[0]"})
    with caplog.at_level(logging.INFO):
        summary = run_sweep(cfg, prepare_samples(cfg.data, cfg.preprocess), tmp_path / "out")
    assert summary.ran == 4 and not summary.failed
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "trains alone: preprocess.view.aggregate: attention" in log and "training 2 LoRA points together" not in log
    assert "cached: linear probe" in log and "features train" in log and "slice features" not in log  # cached once
    for child in sorted((tmp_path / "out" / "children").iterdir()):
        samples = pd.read_csv(child / "predictions.csv")
        per_study = samples.groupby("study_key")
        assert (per_study["score"].nunique() == 1).all() and (per_study.size() == 4).all()
        assert abs(per_study["attention"].sum() - 1).max() < 1e-5
    from mlflow import MlflowClient

    client = MlflowClient(cfg.tracking.uri)
    children = client.search_runs([client.get_experiment_by_name("phantom_volumes_sweep").experiment_id],
                                  "tags.`medlora.role` = 'child'")
    shots = {r.data.params["shots"]: r for r in children}
    assert shots["2"].data.params["support_patients"] == "4"  # the support set's studies, 2 per class
    assert all(0.0 <= r.data.metrics["test_auroc"] <= 1.0 for r in children)
