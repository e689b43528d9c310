"""report.html and the model card as a clinician reads them: labelled intervals, counts, names,
rendered cards, the too-small banner, and "probability" only for calibrated scores."""

from __future__ import annotations

import re

import pytest

from medlora.export.card import metric_rows, model_card
from medlora.export.html import render_report

DATA_CARD = """---
name: phantoms
version: 1
label_definition: abnormal = a nodule in one lung
classes: [normal, abnormal]
---

# Phantoms

Synthetic **CT** phantoms.

| field | value |
|---|---|
| slices | 3 |
"""


def _meta(calibration: dict | None = None) -> dict:
    return {"method": "lora", "summary": "LoRA adapter", "mlflow_run_id": "r1", "git_commit": None,
            "base": {"timm_name": "vit_tiny_patch16_224", "timm_kwargs": {}, "source": "init", "sha256": "ab" * 32,
                     "state_sha256": "cd" * 32},
            "lora": {"r": 8, "alpha": 16, "targets": "attn_qkv"},
            "preprocess": {"window": {"mode": "dicom"}, "image_size": 32, "mean": [0.5], "std": [0.5]},
            "labels": {"classes": ["normal", "abnormal"], "abnormal": "abnormal", "abnormal_index": 1},
            "operating_point": {"policy": "youden", "threshold": 0.4, "aggregate": "max"},
            "calibration": calibration or {"method": "none"},
            "dataset": {"name": "phantoms", "fingerprint": "f00"}}


def _metrics(tp=5, fn=0, tn=5, fp=0, min_per_class=10, calibration=None) -> dict:
    n_pos, n_neg = tp + fn, tn + fp
    return {"metrics": {"auroc": 1.0, "auprc": 1.0, "sensitivity": tp / n_pos, "specificity": tn / n_neg,
                        "ppv": tp / (tp + fp), "npv": tn / (tn + fn), "balanced_accuracy": 1.0, "brier": 0.2,
                        "ece": 0.405, "tp": float(tp), "fp": float(fp), "tn": float(tn), "fn": float(fn)},
            "intervals": {"auroc": [1.0, 1.0], "auprc": [1.0, 1.0], "sensitivity": [1.0, 1.0],
                          "specificity": [1.0, 1.0], "auroc_delong": [1.0, 1.0], "brier": [0.1, 0.3],
                          "ece": [0.3, 0.5], "balanced_accuracy": [1.0, 1.0]},
            "counts": {"n": n_pos + n_neg, "n_positive": n_pos, "n_negative": n_neg, "n_clusters": n_pos + n_neg},
            "settings": {"ci": 0.95, "n_bootstrap": 1000, "min_per_class": min_per_class},
            "warnings": [], "calibration": calibration or {"method": "none"}}


def _page(meta: dict, metrics: dict) -> str:
    return render_report(meta, metrics, [], [], "no examples", model_card(meta, metrics, True), DATA_CARD)


def test_rates_carry_wilson_intervals_and_counts_never_a_collapsed_bootstrap():
    page = _page(_meta(), _metrics())
    rows = {r.key: r for r in metric_rows(_metrics())}
    for key in ("sensitivity", "specificity", "ppv", "npv"):
        assert rows[key].counts == "5/5" and rows[key].method == "95% Wilson"
        assert rows[key].interval == "[0.566, 1.000]"  # Wilson 5/5, not the bootstrap's [1.000, 1.000]
    assert page.count("[0.566, 1.000]") == 8 and "[1.000, 1.000]" not in page
    assert rows["auroc"].method == "95% DeLong" and rows["auroc"].interval == "not estimable from so few studies"
    assert rows["brier"].method.startswith("95% bootstrap, patient-clustered (1000 resamples)")
    assert "Positive predictive value (PPV)" in page and "Share of studies called abnormal that are abnormal" in page
    assert ">ppv<" not in page and "balanced_accuracy" not in page
    assert "5 (true positives)" in page and "0 (false negatives)" in page and "5.000" not in page


def test_a_small_test_set_is_said_at_the_top_in_red():
    page = _page(_meta(), _metrics())
    body = page.split("<body>", 1)[1]
    assert body.lstrip().startswith('<p class="danger" id="too-small">Test set too small to say anything: 5 abnormal '
                                    "and 5 normal test studies, fewer than the 10 of each class")
    assert re.search(r"\.danger\{[^}]*color:#8a1016", page)  # red
    assert "Test set too small" in model_card(_meta(), _metrics(), True)
    big = _page(_meta(), _metrics(tp=12, fn=0, tn=15, fp=0))
    assert "too-small" not in big and "Test set too small" not in big
    assert "too-small" in _page(_meta(), _metrics(tp=12, tn=15, min_per_class=20))  # the configured minimum


def test_cards_are_rendered_not_raw_and_the_page_has_no_empty_header_row():
    page = _page(_meta(), _metrics())
    assert "<pre>" not in page and "---\nname:" not in page and "## Model details" not in page
    assert re.search(r"<h3[^>]*>Model card: abnormal vs normal \(phantoms\)</h3>", page)
    assert re.search(r"<h4[^>]*>Model details</h4>", page)
    assert "<th>label definition</th><td>abnormal = a nodule in one lung</td>" in page  # front matter as a table
    assert "<strong>CT</strong>" in page and "<td>slices</td>" in page  # the prose's Markdown table
    assert "<th></th>" not in page
    assert "<h1>Model review: abnormal vs normal</h1>" in page and "vs other (" not in page


def test_a_card_says_probability_only_when_calibrated():
    plain = model_card(_meta(), _metrics(), True)
    assert "probability of" not in plain and "not a probability" in plain
    cal = {"method": "temperature", "slope": 0.5, "intercept": 0.0, "temperature": 2.0}
    summary = {**cal, "val_log_loss_before": 0.9, "val_log_loss_after": 0.5, "test_brier_before": 0.3,
               "test_brier_after": 0.2, "test_ece_before": 0.405, "test_ece_after": 0.08}
    card = model_card(_meta(cal), _metrics(calibration=summary), True)
    assert "the probability of `abnormal` per study (temperature scaling" in card
    assert "temperature T = 2.000" in card and "test ECE 0.405 before, 0.080 after" in card
    page = _page(_meta(cal), _metrics(calibration=summary))
    assert "Test Brier score 0.300 before, 0.200 after" in page


def test_saliency_examples_show_the_image_beside_the_overlay_with_key_score_and_call(tmp_path):
    from medlora.export.html import Figure

    png = tmp_path / "x.png"
    import numpy as np
    from matplotlib.image import imsave

    imsave(png, np.zeros((4, 4)))
    fig = Figure(png, "true positive", png, (("study key (pseudonym)", "stu-abc123"), ("study score", "0.910"),
                                            ("call", "abnormal (threshold 0.400)"), ("truth", "abnormal")))
    page = render_report(_meta(), _metrics(), [], [fig], "note", "# card", None)
    example = page.split('<figure class="example">', 1)[1].split("</figure>", 1)[0]
    assert example.count("<img") == 2 and "attention overlay" in example
    for text in ("stu-abc123", "0.910", "abnormal (threshold 0.400)"):
        assert text in example


@pytest.mark.parametrize("strict", [False, True])
def test_export_warns_about_a_small_test_set_and_refuses_it_with_strict(finished_run, tmp_path, caplog, strict):
    import json
    import logging

    from medlora.cli import main

    out, cfg, _ = finished_run
    counts = json.loads((out / "metrics.json").read_text())["counts"]
    assert min(counts["n_positive"], counts["n_negative"]) < 10  # the session's tiny test set
    run_id = json.loads((out / "medlora.json").read_text())["mlflow_run_id"]
    target = tmp_path / "b"
    args = ["export", run_id, "--out", str(target), "--tracking-uri", cfg.tracking.uri] + (["--strict"] if strict else [])
    with caplog.at_level(logging.WARNING, logger="medlora.export.bundle"):
        rc = main(args)
    if strict:
        assert rc == 2 and not target.exists()
    else:
        assert rc == 0 and 'id="too-small"' in (target / "report.html").read_text()
        assert any("Test set too small" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_recalibrated_run_carries_its_map_to_the_bundle_and_says_probability(phantom_root, tiny_cfg, tmp_path):
    import json

    import numpy as np
    import pandas as pd
    import yaml

    from medlora.cli import main
    from medlora.config import config_to_dict

    cfg = tiny_cfg(phantom_root, tmp_path, **{"evaluate.calibration": "temperature", "train.epochs": 3})
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp_path / "out"
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(out)]) == 0
    meta = json.loads((out / "bundle" / "medlora.json").read_text())
    metrics = json.loads((out / "bundle" / "metrics.json").read_text())
    assert meta["calibration"]["method"] == "temperature" and meta["calibration"]["temperature"] > 0
    assert metrics["calibration"]["val_log_loss_after"] <= metrics["calibration"]["val_log_loss_before"] + 1e-9
    card = (out / "bundle" / "model_card.md").read_text()
    assert "the probability of `abnormal` per study (temperature scaling" in card
    bundle = pd.read_csv(out / "bundle" / "predictions.csv").query("split == 'test'").set_index("study_key")
    run = pd.read_csv(out / "test_studies.csv").set_index("study_key")  # the scores the run evaluated
    np.testing.assert_allclose(bundle.loc[run.index, "score"], run["score"], atol=1e-9)
