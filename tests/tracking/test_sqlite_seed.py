"""A new local store is copied from an empty migrated one and behaves as one MLflow built itself."""

from __future__ import annotations

import sqlite3

import pytest

from medlora.tracking.sqlite_seed import seed_sqlite_store, sqlite_path, template


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDLORA_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_only_new_local_sqlite_files_are_seeded(tmp_path, cache):
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql://u@h/db") is None
    assert sqlite_path("sqlite:////abs/m.db") == sqlite_path("sqlite:////abs/m.db?timeout=5")
    existing = tmp_path / "old.db"
    existing.write_bytes(b"not touched")
    assert not seed_sqlite_store(f"sqlite:///{existing}")
    assert existing.read_bytes() == b"not touched"
    assert not seed_sqlite_store("http://127.0.0.1:5000")
    assert not cache.exists()  # nothing was built for stores that are not new SQLite files


def test_a_seeded_store_is_a_working_mlflow_store_with_its_own_default_experiment(tmp_path, cache):
    import time

    from mlflow.store.db.utils import _get_latest_schema_revision
    from mlflow.tracking import MlflowClient

    built = template()
    opened = time.time() * 1000
    with sqlite3.connect(built) as db:  # the template holds the schema, no experiment of the machine that built it
        assert db.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
        assert db.execute("SELECT version_num FROM alembic_version").fetchone() == (_get_latest_schema_revision(),)
    db.close()
    for name in ("a", "b"):
        store = tmp_path / name / "mlflow.db"
        assert seed_sqlite_store(f"sqlite:///{store}")
        client = MlflowClient(f"sqlite:///{store}")
        default = client.get_experiment("0")
        assert default.name == "Default" and default.creation_time >= opened  # made by this store, not the template's
        exp = client.create_experiment("x", artifact_location=(tmp_path / name / "mlruns").as_uri())
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "test_auroc", 0.75)
        assert client.get_run(run.info.run_id).data.metrics == {"test_auroc": 0.75}
    assert template() == built  # built once, reused
