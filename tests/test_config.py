from pathlib import Path

import pytest

from medlora.config import apply_overrides, config_from_dict, load_config
from medlora.tracking.mlflow_run import flatten
from medlora.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_demo_config_loads():
    cfg = load_config(REPO / "configs" / "demo.yaml", base_dir=REPO)
    assert cfg.pipeline == "classify"
    assert cfg.model.method == "lora"
    assert cfg.data.root.is_absolute()


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"data": {"root": "x"}, "trian": {}}, "unknown key 'trian'; allowed here: data, evaluate, fewshot"),
        ({"data": {"root": "x"}, "train": {"epohcs": 3}}, "unknown key 'train.epohcs'; allowed here: batch_size"),
        ({"data": {"root": "x"}, "model": {"lora": {"rank": 4}}}, "unknown key 'model.lora.rank'; allowed here: alpha, blocks, dropout, r,"),
        ({}, "missing required key 'data'"),
        ({"data": {"root": "x", "abnormal": "tumour"}}, "data.abnormal='tumour' is not one of"),
        ({"data": {"root": "x"}, "evaluate": {"operating_point": "sensitivity:1.5"}}, "allowed: youden, sensitivity:T"),
        ({"data": {"root": "x", "split": {"train": 0.5, "val": 0.2, "test": 0.2}}}, "must sum to 1"),
        ({"data": {"root": "x"}, "train": {"epochs": "many"}}, "train.epochs"),
    ],
)
def test_config_errors_name_the_key(raw, message):
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert message in str(err.value)


def test_overrides_are_typed_and_validated():
    raw = {"data": {"root": "x"}}
    apply_overrides(raw, ["train.lr=0.01", "model.lora.targets=[qkv]", "train.compile=true"])
    cfg = config_from_dict(raw)
    assert cfg.train.lr == 0.01 and cfg.model.lora.targets == ["qkv"] and cfg.train.compile is True
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        config_from_dict(apply_overrides({"data": {"root": "x"}}, ["train.lrr=1"]))
    with pytest.raises(ConfigError, match="not of the form"):
        apply_overrides({}, ["train.lr"])


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": 2}}, "e": []}) == {"a.b": 1, "a.c.d": 2, "e": []}
