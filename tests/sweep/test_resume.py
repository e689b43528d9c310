"""A sweep killed mid-way (SIGKILL, then Ctrl-C) and rerun ends with every child FINISHED exactly once."""

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def runs(uri: str, name: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(name)
    return client.search_runs([exp.experiment_id], max_results=1000) if exp else []


def finished_children(cfg) -> int:
    return sum(r.data.tags.get("medlora.role") == "child" and r.info.status == "FINISHED"
               for r in runs(cfg.tracking.uri, cfg.data.name))


def start_and_stop(cmd: list[str], cfg, sig: int, log: Path) -> int:
    """Start the sweep, send ``sig`` once this process has FINISHED one more child (so the signal lands
    inside the sweep loop, whatever earlier runs finished); the exit code."""
    before = finished_children(cfg)
    with log.open("ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if finished_children(cfg) > before:
                os.kill(proc.pid, sig)
                break
            time.sleep(0.3)
        return proc.wait(timeout=120)


@pytest.mark.slow
def test_killed_and_interrupted_sweep_resumes_without_counting_anything_twice(phantom_root, tmp_path, sweep_config):
    # 4 epochs per child: long enough that the signals land mid-sweep even when this poller is slow
    cfg, cfg_file = sweep_config(phantom_root, tmp_path, **{"fewshot.shots": "[1]", "fewshot.seeds": "[0, 1]",
                                                            "train.epochs": 4, "train.patience": 4})
    cmd = [sys.executable, "-m", "medlora.cli", "run", str(cfg_file), "--out", str(tmp_path / "out")]
    log = tmp_path / "sweep.log"

    assert start_and_stop(cmd, cfg, signal.SIGKILL, log) == -signal.SIGKILL
    first = {r.info.run_id: r.info.status for r in runs(cfg.tracking.uri, cfg.data.name)}
    assert "FINISHED" in first.values() and len(first) < 1 + 6, log.read_text()[-3000:]
    stale = {i for i, s in first.items() if s == "RUNNING"}  # the parent, and the child killed mid-training if any
    assert len(stale) >= 1

    assert start_and_stop(cmd, cfg, signal.SIGINT, log) == 130, log.read_text()[-3000:]
    after_int = runs(cfg.tracking.uri, cfg.data.name)
    assert "RUNNING" not in {r.info.status for r in after_int}  # Ctrl-C ends the child and the parent KILLED
    (parent,) = [r for r in after_int if r.data.tags.get("medlora.role") == "sweep"]
    assert parent.info.status == "KILLED"
    statuses = {r.info.run_id: r.info.status for r in after_int}
    assert all(statuses[i] == "KILLED" for i in stale)  # marked by the rerun (children) or ended by Ctrl-C (parent)

    assert subprocess.run(cmd, cwd=REPO, capture_output=True).returncode == 0
    final = runs(cfg.tracking.uri, cfg.data.name)
    parents = [r for r in final if r.data.tags.get("medlora.role") == "sweep"]
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and parents[0].info.status == "FINISHED"
    children = [r for r in final if r.data.tags.get("medlora.role") == "child"]
    finished = Counter((r.data.params["method"], r.data.params["seed"]) for r in children if r.info.status == "FINISHED")
    assert finished == {(m, s): 1 for m in ("lora", "linear_probe", "full") for s in ("0", "1")}
    assert {r.info.status for r in children} <= {"FINISHED", "KILLED", "FAILED"}
    kept = {i for i, s in first.items() if s == "FINISHED"}
    assert kept <= {r.info.run_id for r in children if r.info.status == "FINISHED"}  # finished work is never redone
