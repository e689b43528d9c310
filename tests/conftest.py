"""Shared, session-scoped fixtures: expensive things (synthetic DICOM studies, MLflow stores) are
built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (air-gapped machines, CI)
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
        "train": {"epochs": 6, "batch_size": 16, "lr": 0.003, "patience": 6},
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
