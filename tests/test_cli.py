"""The command line fails early, before the ingest, and leaves nothing behind when it does."""

from __future__ import annotations

import time

from medlora.cli import main


def _config(tmp_path, **model) -> str:
    lines = ["data: {root: no_such_studies}", "model: {" + ", ".join(f"{k}: {v}" for k, v in model.items()) + "}"]
    path = tmp_path / "run.yaml"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_an_unknown_backbone_fails_before_the_ingest_and_names_close_matches(tmp_path, capsys):
    t0 = time.perf_counter()
    code = main(["run", _config(tmp_path, backbone="vit_tiny_patch16_22"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "model.backbone='vit_tiny_patch16_22' is not a timm model" in err
    assert "vit_tiny_patch16_224" in err  # the close match
    assert "no_such_studies" not in err  # failed before reading any data
    assert time.perf_counter() - t0 < 30 and not (tmp_path / "out").exists()


def test_a_failed_run_removes_the_empty_output_folder_it_created(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["run", _config(tmp_path, backbone="vit_tiny_patch16_224"), "--out", str(out)]) == 2
    assert "no_such_studies" in capsys.readouterr().err  # the ingest's own error
    assert not out.exists()
    kept = tmp_path / "kept"
    kept.mkdir()
    assert main(["run", _config(tmp_path, backbone="vit_tiny_patch16_224"), "--out", str(kept)]) == 2
    assert kept.is_dir()  # a folder that existed before is the user's: left alone


_NOISE_SCRIPT = """
import logging, sys
from medlora.cli import main
assert main(["synth", "--out", sys.argv[1], "--patients", "6", "--images", "1", "--size", "16"]) == 0
from medlora.config import PreprocessConfig
from medlora.transforms.pipeline import build_transforms
build_transforms(PreprocessConfig(image_size=16), 16, [0.5] * 3, [0.5] * 3)  # MONAI LoadImaged, twice as a run does
build_transforms(PreprocessConfig(image_size=16), 16, [0.5] * 3, [0.5] * 3)
import mlflow
logging.getLogger("mlflow.tracking.fluent").info("Experiment with name 'x' does not exist. Creating a new experiment.")
logging.getLogger("mlflow.tracking.fluent").warning("an MLflow warning medlora keeps")
from huggingface_hub.utils import _http
_http.logger.warning("Retrying in 1s [Retry 1/5].")
_http.logger.warning("a hub warning medlora keeps")
logging.getLogger("monai.data.nvimgcodec_pydicom_plugin").warning("another MONAI warning medlora keeps")
"""


def test_third_party_noise_is_filtered_once_at_the_entry_point_and_other_warnings_still_show(tmp_path):
    """A fresh interpreter, as the ``medlora`` command is: MLflow and MONAI configure their loggers on import,
    after ``main`` has set up logging."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_LOGGING_LEVEL"}
    proc = subprocess.run([sys.executable, "-c", _NOISE_SCRIPT, str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "nvImageCodec is not available" not in err
    assert "does not exist. Creating a new experiment" not in err  # MLflow's INFO lines
    assert "Retrying in" not in err
    for kept in ("a hub warning", "another MONAI warning", "an MLflow warning"):
        assert f"{kept} medlora keeps" in err
