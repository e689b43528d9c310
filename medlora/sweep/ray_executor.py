"""Sweep points as Ray tasks (``fewshot.executor: ray``): one task per (method, shots, seed).

The driver (the ``medlora run`` process) builds the sweep's :class:`~.workbench.Workbench`
once, computes the cached features and frozen-prefix tokens its points need, and puts it in Ray's
object store together with the MLflow dataset; every task receives it by reference and each worker
process deserialises it once. A task claims its point in the tracking store (:mod:`.claims`),
trains and evaluates it as a child run of the sweep's parent (:func:`.child.run_child`, as the local
executor does) and logs it straight to the tracking server, which must therefore be one every node
reaches (an ``http://`` MLflow server, ``deploy/``). Resume is the local executor's: the driver skips FINISHED
points before submitting; a task whose worker dies is retried ``fewshot.ray.max_retries`` times, its
dead attempt's run marked KILLED by the retry; two drivers never count a point twice.

Ray is imported here only, and only when a sweep asks for it (``pip install medlora[ray]``).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, RayConfig
from ..device import configure_threads, resolve_device
from ..errors import ConfigError, MedloraError, TrackingUnavailableError
from ..experiment.session import run_name
from ..experiment.train_eval import study_subgroups
from ..io.prepare import PreparedData
from ..tracking import tags as T
from ..tracking.dataset import mlflow_dataset
from ..tracking.store import unreachable_message
from ..train.support import draw_support
from .child import run_child
from .claims import claim_point, settle_point
from .points import SweepPoint
from .workbench import Workbench

log = logging.getLogger(__name__)
_SHARED: dict[str, Any] = {}  # per worker process: the deserialised shared setup, by object id


@dataclass(frozen=True)
class Shared:
    """What every point of one sweep reads, put in the object store once."""

    bench: Workbench
    dataset: Any  # the MLflow dataset every child logs as its input
    uri: str
    parent_id: str
    tags: dict[str, str]


@dataclass(frozen=True)
class PointJob:
    """One point as the driver submits it; ``claim`` is the same on every retry of its task."""

    point: SweepPoint
    cfg: Config
    point_hash: str
    claim: str
    out: Path


@dataclass(frozen=True)
class Outcome:
    """What a task reports back: ``ran``, ``taken`` (another run has the point), ``failed`` or ``duplicate``."""

    name: str
    status: str
    message: str = ""


def check_address(address: str, timeout: float) -> None:
    """Fail within ``timeout`` seconds, naming ``address``, when nothing answers there."""
    parts = urlsplit(address if "://" in address else f"ray://{address}")
    if parts.hostname is None or parts.port is None:
        raise ConfigError(f"fewshot.ray.address={address!r} is not host:port, ray://host:port or auto")
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"fewshot.ray.address={address!r}: nothing answers at {parts.hostname}:{parts.port} "
                          f"within {timeout:g} s ({err}); start the cluster (ray start --head) or fix the address"
                          ) from None


def connect(rc: RayConfig) -> bool:
    """Join ``rc.address`` (or start a Ray of this machine); ``True`` when this call started Ray and
    must shut it down. A Ray already initialised in this process is used as it is."""
    # Ray polls an address about once a second, 20 times by default: as many times as the timeout allows
    tries = str(max(1, math.ceil(rc.connect_timeout)))
    os.environ.setdefault("RAY_NUM_REDIS_GET_RETRIES", tries)
    try:
        import ray
        from ray._private import ray_constants
    except ImportError:
        raise ConfigError("fewshot.executor: ray needs Ray installed: pip install 'medlora[ray]'") from None
    if ray.is_initialized():
        return False
    if rc.address and rc.address != "auto":
        check_address(rc.address, rc.connect_timeout)  # nothing listening at all: fails without asking Ray
    before = ray_constants.NUM_REDIS_GET_RETRIES  # read when Ray was first imported, maybe before this call
    ray_constants.NUM_REDIS_GET_RETRIES = min(before, int(tries))
    try:
        local = {"include_dashboard": False} if rc.address is None else {}
        ray.init(address=rc.address, configure_logging=False, **local)
    except ConnectionError as err:
        raise ConfigError(f"fewshot.ray.address={rc.address!r}: no Ray cluster answers there within "
                          f"{rc.connect_timeout:g} s ({err}); start the cluster (ray start --head) or fix the "
                          "address") from None
    finally:
        ray_constants.NUM_REDIS_GET_RETRIES = before
    log.info("Ray: %s", ray.cluster_resources())
    return True


def warm(bench: Workbench, jobs: list[PointJob]) -> None:
    """Compute, in the driver, the cached features and frozen-prefix tokens the jobs will read."""
    if any(j.point.method == "linear_probe" for j in jobs):
        bench.features()
    lora = next((j for j in jobs if j.point.method == "lora"), None)
    if lora is not None:
        support = draw_support(bench.train_frame, lora.point.shots, lora.point.seed)
        bench.prefix(bench.model_for(lora.cfg, lora.point), lora.cfg, support)


def _shared(box: list[Any]) -> Shared:
    import ray

    key = box[0].hex()
    if key not in _SHARED:
        _SHARED.clear()  # one sweep at a time per worker process
        _SHARED[key] = ray.get(box[0])
    return _SHARED[key]


def train_point(box: list[Any], job: PointJob) -> Outcome:
    """The Ray task: claim ``job``'s point, train and evaluate it as a child run, settle it."""
    import mlflow
    from mlflow import MlflowClient

    shared = _shared(box)  # a list, so Ray hands over the reference, not a fresh copy per task
    mlflow.set_tracking_uri(shared.uri)
    configure_threads(job.cfg.train.threads)
    bench = shared.bench
    bench.device = resolve_device(job.cfg.train.device)  # this worker's device, not the driver's
    client = MlflowClient(shared.uri)
    parent = client.get_run(shared.parent_id)
    name = run_name(job.cfg, job.point.method, job.point.shots, job.point.seed)
    worker = {T.WORKER_HOST: socket.gethostname(), T.WORKER_PID: str(os.getpid())}
    try:
        run_id = claim_point(client, parent, job.point_hash, job.claim, name, {**shared.tags, **worker})
        if run_id is None:
            return Outcome(job.point.name, "taken")
        try:
            run_child(bench, job.cfg, job.point, {**shared.tags, **worker, T.POINT_HASH: job.point_hash,
                                                  T.CLAIM: job.claim}, job.out, dataset=shared.dataset, run_id=run_id)
        except TrackingUnavailableError as err:
            return Outcome(job.point.name, "unreachable", str(err))
        except MedloraError as err:  # this point cannot be measured; the others can
            return Outcome(job.point.name, "failed", str(err))
        return Outcome(job.point.name, "ran" if settle_point(client, parent, job.point_hash, run_id) else "duplicate")
    except Exception as err:  # noqa: BLE001 - a store that went away stops the sweep (below); others propagate
        message = unreachable_message(err, shared.uri)
        if message is None:
            raise
        return Outcome(job.point.name, "unreachable", message)


def run_on_ray(cfg: Config, data: PreparedData, out: Path, todo: list[tuple[SweepPoint, Config, str]],
               uri: str, parent_id: str, tags: dict[str, str]) -> tuple[int, list[str]]:
    """Run the points ``todo`` ((point, its config, its hash)) as Ray tasks; ``(trained, failed names)``."""
    from tqdm.auto import tqdm

    rc = cfg.fewshot.ray
    if uri.startswith(("sqlite:", "file:")) or "://" not in uri:
        if rc.address:
            raise ConfigError(f"fewshot.executor: ray on a cluster logs from every node: tracking.uri must be a "
                              f"tracking server (http://host:5000, see deploy/), not the local store {uri}")
        log.warning("Ray workers write to the local store %s; a tracking server is safer", uri)
    started = connect(rc)
    import ray

    try:
        jobs = [PointJob(p, pcfg, phash, uuid.uuid4().hex, out / "children" / p.name) for p, pcfg, phash in todo]
        bench = Workbench(cfg, data, out, subgroups=study_subgroups(data, cfg))
        warm(bench, jobs)
        box = [ray.put(Shared(bench, mlflow_dataset(data, cfg.data.name), uri, parent_id, tags))]
        task = ray.remote(train_point).options(num_cpus=rc.cpus_per_point, num_gpus=rc.gpus_per_point,
                                               max_retries=rc.max_retries, retry_exceptions=False)
        pending = {task.remote(box, job): job for job in jobs}
        return _collect(pending, tqdm(total=len(jobs), desc="sweep (ray)", disable=not sys.stderr.isatty()))
    finally:
        if started:
            ray.shutdown()


def _collect(pending: dict[Any, PointJob], bar: Any) -> tuple[int, list[str]]:
    """Wait for the tasks as they finish; a tracking store that stopped answering cancels the rest."""
    import ray
    from ray.exceptions import RayError

    ran, failed = 0, []
    while pending:
        (ref,), _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ref)
        bar.update()
        try:
            outcome = ray.get(ref)
        except RayError as err:  # the worker died more often than max_retries, or the code raised
            log.error("child %s failed on its Ray worker: %s", job.point.name, err)
            failed.append(job.point.name)
            continue
        if outcome.status == "unreachable":
            for other in pending:
                ray.cancel(other, force=True)
            raise TrackingUnavailableError(f"sweep stopped at {job.point.name}: {outcome.message}")
        if outcome.status == "failed":
            log.error("child %s failed: %s", outcome.name, outcome.message)
            failed.append(outcome.name)
        ran += outcome.status == "ran"
        log.info("child %s: %s", outcome.name, outcome.status)
    return ran, failed
