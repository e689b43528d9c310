"""``medlora register``: the bundle as an MLflow pyfunc with alias ``candidate``, loaded and served."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from .conftest import run_id_of


@pytest.fixture(scope="module")
def registered(finished_run, bundle_dir, tmp_path_factory):
    """The bundle registered in a copy of the run's tracking store: (tracking uri, model uri)."""
    from medlora.cli import main

    out, cfg, _ = finished_run
    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    shutil.copyfile(cfg.tracking.uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    assert main(["register", run_id_of(out), "--name", "phantom-detector", "--tracking-uri", uri,
                 "--bundle", str(bundle_dir)]) == 0
    return uri, "models:/phantom-detector@candidate"


def _test_study_folders(test_split: pd.DataFrame) -> list[str]:
    return sorted({str(Path(f).parent) for f in test_split["file"]})


def test_registered_pyfunc_predicts_the_bundle_scores(registered, bundle_dir, test_split, monkeypatch):
    import mlflow
    import torch

    from medlora.export.loading import open_bundle

    uri, model_uri = registered
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
    assert model.metadata.signature is not None
    folders = _test_study_folders(test_split)
    got = model.predict(pd.DataFrame({"path": folders + ["/does/not/exist"]}))
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    ok = got[got["error"] == ""].set_index("study_key")
    assert sorted(ok.index) == sorted(expected.index)
    np.testing.assert_allclose(ok["score"], expected.loc[ok.index, "score"], atol=1e-5)
    assert (ok["call"] == expected.loc[ok.index, "call"]).all()
    assert got.iloc[-1]["error"] and got.iloc[-1]["input"] == len(folders)

    from medlora.transforms.pipeline import build_transforms

    pre, size, mean, std = open_bundle(bundle_dir).preprocess()
    image = build_transforms(pre, size, mean, std)({"image": str(test_split["file"].iloc[0])})["image"]
    by_array = model.predict(pd.DataFrame({"image": [image.numpy().astype(float).tolist()]}))
    samples = pd.read_csv(bundle_dir / "predictions_samples.csv").set_index("sample_id")
    assert by_array["score"].iloc[0] == pytest.approx(samples.loc[test_split["sample_id"].iloc[0], "score"], abs=1e-5)
    assert isinstance(image, torch.Tensor)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_mlflow_models_serve_answers_invocations(registered, bundle_dir, test_split, tmp_path):
    """``mlflow models serve --env-manager local`` on 127.0.0.1, then POST /invocations."""
    uri, model_uri = registered
    port = _free_port()
    venv_bin = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` through bash: it must be on PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    mlflow_bin = str(Path(venv_bin) / "mlflow")
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([mlflow_bin, "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    pytest.fail("server did not start: " + (tmp_path / "serve.log").read_text()[-3000:])
                time.sleep(1)
        folders = _test_study_folders(test_split)
        body = json.dumps({"dataframe_split": {"columns": ["path"], "data": [[f] for f in folders]}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=120).read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    got = pd.DataFrame(answer["predictions"]).set_index("study_key")
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    np.testing.assert_allclose(got["score"], expected.loc[got.index, "score"], atol=1e-5)
    assert len(got) == len(expected)
