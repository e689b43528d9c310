"""Pretrained bases offline: a Hugging Face cache and a save_pretrained folder built here from a tiny model,
loaded with the network disabled; failures that come fast and say what to do."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medlora.config import ModelConfig, config_from_dict
from medlora.errors import ConfigError, WeightsError
from medlora.models.backbone import base_state, create_base, rebuild_base

TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
TIMM_NAME = "vit_tiny_patch16_224"
TIMM_REPO = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"  # the repo timm loads that name's weights from
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails at once (as on an air-gapped machine)."""
    attempts: list[object] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def tiny_source(num_classes: int = 10):
    import timm

    torch.manual_seed(1)
    return timm.create_model(TIMM_NAME, pretrained=False, num_classes=num_classes, **TINY)


def write_hub_cache(cache: Path, repo: str, model, commit: str = COMMIT) -> Path:
    """The hub cache layout huggingface_hub writes: blobs, snapshots/<commit>/ links, refs/main."""
    from timm.models import save_for_hf

    folder = cache / ("models--" + repo.replace("/", "--"))
    staging = folder / "staging"
    save_for_hf(model, str(staging), safe_serialization=True, model_args=TINY)
    (folder / "blobs").mkdir(parents=True)
    snap = folder / "snapshots" / commit
    snap.mkdir(parents=True)
    for f in staging.iterdir():
        blob = folder / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        f.rename(blob)
        (snap / f.name).symlink_to(os.path.relpath(blob, snap))
    staging.rmdir()
    (folder / "refs").mkdir()
    (folder / "refs" / "main").write_text(commit)
    return snap


def test_timm_name_loads_from_a_copied_cache_with_the_network_off(tmp_path, no_network):
    source = tiny_source()
    snap = write_hub_cache(tmp_path / "cache", TIMM_REPO, source)
    cfg = ModelConfig(backbone=TIMM_NAME, pretrained=True, kwargs=TINY, cache_dir=tmp_path / "cache")
    model, info = create_base(cfg, 2)
    for k, v in base_state(source).items():
        torch.testing.assert_close(model.state_dict()[k], v)
    assert model.get_classifier().out_features == 2  # the 10-class head was dropped for the task's
    assert info.source == "hub"
    assert info.origin["repo"] == TIMM_REPO and info.origin["revision"] == COMMIT
    assert info.origin["file"] == "model.safetensors"
    assert info.sha256 == info.origin["file_sha256"] == hashlib.sha256((snap / "model.safetensors").read_bytes()).hexdigest()
    rebuilt = rebuild_base(json.loads(json.dumps(info.to_dict())))  # as medlora.json holds it
    torch.testing.assert_close(rebuilt.state_dict()["blocks.1.attn.qkv.weight"], source.state_dict()["blocks.1.attn.qkv.weight"])


def test_hf_hub_name_takes_its_architecture_from_the_cached_config(tmp_path, no_network):
    source = tiny_source()
    write_hub_cache(tmp_path / "cache", "site/tiny-vit", source)
    cfg = ModelConfig(backbone="hf-hub:site/tiny-vit", pretrained=True, cache_dir=tmp_path / "cache")
    model, info = create_base(cfg, 2)  # no kwargs: img_size, depth ... come from config.json's model_args
    assert len(model.blocks) == 2 and model.patch_embed.img_size == (32, 32)
    torch.testing.assert_close(model.state_dict()["pos_embed"], source.state_dict()["pos_embed"])
    assert (info.origin["repo"], info.origin["revision"]) == ("site/tiny-vit", COMMIT)


def test_unreachable_hub_without_hf_hub_offline_uses_the_cache(tmp_path, monkeypatch, no_network):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # not declared offline: the probe finds out
    write_hub_cache(tmp_path / "cache", TIMM_REPO, tiny_source())
    _, info = create_base(ModelConfig(backbone=TIMM_NAME, pretrained=True, kwargs=TINY, cache_dir=tmp_path / "cache"), 2)
    assert info.origin["revision"] == COMMIT
    assert no_network and constants.HF_HUB_OFFLINE is False  # probed once, offline mode restored afterwards


@pytest.mark.parametrize("declared_offline", [True, False])
def test_model_missing_from_the_cache_fails_fast_with_advice(tmp_path, monkeypatch, no_network, declared_offline):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", declared_offline)
    write_hub_cache(tmp_path / "cache", "site/other-model", tiny_source())
    cfg = ModelConfig(backbone=TIMM_NAME, pretrained=True, kwargs=TINY, cache_dir=tmp_path / "cache")
    start = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        create_base(cfg, 2)
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert TIMM_REPO in message and "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k" in message
    assert str(tmp_path / "cache") in message and "model.weights: PATH" in message
    assert ("HF_HUB_OFFLINE=1" if declared_offline else "cannot be reached") in message


@pytest.mark.slow
def test_hf_home_and_hf_hub_offline_in_a_fresh_process(tmp_path):
    """The variables as a user sets them, read by huggingface_hub at import (a subprocess, ~5-10 s)."""
    write_hub_cache(tmp_path / "hf" / "hub", TIMM_REPO, tiny_source())
    script = (
        "import json, time; from medlora.config import ModelConfig; from medlora.models.backbone import create_base\n"
        f"kw = {TINY!r}\n"
        "_, info = create_base(ModelConfig(backbone='vit_tiny_patch16_224', pretrained=True, kwargs=kw), 2)\n"
        "start = time.perf_counter()\n"
        "try:\n    create_base(ModelConfig(backbone='vit_small_patch16_224', pretrained=True), 2)\n"
        "except Exception as err:\n    failed = f'{type(err).__name__}: {err}'\n"
        "print(json.dumps({'origin': info.origin, 'seconds': time.perf_counter() - start, 'error': failed}))\n")
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["origin"]["revision"] == COMMIT
    assert result["seconds"] < 5 and result["error"].startswith("WeightsError") and "HF_HUB_OFFLINE=1" in result["error"]


def test_save_pretrained_folder_gives_architecture_and_kwargs(tmp_path):
    from timm.models import save_for_hf

    from medlora.models.build import input_config

    source = tiny_source()
    source.pretrained_cfg = {**source.pretrained_cfg, "mean": (0.1, 0.2, 0.3)}  # the folder's own preprocessing
    save_for_hf(source, str(tmp_path / "folder"), safe_serialization=True, model_args=TINY)
    config_json = json.loads((tmp_path / "folder" / "config.json").read_text())
    config_json["pretrained_cfg"]["from_a_newer_timm"] = True
    (tmp_path / "folder" / "config.json").write_text(json.dumps(config_json))
    cfg = config_from_dict({"data": {"name": "x", "root": str(tmp_path)}, "model": {"weights": str(tmp_path / "folder")}})
    assert cfg.model.backbone == TIMM_NAME  # from config.json, as model.backbone was not given
    model, info = create_base(cfg.model, 2)
    assert info.source == "folder" and info.origin["kind"] == "folder"
    assert {k: info.timm_kwargs[k] for k in ("depth", "embed_dim", "patch_size")} == {"depth": 2, "embed_dim": 32, "patch_size": 8}
    assert "num_classes" not in info.timm_kwargs and model.get_classifier().out_features == 2
    assert input_config(model, None)["mean"] == pytest.approx([0.1, 0.2, 0.3]) and input_config(model, None)["image_size"] == 32
    assert info.sha256 == hashlib.sha256((tmp_path / "folder" / "model.safetensors").read_bytes()).hexdigest()
    for k, v in base_state(source).items():
        torch.testing.assert_close(model.state_dict()[k], v)
    torch.testing.assert_close(rebuild_base(info.to_dict()).state_dict()["pos_embed"], source.state_dict()["pos_embed"])


def test_folder_of_another_architecture_or_layout_is_named(tmp_path):
    from timm.models import save_for_hf

    save_for_hf(tiny_source(), str(tmp_path / "vit"), safe_serialization=True, model_args=TINY)
    with pytest.raises(WeightsError, match=r"holds a 'vit_tiny_patch16_224'.*model.backbone='resnet18'"):
        create_base(ModelConfig(backbone="resnet18", weights=tmp_path / "vit"), 2)
    hf = tmp_path / "transformers"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"architectures": ["Dinov2Model"], "hidden_size": 384}))
    with pytest.raises(ConfigError, match="set model.backbone"):
        config_from_dict({"data": {"name": "x", "root": str(tmp_path)}, "model": {"weights": str(hf)}})
    with pytest.raises(WeightsError, match="transformers model, not a timm one"):
        create_base(ModelConfig(backbone="vit_small_patch14_dinov2", weights=hf), 2)
    (tmp_path / "vit" / "model.safetensors").unlink()
    with pytest.raises(WeightsError, match="has config.json but no weights file"):
        create_base(ModelConfig(backbone=TIMM_NAME, weights=tmp_path / "vit"), 2)


def test_shape_mismatch_names_keys_and_suggests_kwargs(tmp_path):
    import timm
    from safetensors.torch import save_file

    other = timm.create_model(TIMM_NAME, pretrained=False, num_classes=2, img_size=48, patch_size=4, depth=3,
                              embed_dim=64, num_heads=2)
    save_file(base_state(other), tmp_path / "w.safetensors")
    with pytest.raises(WeightsError) as err:
        create_base(ModelConfig(backbone=TIMM_NAME, kwargs=TINY, weights=tmp_path / "w.safetensors"), 2)
    message = str(err.value)
    assert "pos_embed: file (1, 145, 64) vs model (1, 17, 32)" in message
    assert "patch_embed.proj.weight: file (64, 3, 4, 4) vs model (32, 3, 8, 8)" in message
    assert "file tensors the model does not have, e.g. blocks.2." in message
    hint = json.loads(message.split("model.kwargs ")[1].split(" (num_heads")[0])
    assert hint == {"embed_dim": 64, "patch_size": 4, "depth": 3, "img_size": 48}
    assert len(message.splitlines()) < 15  # a readable message, not torch's hundred lines


def test_unreadable_weights_say_which_formats_are_accepted(tmp_path):
    text = tmp_path / "weights.pth"
    text.write_text("these are not weights\n")
    with pytest.raises(WeightsError, match=r"looks like a text file.*Accepted: \.safetensors.*save_pretrained"):
        create_base(ModelConfig(backbone=TIMM_NAME, kwargs=TINY, weights=text), 2)
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(WeightsError, match=r"does not hold a flat tensor state dict \(got list\)"):
        create_base(ModelConfig(backbone=TIMM_NAME, kwargs=TINY, weights=tmp_path / "list.pth"), 2)


def test_pretraining_output_is_recorded_as_such(tmp_path):
    from safetensors.torch import save_file

    save_file(base_state(tiny_source()), tmp_path / "base.safetensors", metadata={"mlflow_run_id": "abc123"})
    (tmp_path / "base_card.md").write_text("# Base pretrained by medlora\n")
    _, info = create_base(ModelConfig(backbone=TIMM_NAME, kwargs=TINY, weights=tmp_path / "base.safetensors"), 2)
    assert info.source == "pretrain" and info.origin["metadata"] == {"mlflow_run_id": "abc123"}
    assert info.origin["base_card_sha256"] == hashlib.sha256(b"# Base pretrained by medlora\n").hexdigest()


def test_preflight_builds_and_checks_the_base_before_any_data(tmp_path):
    import timm
    from safetensors.torch import save_file

    from medlora.experiment.preflight import preflight

    wide = timm.create_model(TIMM_NAME, pretrained=False, num_classes=2, img_size=32, patch_size=8, depth=2,
                             embed_dim=64, num_heads=2)
    save_file(base_state(wide), tmp_path / "wide.safetensors")
    cfg = config_from_dict({"data": {"name": "x", "root": str(tmp_path / "never-read")},
                            "model": {"backbone": TIMM_NAME, "kwargs": TINY, "weights": str(tmp_path / "wide.safetensors")}})
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r'model.kwargs \{"embed_dim": 64\}'):
        preflight(cfg)
    assert time.perf_counter() - start < 5 and not (tmp_path / "never-read").exists()
