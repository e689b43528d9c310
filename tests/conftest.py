"""Shared, session-scoped fixtures: expensive things (synthetic DICOM studies, MLflow stores) are
built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (air-gapped machines, CI)
# a site secret of this test session only: tests never read or create the real one in the home folder
# (a fixed secret, so that patient keys and hence persisted splits are the same in every test session)
os.environ["MEDLORA_SECRET_FILE"] = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"medlora-tests-{os.getpid()}.key")
with open(os.open(os.environ["MEDLORA_SECRET_FILE"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as _f:
    _f.write("6d65646c6f72612d74657374732d6f6e6c792d6e6f742d612d7265616c2d6b6579\n")  # "medlora-tests-only-not-a-real-key"
os.environ.setdefault("MLFLOW_TRACKING_URI", "sqlite:///" + os.path.join(os.environ.get("TMPDIR", "/tmp"), f"medlora-tests-{os.getpid()}.db"))

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data {path} is not available")
    return path


@pytest.fixture(scope="session")
def shared_data():
    """:func:`shared_file` as a fixture, for test folders that cannot import this conftest (no __init__.py)."""
    return shared_file


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """A small synthetic phantom dataset (real DICOM files + labels.csv), written once."""
    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms

    root = tmp_path_factory.mktemp("phantoms")
    write_phantoms(root, SynthConfig(patients=60, images_per_patient=2, size=32, seed=0))
    return root


def tiny_config(root: Path, tmp: Path, **overrides):
    """A Config for a tiny ViT on ``root``, with splits and MLflow under ``tmp``."""
    from medlora.config import apply_overrides, config_from_dict

    raw = {
        "pipeline": "classify",
        "data": {"name": "phantoms", "root": str(root), "split": {"file": str(tmp / "split.csv")}},
        "preprocess": {"image_size": 32},
        "model": {"backbone": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 2, "global_pool": "avg"}},
        "train": {"epochs": 10, "batch_size": 16, "lr": 0.003, "patience": 10},
        "evaluate": {"bootstrap": 200},
        "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
    }
    apply_overrides(raw, [f"{k}={v}" for k, v in overrides.items()])
    return config_from_dict(raw)


@pytest.fixture(scope="session")
def finished_run(phantom_root, tmp_path_factory):
    """``medlora run`` on the phantoms with a tiny ViT, once per session: (out dir, config, config file)."""
    import yaml

    from medlora.cli import main
    from medlora.config import config_to_dict

    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(phantom_root, tmp)
    cfg_file = tmp / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp / "out"
    assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    return out, cfg, cfg_file


@pytest.fixture(scope="session")
def tiny_cfg():
    """:func:`tiny_config` as a fixture, for test folders that cannot import this conftest."""
    return tiny_config


def run_id_of(out: Path) -> str:
    """The MLflow run id of a run's output folder ``out`` (from its ``medlora.json``)."""
    import json

    return json.loads((out / "medlora.json").read_text())["mlflow_run_id"]


@pytest.fixture(name="run_id_of", scope="session")
def run_id_of_fixture():
    """:func:`run_id_of` as a fixture, for test folders that cannot import this conftest."""
    return run_id_of


@pytest.fixture(scope="session")
def bundle_dir(finished_run, tmp_path_factory) -> Path:
    """``medlora export`` of the finished run, once per session (treat as read-only: copy to modify).

    Named ``review`` (tests look for ``score_review`` columns); a bundle the pipeline wrote itself
    (``out/bundle``) is copied rather than exported a second time.
    """
    import shutil

    from medlora.cli import main

    out, cfg, _ = finished_run
    dst = tmp_path_factory.mktemp("bundle") / "review"
    if (out / "bundle" / "MANIFEST.sha256").is_file():
        return Path(shutil.copytree(out / "bundle", dst))
    assert main(["export", run_id_of(out), "--out", str(dst), "--tracking-uri", cfg.tracking.uri]) == 0
    return dst


@pytest.fixture
def bundle_copy(bundle_dir, tmp_path) -> Path:
    """A private copy of the session bundle, free to tamper with."""
    import shutil

    return Path(shutil.copytree(bundle_dir, tmp_path / "copy"))


@pytest.fixture(scope="session")
def test_split(finished_run):
    """The run's test-split manifest rows (a DataFrame) with absolute ``file`` paths (same persisted split)."""
    from medlora.io.prepare import prepare_dataset

    _, cfg, _ = finished_run
    data = prepare_dataset(cfg.data)
    test = data.split("test").copy()
    test["file"] = [data.root / p for p in test["path"]]
    return test


SWEEP = {"pipeline": "fewshot", "train.epochs": 1, "train.threads": 1, "evaluate.bootstrap": 50, "fewshot.shots": "[1, 2]",
         "fewshot.seeds": "[0, 1]", "fewshot.methods": "[lora, linear_probe, full]",
         "fewshot.together": "on"}  # on a CPU, auto would train the LoRA points one by one


def write_sweep_config(root: Path, tmp: Path, **overrides) -> tuple[object, Path]:
    """A tiny few-shot sweep config (2 shot counts x 2 seeds x 3 methods, 1 epoch) saved as YAML under
    ``tmp``, with its MLflow experiment's artifacts kept under ``tmp`` too: (config, config file)."""
    import yaml
    from mlflow import MlflowClient

    from medlora.config import config_to_dict

    cfg = tiny_config(root, tmp, **{**SWEEP, **overrides})
    client = MlflowClient(cfg.tracking.uri)
    if cfg.tracking.uri.startswith("sqlite") and client.get_experiment_by_name(cfg.data.name) is None:
        client.create_experiment(cfg.data.name, artifact_location=(tmp / "artifacts").as_uri())
    cfg_file = tmp / "sweep.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return cfg, cfg_file


@pytest.fixture(scope="session")
def finished_sweep(phantom_root, finished_run, tmp_path_factory):
    """``medlora run`` of a tiny few-shot sweep, once per session: (config, config file, out dir, output).

    It logs to :func:`finished_run`'s MLflow store (a new SQLite store costs seconds of migrations), in
    its own experiment ``phantoms_fewshot``."""
    import contextlib
    import io

    from medlora.cli import main

    tmp = tmp_path_factory.mktemp("sweep")
    store = finished_run[1].tracking.uri
    cfg, cfg_file = write_sweep_config(phantom_root, tmp, **{"data.name": "phantoms_fewshot", "tracking.uri": store})
    out, printed = tmp / "out", io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    return cfg, cfg_file, out, printed.getvalue()


@pytest.fixture(scope="session")
def sweep_config():
    """:func:`write_sweep_config` as a fixture (for tests that run their own sweep)."""
    return write_sweep_config


@pytest.fixture(scope="session")
def plain_reload_scores():
    """``f(out, cfg) -> (scores, expected)``: a run's test images scored by the base rebuilt with plain
    timm + peft from ``medlora.json`` and the saved adapter, and the run's own test scores."""

    def score(out: Path, cfg):
        import json

        import pandas as pd
        import timm
        import torch
        from peft import PeftModel
        from safetensors.torch import load_file

        from medlora.io.prepare import prepare_dataset
        from medlora.transforms.pipeline import build_transforms, manifest_items

        meta = json.loads((out / "medlora.json").read_text())
        info = meta["base"]
        base = timm.create_model(info["timm_name"], pretrained=False, num_classes=info["num_classes"],
                                 **info["timm_kwargs"])
        missing, unexpected = base.load_state_dict(load_file(info["weights_path"]), strict=False)
        assert not unexpected and all(k.startswith("head.") for k in missing)
        model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
        data = prepare_dataset(cfg.data)  # same persisted split
        pre = meta["preprocess"]
        transform = build_transforms(cfg.preprocess, pre["image_size"], pre["mean"], pre["std"])
        items = manifest_items(data.split("test"), data.root)
        x = torch.stack([transform(item)["image"] for item in items])
        with torch.no_grad():
            scores = torch.softmax(model(x), 1)[:, meta["labels"]["abnormal_index"]].numpy()
        expected = pd.read_csv(out / "predictions.csv").query("split == 'test'").set_index("sample_id")["score"]
        return scores, expected.loc[[i["sample_id"] for i in items]].to_numpy()

    return score


def stop_process_group(proc) -> None:
    """End a server started in its own process group (``start_new_session``): SIGTERM, then SIGKILL after 20 s."""
    import signal
    import subprocess

    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_alone_and_on_two_ranks(cfg, tmp: Path, **changes):
    """``cfg`` (a :class:`~medlora.config.Config`, ``changes`` to it as dotted keys: ``{"train.epochs": 2}``) run
    by ``medlora run`` in one process and under ``torchrun`` with two gloo processes (one thread each), each a
    fresh interpreter with its own MLflow store; both runs' ``predictions.csv``, rows in ``sample_id`` order."""
    import subprocess
    import sys

    import pandas as pd
    import yaml

    from medlora.config import config_to_dict

    raw = config_to_dict(cfg)
    for key, value in changes.items():
        *path, leaf = key.split(".")
        section = raw
        for part in path:
            section = section[part]
        section[leaf] = value
    cfg_file = tmp / "config.yaml"
    cfg_file.write_text(yaml.safe_dump(raw))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = {"one": [sys.executable, "-m", "medlora"],
            "two": [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
                    "--master-port", str(free_port()), "-m", "medlora"]}
    for name, head in runs.items():
        done = subprocess.run([*head, "run", str(cfg_file), "--out", str(tmp / name), "--set",
                               f"tracking.uri=sqlite:///{tmp / name}.db"], cwd=tmp, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    return tuple(pd.read_csv(tmp / name / "predictions.csv").sort_values("sample_id") for name in runs)


class MlflowServer:
    """An ``mlflow server`` subprocess on 127.0.0.1 (``stop()`` and ``start()`` again on the same port)."""

    def __init__(self, backend: str, artifacts: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.backend, self.artifacts, self.log, self.env = backend, artifacts, log, env
        self.port, self.proc = free_port(), None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> MlflowServer:
        import subprocess
        import sys
        import time
        import urllib.request

        cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(self.port),
               "--workers", "1", "--backend-store-uri", self.backend, "--artifacts-destination", str(self.artifacts)]
        self.proc = subprocess.Popen(cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(self.env or {})}, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("mlflow server did not start: " + self.log.read_text()[-2000:])
            time.sleep(0.5)

    def stop(self) -> None:
        """Stop the server and its workers (its own process group)."""
        stop_process_group(self.proc)


@pytest.fixture
def mlflow_server_on(tmp_path):
    """``start(backend_uri, env=None) -> MlflowServer``: servers on 127.0.0.1 with proxied artifacts
    under ``tmp_path``, all stopped after the test."""
    servers: list[MlflowServer] = []

    def start(backend: str, env: dict[str, str] | None = None) -> MlflowServer:
        n = len(servers)
        server = MlflowServer(backend, tmp_path / f"artifacts{n}", tmp_path / f"server{n}.log", env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (password only in ``password``; URIs carry none)."""

    def __init__(self, bindir: Path, folder: Path, run_as: list[str]) -> None:
        import secrets

        self.bindir, self.folder, self.run_as = bindir, folder, run_as
        self.port, self.user, self.password = free_port(), "medlora", secrets.token_hex(12)

    def _pg(self, tool: str, *args: str) -> None:
        import subprocess

        cmd = [*self.run_as, str(self.bindir / tool), *args]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode:
            raise RuntimeError(f"{tool} failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self) -> None:
        pw = self.folder / "pw"
        pw.write_text(self.password + "\n")
        self._chown(pw)
        self._pg("initdb", "-D", str(self.folder / "data"), "-U", self.user, f"--pwfile={pw}", "-A", "scram-sha-256",
                 "--no-sync", "-E", "UTF8")
        pw.unlink()
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.folder} -c fsync=off"
        self._pg("pg_ctl", "-D", str(self.folder / "data"), "-l", str(self.folder / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        import shutil

        try:
            self._pg("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _chown(self, path: Path) -> None:
        if self.run_as:  # root: the server's files belong to the user initdb runs as
            import shutil

            shutil.chown(path, user="postgres")

    def uri(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new empty database; its URI (without password: give ``env`` to whoever connects)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.uri(name)

    @property
    def env(self) -> dict[str, str]:
        return {"PGPASSWORD": self.password}


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL cluster of this test session on 127.0.0.1 and a free port, from Debian's binaries
    (``.ci/run`` installs them); the test skips, with the reason, where it cannot start. As root,
    initdb runs as the ``postgres`` user (it refuses root)."""
    import glob
    import pwd
    import shutil
    import tempfile

    pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'psycopg[binary]')")
    found = shutil.which("initdb") or max(glob.glob("/usr/lib/postgresql/*/bin/initdb"), default=None,
                                          key=lambda p: int(Path(p).parts[-3]))
    if found is None:
        pytest.skip("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin); .ci/run installs it")
    run_as: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="medlora-pg-"))  # not under pytest's 0700 tmp: the server user reads it
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run initdb as")
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: initdb cannot run as the 'postgres' user")
        run_as = ["runuser", "-u", "postgres", "--"]
        shutil.chown(folder, user="postgres")
    folder.chmod(0o700)
    server = Postgres(Path(found).parent, folder, run_as)
    try:
        server.start()
    except (RuntimeError, OSError) as err:
        shutil.rmtree(folder, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start: {err}")
    yield server
    server.stop()
