"""A sweep logged to a real ``mlflow server`` (SQLite backend, local artifacts) and read back over HTTP."""

import pytest


@pytest.fixture
def mlflow_server(tmp_path, mlflow_server_on):
    """The URL of an ``mlflow server`` over a SQLite store, with proxied artifacts (conftest's launcher)."""
    return mlflow_server_on(f"sqlite:///{tmp_path / 'server.db'}").url


@pytest.mark.slow
def test_sweep_runs_read_back_over_http(phantom_root, tmp_path, sweep_config, mlflow_server, capsys):
    from mlflow import MlflowClient

    from medlora.cli import main

    cfg, cfg_file = sweep_config(phantom_root, tmp_path, **{"tracking.uri": mlflow_server, "fewshot.shots": "[1]",
                                                            "fewshot.seeds": "[0]",
                                                            "fewshot.methods": "[lora, linear_probe]"})
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "out")]) == 0
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(cfg.data.name)
    (parent,) = client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'sweep'")
    children = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    assert sorted(r.data.params["method"] for r in children) == ["linear_probe", "lora"]
    assert all(r.info.status == "FINISHED" and "test_auroc" in r.data.metrics for r in children)
    assert {"summary.csv", "summary.md", "learning_curve.png"} <= {a.path for a in client.list_artifacts(parent.info.run_id)}
    capsys.readouterr()
    assert main(["compare", cfg.data.name, "--tracking-uri", mlflow_server]) == 0
    printed = capsys.readouterr().out
    assert "| lora | 1 | 1 |" in printed and "| linear_probe | 1 | 1 |" in printed
