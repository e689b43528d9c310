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
