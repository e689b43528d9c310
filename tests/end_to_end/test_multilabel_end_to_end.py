"""A multi-label run end to end on the multi-label phantoms: per-finding MLflow metrics, masked
unknown labels, any-finding export."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

FINDINGS = ["nodule", "effusion", "cardiomegaly"]


@pytest.mark.slow
def test_multilabel_run_logs_per_finding_metrics(tmp_path, tiny_cfg):
    from mlflow import MlflowClient

    from medlora.config import SynthConfig
    from medlora.experiment.single import run_single
    from medlora.io.synth import write_phantoms

    root = tmp_path / "data"
    write_phantoms(root, SynthConfig(patients=90, images_per_patient=1, size=32, seed=3, findings=FINDINGS))
    labels = pd.read_csv(root / "labels.csv", dtype=str)
    labels.loc[labels.index % 9 == 0, "nodule"] = ""  # unknown: masked, never a negative
    labels.to_csv(root / "labels.csv", index=False)
    cfg = tiny_cfg(root, tmp_path, **{"data.task": "multilabel", "data.findings": "[nodule, effusion, cardiomegaly]",
                                      "train.pos_weight": "true", "train.epochs": 12})
    summary = run_single(cfg, tmp_path / "out")
    run = MlflowClient(cfg.tracking.uri).get_run(summary.run_id)
    m = run.data.metrics
    for f in FINDINGS:
        assert f"test_auroc.{f}" in m and f"test_auroc_ci_low.{f}" in m and f"threshold.{f}" in m
    assert m["test_auroc.effusion"] > 0.8 and m["test_auroc.cardiomegaly"] > 0.8, m  # large, easy lesions
    assert m["test_auroc_macro_ci_low"] <= m["test_auroc_macro"] <= m["test_auroc_macro_ci_high"]
    assert "test_any_auroc" in m and "val_auroc" in m
    doc = json.loads((tmp_path / "out" / "metrics.json").read_text())
    preds = pd.read_csv(tmp_path / "out" / "predictions.csv")
    test = preds[preds["split"] == "test"]
    nodule = next(f for f in doc["multi"]["findings"] if f["name"] == "nodule")
    assert nodule["n"] == int(test["label.nodule"].notna().sum()) < len(test)  # unknowns left out
    assert np.isfinite(test[[f"score.{f}" for f in FINDINGS]].to_numpy()).all()
    meta = json.loads((tmp_path / "out" / "medlora.json").read_text())
    assert meta["labels"]["task"] == "multilabel" and set(meta["operating_point"]["per_output"]) == set(FINDINGS)
    assert meta["calibration"] == {"method": "none"}  # evaluate.calibration is for the binary task
    assert sorted((tmp_path / "out" / "bundle" / "saliency").glob("*.png"))  # drawn for the highest-scoring finding

    from medlora.bundle.predict import predict_bundles

    result = predict_bundles([tmp_path / "out" / "bundle"], sorted(root.glob("patient000[0-3]")))
    studies = result.studies
    assert len(studies) == 4 and studies["error"].eq("").all()
    for f in FINDINGS:  # one score and one call per finding, at the finding's own threshold
        want = (studies[f"score.{f}"] >= meta["operating_point"]["per_output"][f]).astype(int)
        assert studies[f"call.{f}"].astype(int).tolist() == want.tolist()
    np.testing.assert_allclose(studies["score"], studies[[f"score.{f}" for f in FINDINGS]].max(axis=1))

    # the review page: a row per finding, macro AUROC, "any finding" at its operating point, ROC small multiples
    page = (tmp_path / "out" / "bundle" / "report.html").read_text()
    for f in FINDINGS:
        assert f"<tr><th>{f}</th>" in page
    assert "Macro AUROC" in page and "<h2>Any finding vs no finding</h2>" in page
    assert (tmp_path / "out" / "bundle" / "plots" / "roc_findings.png").is_file() and "ROC per finding" in page
    bundle_studies = pd.read_csv(tmp_path / "out" / "bundle" / "predictions.csv")
    assert {f"call.{f}" for f in FINDINGS} <= set(bundle_studies.columns) and "class" not in bundle_studies.columns
    # the bundle's "any finding" plots leave out the studies the evaluation left out (no finding present, one unknown)
    test_rows = bundle_studies[bundle_studies["split"] == "test"]
    targets = test_rows[[f"label.{f}" for f in FINDINGS]]
    known = targets.eq(1).any(axis=1) | targets.notna().all(axis=1)
    assert known.sum() == doc["counts"]["n"]


@pytest.mark.slow
def test_a_multilabel_bundle_is_validated_finding_by_finding(tmp_path, tiny_cfg):
    """``medlora validate`` of a multi-label bundle on a second site labelling two of its three findings."""
    import yaml

    from medlora.cli import main
    from medlora.config import SynthConfig, config_to_dict
    from medlora.experiment.single import run_single
    from medlora.io.synth import write_phantoms

    root, site = tmp_path / "data", tmp_path / "site"
    write_phantoms(root, SynthConfig(patients=60, images_per_patient=1, size=32, seed=3, findings=FINDINGS))
    write_phantoms(site, SynthConfig(patients=40, images_per_patient=1, size=32, seed=4, site="b",
                                     findings=["effusion", "cardiomegaly"]))
    multi = {"data.task": "multilabel", "train.epochs": 6}
    cfg = tiny_cfg(root, tmp_path, **multi, **{"data.findings": "[nodule, effusion, cardiomegaly]"})
    run_single(cfg, tmp_path / "out")
    site_cfg = tiny_cfg(site, tmp_path / "s", **multi, **{"data.findings": "[effusion, cardiomegaly]",
                                                          "data.name": "site_multi"})
    (tmp_path / "s").mkdir(exist_ok=True)
    cfg_file = tmp_path / "s" / "site.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(site_cfg)))
    out = tmp_path / "validation"
    assert main(["validate", str(tmp_path / "out" / "bundle"), str(cfg_file), "--out", str(out)]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    meta = json.loads((tmp_path / "out" / "bundle" / "medlora.json").read_text())
    rows = {r["finding"]: r for r in doc["findings"]}
    assert set(rows) == {"effusion", "cardiomegaly"}
    for name, row in rows.items():
        assert row["n"] == 40 and row["threshold"] == pytest.approx(meta["operating_point"]["per_output"][name])
        assert 0 <= row["auroc"] <= 1 and len(row["auroc_ci"]) == 2
    assert any("nodule" in n for n in doc["notes"])  # the finding the site does not label is named
    assert "Findings at their shipped thresholds" in (out / "validation.html").read_text()
