"""``model.adapter``: a received LoRA adapter continued on a site's studies, and ``adapter_continued`` in a sweep."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from .conftest import site_config


def test_the_received_adapter_is_loaded_exactly_and_a_different_base_is_refused(bundle_dir, finished_run, site_b, tmp_path):
    from medlora.bundle.continued import continue_adapter
    from medlora.config import load_config
    from medlora.errors import ConfigError
    from medlora.models.build import build_model

    cfg_file = site_config(finished_run, site_b, tmp_path)
    cfg = load_config(cfg_file, [f"model.adapter={bundle_dir}"])
    built = build_model(cfg, tmp_path / "out")
    lineage = continue_adapter(built.model, built.base, cfg.model.lora, cfg.model.adapter)
    from peft import get_peft_model_state_dict

    saved = load_file(bundle_dir / "adapter" / "adapter_model.safetensors")
    own = get_peft_model_state_dict(built.model)  # the LoRA matrices and the head, in the saved layout
    assert set(own) == set(saved)
    for key, tensor in saved.items():
        torch.testing.assert_close(own[key], tensor)
    meta = json.loads((bundle_dir / "medlora.json").read_text())
    assert lineage["parent_run_id"] == meta["mlflow_run_id"] and len(lineage["parent_adapter_sha256"]) == 64
    other = load_config(cfg_file, [f"model.adapter={bundle_dir}", "train.seed=7"])  # another random base
    built = build_model(other, tmp_path / "other")
    with pytest.raises(ConfigError, match="state sha256"):
        continue_adapter(built.model, built.base, other.model.lora, other.model.adapter)
    four = load_config(cfg_file, [f"model.adapter={bundle_dir}", "model.lora.r=4"])
    built = build_model(four, tmp_path / "r4")
    with pytest.raises(ConfigError, match="model.lora.r: 8"):
        continue_adapter(built.model, built.base, four.model.lora, four.model.adapter)


def test_a_continued_run_exports_its_lineage(bundle_dir, finished_run, site_b, tmp_path):
    from medlora.bundle.adjust import bundle_sha256
    from medlora.cli import main

    cfg_file = site_config(finished_run, site_b, tmp_path)
    out = tmp_path / "out"
    assert main(["run", str(cfg_file), "--out", str(out), "--set", f"model.adapter={bundle_dir}",
                 "--set", "train.epochs=1"]) == 0
    meta = json.loads((out / "bundle" / "medlora.json").read_text())
    assert meta["lineage"]["parent_bundle_sha256"] == bundle_sha256(bundle_dir)
    assert meta["lineage"]["data"]["name"] == "site_b"


def test_a_sweep_compares_continuing_the_adapter_with_starting_over(bundle_dir, finished_run, site_b, tmp_path):
    from mlflow import MlflowClient

    from medlora.cli import main

    cfg_file = site_config(finished_run, site_b, tmp_path)
    sets = ["pipeline=fewshot", "fewshot.shots=[2]", "fewshot.seeds=[0]", "fewshot.methods=[lora, adapter_continued]",
            "train.epochs=1", "data.name=site_b_sweep", f"model.adapter={bundle_dir}"]
    assert main(["run", str(cfg_file), "--out", str(tmp_path / "out"), *[a for s in sets for a in ("--set", s)]]) == 0
    client = MlflowClient(finished_run[1].tracking.uri)
    runs = client.search_runs([client.get_experiment_by_name("site_b_sweep").experiment_id],
                              "tags.`medlora.role` = 'child'")
    assert sorted(r.data.params["method"] for r in runs) == ["adapter_continued", "lora"]
    by = {r.data.params["method"]: r for r in runs}
    assert by["adapter_continued"].data.params["model.adapter"] == str(bundle_dir)
    assert by["lora"].data.params["model.adapter"] in ("", "None")  # from the base
