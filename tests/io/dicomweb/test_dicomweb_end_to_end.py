"""From the PACS and back, end to end on a real Orthanc (slow): ``medlora pull`` by study date range →
``medlora run`` on the cache → ``medlora predict --push`` → the SR and Secondary Capture series found
by QIDO-RS beside the images; identifiers only in the cache and on the PACS; then what a radiologist
sees, in headless Chromium (Orthanc Explorer's study page; the web viewer on the saliency capture).

Timings (studies per second of the pull and of the push) are printed (run with ``-s`` to see them)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pydicom
import pytest
import yaml

from medlora.io.dicomweb.client import open_client
from tests.io.dicomweb.conftest import USER, upload, write_studies

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")
IN_RANGE, OUTSIDE = 30, 6  # studies of May 2023 (pulled), of June 2023 (not)


@pytest.fixture(scope="module")
def round_trip(orthanc, tmp_path_factory, tiny_cfg):
    """Upload, pull by date range, run, predict with push (CLI), all against the session's Orthanc."""
    from medlora.cli import main
    from medlora.config import config_to_dict

    tmp = tmp_path_factory.mktemp("round_trip")
    env = pytest.MonkeyPatch()
    for key, value in orthanc.env.items():
        env.setenv(key, value)
    dates = [f"202305{d + 1:02d}" for d in range(IN_RANGE)] + [f"202306{d + 1:02d}" for d in range(OUTSIDE)]
    files = write_studies(tmp / "sent", IN_RANGE + OUTSIDE, seed=45, images=2, size=32, dates=dates)
    upload(orthanc, files)
    cache = tmp / "cache"
    t0 = time.monotonic()
    assert main(["pull", orthanc.url, "--out", str(cache), "--from", "2023-05-01", "--to", "2023-05-31",
                 "--modality", "CT"]) == 0
    pull_s = time.monotonic() - t0
    cfg = tiny_cfg(cache, tmp, **{"data.labels": str(tmp / "sent" / "labels.csv"), "data.name": "pulled"})
    cfg_file = tmp / "pulled.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp / "out"
    assert main(["run", str(cfg_file), "--out", str(out)]) == 0
    scored = Path(shutil.copytree(cache, tmp / "scored"))  # a copy with one unreadable study
    broken = sorted(scored.glob("instances/*"))[0]
    for f in broken.rglob("*.dcm"):
        f.write_bytes(f.read_bytes()[:-300])  # header intact, pixel data cut short
    t0 = time.monotonic()
    assert main(["predict", str(scored), "--bundle", str(out / "bundle"), "--out", str(tmp / "predictions.csv"),
                 "--push", orthanc.url, "--keep-going"]) == 0
    push_s = time.monotonic() - t0
    broken_uid = str(pydicom.dcmread(next(broken.rglob("*.dcm")), stop_before_pixels=True).StudyInstanceUID)
    yield {"files": files, "cache": cache, "scored": scored, "broken": broken_uid, "out": out, "cfg": cfg, "tmp": tmp,
           "pull_s": pull_s, "push_s": push_s, "predictions": pd.read_csv(tmp / "predictions.csv")}
    env.undo()


def _study_uids(files, in_range: bool) -> set[str]:
    import pydicom

    return {str(ds.StudyInstanceUID) for f in files for ds in [pydicom.dcmread(f, stop_before_pixels=True)]
            if ds.StudyDate.startswith("202305") == in_range}


def test_pull_run_predict_push_round_trip(round_trip, orthanc, capsys):
    from medlora.cli import main

    files, predictions = round_trip["files"], round_trip["predictions"]
    pulled = {ds.StudyInstanceUID for f in round_trip["cache"].rglob("*.dcm")
              for ds in [pydicom.dcmread(f, stop_before_pixels=True)]}
    assert pulled == _study_uids(files, True)  # the date range, nothing of June
    scored = predictions[predictions["n_images"] > 0]
    assert len(scored) == IN_RANGE - 1 and scored["score"].notna().all()
    client = open_client(orthanc.url, env=orthanc.env)
    found = 0
    for study in _study_uids(files, True):
        rows = client.search_for_series(study, fields=["SeriesDescription"])
        described = [(r["00080060"]["Value"][0], (r.get("0008103E", {}).get("Value") or [""])[0]) for r in rows]
        medlora = sorted(m for m, d in described if d.startswith("medlora"))
        assert medlora == ([] if study == round_trip["broken"] else ["OT", "SR"]), described
        found += bool(medlora)
    for study in _study_uids(files, False):  # not pulled, not scored: nothing pushed
        assert len(client.search_for_series(study)) == 1
    with capsys.disabled():
        print(f"\npull: {IN_RANGE} studies ({2 * IN_RANGE} instances) in {round_trip['pull_s']:.2f} s = "
              f"{IN_RANGE / round_trip['pull_s']:.1f} studies/s; predict + push (SR + SC each): {found} studies in "
              f"{round_trip['push_s']:.2f} s = {found / round_trip['push_s']:.2f} studies/s")
    capsys.readouterr()
    assert main(["predict", str(round_trip["scored"]), "--bundle", str(round_trip["out"] / "bundle"),
                 "--out", str(round_trip["tmp"] / "again.csv"), "--push", orthanc.url, "--keep-going"]) == 0
    said = capsys.readouterr()
    assert f"0 object(s) sent to {orthanc.url}, {2 * found} already there (skipped)" in said.out
    for value in ("1.2.826", "PH45", "ACC45", "Phantom^"):  # the console names no study, patient or accession
        assert value not in said.out + said.err


def test_a_validation_pushes_its_findings_to_the_pacs_too(round_trip, orthanc, capsys):
    """``medlora validate --push``: the same findings objects as predict's, so the PACS already has them."""
    from medlora.cli import main

    cfg_file = round_trip["tmp"] / "pulled.yaml"
    capsys.readouterr()
    assert main(["validate", str(round_trip["out"] / "bundle"), str(cfg_file), "--out", str(round_trip["tmp"] / "v"),
                 "--push", orthanc.url]) == 0
    said = capsys.readouterr().out
    assert "already there (skipped)" in said and f"sent to {orthanc.url}" in said
    assert (round_trip["tmp"] / "v" / "validation.html").is_file()


def test_identifiers_stay_in_the_cache_and_on_the_pacs(round_trip):
    """The run's outputs (MLflow store, bundle, reports, predictions) hold no UID, ID, name or accession."""
    import pydicom

    planted = set()
    for f in round_trip["files"]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        planted |= {str(ds.StudyInstanceUID), str(ds.SOPInstanceUID), str(ds.PatientID), str(ds.PatientName),
                    str(ds.AccessionNumber)}
    local = {"manifest.csv", "ingest_report.csv"}  # the local manifest and report keep paths (README)
    outputs = [p for p in round_trip["tmp"].rglob("*") if p.is_file() and p.name not in local
               and not any(p.is_relative_to(d) for d in (round_trip["cache"], round_trip["scored"], round_trip["tmp"] / "sent"))]
    assert any(p.name == "mlflow.db" for p in outputs) and any(p.name == "medlora.json" for p in outputs)
    for path in outputs:
        data = path.read_bytes()
        leaked = [v for v in planted if v.encode() in data]
        assert not leaked, f"{path} holds {leaked[:3]}"
    local_manifest = pd.read_csv(round_trip["out"] / "manifest.csv")  # the public one (MLflow) has no origin
    assert local_manifest["origin_key"].str.startswith("src-").all()
    assert local_manifest.groupby("study_key")["origin_key"].nunique().eq(1).all()


def _shot(url: str, png: Path, profile: Path) -> None:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
           "--window-size=1400,900", "--virtual-time-budget=10000", "--hide-scrollbars", f"--screenshot={png}", url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert png.is_file() and png.stat().st_size > 20_000, out.stderr[-1500:]


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium is not installed (Debian 'chromium')")
def test_the_study_in_orthanc_shows_the_medlora_series_beside_the_images(round_trip, orthanc, tmp_path):
    import numpy as np
    from matplotlib.image import imread

    keep = os.environ.get("MEDLORA_SCREENSHOTS")
    shots = Path(keep) if keep else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    studies = orthanc.get("/studies?expand")
    study = next(s for s in studies if s["MainDicomTags"].get("StudyDate", "").startswith("202305"))
    base = f"http://{USER}:{orthanc.password}@127.0.0.1:{orthanc.port}"  # basic auth for the browser only
    _shot(f"{base}/app/explorer.html#study?uuid={study['ID']}", shots / "orthanc_study.png", tmp_path / "p1")
    series = [orthanc.get(f"/series/{s}") for s in study["Series"]]
    capture = next(s for s in series if s["MainDicomTags"].get("SeriesDescription", "").startswith("medlora saliency"))
    _shot(f"{base}/web-viewer/app/viewer.html?series={capture['ID']}", shots / "orthanc_saliency.png", tmp_path / "p2")
    for png in ("orthanc_study.png", "orthanc_saliency.png"):
        assert float(np.asarray(imread(shots / png))[..., :3].std()) > 0.05, f"{png} looks blank"
