"""Shared, session-scoped fixtures: expensive things (synthetic DICOM studies, MLflow stores) are
built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (air-gapped machines, CI)
# a site secret of this test session only: tests never read or create the real one in the home folder
os.environ["MEDLORA_SECRET_FILE"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"medlora-tests-{os.getpid()}.key")
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + os.path.join(os.environ.get("TMPDIR", "/tmp"), f"medlora-tests-{os.getpid()}.db"))

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not available")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """:func:`shared_file` as a fixture, for test folders that cannot import this conftest (no __init__.py)."""
    return shared_file


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small synthetic phantom dataset (real DICOM files + labels.csv), written once."""
    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    write_phantoms(root, SynthConfig(patients=60, images_per_patient=2, size=32, seed=0))
    return root


def tiny_config(root: Path, tmp: Path, **overrides):
    """A Config for a tiny ViT on ``root``, with splits and MLflow under ``tmp``."""
    from medlora.config import apply_overrides, config_from_dict

    raw = {
        "pipeline": "classify",
        "data": {"name": "phantoms", "root": str(root), "split": {"file": str(tmp / "split.csv")}},
        "preprocess": {"image_size": 32},
        "model": {"backbone": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "global_pool": "avg"}},
        "train": {"epochs": 10, "batch_size": 16, "lr": 0.003, "patience": 10},
        "evaluate": {"bootstrap": 200},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
    }
    apply_overrides(raw, [f"{k}={v}" for k, v in overrides.items()])
    return config_from_dict(raw)


@pytest.fixture(scope="session")
def finished_run(phantom_root, tmp_path_factory):
    """``medlora run`` on the phantoms with a tiny ViT, once per session: (out dir, config, config file)."""
    import yaml

    from medlora.cli import main
    from medlora.config import config_to_dict

    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(phantom_root, tmp)
    cfg_file = tmp / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp / "out"
    assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    return out, cfg, cfg_file


@pytest.fixture(scope="session")
def tiny_cfg():
    """:func:`tiny_config` as a fixture, for test folders that cannot import this conftest."""
    return tiny_config


SWEEP = {"pipeline": "fewshot", "train.epochs": 1, "train.threads": 1, "evaluate.bootstrap": 50, "fewshot.shots": "[1, 2]",
         "fewshot.seeds": "[0, 1]", "fewshot.methods": "[lora, linear_probe, full]"}


def write_sweep_config(root: Path, tmp: Path, **overrides) -> tuple[object, Path]:
    """A tiny few-shot sweep config (2 shot counts x 2 seeds x 3 methods, 1 epoch) saved as YAML under
    ``tmp``, with its MLflow experiment's artifacts kept under ``tmp`` too: (config, config file)."""
    import yaml
    from mlflow import MlflowClient

    from medlora.config import config_to_dict

    cfg = tiny_config(root, tmp, **{**SWEEP, **overrides})
    client = MlflowClient(cfg.tracking.uri)
    if cfg.tracking.uri.startswith("sqlite") and client.get_experiment_by_name(cfg.data.name) is None:
        client.create_experiment(cfg.data.name, artifact_location=(tmp / "artifacts").as_uri())
    cfg_file = tmp / "sweep.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return cfg, cfg_file


@pytest.fixture(scope="session")
def finished_sweep(phantom_root, finished_run, tmp_path_factory):
    """``medlora run`` of a tiny few-shot sweep, once per session: (config, config file, out dir, output).

    It logs to :func:`finished_run`'s MLflow store (a new SQLite store costs seconds of migrations), in
    its own experiment ``phantoms_fewshot``."""
    import contextlib
    import io

    from medlora.cli import main

    tmp = tmp_path_factory.mktemp("sweep")
    store = finished_run[1].tracking.uri
    cfg, cfg_file = write_sweep_config(phantom_root, tmp, **{"data.name": "phantoms_fewshot", "tracking.uri": store})
    out, printed = tmp / "out", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    return cfg, cfg_file, out, printed.getvalue()


@pytest.fixture(scope="session")
def sweep_config():
    """:func:`write_sweep_config` as a fixture (for tests that run their own sweep)."""
    return write_sweep_config


@pytest.fixture(scope="session")
def plain_reload_scores():
    """``f(out, cfg) -> (scores, expected)``: a run's test images scored by the base rebuilt with plain
    timm + peft from ``medlora.json`` and the saved adapter, and the run's own test scores."""

    def score(out: Path, cfg):
        import json

        import pandas as pd
        import timm
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        from medlora.io.prepare import prepare_dataset
        from medlora.transforms.pipeline import build_transforms, manifest_items

        meta = json.loads((out / "medlora.json").read_text())
        info = meta["base"]
        base = timm.create_model(info["timm_name"], pretrained=False, num_classes=info["num_classes"],
                                 **info["timm_kwargs"])
        missing, unexpected = base.load_state_dict(load_file(info["weights_path"]), strict=False)
        assert not unexpected and all(k.startswith("head.") for k in missing)
        model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        data = prepare_dataset(cfg.data)  # same persisted split
        pre = meta["preprocess"]
        transform = build_transforms(cfg.preprocess, pre["image_size"], pre["mean"], pre["std"])
        items = manifest_items(data.split("test"), data.root)
        x = torch.stack([transform(item)["image"] for item in items])
        with torch.no_grad():
            scores = torch.softmax(model(x), 1)[:, meta["labels"]["abnormal_index"]].numpy()
        expected = pd.read_csv(out / "predictions.csv").query("split == 'test'").set_index("sample_id")["score"]
        return scores, expected.loc[[i["sample_id"] for i in items]].to_numpy()

    return score
