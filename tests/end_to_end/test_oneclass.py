"""One-class anomaly mode end to end: fitted on normal studies only, it still finds the phantom nodules."""

import numpy as np
import pandas as pd
import pytest


@pytest.mark.parametrize("score", ["knn", "mahalanobis"])
def test_oneclass_pipeline_detects_lesions(phantom_root, tmp_path, score, tiny_cfg):
    from mlflow import MlflowClient

    from pipelines.oneclass import run

    tiny_config = tiny_cfg
    cfg = tiny_config(phantom_root, tmp_path, pipeline="oneclass", **{"oneclass.score": score})
    summary = run(cfg, tmp_path / "out")
    assert summary.metrics["test_auroc"] > 0.8, summary.metrics["test_auroc"]  # chance is 0.5
    run_ = MlflowClient(cfg.tracking.uri).get_run(summary.run_id)
    assert run_.data.metrics["test_auroc"] == pytest.approx(summary.metrics["test_auroc"])
    assert "test_brier" not in run_.data.metrics  # distances are not probabilities
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv")
    assert set(preds["split"]) == {"val", "test"}


def test_oneclass_on_lora_adapted_features(finished_run, tmp_path, tiny_cfg):
    """Features after LoRA adaptation: the adapter of the session's finished run on its verified base."""
    from pipelines.oneclass import run

    tiny_config = tiny_cfg
    out, cfg, _ = finished_run
    # the adapter's own split: no test study was seen in training
    cfg1 = tiny_config(cfg.data.root, tmp_path, pipeline="oneclass", **{"oneclass.adapter": str(out),
                                                                         "data.split.file": str(cfg.data.split.file)})
    summary = run(cfg1, tmp_path / "out")
    assert summary.metrics["test_auroc"] > 0.8


def test_oneclass_multilabel_scores_any_finding_against_known_normals(tmp_path, tiny_cfg):
    """Multi-label one-class: fitted on studies with every finding known absent, evaluated as "any
    finding" vs normal; a study with no finding present but one unknown is neither, so it is left out."""
    from medlora.config import SynthConfig
    from medlora.io.findings import decode_column, normal_vs_abnormal
    from medlora.io.synth import write_phantoms
    from pipelines.oneclass import run

    root = tmp_path / "ml"
    write_phantoms(root, SynthConfig(patients=60, images_per_patient=1, size=32, seed=3,
                                     findings=["effusion", "cardiomegaly"]))
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    unknown = labels.index[(labels["effusion"] == "0") & (labels["cardiomegaly"] == "0")][:6]
    labels.loc[unknown, "cardiomegaly"] = ""  # not mentioned: never a normal
    labels.to_csv(root / "labels.csv", index=False)
    cfg = tiny_cfg(root, tmp_path, pipeline="oneclass",
                   **{"data.task": "multilabel", "data.findings": "[effusion, cardiomegaly]"})
    summary = run(cfg, tmp_path / "out")
    manifest = pd.read_csv(tmp_path / "out" / "manifest.csv", dtype={"findings": str}, keep_default_na=False)
    normal, abnormal = normal_vs_abnormal(manifest, cfg.data)
    values = decode_column(manifest["findings"], 2)
    neither = ~normal & ~abnormal
    assert neither.sum() == 6 and np.isnan(values[neither]).any(axis=1).all()
    assert summary.metrics["normal_train_samples"] == (normal & (manifest["split"] == "train")).sum()
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv")
    evaluated = manifest[manifest["split"].isin(["val", "test"]) & ~neither]
    assert len(preds) == len(evaluated)  # the unknown-only studies are left out of val and test
    assert summary.metrics["test_auroc"] > 0.6, summary.metrics["test_auroc"]  # chance is 0.5
    assert "any finding vs no finding" in summary.describe()


def test_oneclass_refuses_a_multiclass_task_without_a_normal_class(tmp_path, tiny_cfg):
    """Without data.normal there is no 'normal' to fit on: refused at load time, naming the key."""
    from medlora.errors import ConfigError

    with pytest.raises(ConfigError, match=r"pipeline oneclass .* data\.task multiclass needs data\.normal"):
        tiny_cfg(tmp_path / "none", tmp_path, pipeline="oneclass",
                 **{"data.task": "multiclass", "data.classes": "[a, b, c]"})
