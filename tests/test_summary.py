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
    assert "test_auroc=0.600 [0.240, 0.880]" in text and "[1.000, 1.000]" not in text
