"""``medlora run`` end to end on freshly synthesised DICOM studies with a tiny ViT."""

import json

import numpy as np
import pandas as pd
import pytest

METRICS = ("val_auroc", "test_auroc", "test_sensitivity", "test_specificity", "threshold")


def test_run_is_tracked_in_mlflow(finished_run):
    from mlflow import MlflowClient

    out, cfg, _ = finished_run
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name("phantoms")
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    for name in METRICS:
        assert 0.0 <= run.data.metrics[name] <= 1.0, name
    # the phantom lesions are easy; 4 abnormal and 8 normal test studies: each misranked pair costs 0.03
    assert run.data.metrics["test_auroc"] >= 0.85, "the phantom lesions are easy: training is broken"
    assert run.data.metrics["trainable_params"] > 0
    assert run.data.params["model.lora.r"] == "8" and run.data.params["train.epochs"] == str(cfg.train.epochs)
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == list(range(len(history))) and len(history) >= 1
    assert len(client.get_metric_history(run.info.run_id, "val_auroc")) == len(history) + 1
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "roc.png", "adapter", "medlora.json", "predictions.csv"} <= artifacts
    adapter = {a.path for a in client.list_artifacts(run.info.run_id, "adapter")}
    assert {"adapter/adapter_config.json", "adapter/adapter_model.safetensors"} <= adapter
    meta = json.loads((out / "medlora.json").read_text())
    assert meta["mlflow_run_id"] == run.info.run_id
    assert meta["operating_point"]["threshold"] == pytest.approx(run.data.metrics["threshold"])


def test_no_patient_identifier_reaches_mlflow_or_the_export(finished_run, phantom_root):
    import pydicom
    from mlflow import MlflowClient

    out, cfg, _ = finished_run
    client = MlflowClient(cfg.tracking.uri)
    run = client.search_runs([client.get_experiment_by_name("phantoms").experiment_id])[0]
    ds = pydicom.dcmread(next(phantom_root.rglob("*.dcm")), stop_before_pixels=True)
    logged = json.dumps(run.data.params) + json.dumps(run.data.tags)
    exported = "".join(p.read_text(errors="ignore") for p in out.rglob("*") if p.suffix in {".json", ".csv"})
    local = client.download_artifacts(run.info.run_id, "manifest.csv")
    exported += open(local).read()
    for raw in (str(ds.PatientID), str(ds.PatientName), ds.StudyInstanceUID, ds.AccessionNumber):
        assert raw not in logged and raw not in exported


def test_split_has_no_patient_in_two_splits(finished_run):
    out, cfg, _ = finished_run
    preds = pd.read_csv(out / "predictions.csv")
    assert preds.groupby("patient_key")["split"].nunique().max() == 1


def test_plain_timm_peft_reload_reproduces_scores(finished_run, plain_reload_scores):
    """Only timm + peft + medlora.json: rebuild the base, load the adapter, score the test images."""
    out, cfg, _ = finished_run
    scores, expected = plain_reload_scores(out, cfg)
    np.testing.assert_allclose(scores, expected, atol=1e-5)
