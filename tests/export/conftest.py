"""Fixtures of the export tests: one bundle of the session's finished run, and the run's test files."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest


def run_id_of(out: Path) -> str:
    return json.loads((out / "medlora.json").read_text())["mlflow_run_id"]


@pytest.fixture(scope="session")
def bundle_dir(finished_run, tmp_path_factory) -> Path:
    """``medlora export`` of the finished run, once per session (treat as read-only: copy to modify).

    Named ``review`` (tests look for ``score_review`` columns); a bundle the pipeline wrote itself
    (``out/bundle``) is copied rather than exported a second time.
    """
    from medlora.cli import main

    out, cfg, _ = finished_run
    dst = tmp_path_factory.mktemp("bundle") / "review"
    if (out / "bundle" / "MANIFEST.sha256").is_file():
        return Path(shutil.copytree(out / "bundle", dst))
    assert main(["export", run_id_of(out), "--out", str(dst), "--tracking-uri", cfg.tracking.uri]) == 0
    return dst


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the session bundle, free to tamper with."""
    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


@pytest.fixture(scope="session")
def test_split(finished_run) -> pd.DataFrame:
    """The run's test-split manifest rows with absolute ``file`` paths (same persisted split)."""
    from medlora.io.prepare import prepare_dataset

    _, cfg, _ = finished_run
    data = prepare_dataset(cfg.data)
    test = data.split("test").copy()
    test["file"] = [data.root / p for p in test["path"]]
    return test
