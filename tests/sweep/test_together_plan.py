"""Which sweep points train together (``fewshot.together``, ``fewshot.group_size``) and which alone."""

import pytest

from medlora.config import config_from_dict
from medlora.sweep.points import point_config, point_hash, sweep_hash, sweep_points
from medlora.sweep.together import plan_groups


def sweep(**fewshot):
    raw = {"data": {"root": "/nowhere"}, "fewshot": {"shots": [1, 5, "all"], "seeds": [0, 1], "together": "on", **fewshot}}
    cfg = config_from_dict(raw)
    return cfg, [(p, point_config(cfg, p), point_hash(point_config(cfg, p), p, "fp")) for p in sweep_points(cfg.fewshot)]


def names(items):
    return [p.name for p, _, _ in items]


def test_lora_points_of_one_config_form_bounded_groups_the_rest_runs_alone_in_order():
    cfg, todo = sweep(group_size=4)
    groups, alone = plan_groups(cfg, todo)
    assert [len(g) for g in groups] == [4, 2]
    assert {p.method for g in groups for p, _, _ in g} == {"lora"}
    assert names(groups[0])[:2] == ["lora-allshot-seed0", "lora-allshot-seed1"]  # the largest points together
    assert names(alone) == [n for n in names(todo) if not n.startswith("lora")]


def test_off_trains_every_point_alone_and_a_lone_lora_point_is_not_a_group():
    cfg, todo = sweep(together="off")
    assert plan_groups(cfg, todo) == ([], todo)
    cfg, todo = sweep(group_size=5)
    groups, alone = plan_groups(cfg, todo)
    assert [len(g) for g in groups] == [5] and "lora-1shot-seed1" in names(alone)


@pytest.mark.parametrize("update", [{"model": {"lora": {"use_dora": True}}}, {"train": {"head_norm": True}},
                                    {"model": {"lora": {"blocks": [-1]}}, "preprocess": {"augment": False}}])
def test_what_cannot_train_together_trains_alone(update):
    raw = {"data": {"root": "/nowhere"}, "fewshot": {"shots": [1, "all"], "seeds": [0], "together": "on"}, **update}
    cfg = config_from_dict(raw)
    todo = [(p, point_config(cfg, p), "h") for p in sweep_points(cfg.fewshot)]
    groups, alone = plan_groups(cfg, todo)
    assert groups == [] and len(alone) == len(todo)


def test_together_and_group_size_leave_the_sweep_and_point_hashes_alone():
    cfg, todo = sweep()
    off, todo_off = sweep(together="off", group_size=3)
    assert sweep_hash(cfg, "fp") == sweep_hash(off, "fp")
    assert [h for _, _, h in todo] == [h for _, _, h in todo_off]
    bf16 = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": "bf16"})})
    p = todo[0][0]
    assert point_hash(point_config(bf16, p), p, "fp") != todo[0][2]  # an explicit precision is part of a point


def test_auto_groups_lora_points_on_cuda_and_trains_them_one_by_one_on_a_cpu(monkeypatch, caplog):
    import logging

    import torch

    cfg, todo = sweep(together="auto")
    with caplog.at_level(logging.INFO, logger="medlora.sweep.together"):
        assert plan_groups(cfg, todo) == ([], todo)  # this machine: train.device auto resolves to the CPU
    assert "one by one on cpu" in caplog.text and "fewshot.together: on" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    groups, _ = plan_groups(cfg, todo)
    assert [len(g) for g in groups] == [6]  # the 6 LoRA points (3 shots x 2 seeds) in one group
    cpu = cfg.model_copy(update={"train": cfg.train.model_copy(update={"device": "cpu"})})
    assert plan_groups(cpu, todo) == ([], todo)  # the device the sweep trains on, not the machine's best


@pytest.mark.parametrize("value, expected", [("off", "off"), (False, "off"), ("auto", "auto"), ("on", "on"),
                                             (True, "on")])
def test_yaml_off_is_off(value, expected):
    assert sweep(together=value)[0].fewshot.together == expected
