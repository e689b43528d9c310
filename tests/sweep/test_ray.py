"""Sweep points as Ray tasks (``fewshot.executor: ray``): claims in the tracking store, an address
that does not answer, and a real sweep on a local 2-CPU Ray logging to a real ``mlflow server``."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pandas as pd
import pytest

pytest.importorskip("ray", reason="Ray is not installed (pip install 'medlora[ray]')")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "10.255.255.1:6379"],
                         ids=["refused", "ray-client", "no-route"])
def test_ray_address_that_does_not_answer_fails_in_seconds_naming_it(address):
    import ray

    from medlora.config import RayConfig
    from medlora.errors import ConfigError
    from medlora.sweep.ray_executor import connect

    address = address.format(port=_closed_port())
    assert not ray.is_initialized()
    t0 = time.monotonic()
    with pytest.raises(ConfigError) as err:
        connect(RayConfig(address=address, connect_timeout=2))
    assert time.monotonic() - t0 < 5
    # nothing listening, or (no-route, where a proxy accepts every connection) something that is not Ray
    assert f"fewshot.ray.address={address!r}: n" in str(err.value) and "ray start --head" in str(err.value)
    assert not ray.is_initialized()


def test_ray_executor_is_a_config_choice_that_does_not_change_the_sweep_hash(tiny_cfg, phantom_root, tmp_path):
    from medlora.errors import ConfigError
    from medlora.sweep.points import sweep_hash

    local = tiny_cfg(phantom_root, tmp_path, **{"pipeline": "fewshot", "fewshot.executor": "local"})
    on_ray = tiny_cfg(phantom_root, tmp_path, **{"pipeline": "fewshot", "fewshot.executor": "ray",
                                                 "fewshot.ray.address": "head:6379", "fewshot.ray.cpus_per_point": 2})
    assert on_ray.fewshot.ray.cpus_per_point == 2.0 and on_ray.fewshot.ray.max_retries == 1
    assert sweep_hash(local, "fp") == sweep_hash(on_ray, "fp")  # a sweep resumes under the other executor
    with pytest.raises(ConfigError, match="fewshot.executor"):
        tiny_cfg(phantom_root, tmp_path, **{"pipeline": "fewshot", "fewshot.executor": "slurm"})


@pytest.fixture
def parent_run(tmp_path):
    """A sweep parent in the session's SQLite store: (client, parent run)."""
    from mlflow import MlflowClient

    client = MlflowClient()
    exp = client.create_experiment(f"claims-{tmp_path.name}", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(exp, tags={"medlora.role": "sweep"})
    return client, parent


def test_ray_claims_one_point_once_between_tasks_retries_and_dead_drivers(parent_run):
    import subprocess
    import sys

    from medlora.experiment.resume import owner_tags
    from medlora.sweep.claims import claim_point, settle_point

    client, parent = parent_run
    # tasks run in worker processes, their children owned by the driver: two live drivers here
    me = {**owner_tags(), "medlora.pid": str(os.getppid())}
    driver_b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    other = {"medlora.host": socket.gethostname(), "medlora.pid": str(driver_b.pid)}
    first = claim_point(client, parent, "h1", "claim-a", "lora-1shot-seed0", me)
    assert first is not None
    # another live driver's task for the same point, claimed later: it leaves the point alone
    try:
        assert claim_point(client, parent, "h1", "claim-b", "lora-1shot-seed0", other) is None
    finally:
        driver_b.kill()
        driver_b.wait()
    # a retry of the same task (its worker died): the dead attempt becomes KILLED, the retry trains
    retry = claim_point(client, parent, "h1", "claim-a", "lora-1shot-seed0", me)
    assert retry not in (None, first) and client.get_run(first).info.status == "KILLED"
    client.set_terminated(retry, "FINISHED")
    assert settle_point(client, parent, "h1", retry)
    assert claim_point(client, parent, "h1", "claim-c", "lora-1shot-seed0", me) is None  # done: never again
    # a point left RUNNING by a driver that no longer exists is taken over
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = claim_point(client, parent, "h2", "claim-d", "full-1shot-seed0",
                        {"medlora.host": socket.gethostname(), "medlora.pid": str(dead.pid)})
    taken = claim_point(client, parent, "h2", "claim-e", "full-1shot-seed0", me)
    assert taken is not None and client.get_run(stale).info.status == "KILLED"
    # two that both finished (a race past the claim): the later one is KILLED and names the first
    late = claim_point(client, parent, "h3", "claim-f", "full-2shot-seed0", me)
    early = client.create_run(parent.info.experiment_id, tags={"mlflow.parentRunId": parent.info.run_id,
                                                               "medlora.config_hash": "h3", "medlora.role": "child"})
    client.set_terminated(early.info.run_id, "FINISHED", end_time=1)
    client.set_terminated(late, "FINISHED")
    assert not settle_point(client, parent, "h3", late)
    assert client.get_run(late).info.status == "KILLED"
    assert client.get_run(late).data.tags["medlora.duplicate_of"] == early.info.run_id
    live = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}' "
                                                           "and attributes.status = 'FINISHED'")
    assert sorted(r.data.tags["medlora.config_hash"] for r in live) == ["h1", "h3"]


@pytest.fixture
def local_ray():
    """A Ray of this machine limited to 2 CPUs, shut down after the test."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
    yield ray
    ray.shutdown()


def _kill_first_running_worker(client, experiment: str, done: threading.Event, killed: dict) -> None:
    """Poll the server for a RUNNING child trained by a Ray worker and SIGKILL that worker."""
    while not done.is_set() and not killed:
        exp = client.get_experiment_by_name(experiment)
        runs = client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'child' and attributes.status = 'RUNNING'"
                                  ) if exp else []
        for run in runs:
            pid = run.data.tags.get("medlora.worker_pid")
            if pid:
                os.kill(int(pid), signal.SIGKILL)
                killed.update(run_id=run.info.run_id, claim=run.data.tags["medlora.claim"],
                              point=run.data.tags["medlora.config_hash"])
                return
        time.sleep(0.05)


@pytest.mark.slow
def test_ray_sweep_on_a_tracking_server_matches_local_and_reruns_a_killed_worker_once(
        phantom_root, tmp_path, sweep_config, mlflow_server_on, local_ray):
    from mlflow import MlflowClient

    from medlora.sweep.driver import run_sweep
    from medlora.transforms.samples import prepare_samples

    server = mlflow_server_on(f"sqlite:///{tmp_path / 'server.db'}")
    summaries = {}
    for executor in ("local", "ray"):
        cfg, _ = sweep_config(phantom_root, tmp_path, **{"tracking.uri": server.url, "fewshot.executor": executor,
                                                         "tracking.experiment": f"sweep-{executor}"})
        data = prepare_samples(cfg.data, cfg.preprocess)
        client, done, killed = MlflowClient(server.url), threading.Event(), {}
        killer = threading.Thread(target=_kill_first_running_worker, args=(client, f"sweep-{executor}", done, killed))
        if executor == "ray":
            killer.start()
        summaries[executor] = run_sweep(cfg, data, tmp_path / executor)
        done.set()
        if executor == "ray":
            killer.join()
    local, ray_ = summaries["local"], summaries["ray"]
    assert local.ran == ray_.ran == 12 and not local.failed and not ray_.failed
    measured = [c for c in pd.read_csv(tmp_path / "local" / "summary.csv").columns
                if c.startswith(("test_", "val_")) or c in ("method", "shots", "n_seeds")]
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "local" / "summary.csv")[measured],
                                  pd.read_csv(tmp_path / "ray" / "summary.csv")[measured], atol=1e-6)

    assert killed, "no RUNNING child of a Ray worker was seen to kill"
    exp = client.get_experiment_by_name("sweep-ray")
    children = client.search_runs([exp.experiment_id], "tags.`medlora.role` = 'child'", max_results=100)
    by_status = pd.Series([r.info.status for r in children]).value_counts().to_dict()
    assert by_status == {"FINISHED": 12, "KILLED": 1}  # the killed attempt, and its one rerun
    finished = [r for r in children if r.info.status == "FINISHED"]
    assert len({r.data.tags["medlora.config_hash"] for r in finished}) == 12  # every point once
    (rerun,) = [r for r in finished if r.data.tags["medlora.config_hash"] == killed["point"]]
    assert rerun.data.tags["medlora.claim"] == killed["claim"] and client.get_run(killed["run_id"]).info.status == "KILLED"
    assert {r.data.tags["medlora.host"] for r in finished} == {socket.gethostname()}  # the driver owns every child
    assert all(int(r.data.tags["medlora.worker_pid"]) != os.getpid() for r in finished)  # trained by Ray workers
    assert all("test_studies.csv" in {a.path for a in client.list_artifacts(r.info.run_id)} for r in finished)

    cfg, _ = sweep_config(phantom_root, tmp_path, **{"tracking.uri": server.url, "fewshot.executor": "ray",
                                                     "tracking.experiment": "sweep-ray"})
    again = run_sweep(cfg, prepare_samples(cfg.data, cfg.preprocess), tmp_path / "ray")
    assert (again.ran, again.skipped, again.run_id) == (0, 12, ray_.run_id)  # resumed: nothing trained twice
