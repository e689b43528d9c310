"""A real PACS for the DICOMweb tests: Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) on 127.0.0.1.

Each server runs ``Orthanc CONFIG.json`` on a free port with a throwaway storage folder, its DICOMweb
plugin (and the web viewer when installed) loaded, DIMSE off and HTTP basic authentication on
(``RegisteredUsers``; the password exists only here and in the test's environment). The session
server is shared; tests that stop a server start their own (:func:`orthanc_factory`). Without the
Orthanc binary or its DICOMweb plugin, these tests skip with the reason.
"""

from __future__ import annotations

import json
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process_group

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
PLUGINS = Path("/usr/share/orthanc/plugins")
DICOMWEB_PLUGIN = PLUGINS / "libOrthancDicomWeb.so"
VIEWER_PLUGIN = PLUGINS / "libOrthancWebViewer.so"
MISSING = ("the Orthanc binary is not installed (Debian 'orthanc')" if not Path(ORTHANC).is_file() else
           "the Orthanc DICOMweb plugin is not installed (Debian 'orthanc-dicomweb')" if not DICOMWEB_PLUGIN.is_file()
           else "")
USER = "medlora"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """Linux: the server gets SIGTERM when the test process dies (a killed pytest leaves no Orthanc)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Orthanc:
    """One Orthanc process with its own storage, port and password; ``stop()`` and ``start()`` again
    (same storage, same port)."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.port, self.password = folder, free_port(), secrets.token_hex(12)
        self.proc: subprocess.Popen | None = None
        self.folder.mkdir(parents=True, exist_ok=True)
        plugins = [str(p) for p in (DICOMWEB_PLUGIN, VIEWER_PLUGIN) if p.is_file()]
        config = {"Name": "medlora-test", "StorageDirectory": str(folder / "storage"),
                  "IndexDirectory": str(folder / "storage"), "HttpPort": self.port, "RemoteAccessAllowed": False,
                  "DicomServerEnabled": False, "AuthenticationEnabled": True,
                  "RegisteredUsers": {USER: self.password}, "Plugins": plugins, "StorageCompression": False,
                  "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": True}}
        self.config = folder / "orthanc.json"
        self.config.write_text(json.dumps(config, indent=1))

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The DICOMweb base URL (no credentials)."""
        return f"{self.root}/dicom-web"

    @property
    def env(self) -> dict[str, str]:
        return {"MEDLORA_DICOMWEB_USER": USER, "MEDLORA_DICOMWEB_PASSWORD": self.password}

    def get(self, path: str) -> object:
        """GET a REST path of Orthanc's own API (JSON)."""
        import requests

        r = requests.get(f"{self.root}{path}", auth=(USER, self.password), timeout=10)
        r.raise_for_status()
        return r.json()

    def start(self, timeout: float = 60) -> Orthanc:
        import requests

        log = (self.folder / "orthanc.log").open("ab")
        self.proc = subprocess.Popen([ORTHANC, str(self.config)], stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.folder, start_new_session=True, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while True:
            try:
                r = requests.get(f"{self.url}/studies", auth=(USER, self.password), timeout=2)
                if r.status_code == 200:
                    return self
            except requests.RequestException:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail("Orthanc did not start: " + (self.folder / "orthanc.log").read_text()[-2000:])
            time.sleep(0.2)

    def stop(self) -> None:
        stop_process_group(self.proc)


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory):
    """The session's Orthanc with DICOMweb and authentication, stopped at the end."""
    if MISSING:
        pytest.skip(MISSING)
    server = Orthanc(tmp_path_factory.mktemp("orthanc")).start()
    yield server
    server.stop()


@pytest.fixture
def orthanc_factory(tmp_path):
    """``start() -> Orthanc``: servers of one test (they may be stopped in it), all stopped afterwards."""
    if MISSING:
        pytest.skip(MISSING)
    servers: list[Orthanc] = []

    def start() -> Orthanc:
        server = Orthanc(tmp_path / f"orthanc{len(servers)}")
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pacs_env(orthanc, monkeypatch):
    """The session server's credentials in the environment, as a user would set them."""
    for key, value in orthanc.env.items():
        monkeypatch.setenv(key, value)
    return orthanc


def write_studies(folder: Path, patients: int, seed: int, images: int = 2, dates: list[str] | None = None,
                  size: int = 32) -> list[Path]:
    """Phantom studies (``medlora synth``) with their StudyDate set from ``dates`` (one per patient);
    returns the DICOM files."""
    import pydicom

    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms

    write_phantoms(folder, SynthConfig(patients=patients, images_per_patient=images, size=size, seed=seed))
    files = sorted(folder.rglob("*.dcm"))
    if dates:
        for f in files:
            ds = pydicom.dcmread(f)
            ds.StudyDate = dates[int(f.parts[-4].removeprefix("patient"))]
            ds.save_as(f)
    return files


def upload(server: Orthanc, files: list[Path]) -> None:
    """STOW-RS ``files`` to ``server`` with medlora's own client."""
    import pydicom

    from medlora.io.dicomweb.client import open_client

    client = open_client(server.url, env=server.env)
    for i in range(0, len(files), 20):
        client.store_instances([pydicom.dcmread(f) for f in files[i:i + 20]])
