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


@pytest.fixture(scope="module")
def registered(finished_run, bundle_dir, tmp_path_factory, run_id_of):
    """The bundle registered in a copy of the run's tracking store: (tracking uri, model uri)."""
    from medlora.cli import main

    out, cfg, _ = finished_run
    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    shutil.copyfile(cfg.tracking.uri.removeprefix("sqlite:///"), db)
    uri = f"sqlite:///{db}"
    mark_site_keyed(uri, run_id_of(out))
    assert main(["register", run_id_of(out), "--name", "phantom-detector", "--tracking-uri", uri,
                 "--bundle", str(bundle_dir)]) == 0
    return uri, "models:/phantom-detector@candidate"


def mark_site_keyed(uri: str, run_id: str) -> None:
    """The key-scheme tag ingest gives a run keyed under the site secret (set here when the run lacks it)."""
    from mlflow import MlflowClient

    from medlora.io.deid import SCHEME
    from medlora.tracking import tags as T

    client = MlflowClient(uri)
    if T.KEY_SCHEME not in client.get_run(run_id).data.tags:
        client.set_tag(run_id, T.KEY_SCHEME, SCHEME)


@pytest.mark.parametrize("scheme", [None, "sha256-salt"])
def test_register_and_export_refuse_a_run_without_site_secret_keys(finished_run, bundle_dir, tmp_path, scheme, run_id_of,
                                                                  capsys):
    from mlflow import MlflowClient

    from medlora.cli import main
    from medlora.errors import BundleError
    from medlora.experiment.register import register_run
    from medlora.tracking import tags as T

    out, cfg, _ = finished_run
    db = tmp_path / "mlflow.db"
    shutil.copyfile(cfg.tracking.uri.removeprefix("sqlite:///"), db)
    uri, run_id = f"sqlite:///{db}", run_id_of(out)
    client = MlflowClient(uri)
    if scheme is None:
        if T.KEY_SCHEME in client.get_run(run_id).data.tags:
            client.delete_tag(run_id, T.KEY_SCHEME)
    else:
        client.set_tag(run_id, T.KEY_SCHEME, scheme)
    with pytest.raises(BundleError, match="not made with a site secret"):
        register_run(run_id, "refused", tracking_uri=uri, bundle_dir=bundle_dir)
    assert main(["export", run_id, "--out", str(tmp_path / "b"), "--tracking-uri", uri]) == 2
    assert T.KEY_SCHEME in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not client.search_registered_models()


def _test_study_folders(test_split: pd.DataFrame) -> list[str]:
    return sorted({str(Path(f).parent) for f in test_split["file"]})


def test_registered_pyfunc_predicts_the_bundle_scores(registered, bundle_dir, test_split, monkeypatch):
    import mlflow
    import torch

    from medlora.bundle.bundle import open_bundle

    uri, model_uri = registered
    monkeypatch.setattr(mlflow, "get_tracking_uri", lambda: uri)
    before = os.environ["MLFLOW_TRACKING_URI"]  # set_tracking_uri overwrites the variable
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(before)
    assert model.metadata.signature is not None
    folders = _test_study_folders(test_split)
    got = model.predict(pd.DataFrame({"path": folders + ["/does/not/exist"]}))
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    ok = got[got["error"] == ""].set_index("study_key")
    assert sorted(ok.index) == sorted(expected.index)
    np.testing.assert_allclose(ok["score"].astype(float), expected.loc[ok.index, "score"], atol=1e-5)
    assert (ok["call"] == expected.loc[ok.index, "call"]).all()
    last = got.iloc[-1]  # an unreadable study: no call and no score, never a 0 read as "normal"
    assert last["error"] and last["input"] == len(folders) and last["call"] is None and last["score"] is None

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
        rows = [[f] for f in folders] + [["/does/not/exist"]]
        body = json.dumps({"dataframe_split": {"columns": ["path"], "data": rows}}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=120).read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    unreadable = answer["predictions"][-1]  # no call over HTTP either: null, with the reason
    assert unreadable["call"] is None and unreadable["score"] is None and unreadable["error"]
    got = pd.DataFrame(answer["predictions"][:-1]).set_index("study_key")
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    np.testing.assert_allclose(got["score"], expected.loc[got.index, "score"], atol=1e-5)
    assert len(got) == len(expected)
