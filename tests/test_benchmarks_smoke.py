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
