"""A local SQLite store keeps its artifacts beside its file, wherever the command runs from."""

from medlora.tracking.mlflow_run import artifact_location


def test_artifacts_of_a_sqlite_store_live_beside_it_only():
    assert artifact_location("sqlite:////data/team/mlflow.db") == "file:///data/team/mlruns"
    for uri in ("postgresql://host/mlflow", "http://127.0.0.1:5000", "sqlite:///:memory:", "file:///tmp/mlruns"):
        assert artifact_location(uri) is None, uri


def test_a_new_experiment_logs_beside_its_store_not_in_the_working_folder(tmp_path, monkeypatch):
    import mlflow

    from medlora.tracking.mlflow_run import start_run

    store, elsewhere = tmp_path / "store", tmp_path / "elsewhere"
    store.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = mlflow.get_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", before)  # set_tracking_uri writes the variable: restored after the test
    mlflow.set_tracking_uri("sqlite:///" + str(store / "mlflow.db"))
    try:
        note = tmp_path / "note.txt"
        note.write_text("x")
        with start_run("beside") as run:
            mlflow.log_artifact(str(note))
        logged = list(store.joinpath("mlruns").rglob("note.txt"))
        assert len(logged) == 1 and run.info.run_id in str(logged[0])
        assert not (elsewhere / "mlruns").exists()
        with start_run("beside"):  # an existing experiment is left as it is
            pass
    finally:
        mlflow.set_tracking_uri(before)
