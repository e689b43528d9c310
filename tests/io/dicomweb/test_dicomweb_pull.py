"""Pull from a real Orthanc over DICOMweb: queries, the content-addressed cache, resume, a server that
stops, credentials; and the ingest of a pulled cache (sources hashed, failed transfers reported)."""

from __future__ import annotations

import csv
import hashlib

import numpy as np
import pydicom
import pytest

from medlora.errors import ConfigError, PacsError
from medlora.io.dicomweb.cache import FAILURES_FILE, SOURCES_FILE, instance_name
from medlora.io.dicomweb.client import credentials, mask_url, server_url
from medlora.io.dicomweb.pull import PullQuery, parse_filters, pull
from tests.io.dicomweb.conftest import upload, write_studies


class Interrupted(Exception):
    """What a test raises to cut a pull short, as a Ctrl-C or a killed job would."""


def _rows(path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _uids(files, tag: str) -> set[str]:
    return {str(pydicom.dcmread(f, stop_before_pixels=True).get(tag)) for f in files}


@pytest.fixture(scope="module")
def march(orthanc, tmp_path_factory):
    """Six phantom studies of 1-6 March 2023 on the session's Orthanc."""
    folder = tmp_path_factory.mktemp("march")
    files = write_studies(folder, 6, seed=41, dates=[f"2023030{i + 1}" for i in range(6)])
    upload(orthanc, files)
    return folder, files


@pytest.mark.parametrize("url", ["http://medlora:hunter2@127.0.0.1:8042/dicom-web",
                                 "https://:tok3n@pacs.example.org/dicom-web"])
def test_credentials_in_the_url_are_refused_and_masked(url, tmp_path):
    with pytest.raises(ConfigError) as err:
        pull(url, tmp_path / "cache", PullQuery(modality="CT"))
    message = str(err.value)
    assert "***@" in message and "hunter2" not in message and "tok3n" not in message
    assert "MEDLORA_DICOMWEB_USER" in message and "netrc" in message
    assert not (tmp_path / "cache").exists()


def test_predict_push_refuses_credentials_in_the_url_before_any_work(tmp_path, capsys):
    from medlora.cli import main

    assert main(["predict", str(tmp_path), "--bundle", str(tmp_path / "none"),
                 "--push", "https://reader:s3cr3t@pacs.example.org/dicom-web"]) == 2
    err = capsys.readouterr().err
    assert "https://***@pacs.example.org/dicom-web carries credentials" in err and "s3cr3t" not in err


def test_a_foreign_failures_csv_is_not_read_as_a_pull(tmp_path):
    from medlora.io.dicomweb.cache import transfer_failures

    (tmp_path / FAILURES_FILE).write_text("path,reason\nscan1.dcm,scanner fault\n")
    assert transfer_failures(tmp_path) == []


def test_credentials_come_from_the_environment_then_netrc(tmp_path):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine pacs.example.org login reader password fromnetrc\n")
    url = server_url("https://pacs.example.org/dicom-web/")
    assert url == "https://pacs.example.org/dicom-web"
    assert credentials(url, {"MEDLORA_DICOMWEB_TOKEN": "t0k"}).headers == {"Authorization": "Bearer t0k"}
    assert credentials(url, {"MEDLORA_DICOMWEB_USER": "u", "MEDLORA_DICOMWEB_PASSWORD": "p"}).auth == ("u", "p")
    found = credentials(url, {"NETRC": str(netrc)})
    assert found.auth == ("reader", "fromnetrc") and "fromnetrc" not in repr(found)
    assert credentials("https://other.example.org", {"NETRC": str(netrc)}).auth is None
    with pytest.raises(ConfigError, match="MEDLORA_DICOMWEB_PASSWORD"):
        credentials(url, {"MEDLORA_DICOMWEB_USER": "u"})
    assert mask_url("https://a:b@h:1/p?token=x") == "https://***@h:1/p"


def test_queries_need_a_criterion_and_filters_need_dicom_keywords():
    with pytest.raises(ConfigError, match="never pulls a whole PACS"):
        PullQuery().searches()
    with pytest.raises(ConfigError, match="not a DICOM keyword"):
        parse_filters(["PatientSexx=F"])
    with pytest.raises(ConfigError, match="not a date"):
        PullQuery(date_from="March").searches()
    q = PullQuery(date_from="2023-03-02", modality="CT", accessions=["A1", "A2"], filters=parse_filters(["PatientSex=F"]))
    assert q.searches() == [{"PatientSex": "F", "StudyDate": "20230302-", "ModalitiesInStudy": "CT", "AccessionNumber": a}
                            for a in ("A1", "A2")]


def test_wrong_password_is_a_clear_error(march, pacs_env, monkeypatch, tmp_path):
    monkeypatch.setenv("MEDLORA_DICOMWEB_PASSWORD", "wrong")
    with pytest.raises(PacsError, match=r"HTTP 401.*MEDLORA_DICOMWEB_USER") as err:
        pull(pacs_env.url, tmp_path / "cache", PullQuery(modality="CT"))
    assert pacs_env.url in str(err.value) and "wrong" not in str(err.value)


def test_pull_by_date_range_fills_the_cache_by_hashed_sop_uid(march, pacs_env, tmp_path):
    folder, files = march
    res = pull(pacs_env.url, tmp_path / "cache", PullQuery(date_from="2023-03-02", date_to="2023-03-04"))
    wanted = [f for f in files if f.parts[-4] in ("patient0001", "patient0002", "patient0003")]
    assert (res.studies, res.instances, res.fetched, res.present, res.failed) == (3, len(wanted), len(wanted), 0, [])
    for f in wanted:  # named by sha256 of the SOP Instance UID, same pixels and identifiers as sent
        ds = pydicom.dcmread(f)
        sop = str(ds.SOPInstanceUID)
        cached = tmp_path / "cache" / instance_name(ds.StudyInstanceUID, ds.SeriesInstanceUID, sop)
        assert cached.name == hashlib.sha256(sop.encode()).hexdigest() + ".dcm"
        a, b = pydicom.dcmread(f), pydicom.dcmread(cached)
        assert np.array_equal(a.pixel_array, b.pixel_array) and a.PatientID == b.PatientID
    folders = {f.parent for f in (tmp_path / "cache" / "instances").rglob("*.dcm")}
    assert len(folders) == 3  # one folder per series (the leakage audit reads a folder as one scan)
    sources = _rows(tmp_path / "cache" / SOURCES_FILE)
    assert {r["server"] for r in sources} == {pacs_env.url}
    assert {r["study_uid"] for r in sources} == _uids(wanted, "StudyInstanceUID")
    assert _rows(tmp_path / "cache" / FAILURES_FILE) == []
    again = pull(pacs_env.url, tmp_path / "cache", PullQuery(date_from="20230302", date_to="20230304"))
    assert (again.fetched, again.present) == (0, len(wanted))


def test_pull_by_accession_list(march, pacs_env, tmp_path):
    folder, files = march
    accessions = tmp_path / "accessions.csv"
    accessions.write_text("AccessionNumber,note\nACC41000000,x\nACC41000005,y\nNOSUCH,z\n")
    from medlora.cli import main

    assert main(["pull", pacs_env.url, "--out", str(tmp_path / "cache"), "--accessions", str(accessions)]) == 0
    cached = sorted((tmp_path / "cache" / "instances").rglob("*.dcm"))
    assert _uids(cached, "AccessionNumber") == {"ACC41000000", "ACC41000005"} and len(cached) == 4


def test_an_interrupted_pull_resumes_without_duplicates_or_gaps(march, pacs_env, tmp_path):
    folder, files = march
    query = PullQuery(date_from="2023-03-01", date_to="2023-03-06")

    def stop_after_5(n: int) -> None:
        if n == 5:
            raise Interrupted

    with pytest.raises(Interrupted):
        pull(pacs_env.url, tmp_path / "cache", query, workers=2, on_arrival=stop_after_5)
    first = sorted((tmp_path / "cache" / "instances").rglob("*.dcm"))
    assert 5 <= len(first) < len(files)
    assert not list((tmp_path / "cache").rglob(".*.part"))  # no half-written file
    res = pull(pacs_env.url, tmp_path / "cache", query, workers=3)
    assert res.present == len(first) and res.fetched == len(files) - len(first) and res.failed == []
    cached = sorted((tmp_path / "cache" / "instances").rglob("*.dcm"))
    assert len(cached) == len(files) and _uids(cached, "SOPInstanceUID") == _uids(files, "SOPInstanceUID")
    assert len(_rows(tmp_path / "cache" / SOURCES_FILE)) == len(files)


def test_a_server_that_stops_mid_pull_is_named_and_the_cache_keeps_what_arrived(orthanc_factory, monkeypatch,
                                                                                  tmp_path):
    server = orthanc_factory()
    for key, value in server.env.items():
        monkeypatch.setenv(key, value)
    files = write_studies(tmp_path / "studies", 6, seed=42)
    upload(server, files)
    query = PullQuery(modality="CT")

    def stop_server_after_4(n: int) -> None:
        if n == 4:
            server.stop()

    with pytest.raises(PacsError) as err:
        pull(server.url, tmp_path / "cache", query, workers=1, backoff=0.01, on_arrival=stop_server_after_4)
    message = str(err.value)
    assert server.url in message and "stopped answering" in message and "connection" in message
    assert "run the same pull again" in message and server.password not in message
    arrived = sorted((tmp_path / "cache" / "instances").rglob("*.dcm"))
    failures = _rows(tmp_path / "cache" / FAILURES_FILE)
    assert len(arrived) >= 4 and failures and all("connection" in r["reason"] for r in failures)
    assert f"{len(arrived)} of {len(files)} instances are in the cache" in message

    server.start()  # the same storage and port: the rerun fetches only what is missing
    res = pull(server.url, tmp_path / "cache", query)
    assert (res.present, res.fetched, res.failed) == (len(arrived), len(files) - len(arrived), [])
    assert _rows(tmp_path / "cache" / FAILURES_FILE) == []


def test_ingest_of_a_pulled_cache_hashes_the_sources_and_reports_failed_transfers(march, pacs_env, tmp_path):
    from medlora.config import DataConfig
    from medlora.io.ingest import run_ingest

    folder, files = march
    cache = tmp_path / "cache"
    pull(pacs_env.url, cache, PullQuery(date_from="2023-03-01", date_to="2023-03-06"))
    lost = cache / _rows(cache / SOURCES_FILE)[0]["path"]
    sop = str(pydicom.dcmread(lost).SOPInstanceUID)
    lost.unlink()  # as if its transfer had failed for good
    with (cache / FAILURES_FILE).open("a", newline="") as f:
        csv.writer(f).writerow([lost.relative_to(cache).as_posix(), pacs_env.url, "1.2.3", "1.2.3.4", sop, "HTTP 404 Not Found"])
    cfg = DataConfig(name="pulled", root=cache, labels=folder / "labels.csv", secret_file=tmp_path / "site.key")
    res = run_ingest(cfg, report_dir=tmp_path / "report")
    assert len(res.manifest) == len(files) - 1
    keys = res.manifest["origin_key"]
    assert keys.str.startswith("src-").all() and keys.nunique() == 6
    assert (res.manifest.groupby("study_key")["origin_key"].nunique() == 1).all()
    row = res.skipped[res.skipped["category"] == "transfer failed"].iloc[0]
    assert row["status"] == "skipped" and row["path"] == lost.relative_to(cache).as_posix()
    assert "HTTP 404" in row["reason"] and pacs_env.url in row["reason"] and sop not in row["reason"]
    written = (tmp_path / "report" / "manifest.csv").read_text()
    assert "1.2.826" not in written and "ACC41" not in written and pacs_env.url not in written


def test_paged_search_stops_when_a_server_ignores_the_offset():
    from medlora.io.dicomweb.client import search_all

    rows = [{"0020000D": {"Value": [f"1.2.{i}"]}} for i in range(5)]
    calls = []

    def ignores_offset(limit: int, offset: int) -> list[dict]:
        calls.append(offset)
        return rows[:limit]  # the first page, whatever the offset

    def pages(limit: int, offset: int) -> list[dict]:
        return rows[offset:offset + limit]

    assert search_all(ignores_offset, page=10) == rows and calls == [0, 5]
    assert search_all(pages, page=2) == rows
