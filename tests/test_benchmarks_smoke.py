"""The benchmark suite runs end to end on a tiny model (a smoke test: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_run_all_quick_produces_every_table(tmp_path):
    raw = tmp_path / "raw.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "run_all.py"), "--quick", "--json", str(raw)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(raw.read_text())
    assert res["gemm"]["gflops_best"] > 0
    assert {(r["impl"], r["method"]) for r in res["train_step"]} == {
        ("naive", "lora"), ("medlora", "lora"), ("medlora", "full"), ("medlora", "linear_probe")}
    assert all(r["step_s"] > 0 and r["flops_per_step"] > 0 for r in res["train_step"])
    lora = next(r for r in res["train_step"] if r["impl"] == "medlora" and r["method"] == "lora")
    full = next(r for r in res["train_step"] if r["method"] == "full")
    assert lora["flops_per_step"] < full["flops_per_step"]  # no weight-gradient GEMMs for frozen layers
    assert {(r["impl"], r["mode"]) for r in res["sweep"]} == {
        (impl, mode) for impl in ("naive", "medlora") for mode in ("commands", "in_process")}
    assert all(r["points"] == 6 for r in res["sweep"])  # 3 methods x 2 shot counts x 1 seed
    assert res["inference"][0]["merge_max_abs_diff"] < 1e-4
    assert 0 < res["adapter"]["ratio"] < 1
    assert {t["verdict"] for t in res["targets"]} <= {"met", "missed", "n/a"}
    assert "## Targets" in proc.stdout


def test_pretrain_quality_pools_one_seed_sweeps_per_pretraining():
    """With one base per pretraining seed, each adapted once, the ± is over the bases: one row per method and
    shot count, the seeds' means kept."""
    sys.path.insert(0, str(REPO))
    from benchmarks.pretrain_quality import pooled

    rows = [{"method": m, "shots": "all", "mean": v, "sd": float("nan"), "seeds": 1}
            for m, v in (("lora", 0.8), ("full", 0.7), ("lora", 0.9), ("full", 0.7), ("lora", 0.7))]
    out = pooled("medlora-pretrained", rows)
    assert [(r["method"], r["seeds"]) for r in out] == [("lora", 3), ("full", 2)]
    lora = out[0]
    assert lora["base"] == "medlora-pretrained" and lora["values"] == [0.8, 0.9, 0.7]
    assert abs(lora["mean"] - 0.8) < 1e-12 and abs(lora["sd"] - 0.1) < 1e-12
    assert out[1]["sd"] == 0.0


def quick_medmnist_plus(work: Path, *flags: str) -> tuple[subprocess.CompletedProcess, dict]:
    """``pretrain_quality.py --quick --protocol medmnist+`` on BreastMNIST with ``flags`` → (process, result)."""
    npz = REPO.parent / "shared" / "data" / "medmnist" / "breastmnist.npz"
    if not npz.is_file():
        pytest.skip(f"{npz} is absent")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "pretrain_quality.py"), "--quick", "--datasets",
                           "breastmnist", "--protocol", "medmnist+", *flags, "--work", str(work)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc, json.loads((work / "quick" / "results-breastmnist.json").read_text())[0]


@pytest.mark.slow
def test_pretrain_quality_quick_with_a_base_per_pretraining_seed(tmp_path):
    """The MedMNIST+ protocol (all labels; a base per pretraining seed, each adapted once) on a few images."""
    proc, res = quick_medmnist_plus(tmp_path, "--pretrain-seeds", "0", "1")
    assert [b["seed"] for b in res["bases"]] == [0, 1]
    assert res["bases"][0]["weights"] != res["bases"][1]["weights"]  # two pretrainings, not one reused
    assert {(r["base"], r["method"], r["shots"], r["seeds"]) for r in res["rows"]} == {
        (base, m, "all", 2) for base in ("random init", "medlora-pretrained") for m in ("lora", "linear_probe", "full")}
    assert "mean of 2 bases" in proc.stdout
    lora = next(line for line in proc.stdout.splitlines() if line.startswith("| lora | all |"))
    values = next(r for r in res["rows"] if (r["base"], r["method"]) == ("medlora-pretrained", "lora"))["values"]
    assert " / ".join(f"{v:.3f}" for v in values) in lora  # each pretraining seed's result beside the mean


@pytest.mark.slow
def test_pretrain_quality_runs_only_the_chosen_bases_and_methods_at_the_chosen_pretraining_rate(tmp_path):
    proc, res = quick_medmnist_plus(tmp_path, "--pretrain-seeds", "0", "--pretrain-lr", "0.0005", "--methods", "lora",
                                    "--pretrained-only", "--set", "model.lora.r=4")
    assert {(r["base"], r["method"]) for r in res["rows"]} == {("medlora-pretrained", "lora")}
    assert "lr: 0.0005" in Path(res["bases"][0]["card"]).read_text()
    assert "| lora | all | n/a |" in proc.stdout  # no random-init run to compare with
    # the protocol's standardised head, then --set, reach the adaptation's own config (its MLflow params)
    assert res["adapt_sets"] == ["train.head_norm=true", "model.lora.r=4"]
    assert "adaptation with train.head_norm=true, model.lora.r=4" in proc.stdout
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'quick' / 'breastmnist' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()], "params.method = 'lora'")
    assert len(runs) == 1
    assert runs[0].data.params["train.head_norm"] == "True" and runs[0].data.params["model.lora.r"] == "4"


def test_base_probe_reads_each_block_s_patch_tokens(phantom_root, tmp_path):
    """Every block's tokens line up with their patches: a random ViT's tokens still carry their patch's mean
    intensity (the patch embedding is linear and the blocks are residual), the study probes give AUROCs."""
    sys.path.insert(0, str(REPO))
    from benchmarks.base_probe import probe
    from tests.conftest import tiny_config

    cfg = tiny_config(phantom_root, tmp_path, **{"data.split.train": 0.5, "data.split.val": 0.25, "data.split.test": 0.25})
    rows = probe(cfg, tmp_path / "samples")
    assert [r["block"] for r in rows] == [1, 2]
    assert all(r["r2_patch_mean"] > 0.9 for r in rows), rows
    assert all(0.0 <= r[f"{pool}_{split}"] <= 1.0 for r in rows for pool in ("mean", "max") for split in ("val", "test"))
