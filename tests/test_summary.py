"""The summary a run prints: rates with their Wilson interval and counts, never a collapsed bootstrap one."""

from pathlib import Path

from medlora.summary import RunSummary


def test_rates_print_their_wilson_interval_and_counts() -> None:
    metrics = {"val_auroc": 0.3, "test_auroc": 0.6, "test_auroc_ci_low": 0.24, "test_auroc_ci_high": 0.88,
               "test_sensitivity": 1.0, "test_sensitivity_ci_low": 1.0, "test_sensitivity_ci_high": 1.0,
               "test_sensitivity_wilson_ci_low": 0.566, "test_sensitivity_wilson_ci_high": 1.0,
               "test_specificity": 0.3, "test_specificity_wilson_ci_low": 0.108, "test_specificity_wilson_ci_high": 0.603,
               "test_tp": 5.0, "test_fn": 0.0, "test_tn": 3.0, "test_fp": 7.0, "threshold": 0.35}
    text = RunSummary("r", "e", "sqlite:///x.db", Path("/nowhere"), metrics).describe()
    assert "test_sensitivity=1.000 [0.566, 1.000] Wilson (5/5)" in text
    assert "test_specificity=0.300 [0.108, 0.603] Wilson (3/10)" in text
    assert "test_auroc=0.600 [0.240, 0.880] bootstrap" in text and "[1.000, 1.000]" not in text


def test_several_findings_print_macro_each_finding_and_any_finding() -> None:
    metrics = {"val_auroc": 0.86, "test_auroc_macro": 0.855, "test_auroc_macro_ci_low": 0.815,
               "test_auroc_macro_ci_high": 0.893, "test_auroc_micro": 0.898,
               "test_auroc.nodule": 0.693, "test_auroc_ci_low.nodule": 0.571, "test_auroc_ci_high.nodule": 0.806,
               "test_auroc.effusion": float("nan"), "test_auprc.nodule": 0.4,
               "test_any_auroc": 0.982, "test_any_sensitivity": 0.955, "test_any_sensitivity_wilson_ci_low": 0.849,
               "test_any_sensitivity_wilson_ci_high": 0.987, "test_any_tp": 42.0, "test_any_fn": 2.0,
               "test_any_tn": 16.0, "test_any_fp": 0.0, "test_any_specificity": 1.0}
    text = RunSummary("r", "e", "sqlite:///x.db", Path("/nowhere"), metrics).describe()
    assert "test_auroc_macro=0.855 [0.815, 0.893]" in text and "test_auroc_micro=0.898" in text
    assert "effusion=n/a" in text and "nodule=0.693 [0.571, 0.806]" in text  # no positives: n/a, never 'nan'
    assert "test_any_sensitivity=0.955 [0.849, 0.987] Wilson (42/44)" in text and "(16/16)" in text
    assert "test_auroc=n/a" not in text and "test_sensitivity=n/a" not in text


def test_multiclass_without_normal_prints_balanced_accuracy_and_no_any_finding() -> None:
    metrics = {"val_auroc": 0.9, "test_auroc_macro": 0.91, "test_auroc.a": 0.9, "test_auroc.b": 0.92,
               "test_balanced_accuracy": 0.81, "test_kappa_quadratic": 0.7}
    text = RunSummary("r", "e", "sqlite:///x.db", Path("/nowhere"), metrics).describe()
    assert "test_balanced_accuracy=0.810" in text and "test_kappa_quadratic=0.700" in text
    assert "any finding" not in text and "a=0.900" in text and "b=0.920" in text


def test_only_files_the_run_wrote_are_named(tmp_path) -> None:
    text = RunSummary("r", "e", "sqlite:///x.db", tmp_path, {"test_auroc": 0.9}).describe()
    assert "adapter:" not in text and "metadata:" not in text  # a one-class run writes neither
    (tmp_path / "adapter").mkdir()
    (tmp_path / "medlora.json").write_text("{}")
    text = RunSummary("r", "e", "sqlite:///x.db", tmp_path, {"test_auroc": 0.9}).describe()
    assert f"adapter: {tmp_path / 'adapter'}   metadata: {tmp_path / 'medlora.json'}" in text
