"""A multi-class run without ``data.normal`` end to end: it is exported (no "any finding", no
abnormal-vs-normal operating point), its bundle verifies, and ``medlora predict`` and the pyfunc give
per-class scores and the arg-max call."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

CLASSES = ["clear", "effusion", "cardiomegaly"]


@pytest.mark.slow
def test_multiclass_run_without_normal_exports_verifies_and_predicts(tmp_path, tiny_cfg, capsys):
    from medlora.cli import main
    from medlora.config import SynthConfig
    from medlora.experiment.single import run_single
    from medlora.io.synth import write_phantoms

    root = tmp_path / "data"
    write_phantoms(root, SynthConfig(patients=90, images_per_patient=1, size=32, seed=3,
                                     findings=["effusion", "cardiomegaly"]))
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels["label"] = np.where(labels["effusion"] == "1", "effusion",
                               np.where(labels["cardiomegaly"] == "1", "cardiomegaly", "clear"))
    labels[["StudyInstanceUID", "label"]].to_csv(root / "labels.csv", index=False)
    cfg = tiny_cfg(root, tmp_path, **{"data.task": "multiclass", "data.classes": f"[{', '.join(CLASSES)}]",
                                      "train.epochs": 8})
    out = tmp_path / "out"
    summary = run_single(cfg, out)
    bundle = out / "bundle"
    meta = json.loads((bundle / "medlora.json").read_text())
    assert meta["labels"]["abnormal"] is None and meta["labels"]["outputs"] == CLASSES
    assert meta["operating_point"]["threshold"] is None and meta["operating_point"]["call"] == "argmax"
    assert set(meta["operating_point"]["per_output"]) == set(CLASSES)

    page = (bundle / "report.html").read_text()
    assert "No abnormal-vs-normal operating point" in page and 'id="no-any-finding"' in page
    assert "Confusion matrix of the arg-max call" in page and "Balanced accuracy of the arg-max call" in page
    assert "ROC per class" in page and (bundle / "plots" / "roc_findings.png").is_file()
    assert not (bundle / "plots" / "roc.png").exists()  # no binary curve without a binary score
    for c in CLASSES:
        assert f"<tr><th>{c}</th>" in page
    card = (bundle / "model_card.md").read_text()
    assert "called the class with the highest score" in card and "| clear |" in card

    studies = pd.read_csv(bundle / "predictions.csv")
    assert {"score", "call", "label"}.isdisjoint(studies.columns)
    assert studies["class"].tolist() == [CLASSES[i] for i in studies[[f"score.{c}" for c in CLASSES]].to_numpy().argmax(1)]
    doc = json.loads((bundle / "metrics.json").read_text())
    test = studies[studies["split"] == "test"]
    assert doc["multi"]["summary"]["accuracy"] == pytest.approx((test["class"] == test["true_class"]).mean())

    # standalone export of the same run, verify and predict through the CLI
    again = tmp_path / "again"
    assert main(["export", summary.run_id, "--out", str(again), "--tracking-uri", cfg.tracking.uri]) == 0
    assert main(["verify", str(again)]) == 0
    csv = tmp_path / "pred.csv"
    inputs = sorted(root.glob("patient000[0-3]"))
    assert main(["predict", "--bundle", str(again), *map(str, inputs), "--out", str(csv)]) == 0
    pred = pd.read_csv(csv)
    assert len(pred) == 4 and pred["error"].isna().all() and "score" not in pred.columns
    scores = pred[[f"score.{c}" for c in CLASSES]].to_numpy()
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)  # softmax, one study image each
    assert pred["class"].tolist() == [CLASSES[i] for i in scores.argmax(axis=1)]
    for c in CLASSES:
        want = (pred[f"score.{c}"] >= meta["operating_point"]["per_output"][c]).astype(int)
        assert pred[f"call.{c}"].astype(int).tolist() == want.tolist()

    # the MLflow pyfunc of the bundle (as registered): per-class scores and calls, the arg-max class
    from types import SimpleNamespace

    from medlora.bundle.pyfunc import MedloraPyfunc, signature

    model = MedloraPyfunc()
    model.load_context(SimpleNamespace(artifacts={"bundle": str(again)}))
    frame = model.predict(None, pd.DataFrame({"path": [str(p) for p in inputs]}))
    assert frame["score"].isna().all() and frame["call"].isna().all()  # no abnormal-vs-normal score
    same = frame.merge(pred, on="study_key", suffixes=("", "_cli"))  # the CLI's rows are sorted by study key
    assert len(same) == 4 and same["class"].tolist() == same["class_cli"].tolist()
    for c in CLASSES:
        np.testing.assert_allclose(same[f"score.{c}"].astype(float), same[f"score.{c}_cli"], atol=1e-6)
    names = [c.name for c in signature(model.predictor.bundles[0]).outputs.inputs]
    assert names == list(frame.columns) and "class" in names


@pytest.mark.parametrize("normal", [None, "clear"])
def test_multiclass_labels_have_an_abnormal_class_only_with_data_normal(tmp_path, tiny_cfg, normal):
    from medlora.bundle.metadata import _labels

    extra = {} if normal is None else {"data.normal": normal}
    cfg = tiny_cfg(tmp_path, tmp_path, **{"data.task": "multiclass", "data.classes": f"[{', '.join(CLASSES)}]", **extra})
    labels = _labels(cfg)
    assert labels["outputs"] == CLASSES and labels["normal"] == normal
    if normal is None:  # no "any finding": the classes themselves, and no abnormal one
        assert labels["abnormal"] is None and labels["classes"] == CLASSES
    else:
        assert labels["abnormal"] == "any finding" and labels["classes"] == ["clear", "any finding"]
