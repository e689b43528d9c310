"""The team tracking server for real: ``mlflow server`` on a PostgreSQL backend store with proxied
artifacts (``deploy/``), reached over HTTP by runs, sweeps, compare, export, register and predict.

Each test skips, with the reason, where PostgreSQL cannot start (``.ci/run`` installs it)."""

from __future__ import annotations

import pytest


def test_postgres_bad_credentials_name_the_store_but_not_the_password(postgres, monkeypatch, capsys):
    from medlora.cli import main

    uri = postgres.create_database("badcreds")
    monkeypatch.setenv("PGPASSWORD", "not-the-password-xyz")
    assert main(["compare", "anything", "--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"the tracking store {uri} refused the credentials" in err
    assert 'password authentication failed for user "medlora"' in err and "PGPASSWORD" in err
    assert "not-the-password-xyz" not in err and postgres.password not in err

    typed = uri.replace("medlora@", "medlora:typed-secret-123@")  # a password typed on the command line
    assert main(["compare", "anything", "--tracking-uri", typed]) == 2
    err = capsys.readouterr().err
    assert "typed-secret-123" not in err and "medlora:***@127.0.0.1" in err


def test_postgres_password_in_a_config_is_refused_without_echoing_it(tiny_cfg, phantom_root, tmp_path):
    from medlora.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        tiny_cfg(phantom_root, tmp_path, **{"tracking.uri": "postgresql://medlora:hunter2@db:5432/mlflow"})
    assert "hunter2" not in str(err.value)
    assert "tracking.uri" in str(err.value) and "postgresql://medlora:***@db:5432/mlflow" in str(err.value)
    assert "PGPASSWORD" in str(err.value) and "logged with every run" in str(err.value)


def _write(cfg, path):
    import yaml

    from medlora.config import config_to_dict

    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


def _children(client, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'child'", max_results=1000)


@pytest.mark.slow
def test_postgres_team_server_holds_run_sweep_compare_export_register_predict(
        postgres, mlflow_server_on, phantom_root, tmp_path, tiny_cfg, sweep_config, capsys):
    import json
    import os
    from pathlib import Path

    import mlflow
    import numpy as np
    import pandas as pd
    import psycopg
    from mlflow import MlflowClient

    from medlora.cli import main
    from medlora.io.prepare import prepare_dataset

    server = mlflow_server_on(postgres.create_database("team"), env=postgres.env)
    cfg = tiny_cfg(phantom_root, tmp_path, **{"tracking.uri": server.url, "train.epochs": 2})
    assert main(["run", str(_write(cfg, tmp_path / "run.yaml")), "--out", str(tmp_path / "run")]) == 0
    run_id = json.loads((tmp_path / "run" / "medlora.json").read_text())["mlflow_run_id"]
    _, sweep_file = sweep_config(phantom_root, tmp_path, **{
        "tracking.uri": server.url, "tracking.experiment": "team-sweep", "fewshot.shots": "[1]",
        "fewshot.seeds": "[0]", "fewshot.methods": "[lora, linear_probe]"})
    assert main(["run", str(sweep_file), "--out", str(tmp_path / "sweep")]) == 0
    capsys.readouterr()
    assert main(["compare", "team-sweep", "--tracking-uri", server.url]) == 0
    table = capsys.readouterr().out
    assert "| lora | 1 | 1 |" in table and "| linear_probe | 1 | 1 |" in table
    assert main(["export", run_id, "--out", str(tmp_path / "bundle"), "--tracking-uri", server.url]) == 0
    assert (tmp_path / "bundle" / "report.html").is_file() and (tmp_path / "bundle" / "MANIFEST.sha256").is_file()
    assert main(["register", run_id, "--name", "team-detector", "--tracking-uri", server.url]) == 0

    # the registry, runs and metrics live in PostgreSQL; artifacts behind the server (proxied)
    with psycopg.connect(host="127.0.0.1", port=postgres.port, user=postgres.user, password=postgres.password,
                         dbname="team") as conn:
        runs = conn.execute("select count(*) from runs where status = 'FINISHED'").fetchone()[0]
        models = conn.execute("select name from registered_models").fetchall()
    assert runs >= 4 and models == [("team-detector",)]  # run, sweep parent, 2 children
    assert any(server.artifacts.rglob("adapter_model.safetensors"))
    client = MlflowClient(server.url)
    assert client.get_run(run_id).info.artifact_uri.startswith("mlflow-artifacts:/")

    test = prepare_dataset(cfg.data).split("test")
    folders = sorted({str(Path(phantom_root / p).parent) for p in test["path"]})
    before = os.environ["MLFLOW_TRACKING_URI"]  # set_tracking_uri overwrites the variable
    mlflow.set_tracking_uri(server.url)
    try:
        model = mlflow.pyfunc.load_model("models:/team-detector@candidate")  # downloaded through HTTP
    finally:
        mlflow.set_tracking_uri(before)
    got = model.predict(pd.DataFrame({"path": folders})).set_index("study_key")
    expected = pd.read_csv(tmp_path / "bundle" / "predictions.csv").query("split == 'test'").set_index("study_key")
    assert sorted(got.index) == sorted(expected.index)
    np.testing.assert_allclose(got["score"].astype(float), expected.loc[got.index, "score"], atol=1e-5)


@pytest.mark.slow
def test_postgres_two_sweeps_writing_at_once_lose_nothing(postgres, mlflow_server_on, phantom_root, tmp_path,
                                                           sweep_config):
    import os
    import subprocess
    import sys

    import pandas as pd
    from mlflow import MlflowClient

    server = mlflow_server_on(postgres.create_database("together"), env=postgres.env)
    procs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _, cfg_file = sweep_config(phantom_root, tmp_path / name, **{
            "tracking.uri": server.url, "tracking.experiment": f"together-{name}", "fewshot.seeds": "[0]"})
        procs.append(subprocess.Popen([sys.executable, "-m", "medlora", "run", str(cfg_file), "--out",
                                       str(tmp_path / name / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    for proc in procs:
        out, err = proc.communicate(timeout=900)
        assert proc.returncode == 0, err[-3000:]
        assert "6 child runs trained, 0 already finished, 0 failed" in out
    client = MlflowClient(server.url)
    for name in ("a", "b"):
        children = _children(client, f"together-{name}")
        assert len(children) == 6 and {r.info.status for r in children} == {"FINISHED"}
        assert len({r.data.tags["medlora.config_hash"] for r in children}) == 6  # every child present once
        for run in children:
            local = client.download_artifacts(run.info.run_id, "test_studies.csv", str(tmp_path / run.info.run_id))
            studies = pd.read_csv(local)
            assert len(studies) >= 10 and {"study_key", "score", "label"} <= set(studies.columns)  # intact


@pytest.mark.slow
def test_postgres_server_going_away_mid_sweep_stops_it_and_a_rerun_resumes(postgres, mlflow_server_on, phantom_root,
                                                                           tmp_path, sweep_config):
    import os
    import subprocess
    import sys
    import time

    from mlflow import MlflowClient

    server = mlflow_server_on(postgres.create_database("outage"), env=postgres.env)
    _, cfg_file = sweep_config(phantom_root, tmp_path, **{"tracking.uri": server.url, "tracking.experiment": "outage"})
    cmd = [sys.executable, "-m", "medlora", "run", str(cfg_file), "--out", str(tmp_path / "out")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
           "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    sweep = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    client, deadline = MlflowClient(server.url), time.monotonic() + 600
    while sweep.poll() is None and time.monotonic() < deadline:
        exp = client.get_experiment_by_name("outage")
        done = [r for r in _children(client, "outage") if r.info.status == "FINISHED"] if exp else []
        if len(done) >= 2:
            break
        time.sleep(0.3)
    server.stop()  # the tracking server goes away mid-sweep
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 2, err[-3000:]
    assert f"the tracking store {server.url} did not answer" in err and "Rerun the same command" in err
    assert "Traceback" not in err

    server.start()  # back, on the same database and artifact store
    finished_before = {r.info.run_id for r in _children(client, "outage") if r.info.status == "FINISHED"}
    assert 2 <= len(finished_before) < 12
    again = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{12 - len(finished_before)} child runs trained, {len(finished_before)} already finished" in again.stdout
    children = [r for r in _children(client, "outage") if r.info.status == "FINISHED"]
    assert len(children) == 12 and len({r.data.tags["medlora.config_hash"] for r in children}) == 12
    assert finished_before <= {r.info.run_id for r in children}  # nothing finished before was lost or redone
    assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {"test_studies.csv", "support_set.csv"}


def test_postgres_store_errors_are_told_apart_from_other_errors():
    from mlflow.exceptions import MlflowException

    from medlora.tracking.store import unreachable_message

    down = MlflowException("API request to http://h:5000/api/2.0/mlflow/runs/get failed with exception "
                           "HTTPConnectionPool(host='h', port=5000): Max retries exceeded (Connection refused)")
    assert "the tracking store http://h:5000 did not answer" in unreachable_message(down, "http://h:5000")
    wrapped = RuntimeError("logging failed")
    wrapped.__cause__ = down
    assert unreachable_message(wrapped, "http://h:5000") is not None
    assert unreachable_message(RuntimeError("collective operation timed out"), "http://h:5000") is None
    assert unreachable_message(ValueError("bad value"), "http://h:5000") is None
