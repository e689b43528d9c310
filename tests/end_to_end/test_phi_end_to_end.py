"""Identifiers planted in DICOM tags AND in folder and file names never leave the machine.

A tiny ``medlora run`` on studies stored as ``A1234560_DOE^JOHN0/20240101/A1234560_20240101_IMG1.dcm``;
then ``medlora validate`` of its bundle on the same studies; then the MLflow store (every byte of its database: params, tags, run names, metric names, dataset
inputs; and every artifact file), the review bundle and the INFO logs are searched for the identifiers.
Only the local ``manifest.csv``/``ingest_report.csv`` may hold paths (so files can be found again).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LOCAL_ONLY = {"manifest.csv", "ingest_report.csv"}  # the local manifest and report keep paths (README)


def _planted_study(root: Path, p: int, abnormal: bool, rng: np.random.Generator) -> list[str]:
    patient, name, date = f"A123456{p}", f"DOE^JOHN{p}", "20240101"
    folder = root / f"{patient}_{name}" / date
    folder.mkdir(parents=True)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.PatientID, ds.PatientName, ds.PatientBirthDate = "" if p == 0 else patient, name, "19700101"  # p0: from its folder
    ds.StudyDate, ds.AccessionNumber, ds.Modality = date, f"ACC77{p}", "CT"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    image = rng.normal(100, 20, (32, 32))
    if abnormal:
        image[10:20, 10:20] += 400
    ds.set_pixel_data(image.clip(0, 4000).astype(np.uint16), "MONOCHROME2", 16)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(folder / f"{patient}_{date}_IMG1.dcm", enforce_file_format=True)
    # strings of 6+ characters: shorter ones turn up by chance in the bytes of the saved weights
    return [patient, "DOE^JOHN", date, "19700101", f"ACC77{p}", ds.StudyInstanceUID, ds.SOPInstanceUID]


@pytest.mark.slow  # a whole (tiny) run: ~15-30 s on 2 shared cores
def test_planted_identifiers_reach_neither_mlflow_nor_the_bundle_nor_the_logs(tmp_path, tiny_cfg, caplog) -> None:
    import yaml
    from mlflow import MlflowClient

    from medlora.cli import main
    from medlora.config import config_to_dict

    rng = np.random.default_rng(0)
    root = tmp_path / "export"
    planted, rows = set(), []
    for p in range(12):
        planted.update(_planted_study(root, p, p % 2 == 1, rng))
        rows.append({"path": f"A123456{p}_DOE^JOHN{p}", "label": ["normal", "abnormal"][p % 2]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    (root / "A1234561_DOE^JOHN1" / "20240101" / "A1234561_20240101_NOTES.dcm").write_text("a broken file: a report row")
    cfg = tiny_cfg(root, tmp_path, **{"data.name": "planted", "data.label_key": "path", "train.epochs": 1,
                                      "evaluate.bootstrap": 20})
    client = MlflowClient(cfg.tracking.uri)
    client.create_experiment("planted", artifact_location=(tmp_path / "artifacts").as_uri())
    cfg_file = tmp_path / "planted.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(cfg)))
    out = tmp_path / "out"
    validation = tmp_path / "validation"
    with caplog.at_level(logging.INFO):
        assert main(["run", str(cfg_file), "--out", str(out)]) == 0
        assert main(["validate", str(out / "bundle"), str(cfg_file), "--out", str(validation)]) == 0

    local = (out / "manifest.csv").read_text()
    assert "A1234560_DOE^JOHN0/20240101/A1234560_20240101_IMG1.dcm" in local  # paths stay in the local manifest
    report = (out / "ingest_report.csv").read_text()
    assert "A1234561_20240101_NOTES.dcm" in report and "patient from folder A1234560_DOE^JOHN0/20240101" in report
    run = client.search_runs([client.get_experiment_by_name("planted").experiment_id])[0]
    assert {"manifest.csv", "ingest_report.csv"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    places = {"mlflow database": (tmp_path / "mlflow.db").read_bytes().decode("latin-1"),
              "INFO logs": "\n".join(r.getMessage() for r in caplog.records)}
    shared = [f for f in (tmp_path / "artifacts").rglob("*") if f.is_file()]
    bundle = [f for f in out.rglob("*") if f.is_file() and f.relative_to(out).as_posix() not in LOCAL_ONLY]
    bundle += [f for f in validation.rglob("*") if f.is_file() and f.name not in LOCAL_ONLY]
    for f in shared + bundle:
        places[str(f.relative_to(tmp_path))] = f.read_bytes().decode("latin-1")
    assert any("manifest.csv" in k for k in places) and any("predictions.csv" in k for k in places)
    assert any("validation.html" in k for k in places)
    leaks = [(where, raw) for where, text in places.items() for raw in planted if raw in text]
    assert leaks == []
