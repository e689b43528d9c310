from pathlib import Path

import pytest

from medlora.config import apply_overrides, config_from_dict, load_config, path_keys
from medlora.errors import ConfigError
from medlora.tracking.mlflow_run import flatten

REPO = Path(__file__).resolve().parents[2]


def test_demo_config_loads():
    cfg = load_config(REPO / "configs" / "demo.yaml")
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


def test_config_paths_resolve_against_the_config_file_and_overrides_against_the_working_directory(tmp_path,
                                                                                                  monkeypatch):
    folder = tmp_path / "site" / "configs"
    folder.mkdir(parents=True)
    (tmp_path / "site" / "cards").mkdir()
    (tmp_path / "site" / "cards" / "ct.md").write_text("card")
    (folder / "run.yaml").write_text("data: {root: ../studies, card: ../cards/ct.md, split: {file: splits/a.csv}}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(folder / "run.yaml", ["data.cache_dir=cache"])
    assert cfg.data.root == folder / "../studies" and cfg.data.card == folder / "../cards/ct.md"
    assert cfg.data.split.file == folder / "splits/a.csv"
    assert cfg.data.cache_dir == elsewhere / "cache"  # typed on the command line: the working directory's


def test_an_input_file_that_does_not_exist_shows_the_written_and_the_resolved_path(tmp_path):
    (tmp_path / "run.yaml").write_text("data: {root: studies, card: cards/missing.md}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "run.yaml")
    assert "data.card: cards/missing.md does not exist" in str(err.value)
    assert str(tmp_path / "cards/missing.md") in str(err.value)


def test_every_path_field_is_resolved():
    assert {"data.root", "data.labels", "data.card", "data.split.file", "model.weights", "oneclass.adapter"} <= set(
        path_keys())


def test_a_validated_config_is_frozen():
    cfg = config_from_dict({"data": {"root": "x"}})
    with pytest.raises(ValueError, match="frozen"):
        cfg.data.strict = True


def test_unknown_pipeline_and_method_list_the_valid_names():
    with pytest.raises(ConfigError) as err:
        config_from_dict({"data": {"root": "x"}, "pipeline": "segment"})
    assert "'classify', 'fewshot' or 'oneclass'" in str(err.value)
    with pytest.raises(ConfigError, match="'lora', 'linear_probe' or 'full'"):
        config_from_dict({"data": {"root": "x"}, "model": {"method": "adapter"}})


def test_the_loader_reads_a_weights_folder_s_architecture_and_a_base_card_s_weights(tmp_path):
    import json

    from medlora.frontmatter import render_front_matter

    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architecture": "vit_tiny_patch16_224"}))
    cfg = config_from_dict({"data": {"root": "x"}, "model": {"weights": str(folder)}})
    assert cfg.model.backbone == "vit_tiny_patch16_224"
    given = config_from_dict({"data": {"root": "x"}, "model": {"weights": str(folder), "backbone": "resnet18"}})
    assert given.model.backbone == "resnet18"  # a written backbone wins; the model build compares them
    (tmp_path / "base.safetensors").write_bytes(b"weights")
    (tmp_path / "base_card.md").write_text(render_front_matter(
        {"weights": "base.safetensors", "sha256": "0" * 64, "timm_name": "vit_tiny_patch16_224"}) + "\n\nprose\n")
    raw = {"data": {"root": "x"}, "model": {"weights": str(tmp_path / "base_card.md")}}
    assert config_from_dict(raw).model.weights == tmp_path / "base.safetensors"
    assert raw["model"]["weights"] == str(tmp_path / "base_card.md")  # the caller's mapping is left as it was
    (tmp_path / "base.safetensors").unlink()
    with pytest.raises(ConfigError, match="names base.safetensors, which is not beside it"):
        config_from_dict(raw)
