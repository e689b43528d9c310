"""A 12-point few-shot sweep (3 methods x 2 shot counts x 2 seeds) with the local executor vs Ray.

Both sides log to the same kind of store, a throwaway ``mlflow server`` on 127.0.0.1 (SQLite
backend), on the same synthetic phantom DICOM studies, config and points. Reported per side: wall
seconds of :func:`medlora.sweep.driver.run_sweep` (ingest excluded, done once before), and for
Ray the start of a local Ray instance apart (``ray_init_s``: a cluster is started once, not per sweep).

* ``local/threads=2``: one process, torch using both cores (the fair baseline on a 2-core machine);
* ``local/threads=1``: one process, one core;
* ``ray/2 workers``: ``fewshot.executor: ray``, a local Ray with 2 CPUs, one point per CPU, one
  thread each; every worker process imports torch/timm/MLflow and deserialises the shared setup once.

    .venv/bin/python -m benchmarks.ray_sweep [--epochs 5] [--size 64]

Run it on a quiet machine (``uptime``): on a loaded one every number is mostly noise.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path


def _server(tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1", "--backend-store-uri", f"sqlite:///{tmp / 'server.db'}",
                             "--artifacts-destination", str(tmp / "artifacts")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("mlflow server did not start")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--size", type=int, default=64, help="image size of the phantoms and the ViT")
    args = p.parse_args(argv)

    from medlora.config import SynthConfig, config_from_dict
    from medlora.io.prepare import prepare_dataset
    from medlora.io.synth import write_phantoms
    from medlora.sweep.driver import run_sweep

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a timeout still stops the server below
    tmp = Path(tempfile.mkdtemp(prefix="medlora-ray-bench-"))
    os.environ.setdefault("MEDLORA_SECRET_FILE", str(tmp / "site.key"))
    write_phantoms(tmp / "phantoms", SynthConfig(patients=80, images_per_patient=2, size=args.size, seed=0))
    server, url = _server(tmp)
    try:
        def config(name: str, executor: str, threads: int):
            return config_from_dict({
                "pipeline": "fewshot",
                "data": {"name": "phantoms", "root": str(tmp / "phantoms"), "split": {"file": str(tmp / "split.csv")}},
                "preprocess": {"image_size": args.size},
                "model": {"backbone": "vit_tiny_patch16_224",
                          "kwargs": {"img_size": args.size, "patch_size": 8, "depth": 4, "global_pool": "avg"}},
                "train": {"epochs": args.epochs, "batch_size": 16, "patience": args.epochs, "threads": threads},
                "evaluate": {"bootstrap": 200},
                "tracking": {"uri": url, "experiment": name},
                "fewshot": {"shots": [2, 5], "seeds": [0, 1], "methods": ["lora", "linear_probe", "full"],
                            "executor": executor}})

        data = prepare_dataset(config("ingest", "local", 2).data)
        rows = []
        for name, executor, threads in (("local/threads=2", "local", 2), ("local/threads=1", "local", 1),
                                        ("ray/2 workers", "ray", 1)):
            init = 0.0
            if executor == "ray":
                import ray

                t0 = time.perf_counter()
                ray.init(num_cpus=2, include_dashboard=False, configure_logging=False)
                init = time.perf_counter() - t0
            t0 = time.perf_counter()
            summary = run_sweep(config(name.replace("/", "-"), executor, threads), data, tmp / name.replace("/", "-"))
            rows.append((name, time.perf_counter() - t0, init, summary.ran))
            if executor == "ray":
                ray.shutdown()
        base = min(seconds for name, seconds, _, _ in rows if name.startswith("local"))
        print(f"\n12-point sweep, {args.epochs} epochs, {args.size} px, {os.cpu_count()} cores, load {os.getloadavg()}")
        print("| executor | sweep s | speed-up vs the faster local | ray_init_s | points trained |")
        print("|---|---|---|---|---|")
        for name, seconds, init, ran in rows:
            print(f"| {name} | {seconds:.1f} | {base / seconds:.2f}x | {init:.1f} | {ran} |")
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
