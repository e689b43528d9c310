"""Findings back to a real Orthanc: Comprehensive SR (TID 1500) + Secondary Capture, read back by
QIDO-RS/WADO-RS and checked with highdicom and dciodvfy; a second push of the same results is
skipped, another bundle gets series of its own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medlora.io.dicomweb.client import open_client
from medlora.io.dicomweb.objects import Algorithm, FindingCall, build_sc, build_sr, render_overlay
from medlora.io.dicomweb.push import push
from tests.io.dicomweb.conftest import upload, write_studies

DCIODVFY = shutil.which("dciodvfy")
ALGO = Algorithm("tiny-adapter", "a1" * 32, "vit_tiny_patch16_224", "0.1.0")


def sr_content(ds: pydicom.Dataset) -> dict:
    """What an SR says, read with highdicom: findings, scores, algorithm, observer, referenced instances."""
    import highdicom as hd

    sr = hd.sr.ComprehensiveSR.from_dataset(ds)
    (group,) = sr.content.get_image_measurement_groups()
    texts = {}
    for item in group[0].ContentSequence:  # the measurement group container's items
        if item.ValueType == "TEXT":
            texts.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, item.TextValue)
    observer = {item.ConceptNameCodeSequence[0].CodeMeaning: getattr(item, "TextValue", None)
                for item in sr.content.get_observer_contexts()[0]}
    return {"findings": {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()},
            "scores": {m.name.meaning: m.value for m in group.get_measurements()},
            "algorithm": (texts.get("Algorithm Name"), texts.get("Algorithm Version")),
            "device": observer.get("Device Observer Name"),
            "sources": {s.referenced_sop_instance_uid for s in group.source_images}}


def medlora_series(client, study: str) -> list[dict]:
    rows = client.search_for_series(study, fields=["SeriesDescription"])
    out = [{"uid": r["0020000E"]["Value"][0], "modality": r["00080060"]["Value"][0],
            "description": (r.get("0008103E", {}).get("Value") or [""])[0]} for r in rows]
    return [s for s in out if s["description"].startswith("medlora")]


def dciodvfy_errors(path: Path) -> tuple[list[str], str]:
    out = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    return [line for line in text.splitlines() if line.startswith("Error")], text


@pytest.fixture(scope="module")
def one_study(orthanc, tmp_path_factory):
    """One phantom study (2 slices) on the session's Orthanc: (its files read back, its study UID)."""
    folder = tmp_path_factory.mktemp("push_studies")
    files = [f for f in write_studies(folder, 6, seed=43) if f.parts[-4] == "patient0000"]
    upload(orthanc, files)
    sources = [pydicom.dcmread(f) for f in files]
    return sources, str(sources[0].StudyInstanceUID)


def _objects(sources, algorithm=ALGO, score=0.83):
    findings = [FindingCall("abnormal", score, 0.5)]
    img = sources[0].pixel_array.astype(float)
    img = (img - img.min()) / np.ptp(img)
    return [build_sr(algorithm, sources, findings),
            build_sc(algorithm, sources, findings, render_overlay(img, img[::-1], algorithm, findings))]


def test_sr_and_sc_are_pushed_read_back_and_say_what_made_them(one_study, pacs_env, tmp_path):
    sources, study = one_study
    res = push(pacs_env.url, _objects(sources))
    assert (res.sent, res.skipped, res.studies) == (2, 0, 1)
    client = open_client(pacs_env.url)
    series = {s["modality"]: s for s in medlora_series(client, study)}
    assert set(series) == {"SR", "OT"}
    assert series["SR"]["description"] == "medlora findings a1a1a1a1 tiny-adapter"
    assert series["OT"]["description"] == "medlora saliency a1a1a1a1 tiny-adapter"
    (sr_row,) = client.search_for_instances(study, series["SR"]["uid"])
    sr = client.retrieve_instance(study, series["SR"]["uid"], sr_row["00080018"]["Value"][0])
    said = sr_content(sr)
    assert said["findings"] == {"abnormal": "Present"} and said["scores"] == {"abnormal score": pytest.approx(0.83)}
    assert said["algorithm"] == ("tiny-adapter", "a1" * 32) and said["device"] == "medlora tiny-adapter"
    assert said["sources"] == {str(s.SOPInstanceUID) for s in sources}
    assert sr.StudyInstanceUID == study and sr.PatientID == sources[0].PatientID
    assert sr.SeriesInstanceUID not in {s.SeriesInstanceUID for s in sources}
    (sc_row,) = client.search_for_instances(study, series["OT"]["uid"])
    sc = client.retrieve_instance(study, series["OT"]["uid"], sc_row["00080018"]["Value"][0])
    assert sc.BurnedInAnnotation == "YES" and sc.PhotometricInterpretation == "RGB"
    assert sc.PatientName == sources[0].PatientName and sc.pixel_array.shape[2] == 3
    if DCIODVFY is None:
        pytest.skip("dciodvfy is not installed (Debian 'dicom3tools'); the objects were not validated")
    for name, ds in (("sr.dcm", sr), ("sc.dcm", sc)):
        ds.save_as(tmp_path / name, enforce_file_format=True)
        errors, text = dciodvfy_errors(tmp_path / name)
        assert errors == [], f"dciodvfy {name}:\n{text}"


def test_pushing_the_same_results_again_is_skipped_and_a_new_bundle_gets_new_series(one_study, pacs_env):
    sources, study = one_study
    push(pacs_env.url, _objects(sources))  # (maybe) already there from the test above
    client = open_client(pacs_env.url)
    before = medlora_series(client, study)
    again = push(pacs_env.url, _objects(sources))
    assert (again.sent, again.skipped) == (0, 2)
    assert medlora_series(client, study) == before
    other = Algorithm("tiny-adapter-v2", "b2" * 32, "vit_tiny_patch16_224", "0.1.0")
    res = push(pacs_env.url, _objects(sources, other))
    assert (res.sent, res.skipped) == (2, 0)
    after = medlora_series(client, study)
    assert len(after) == len(before) + 2 and {s["uid"] for s in before} < {s["uid"] for s in after}
    changed = push(pacs_env.url, _objects(sources, other, score=0.31))  # same bundle, new results: beside, not over
    assert changed.sent == 2 and len(medlora_series(client, study)) == len(after)
    rows = client.search_for_instances(study, next(s["uid"] for s in medlora_series(client, study)
                                                   if s["description"].endswith("v2") and s["modality"] == "SR"))
    assert len(rows) == 2


def test_result_uids_are_derived_from_bundle_study_and_content(one_study):
    sources, study = one_study
    a, b = _objects(sources), _objects(sources)
    assert [x.SOPInstanceUID for x in a] == [x.SOPInstanceUID for x in b]
    assert [x.SeriesInstanceUID for x in a] == [x.SeriesInstanceUID for x in b]
    changed = _objects(sources, score=0.2)
    assert [x.SeriesInstanceUID for x in changed] == [x.SeriesInstanceUID for x in a]
    assert not {x.SOPInstanceUID for x in changed} & {x.SOPInstanceUID for x in a}
    assert all(x.SOPInstanceUID.startswith("2.25.") and len(x.SOPInstanceUID) <= 64 for x in a + changed)
