"""Sweep points: their configs (method overrides, seed) and the hashes a rerun finds them by."""

import pytest

from medlora.config import config_from_dict
from medlora.errors import ConfigError
from medlora.sweep.points import SweepPoint, point_config, point_hash, sweep_hash, sweep_points


def base_config(**fewshot):
    return config_from_dict({"data": {"root": "/nowhere"}, "train": {"lr": 1e-3, "epochs": 3},
                             "fewshot": {"shots": [1, 2], "seeds": [0, 1], **fewshot}})


def test_point_config_applies_method_overrides_and_seed():
    cfg = base_config(overrides={"full": {"lr": 1e-4, "epochs": 7}})
    full = point_config(cfg, SweepPoint("full", 1, 2))
    lora = point_config(cfg, SweepPoint("lora", 1, 2))
    assert (full.model.method, full.train.lr, full.train.epochs, full.train.seed) == ("full", 1e-4, 7, 2)
    assert (lora.model.method, lora.train.lr, lora.train.epochs) == ("lora", 1e-3, 3)
    assert cfg.model.method == "lora" and cfg.train.seed == 0  # the sweep config itself is untouched


@pytest.mark.parametrize("overrides, message", [
    ({"full": {"learning_rate": 1e-4}}, "fewshot.overrides.full.learning_rate: not a train key; allowed: batch_size"),
    ({"fine_tune": {"lr": 1e-4}}, "fewshot.overrides.fine_tune: unknown method"),
    ({"full": {"lr": -1}}, "fewshot.overrides.full.lr: Input should be greater than 0"),
    ({"lora": {"seed": 3}}, "fewshot.overrides.lora.seed: not a train key"),
])
def test_override_keys_are_validated_against_train_config(overrides, message):
    with pytest.raises(ConfigError, match=message):
        base_config(overrides=overrides)


def test_point_hash_identifies_method_shots_seed_config_and_data():
    cfg = base_config()
    points = sweep_points(cfg.fewshot)
    assert len(points) == 2 * 2 * 3 and points[:3] == [SweepPoint(m, 1, 0) for m in ("lora", "linear_probe", "full")]
    hashes = {point_hash(point_config(cfg, p), p, "fp") for p in points}
    assert len(hashes) == len(points)
    p = points[0]
    assert point_hash(point_config(cfg, p), p, "fp") == point_hash(point_config(base_config(), p), p, "fp")
    assert point_hash(point_config(cfg, p), p, "other") != point_hash(point_config(cfg, p), p, "fp")
    changed = config_from_dict({**cfg.model_dump(mode="json"), "train": {"lr": 5e-3, "epochs": 3}})
    assert point_hash(point_config(changed, p), p, "fp") != point_hash(point_config(cfg, p), p, "fp")
    device = config_from_dict({**cfg.model_dump(mode="json"), "train": {"lr": 1e-3, "epochs": 3, "device": "cpu"}})
    assert sweep_hash(device, "fp") == sweep_hash(cfg, "fp")  # the device changes speed, not results
