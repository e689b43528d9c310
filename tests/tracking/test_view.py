"""The shared runs-table view: the columns of the tasks an experiment holds, and a user's own view kept."""

import json

import pytest

from medlora.registry import METHODS
from medlora.tracking import view


def _metrics(state: str) -> list[str]:
    return [c[len("metrics.`"):-1] for c in json.loads(state)["selectedColumns"] if c.startswith("metrics.")]


def test_a_binary_experiment_shows_the_binary_columns_only():
    shown = _metrics(view.view_state())
    assert shown[:5] == ["test_auroc", "test_auroc_ci_low", "test_auroc_ci_high", "test_sensitivity", "test_specificity"]
    assert {f"best_test_auroc_mean.{m}" for m in METHODS} <= set(shown)
    assert not [m for m in shown if "macro" in m]
    assert view.updated_state(None, "binary") == view.view_state()
    assert view.updated_state(view.view_state(), "binary") is None  # already there: not rewritten


@pytest.mark.parametrize("task", ["multiclass", "multilabel"])
def test_a_multi_finding_experiment_shows_the_macro_columns_its_runs_log(task):
    shown = _metrics(view.updated_state(None, task))
    assert {"test_auroc_macro", "test_auroc_macro_ci_low", "test_auroc_macro_ci_high", "val_auroc"} <= set(shown)
    assert {f"best_test_auroc_macro_mean.{m}" for m in METHODS} <= set(shown)
    assert "test_auroc" not in shown and "test_sensitivity" not in shown


def test_a_run_of_another_task_extends_medloras_view_but_never_a_users_own():
    both = view.updated_state(view.view_state(["binary"]), "multilabel")
    shown = _metrics(both)
    assert {"test_auroc", "best_test_auroc_mean.lora", "test_auroc_macro", "best_test_auroc_macro_mean.lora"} <= set(shown)
    assert len(shown) == len(set(shown))  # val_auroc and train_seconds once
    assert view.updated_state(both, "binary") is None and view.updated_state(both, "multiclass") is None
    assert view.updated_state(view.view_state(["macro"]), "binary") == both  # the same view, whichever came first
    users = json.dumps({"selectedColumns": ["params.`method`", "metrics.`test_auroc`"], "orderByKey": "x"})
    assert view.updated_state(users, "multiclass") is None


def test_runs_write_the_view_of_their_task_to_the_experiment(tmp_path, monkeypatch):
    import mlflow

    from medlora.tracking.mlflow_run import start_run

    before = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", before)  # set_tracking_uri writes the variable: restored after the test
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        with start_run("views", task="binary"):
            pass
        tag = lambda: mlflow.get_experiment_by_name("views").tags[view.VIEW_TAG]  # noqa: E731
        assert "test_auroc_macro" not in _metrics(tag())
        with start_run("views", task="multiclass"):
            pass
        assert {"test_auroc", "test_auroc_macro", "best_test_auroc_macro_mean.lora"} <= set(_metrics(tag()))
    finally:
        mlflow.set_tracking_uri(before)
