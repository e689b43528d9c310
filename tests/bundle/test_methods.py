"""Every method ends in a review bundle: LoRA, linear-probe and full fine-tune runs go
run → bundle → verify → predict (the run's test scores) → register → pyfunc (the same scores), and
refuse what makes no sense for them (merging anything but a LoRA adapter)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

METHODS = ["lora", "linear_probe", "full"]  # about 3 s each after the first (CPU, tiny ViT, 3 epochs)
KINDS = {"lora": ("adapter", "adapter/adapter_model.safetensors"), "linear_probe": ("head", "head/head.safetensors"),
         "full": ("model", "model/model.safetensors")}


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, str]:
    """One MLflow store for the module's runs (one set of migrations): (folder, tracking uri)."""
    tmp = tmp_path_factory.mktemp("methods")
    return tmp, f"sqlite:///{tmp / 'mlflow.db'}"


@pytest.fixture(scope="module")
def method_runs(phantom_root, tiny_cfg, store):
    """``f(method) -> (out, cfg, run)``: a short ``medlora run`` per method, once per module, with its
    artifacts under the module's temporary folder."""
    import yaml
    from mlflow import MlflowClient

    from medlora.cli import main
    from medlora.config import config_to_dict

    tmp, uri = store
    done: dict[str, tuple[Path, object, object]] = {}

    def run(method: str):
        if method not in done:
            cfg = tiny_cfg(phantom_root, tmp, **{"model.method": method, "train.epochs": 3, "data.name": "methods",
                                                 "tracking.uri": uri})
            client = MlflowClient(uri)
            if client.get_experiment_by_name("methods") is None:
                client.create_experiment("methods", artifact_location=(tmp / "artifacts").as_uri())
            cfg_file = tmp / f"{method}.yaml"
            cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
            out = tmp / method
            assert main(["run", str(cfg_file), "--out", str(out)]) == 0
            run_id = json.loads((out / "medlora.json").read_text())["mlflow_run_id"]
            done[method] = (out, cfg, client.get_run(run_id))
        return done[method]

    return run


def _test_files(cfg) -> pd.DataFrame:
    from medlora.io.prepare import prepare_dataset

    data = prepare_dataset(cfg.data)
    test = data.split("test").copy()
    test["file"] = [data.root / p for p in test["path"]]
    return test


@pytest.mark.parametrize("method", METHODS)
def test_every_method_runs_to_a_bundle_that_predicts_and_registers(method_runs, method):
    import mlflow

    from medlora.bundle.manifest import verify_bundle
    from medlora.bundle.predict import predict_bundles
    from medlora.cli import main
    from medlora.experiment.register import register_run
    from medlora.io.deid import SCHEME
    from medlora.tracking import tags as T

    out, cfg, run = method_runs(method)
    folder, weights = KINDS[method]
    # FINISHED only once the bundle exists; the method's own artifact was logged
    assert run.info.status == "FINISHED" and T.FAILURE_REASON not in run.data.tags
    client = mlflow.MlflowClient(cfg.tracking.uri)
    assert weights in {a.path for a in client.list_artifacts(run.info.run_id, folder)}
    bundle = out / "bundle"
    assert verify_bundle(bundle).ok
    meta = json.loads((bundle / "medlora.json").read_text())
    assert meta["method"] == method and meta["weights"]["path"] == weights and (bundle / weights).is_file()
    assert meta["adapter"] is (method == "lora")
    others = {f for f, _ in KINDS.values()} - {folder}
    assert not any((bundle / f).exists() for f in others)
    if method == "full":  # a new model: its own weights, no base copied in, said in words
        assert "a new model, not an adapter" in meta["summary"] and meta["weights"]["needs_base"] is False
        assert not (bundle / "base").exists() and meta["base"]["in_bundle"] is False
    else:
        assert (bundle / "base" / "base.safetensors").is_file() and meta["weights"]["needs_base"] is True

    # predict reproduces the run's own test scores, per image and per study
    test = _test_files(cfg)
    res = predict_bundles([bundle], list(test["file"]))
    assert not res.failed
    run_scores = pd.read_csv(out / "predictions.csv").query("split == 'test'").set_index("sample_id")["score"]
    got = res.samples.set_index("sample_id")["score"]
    assert sorted(got.index) == sorted(run_scores.index)
    np.testing.assert_allclose(got, run_scores.loc[got.index], atol=1e-5)
    expected = pd.read_csv(bundle / "predictions.csv").query("split == 'test'").set_index("study_key")
    studies = res.studies.set_index("study_key")
    np.testing.assert_allclose(studies["score"], expected.loc[studies.index, "score"], atol=1e-5)
    assert (studies["call"] == expected.loc[studies.index, "call"]).all()

    # `medlora export RUN_ID` of the finished run (a run keyed under a site secret) gives the same model
    if T.KEY_SCHEME not in run.data.tags:
        client.set_tag(run.info.run_id, T.KEY_SCHEME, SCHEME)
    again = out.parent / f"{method}-export"
    assert main(["export", run.info.run_id, "--out", str(again), "--tracking-uri", cfg.tracking.uri]) == 0
    assert verify_bundle(again).ok
    assert json.loads((again / "medlora.json").read_text())["weights"] == meta["weights"]

    # register → the pyfunc predicts the same per study
    model_uri, _ = register_run(run.info.run_id, f"detector-{method}", tracking_uri=cfg.tracking.uri, bundle_dir=bundle)
    before = os.environ["MLFLOW_TRACKING_URI"]  # set_tracking_uri overwrites the variable
    mlflow.set_tracking_uri(cfg.tracking.uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
    finally:
        mlflow.set_tracking_uri(before)
    folders = sorted({str(Path(f).parent) for f in test["file"]})
    served = model.predict(pd.DataFrame({"path": folders})).set_index("study_key")
    assert (served["error"] == "").all() and sorted(served.index) == sorted(expected.index)
    np.testing.assert_allclose(served["score"].astype(float), expected.loc[served.index, "score"], atol=1e-5)
    assert (served["call"] == expected.loc[served.index, "call"]).all()


def test_bundles_of_all_methods_on_one_base_load_it_once(method_runs, monkeypatch, tmp_path, capsys):
    """LoRA and linear probe share the base (loaded once); the full fine-tune brings its own model;
    together each column equals that bundle alone; merging is refused for all but LoRA."""
    from medlora.bundle import predict as predict_mod
    from medlora.cli import main
    from medlora.errors import BundleError

    bundles = {m: method_runs(m)[0] / "bundle" for m in ("lora", "linear_probe", "full")}
    files = list(_test_files(method_runs("lora")[1])["file"])
    alone = {m: predict_mod.predict_bundles([b], files).samples.set_index("sample_id")["score"] for m, b in bundles.items()}
    loads = []
    real = predict_mod.load_base
    monkeypatch.setattr(predict_mod, "load_base", lambda b: loads.append(b.method) or real(b))
    both = predict_mod.predict_bundles(list(bundles.values()), files).samples.set_index("sample_id")
    assert loads == ["lora"], "LoRA and linear probe were trained on one base: it is loaded once, full needs none"
    assert list(both.columns) == ["study_key", "score_bundle", "score_bundle_1", "score_bundle_2"]
    for m, col in zip(bundles, ["score_bundle", "score_bundle_1", "score_bundle_2"], strict=True):
        np.testing.assert_allclose(both[col], alone[m].loc[both.index], atol=1e-6)
    for m in ("linear_probe", "full"):
        with pytest.raises(BundleError, match="merge"):
            predict_mod.predict_bundles([bundles[m]], files, merge=True)
    assert main(["predict", str(files[0]), "--bundle", str(bundles["full"]), "--merge", "--out",
                 str(tmp_path / "p.csv")]) == 2
    assert "a new model and not an adapter" in capsys.readouterr().err
    merged = predict_mod.predict_bundles([bundles["lora"]], files, merge=True).samples.set_index("sample_id")["score"]
    np.testing.assert_allclose(merged, alone["lora"].loc[merged.index], atol=1e-5)


def test_two_linear_probes_on_one_base_swap_heads(method_runs, tmp_path, monkeypatch):
    """A second head on the same base: one base in memory, heads swapped, each as scored alone."""
    import shutil

    from safetensors.torch import load_file, save_file

    from medlora.bundle import predict as predict_mod
    from medlora.bundle.manifest import write_manifest
    from medlora.hashing import sha256_file

    first = method_runs("linear_probe")[0] / "bundle"
    second = Path(shutil.copytree(first, tmp_path / "second"))
    head = second / "head" / "head.safetensors"
    save_file({k: v * 2.0 for k, v in load_file(head).items()}, head, metadata={"format": "pt"})
    meta = json.loads((second / "medlora.json").read_text())
    meta["weights"]["sha256"] = sha256_file(head)
    (second / "medlora.json").write_text(json.dumps(meta))
    write_manifest(second)
    files = list(_test_files(method_runs("linear_probe")[1])["file"])
    alone = [predict_mod.predict_bundles([b], files).samples.set_index("sample_id")["score"] for b in (first, second)]
    loads = []
    real = predict_mod.load_base
    monkeypatch.setattr(predict_mod, "load_base", lambda b: loads.append(b) or real(b))
    both = predict_mod.predict_bundles([first, second], files).samples.set_index("sample_id")
    assert len(loads) == 1
    np.testing.assert_allclose(both["score_bundle"], alone[0].loc[both.index], atol=1e-6)
    np.testing.assert_allclose(both["score_second"], alone[1].loc[both.index], atol=1e-6)
    assert np.abs(both["score_bundle"] - both["score_second"]).max() > 1e-3


def test_a_tampered_head_is_refused_even_with_a_rewritten_manifest(method_runs, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    from medlora.bundle.manifest import write_manifest
    from medlora.bundle.predict import Predictor
    from medlora.errors import BundleError

    copy = Path(shutil.copytree(method_runs("lora")[0] / "bundle", tmp_path / "copy"))
    path = copy / "adapter" / "adapter_model.safetensors"
    save_file({k: v + 1 for k, v in load_file(path).items()}, path, metadata={"format": "pt"})
    write_manifest(copy)
    with pytest.raises(BundleError, match="sha256 in medlora.json"):
        Predictor.from_paths([copy])


def test_a_failed_export_marks_the_run_failed_with_the_reason(tmp_path):
    """The export stage inside the run: when the bundle cannot be written the run ends FAILED, tagged
    with why, never FINISHED."""
    import mlflow
    from torch import nn

    from medlora.errors import BundleError
    from medlora.experiment.export import run_export
    from medlora.tracking import mlflow_run as track
    from medlora.tracking import tags as T

    uri = os.environ["MLFLOW_TRACKING_URI"]
    client = mlflow.MlflowClient(uri)
    if client.get_experiment_by_name("export-failure") is None:
        client.create_experiment("export-failure", artifact_location=(tmp_path / "artifacts").as_uri())
    meta = {"method": "full", "base": {}, "preprocess": {}, "labels": {}, "operating_point": {}}
    with pytest.raises(BundleError, match="predictions.csv"):
        with track.start_run("export-failure") as run:  # no predictions were logged: the bundle cannot be built
            run_export(tmp_path / "out", nn.Linear(2, 2), {**meta, "mlflow_run_id": run.info.run_id})
    done = client.get_run(run.info.run_id)
    assert done.info.status == "FAILED"
    assert "predictions.csv" in done.data.tags[T.FAILURE_REASON]
    assert "model/model.safetensors" in {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert not (tmp_path / "out" / "bundle").exists()


@pytest.mark.parametrize("method", ["linear_probe", "full"])
def test_a_non_lora_export_of_an_older_medlora_is_refused_with_the_reason(method_runs, tmp_path, method):
    """Before one contract per method, non-LoRA runs saved only adapter/model.safetensors: say so."""
    import shutil

    from medlora.bundle.bundle import open_bundle
    from medlora.errors import BundleError

    old = Path(shutil.copytree(method_runs(method)[0] / "bundle", tmp_path / "old"))
    meta = json.loads((old / "medlora.json").read_text())
    del meta["weights"]
    (old / "medlora.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="older than export format"):
        open_bundle(old)


def test_medlora_run_whose_export_fails_ends_failed_not_finished(phantom_root, tiny_cfg, store, tmp_path, monkeypatch):
    """The issue's case end to end: training and evaluation succeed, the bundle cannot be written →
    the run is FAILED in MLflow with the reason, and `medlora run` exits non-zero."""
    import yaml
    from mlflow import MlflowClient

    from medlora.cli import main
    from medlora.config import config_to_dict
    from medlora.errors import BundleError
    from medlora.review import build as bundle_mod
    from medlora.tracking import tags as T

    def refuse(*args, **kwargs):
        raise BundleError("planted: the PHI scan found an identifier")

    monkeypatch.setattr(bundle_mod, "require_no_phi", refuse)
    uri = store[1]
    cfg = tiny_cfg(phantom_root, tmp_path, **{"model.method": "full", "train.epochs": 1, "data.name": "fails",
                                               "tracking.uri": uri})
    client = MlflowClient(uri)
    client.create_experiment("fails", artifact_location=(tmp_path / "artifacts").as_uri())
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["run", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "out")]) == 2
    (run,) = client.search_runs([client.get_experiment_by_name("fails").experiment_id])
    assert run.info.status == "FAILED" and "planted" in run.data.tags[T.FAILURE_REASON]
    assert "test_auroc" in run.data.metrics and not (tmp_path / "out" / "bundle").exists()
