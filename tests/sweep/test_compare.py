"""``medlora compare`` and the summary/DeLong/learning-curve helpers behind it."""

import numpy as np
import pandas as pd
import pytest

from medlora.sweep.compare import (
    SUMMARY_METRICS,
    finding_metrics,
    format_summary,
    markdown_table,
    paired_delong,
    plot_finding_curves,
    plot_learning_curve,
    summary_metric_names,
    summary_metrics,
    summary_table,
)


def children() -> pd.DataFrame:
    rows = []
    for method, base in (("lora", 0.8), ("linear_probe", 0.7)):
        for shots, bump in (("1", 0.0), ("all", 0.1)):
            for seed in (0, 1, 2):
                rows.append({"method": method, "shots": shots, "seed": seed, "test_auroc": base + bump + 0.01 * seed,
                             "test_auprc": 0.5, "test_sensitivity": 0.6, "test_specificity": 0.9, "val_auroc": 0.8,
                             "train_seconds": 2.0})
    return pd.DataFrame(rows)


def test_summary_is_mean_and_sd_over_seeds_per_method_and_shots():
    s = summary_table(children())
    assert list(zip(s.method, s.shots, strict=True)) == [("lora", "1"), ("lora", "all"), ("linear_probe", "1"),
                                                         ("linear_probe", "all")]
    row = s.iloc[1]
    assert row.n_seeds == 3 and row.test_auroc_mean == pytest.approx(0.91) and row.test_auroc_sd == pytest.approx(0.01)
    md = markdown_table(format_summary(s))
    assert "| lora | all | 3 | 0.910 ± 0.010 |" in md and md.splitlines()[1].startswith("|---|")


def test_paired_delong_compares_lora_with_each_other_method_on_shared_studies():
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(20), np.ones(20)].astype(int)
    base = pd.DataFrame({"study_key": [f"s{i}" for i in range(40)], "patient_key": [f"p{i // 2}" for i in range(40)],
                         "label": y})
    studies = {("lora", "1", 0): base.assign(score=y + rng.normal(0, 0.5, 40)),
               ("linear_probe", "1", 0): base.assign(score=rng.normal(0, 1, 40)),
               ("full", "1", 0): base.assign(score=y + rng.normal(0, 0.5, 40)).iloc[::-1]}  # order does not matter
    out = paired_delong(studies)
    assert list(out.method_b) == ["linear_probe", "full"] and set(out.n_studies) == {40}
    lp = out.iloc[0]
    assert lp.auroc_a > lp.auroc_b and lp.p < 0.05 and lp.diff_ci_low < lp["diff"] < lp.diff_ci_high


def test_learning_curve_is_a_png(tmp_path):
    path = plot_learning_curve(summary_table(children()), tmp_path / "curve.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_compare_prints_the_summary_table_by_experiment_and_by_run_id(finished_sweep, capsys):
    from mlflow import MlflowClient

    from medlora.cli import main

    cfg, _, out, _ = finished_sweep
    capsys.readouterr()
    assert main(["compare", cfg.data.name, "--tracking-uri", cfg.tracking.uri]) == 0
    by_name = capsys.readouterr().out
    expected = markdown_table(format_summary(pd.read_csv(out / "summary.csv", dtype={"shots": str})))
    assert expected in by_name and "12 finished child runs" in by_name
    client = MlflowClient(cfg.tracking.uri)
    exp = client.get_experiment_by_name(cfg.data.name)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'sweep'")
    assert main(["compare", parent.info.run_id, "--tracking-uri", cfg.tracking.uri]) == 0
    assert expected in capsys.readouterr().out
    assert main(["compare", "no-such-experiment", "--tracking-uri", cfg.tracking.uri]) == 2
    assert "neither an experiment name nor a run id" in capsys.readouterr().err


def multilabel_children() -> pd.DataFrame:
    rows = []
    for method, base in (("lora", 0.8), ("linear_probe", 0.7)):
        for shots in ("1", "4"):
            for seed in (0, 1):
                aucs = {"nodule": base - 0.1, "mass": base + 0.1 + 0.02 * seed}
                rows.append({"method": method, "shots": shots, "seed": seed, "val_auroc": 0.7, "train_seconds": 1.0,
                             **{f"test_auroc.{k}": v for k, v in aucs.items()},
                             "test_auroc_macro": sum(aucs.values()) / 2, "test_any_auroc": 0.9})
    return pd.DataFrame(rows)


def test_multilabel_summary_is_per_finding_and_macro(tmp_path):
    multi = multilabel_children()
    assert summary_metric_names(multi, ["mass", "nodule"]) == (
        "test_auroc_macro", "test_auroc.mass", "test_auroc.nodule", "val_auroc", "train_seconds")
    assert summary_metric_names(children()) == SUMMARY_METRICS  # binary children: unchanged
    s = summary_table(multi, summary_metric_names(multi, ["mass", "nodule"]))
    row = s[(s.method == "lora") & (s.shots == "4")].iloc[0]
    assert row["test_auroc.mass_mean"] == pytest.approx(0.91) and row["test_auroc.mass_sd"] == pytest.approx(0.01414, abs=1e-4)
    assert row["test_auroc_macro_mean"] == pytest.approx(0.805)
    md = markdown_table(format_summary(s))
    assert md.splitlines()[0] == ("| method | shots | n_seeds | test_auroc_macro | test_auroc.mass | test_auroc.nodule "
                                  "| val_auroc | train_seconds |")
    assert "| lora | 4 | 2 | 0.805 ± 0.007 | 0.910 ± 0.014 | 0.700 ± 0.000 |" in md
    metrics = summary_metrics(s)
    assert metrics["test_auroc_macro_mean.linear_probe.1shot"] == pytest.approx(0.705)
    assert metrics["best_test_auroc_macro_mean.lora"] == pytest.approx(0.805)
    assert "val_auroc_mean.lora.4shot" in metrics and not any(k.startswith("test_auroc_mean") for k in metrics)
    assert finding_metrics(s) == ["test_auroc.mass", "test_auroc.nodule"]
    for path in (plot_learning_curve(s, tmp_path / "macro.png"), plot_finding_curves(s, tmp_path / "findings.png")):
        assert path.read_bytes()[:4] == b"\x89PNG"
