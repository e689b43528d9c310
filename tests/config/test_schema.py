"""The schema alone: checks across sections at load time, the shared optimiser keys, no file I/O."""

import builtins
import pathlib

import pytest

from medlora.config import (
    OPTIMISER_KEYS,
    Config,
    PretrainConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    load_config,
    ray_endpoint,
)
from medlora.errors import ConfigError

DATA = {"root": "x"}


def test_a_fewshot_pipeline_without_its_section_is_refused_when_the_config_loads(tmp_path):
    (tmp_path / "sweep.yaml").write_text("pipeline: fewshot\ndata: {root: studies}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "sweep.yaml")
    assert "pipeline: fewshot needs a 'fewshot:' section" in str(err.value)
    assert str(tmp_path / "sweep.yaml") in str(err.value)
    assert load_config(tmp_path / "sweep.yaml", ["fewshot={}"]).fewshot.shots == [1, 5, 10, "all"]


@pytest.mark.parametrize("address", ["head", "head:port", "head:99999", "http://head:6379", "ray://:6379",
                                     "ray://head", "local", "", "head:6379/path"])
def test_a_malformed_ray_address_is_refused_when_the_config_loads(address):
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": DATA, "pipeline": "fewshot",
                          "fewshot": {"executor": "ray", "ray": {"address": address}}})
    assert f"fewshot.ray.address={address!r} is not host:port, ray://host:port or auto" in str(err.value)


@pytest.mark.parametrize("address, endpoint", [("head:6379", ("head", 6379)), ("ray://10.0.0.1:10001", ("10.0.0.1", 10001)),
                                               ("[::1]:6379", ("::1", 6379)), ("auto", None)])
def test_the_accepted_ray_address_forms(address, endpoint):
    assert ray_endpoint(address) == endpoint
    cfg = config_from_dict({"data": DATA, "fewshot": {"executor": "ray", "ray": {"address": address}}})
    assert cfg.fewshot.ray.address == address


@pytest.mark.parametrize("section", ["train", "pretrain"])
@pytest.mark.parametrize("key, value", [("epochs", 3), ("batch_size", 8), ("lr", 0.02), ("weight_decay", 0.0),
                                        ("warmup_epochs", 0.5)])
def test_the_optimiser_keys_are_accepted_in_train_and_pretrain(section, key, value):
    cfg = config_from_dict(apply_overrides({"data": dict(DATA)}, [f"{section}.{key}={value}"]))
    assert getattr(getattr(cfg, section), key) == value
    with pytest.raises(ConfigError, match=f"{section}.{key}"):
        config_from_dict(apply_overrides({"data": dict(DATA)}, [f"{section}.{key}=-1"]))


def test_the_optimiser_keys_are_defined_once_with_each_section_s_defaults():
    for cls in (TrainConfig, PretrainConfig):
        assert set(OPTIMISER_KEYS).isdisjoint(vars(cls).get("__annotations__", {}))  # inherited, not redeclared
    for key in OPTIMISER_KEYS:
        train, pretrain = TrainConfig.model_fields[key], PretrainConfig.model_fields[key]
        assert (train.annotation, train.metadata, train.description) == (
            pretrain.annotation, pretrain.metadata, pretrain.description)
    assert (TrainConfig().epochs, TrainConfig().lr) == (10, 1e-3)
    assert (PretrainConfig().epochs, PretrainConfig().lr, PretrainConfig().warmup_epochs) == (20, 5e-4, 2.0)


def test_the_schema_validates_a_mapping_without_touching_files(monkeypatch, tmp_path):
    def no_io(*args, **kwargs):
        raise AssertionError("the schema touched the file system")

    for name in ("exists", "is_file", "is_dir", "read_text", "read_bytes", "open", "stat", "iterdir"):
        monkeypatch.setattr(pathlib.Path, name, no_io)
    monkeypatch.setattr(builtins, "open", no_io)
    raw = {"data": {"root": "/nowhere", "card": "/nowhere/card.md", "labels": "/nowhere/labels.csv"},
           "model": {"weights": "/nowhere/base_card.md"}, "oneclass": {"adapter": "/nowhere/run"}}
    cfg = Config.model_validate(raw)
    assert str(cfg.model.weights) == "/nowhere/base_card.md"  # a card is read by the loader, not the schema
    assert cfg.model.backbone == "vit_small_patch16_224"
