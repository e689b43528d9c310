"""The rules every run kind resumes by (:mod:`medlora.experiment.resume`): found by folder, refused with
the keys that differ, speed-only settings ignored, forgotten when finished."""

import pytest

from medlora.errors import ConfigError
from medlora.experiment import resume


def test_unfinished_work_is_found_again_by_its_folder_and_identity(tmp_path):
    identity = {"train": {"lr": 0.001, "epochs": 3}, "model": {"method": "lora"}}
    assert resume.find_unfinished(tmp_path, identity) is None  # nothing there yet
    checkpoint = resume.remember(tmp_path, "run-1", identity)
    assert resume.find_unfinished(tmp_path, identity) is None  # no checkpoint yet: no epoch finished
    checkpoint.write_bytes(b"x")
    assert resume.find_unfinished(tmp_path, identity) == "run-1"
    faster = {**identity, "train": {**identity["train"], "device": "cuda", "threads": 8}}
    assert resume.find_unfinished(tmp_path, faster) == "run-1"  # speed-only settings change no result
    resume.forget(tmp_path)
    assert resume.find_unfinished(tmp_path, identity) is None and not checkpoint.exists()


def test_other_work_in_the_folder_is_refused_naming_the_keys_that_differ(tmp_path):
    resume.remember(tmp_path, "run-1", {"train": {"lr": 0.001, "epochs": 3}}, state="s.json", checkpoint="c.pt")
    (tmp_path / "c.pt").write_bytes(b"x")
    with pytest.raises(ConfigError) as err:
        resume.find_unfinished(tmp_path, {"train": {"lr": 0.01, "epochs": 3}}, what="pretraining", state="s.json",
                               checkpoint="c.pt", remedy="choose another folder")
    message = str(err.value)
    assert "holds an interrupted pretraining (MLflow run run-1)" in message
    assert "1 keys differ: train.lr: 0.001 in the checkpoint, 0.01 now" in message
    assert message.endswith("choose another folder")


def test_differing_keys_are_flattened_and_sorted():
    assert resume.differing_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 3}) == ["a.c", "d", "e"]
