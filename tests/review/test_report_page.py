"""report.html and the model card as a clinician reads them: labelled intervals, counts, names,
rendered cards, the too-small banner, and "probability" only for calibrated scores."""

from __future__ import annotations

import re

import numpy as np
import pytest

from medlora.review.card import metric_rows, model_card
from medlora.review.html import render_report

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
    from medlora.review.html import Figure

    png = tmp_path / "x.png"
    import numpy as np
    from matplotlib.image import imsave

    imsave(png, np.zeros((4, 4)))
    fig = Figure(png, "true positive", png, (("study key (pseudonym)", "stu-abc123"), ("study score", "0.910"),
                                            ("call", "abnormal (threshold 0.400)"), ("truth", "abnormal"),
                                            ("saliency", "Grad-CAM")))
    slices = Figure(png, "true positive: attention over the study's slices", None, (("slices", "10"),))
    page = render_report(_meta(), _metrics(), [], [fig, slices], "note", "# card", None)
    example, strip = [part.split("</figure>", 1)[0] for part in page.split('<figure class="example">')[1:3]]
    assert example.count("<img") == 2 and "Grad-CAM overlay" in example
    assert strip.count("<img") == 1 and "overlay" not in strip  # a study's attention strip is no overlay
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
    with caplog.at_level(logging.WARNING, logger="medlora.review.build"):
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


# ---- multi-label and multi-class reports --------------------------------------------------------------

FINDINGS = ("nodule", "effusion", "cardiomegaly", "mass")
GRADES = ("grade0", "grade1", "grade2")


def _multi(task: str, normal: int | None = None, n: int = 60) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """``(meta, metrics, targets, scores)`` of a multi-output evaluation on synthetic studies, shaped as
    ``medlora run`` writes them (``mass`` has no positive test study; ``nodule`` has unknown targets)."""
    from medlora.config import EvaluateConfig
    from medlora.evaluate.findings import StudyMatrix, evaluate_findings
    from medlora.evaluate.findings import to_json as multi_json
    from medlora.evaluate.report import to_json

    rng = np.random.default_rng(0)
    if task == "multilabel":
        names = FINDINGS
        targets = rng.integers(0, 2, (n, 4)).astype(float)
        targets[:, 3], targets[:5, 0] = 0, np.nan
        scores = np.clip(np.nan_to_num(targets) * 0.4 + rng.random((n, 4)) * 0.6, 0, 1)
    else:
        names = GRADES
        targets = np.eye(3)[rng.integers(0, 3, n)]
        scores = targets * 0.5 + rng.random((n, 3))
        scores /= scores.sum(axis=1, keepdims=True)
    keys = np.array([f"s{i}" for i in range(n)])
    m = StudyMatrix(keys, keys, scores, targets)
    result = evaluate_findings(m, m, names, EvaluateConfig(bootstrap=100), task, normal, ordinal=task == "multiclass")
    settings = {"policy": "youden", "n_bootstrap": 100, "ci": 0.95, "seed": 0, "min_per_class": 10}
    metrics = {**(to_json(result.any_finding) if result.any_finding else {}),
               "multi": {**multi_json(result), "settings": settings}}
    meta = _meta()
    per_output = {f.name: f.threshold for f in result.findings}
    if result.any_finding is None:
        meta["labels"] = {"task": task, "outputs": list(names), "normal": None, "classes": list(names),
                          "abnormal": None, "abnormal_index": None}
        meta["operating_point"] = {"policy": "youden", "threshold": None, "aggregate": "max", "call": "argmax"}
    else:
        meta["labels"] = {"task": task, "outputs": list(names), "normal": None if normal is None else names[normal],
                          "classes": ["no finding" if normal is None else names[normal], "any finding"],
                          "abnormal": "any finding", "abnormal_index": None}
        meta["operating_point"]["threshold"] = result.any_finding.operating_point.threshold
    meta["operating_point"]["per_output"] = per_output
    return meta, metrics, targets, scores


def _multi_page(meta: dict, metrics: dict, targets: np.ndarray, scores: np.ndarray, tmp_path) -> str:
    from medlora.evaluate.roc_grid import plot_roc_grid
    from medlora.review.html import Figure

    grid = plot_roc_grid(meta["labels"]["outputs"], targets, scores, tmp_path / "roc_findings.png",
                         meta["operating_point"]["per_output"])
    return render_report(meta, metrics, [], [], "no examples", model_card(meta, metrics, True), DATA_CARD,
                         Figure(grid, "ROC per finding"))


def _row(page: str, name: str) -> str:
    return page.split(f"<tr><th>{name}</th>", 1)[1].split("</tr>", 1)[0]


def test_a_multilabel_report_has_a_row_per_finding_with_labelled_intervals_and_counts(tmp_path):
    from medlora.evaluate.intervals import wilson_interval

    meta, metrics, targets, scores = _multi("multilabel")
    page = _multi_page(meta, metrics, targets, scores, tmp_path)
    assert "<h1>Model review: multilabel, 4 findings (nodule, effusion, cardiomegaly, mass)</h1>" in page
    table = page.split('<table class="findings">', 1)[1].split("</table>", 1)[0]
    assert "[95% DeLong]" in table and "[95% Wilson]" in table and "[95% bootstrap, patient-clustered (100 resamples)]" in table
    for f in metrics["multi"]["findings"][:3]:  # each defined finding: counts, AUROC with DeLong, rates with k/n and Wilson
        row = _row(page, f["name"])
        n_pos, n_neg = f["n_positive"], f["n"] - f["n_positive"]
        tp = round(f["metrics"]["sensitivity"] * n_pos)
        low, high = f["intervals"]["auroc_delong"]
        wl, wh = wilson_interval(tp, n_pos, 0.95)
        assert f"{n_pos} / {n_neg}" in row and f"{f['metrics']['auroc']:.3f}" in row and f"[{low:.3f}, {high:.3f}]" in row
        assert f"{tp}/{n_pos}" in row and f"[{wl:.3f}, {wh:.3f}]" in row
    known = targets[~np.isnan(targets[:, 0]), 0]  # nodule: 5 unknown targets left out of its counts
    assert known.size == 55 and f"{int(known.sum())} / {int(known.size - known.sum())}</td>" in _row(page, "nodule")
    mass = _row(page, "mass")  # no positive: NaN with the reason, not hidden
    assert mass.count(">NaN") == 4 and "no operating point" in mass and "test holds 0 positives of 60 known" in mass
    macro = metrics["multi"]["summary"]["auroc_macro"]
    low, high = metrics["multi"]["intervals"]["auroc_macro"]
    assert f"{macro:.3f}" in page and f"[{low:.3f}, {high:.3f}] (95% bootstrap" in page and "Micro AUROC" in page
    assert "3 of 4" in page  # findings with a defined AUROC
    assert "<h2>Any finding vs no finding</h2>" in page and "(true positives)" in page  # the binary section
    assert '<figure class="wide" style="max-width:1320px"><img alt="ROC per finding" src="data:image/png;base64,' in page
    assert "Confusion matrix of the arg-max call" not in page


def test_a_multiclass_report_without_normal_says_why_there_is_no_operating_point(tmp_path):
    meta, metrics, targets, scores = _multi("multiclass")
    page = _multi_page(meta, metrics, targets, scores, tmp_path)
    assert '<p id="no-any-finding">This multi-class model was trained without <code>data.normal</code>' in page
    assert "(true positives)" not in page and "Curves and calibration" not in page
    summary = metrics["multi"]["summary"]
    assert f"{summary['balanced_accuracy']:.3f}" in page and "Quadratic-weighted kappa" in page
    assert f"{summary['kappa_quadratic']:.3f}" in page
    confusion = page.split('<table class="confusion">', 1)[1].split("</table>", 1)[0]
    matrix = metrics["multi"]["confusion"]
    assert "<th>called grade2</th>" in confusion
    assert f'<tr><th>truly grade1</th><td class="num">{matrix[1][0]}</td><td class="num diag">{matrix[1][1]}</td>' in confusion
    assert "none: no class is named normal" in page  # the operating-point row of the model details
    assert 'id="too-small"' not in page  # about 20 studies of each class


def test_a_small_multiclass_test_set_names_its_small_classes():
    meta, metrics, _, _ = _multi("multiclass", n=24)
    small = [f"{f['name']} ({f['n_positive']})" for f in metrics["multi"]["findings"] if f["n_positive"] < 10]
    page = render_report(meta, metrics, [], [], "", "# card", None)
    assert small and f"of class {', '.join(small)}" in page.split('id="too-small">', 1)[1].split("</p>", 1)[0]


@pytest.mark.parametrize("task,normal", [("multilabel", None), ("multiclass", None), ("multiclass", 0)])
def test_the_model_card_lists_every_finding_auroc(task, normal):
    meta, metrics, _, _ = _multi(task, normal)
    card = model_card(meta, metrics, True)
    for f in metrics["multi"]["findings"]:
        auroc = "NaN" if f["metrics"]["auroc"] is None else f"{f['metrics']['auroc']:.3f}"
        assert re.search(rf"^\| {f['name']} \| {f['n_positive']} / {f['n'] - f['n_positive']} \| {auroc} ", card, re.M)
    assert "| Macro AUROC |" in card
    assert ("No abnormal-vs-normal evaluation" in card) == (task == "multiclass" and normal is None)
    assert ("| AUROC (area under the ROC curve) |" in card) == (meta["labels"]["abnormal"] is not None)


def test_the_roc_grid_has_one_panel_per_finding_even_without_positives(tmp_path):
    from matplotlib.image import imread

    from medlora.evaluate.roc_grid import DPI, PANEL_INCHES, grid_shape, plot_roc_grid

    _, _, targets, scores = _multi("multilabel")
    names = list(FINDINGS) + ["extra"]
    t, s = np.c_[targets, targets[:, 1]], np.c_[scores, scores[:, 1]]
    png = imread(plot_roc_grid(names, t, s, tmp_path / "g.png", {"nodule": 0.5, "mass": float("nan")}))
    assert grid_shape(5) == (2, 4) and grid_shape(2) == (1, 2)
    assert png.shape[:2] == (round(2 * PANEL_INCHES * DPI), round(4 * PANEL_INCHES * DPI))
    with pytest.raises(ValueError, match=r"must both be \(studies, 5\)"):
        plot_roc_grid(names, t[:, :4], s[:, :4], tmp_path / "bad.png")
