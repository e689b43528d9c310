"""Ingest of exports as hospitals send them: blank identifiers, broken slices, multi-frame objects without
positions, duplicate instances, labels keyed by paths written three ways; a report that names every file."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    BasicTextSRStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

from medlora.config import DataConfig, PreprocessConfig, SplitConfig
from medlora.errors import InputError, LeakageError
from medlora.io.ingest import run_ingest
from medlora.io.prepare import prepare_dataset
from medlora.io.report import manifest_files, public_report
from medlora.io.scan import candidate_files
from medlora.io.split import audit_leakage
from medlora.transforms.samples import expand_views

RNG = np.random.default_rng(1)
BLANK = {"PatientID": "", "StudyInstanceUID": "", "SeriesInstanceUID": "", "SOPInstanceUID": ""}


def write_slice(path: Path, z: float = 0.0, ids: dict[str, str] | None = None, modality: str = "CT",
                pixels: np.ndarray | None = None, sop_class: str = CTImageStorage, **tags) -> Path:
    """A small axial slice at ``z``; ``ids`` by DICOM keyword (``BLANK`` for a de-identified export)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.Modality = modality
    if pixels is not None or sop_class != BasicTextSRStorage:
        ds.ImagePositionPatient, ds.ImageOrientationPatient, ds.PixelSpacing = [0.0, 0.0, z], [1, 0, 0, 0, 1, 0], [0.8, 0.8]
        data = pixels if pixels is not None else RNG.integers(0, 2000, (8, 8)).astype(np.int16)
        ds.set_pixel_data(data, "MONOCHROME2", 16, generate_instance_uid=False)
    ids = ids if ids is not None else {"PatientID": "PID-" + path.parent.name, "StudyInstanceUID": generate_uid(),
                                       "SeriesInstanceUID": generate_uid()}
    ds.SOPInstanceUID = generate_uid()
    for keyword, value in {**ids, **tags}.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID or generate_uid()
    ds.preamble = b"\0" * 128
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=False)
    return path


def write_series(folder: Path, slices: int, ids: dict[str, str] | None = None, step: float = 2.0) -> list[Path]:
    ids = ids if ids is not None else {"PatientID": "PID-" + folder.name, "StudyInstanceUID": generate_uid(),
                                       "SeriesInstanceUID": generate_uid()}
    return [write_slice(folder / f"IM{s:04d}", step * s, ids) for s in range(slices)]


def truncate(path: Path, cut: int = 100) -> None:
    path.write_bytes(path.read_bytes()[:-cut])


def labels(root: Path, rows: dict[str, str], name: str = "labels.csv", **extra: list[str]) -> Path:
    path = root / name
    pd.DataFrame({"path": list(rows), "label": list(rows.values()), **extra}).to_csv(path, index=False)
    return path


def ingest(root: Path, **kw):
    return run_ingest(DataConfig(root=root, label_key="path", **kw))


def reasons_of(report: pd.DataFrame, status: str = "skipped") -> dict[str, str]:
    rows = report[report["status"] == status]
    return dict(zip(rows["path"], rows["reason"], strict=True))


@pytest.fixture
def blank_export(tmp_path) -> Path:
    """A 20-slice CT whose identifiers were all blanked, beside nine identified one-image patients."""
    root = tmp_path / "export"
    write_series(root / "scan1", 20, BLANK)
    for p in range(9):
        write_slice(root / f"p{p}" / "img.dcm")
    labels(root, {"scan1": "abnormal", **{f"p{p}": ["normal", "abnormal"][p % 2] for p in range(9)}})
    return root


def test_blank_identifiers_make_one_volume_of_one_patient(blank_export, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="medlora.io"):
        result = ingest(blank_export)
    m = result.manifest
    scan = m[m["path"] == "scan1"]
    assert len(scan) == 1 and scan["kind"].iloc[0] == "series" and len(json.loads(scan["source"].iloc[0])) == 20
    assert m["patient_key"].nunique() == 10 and m["study_key"].nunique() == 10
    notes = reasons_of(result.skipped, "note")
    assert list(notes) == ["scan1"]
    assert "PatientID/StudyInstanceUID/SeriesInstanceUID blank in 20 file(s)" in notes["scan1"]
    assert "patient from folder scan1" in notes["scan1"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("identity derived for 1 series (20 files)" in t for t in messages)
    assert any("ingest: 10 patients, 10 studies found" in t for t in messages)
    assert not any("scan1" in t for t in messages)  # logs may leave the machine: counts, never folder names


def test_blank_identifier_slices_never_spread_over_splits(blank_export, tmp_path) -> None:
    cfg = DataConfig(root=blank_export, label_key="path", volume_min_slices=30,  # not a volume: 20 2D samples
                     split=SplitConfig(file=tmp_path / "split.csv"))
    m = prepare_dataset(cfg, tmp_path / "out").manifest
    scan = m[m["path"].str.startswith("scan1/")]
    assert len(scan) == 20 and scan["patient_key"].nunique() == 1 and scan["split"].nunique() == 1
    assert m["patient_key"].nunique() == 10


def test_identity_from_folder_level_and_from_the_labels_csv(tmp_path) -> None:
    root = tmp_path / "by_patient"
    for patient in ("A1", "B2"):
        for study in ("2020", "2021"):  # two studies per patient, identifiers blank
            write_slice(root / patient / study / "x.dcm", ids=BLANK, SOPInstanceUID=generate_uid())
    labels(root, {"A1": "normal", "B2": "abnormal"})
    tags = ingest(root).manifest
    assert tags["patient_key"].nunique() == 4  # default: the file's own folder
    by_folder = ingest(root, identity="folder:1").manifest
    assert by_folder["patient_key"].nunique() == 2 and by_folder["study_key"].nunique() == 4
    labels(root, {"A1/2020": "normal", "A1/2021": "normal", "B2/2020": "abnormal", "B2/2021": "abnormal"},
           patient=["X", "X", "Y", "Y"])
    by_labels = ingest(root, identity="labels").manifest
    assert by_labels["patient_key"].nunique() == 2


def test_folder_identity_deeper_than_the_files_is_reported(tmp_path) -> None:
    root = tmp_path / "flat"
    write_slice(root / "a" / "x.dcm")
    write_slice(root / "b" / "y.dcm")
    labels(root, {"a": "normal", "b": "abnormal"})
    with pytest.raises(InputError, match=r"no usable labelled images .*fewer than 2 folder levels"):
        ingest(root, identity="folder:2")


def test_a_truncated_slice_leaves_its_series_and_the_rest_is_kept(tmp_path) -> None:
    root = tmp_path / "t"
    end = write_series(root / "end", 9)
    middle = write_series(root / "middle", 9)
    truncate(end[-1])  # the last slice: the other 8 are still evenly spaced
    truncate(middle[4])  # a hole in the middle: the rest is not one regular volume
    labels(root, {"end": "normal", "middle": "abnormal"})
    result = ingest(root)
    m, skipped = result.manifest, reasons_of(result.skipped)
    series = m[m["kind"] == "series"]
    assert list(series["path"]) == ["end"] and len(json.loads(series["source"].iloc[0])) == 8
    assert set(m.loc[m["kind"] == "dicom2d", "path"]) == {p.relative_to(root).as_posix() for p in middle if p != middle[4]}
    assert "truncated pixel data" in skipped["end/IM0008"] and "truncated pixel data" in skipped["middle/IM0004"]
    notes = reasons_of(result.skipped, "note")
    assert "assembled from 8 slices; 1 slice(s) left out (broken or duplicate" in notes["end"]
    assert "is not a volume (gap" in notes["middle"] and "8 slices are used as 2D samples" in notes["middle"]
    strict = ingest(root, volume_fallback=False)
    assert not strict.manifest["path"].str.startswith("middle").any()
    assert "(data.volume_fallback: false)" in reasons_of(strict.skipped)["middle/IM0000"]


def test_the_reason_of_a_broken_file_does_not_depend_on_its_label(tmp_path) -> None:
    root = tmp_path / "r"
    files = write_series(root / "s", 3)
    truncate(files[1])
    labels(root, {"s/IM0000": "normal"})
    unlabelled = reasons_of(ingest(root).skipped)["s/IM0001"]
    labels(root, {"s/IM0000": "normal", "s/IM0001": "abnormal"})
    assert reasons_of(ingest(root).skipped)["s/IM0001"] == unlabelled and "truncated pixel data" in unlabelled


def test_a_multiframe_object_without_positions_becomes_2d_frames(tmp_path) -> None:
    from medlora.transforms.pipeline import LoadSampled

    root = tmp_path / "mf"
    frames = RNG.integers(0, 1000, (10, 8, 8)).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = "PID-MF", generate_uid(), generate_uid(), "MR"
    ds.set_pixel_data(frames, "MONOCHROME2", 16)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    root.mkdir()
    ds.save_as(root / "cine.dcm", enforce_file_format=True)
    labels(root, {"cine.dcm": "normal"})
    result = ingest(root)
    assert list(result.manifest["kind"]) == ["frames"]
    assert "lack ImagePositionPatient" in reasons_of(result.skipped, "note")["cine.dcm"]
    samples = expand_views(result.manifest, PreprocessConfig())
    assert list(samples["view_index"]) == list(range(10)) and samples["sample_id"].nunique() == 10
    load = LoadSampled(keys="image", preprocess=PreprocessConfig())
    third = load({"image": str(root / "cine.dcm"), "kind": "frames", "view_index": 3})["image"]
    assert tuple(third.shape) == (1, 8, 8)
    assert np.corrcoef(np.asarray(third).ravel(), frames[3].ravel())[0, 1] > 0.99  # frame 3, not the central one


def messy_corpus(root: Path) -> None:
    """Good files, a truncated one, a non-DICOM file, an SR without pixels, a duplicate SOP instance, a
    blank-identifier series, NIfTI volumes (one broken), a labels CSV with an unmatched row."""
    write_series(root / "good_series", 8)
    write_series(root / "blank_series", 8, BLANK)
    one = write_slice(root / "images" / "a.dcm")
    shutil.copy(one, root / "images" / "a_copy.dcm")  # the same SOPInstanceUID twice
    truncate(write_slice(root / "images" / "cut.dcm"))
    write_slice(root / "images" / "report.dcm", sop_class=BasicTextSRStorage, modality="SR")
    (root / "images" / "readme").write_text("not DICOM")
    (root / "images" / "empty.dcm").write_bytes(b"")
    root.joinpath("nii").mkdir()
    nib.save(nib.Nifti1Image(RNG.normal(0, 1, (6, 5, 4)).astype(np.float32), np.eye(4)), root / "nii" / "v.nii.gz")
    (root / "nii" / "bad.nii.gz").write_bytes(b"\x1f\x8b broken")
    labels(root, {"good_series": "normal", "blank_series": "abnormal", "images": "normal", "nii": "abnormal",
                  "gone/missing.dcm": "normal"})


def test_every_scanned_file_is_named_once_in_the_manifest_or_the_report(tmp_path, capfd) -> None:
    root = tmp_path / "messy"
    messy_corpus(root)
    result = run_ingest(DataConfig(root=root, label_key="path"), tmp_path / "out")
    scanned = [p.relative_to(root).as_posix() for p in candidate_files(root, {root / "labels.csv"})]
    report = result.skipped
    named = manifest_files(result.manifest) + list(report.loc[report["status"] == "skipped", "path"])
    assert sorted(named) == sorted(scanned)  # each exactly once
    skipped = reasons_of(report)
    categories = dict(zip(report["path"], report["category"], strict=False))
    assert categories["images/a_copy.dcm"] == "duplicate instance" and "as images/a.dcm, which is kept" in skipped["images/a_copy.dcm"]
    assert categories["images/cut.dcm"] == "truncated pixel data"
    assert categories["images/readme"] == "not DICOM" and categories["images/report.dcm"] == "not an image"
    assert categories["images/empty.dcm"] == "empty file" and categories["nii/bad.nii.gz"] == "unreadable NIfTI"
    assert "labels.csv line 6 (path)" in reasons_of(report, "label")["gone/missing.dcm"]
    written = pd.read_csv(tmp_path / "out" / "ingest_report.csv", keep_default_na=False)
    assert len(written) == len(report) and (tmp_path / "out" / "manifest.csv").is_file()
    err = capfd.readouterr().err
    assert "Traceback" not in err and "pydicom" not in err


def test_the_public_report_carries_no_folder_or_file_name(tmp_path) -> None:
    root = tmp_path / "messy"
    messy_corpus(root)
    result = ingest(root)
    public = public_report(result.skipped, result.manifest)
    assert "path" not in public.columns and len(public) == len(result.skipped)
    text = public.to_csv()
    for name in ("images", "a_copy.dcm", "cut.dcm", "blank_series", "gone", "missing.dcm", "bad.nii.gz"):
        assert name not in text, name
    assert public["file_key"].str.fullmatch(r"fil-[0-9a-f]{16}").all()


def test_label_path_keys_relative_to_root_to_the_csv_or_absolute(tmp_path) -> None:
    root = tmp_path / "data" / "root"
    for p in range(3):
        write_slice(root / f"p{p}" / "img.dcm")
    elsewhere = tmp_path / "sheets"
    elsewhere.mkdir()
    link = tmp_path / "link"
    link.symlink_to(root)
    keys = {"p0/img.dcm": "normal",  # relative to data.root
            "../data/root/p1/img.dcm": "abnormal",  # relative to the CSV's folder
            str(link / "p2" / ".." / "p2" / "img.dcm"): "normal"}  # absolute, through a symlink, not normalised
    csv = labels(elsewhere, keys)
    m = run_ingest(DataConfig(root=root, label_key="path", labels=csv)).manifest
    assert dict(zip(m["path"], m["label"], strict=True)) == {"p0/img.dcm": 0, "p1/img.dcm": 1, "p2/img.dcm": 0}
    csv = labels(elsewhere, {"p0/image.dcm": "normal", "p1/img.dcm": "abnormal"})
    result = run_ingest(DataConfig(root=root, label_key="path", labels=csv))
    unmatched = reasons_of(result.skipped, "label")["p0/image.dcm"]
    assert "labels.csv line 2 (path)" in unmatched and "closest scanned files: p0/img.dcm" in unmatched


def test_unmatched_identifier_keys_name_their_line_not_their_value(tmp_path) -> None:
    root = tmp_path / "uid"
    write_slice(root / "a" / "x.dcm", ids={"PatientID": "P1", "StudyInstanceUID": "1.2.3", "SeriesInstanceUID": "1.2.3.1"})
    pd.DataFrame({"StudyInstanceUID": ["1.2.3", "9.9.9.9"], "label": ["normal", "abnormal"]}).to_csv(root / "labels.csv", index=False)
    report = run_ingest(DataConfig(root=root)).skipped
    row = report[report["status"] == "label"].iloc[0]
    assert row["reason"].startswith("labels.csv line 3 (StudyInstanceUID): label row with no matching study")
    assert "9.9.9.9" not in report.to_csv()


def test_checks_fail_after_the_report_is_written_and_name_the_files(tmp_path) -> None:
    root = tmp_path / "s"
    write_series(root / "ok", 3)
    truncate(write_slice(root / "bad" / "cut.dcm"))
    labels(root, {"ok": "normal", "bad": "abnormal"})
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"data.strict is set and 1 files were skipped; see .*ingest_report.csv; "
                                         r"first: bad/cut.dcm \(truncated pixel data"):
        run_ingest(DataConfig(root=root, label_key="path", strict=True), out)
    assert "bad/cut.dcm" in (out / "ingest_report.csv").read_text() and (out / "manifest.csv").is_file()


def test_a_leakage_failure_leaves_the_manifest_and_names_the_files(tmp_path) -> None:
    root = tmp_path / "planted"
    planted = RNG.integers(0, 2000, (8, 8)).astype(np.int16)
    for p in range(8):
        write_slice(root / f"p{p}" / "img.dcm", pixels=planted if p < 2 else None)
    labels(root, {f"p{p}": ["normal", "abnormal"][p % 2] for p in range(8)})
    split = SplitConfig(file=tmp_path / "split.csv", train=0.5, val=0.25, test=0.25)
    out = tmp_path / "out"
    try:
        prepare_dataset(DataConfig(root=root, label_key="path", split=split), out)
    except LeakageError as err:
        assert "p0/img.dcm" in str(err) and str(out / "manifest.csv") in str(err)
        assert set(pd.read_csv(out / "manifest.csv")["split"]) <= {"train", "val", "test"}
    else:  # the draw put both copies in one split: the audit must pass and the manifest still be there
        m = pd.read_csv(out / "manifest.csv")
        assert m.loc[m["path"].isin(["p0/img.dcm", "p1/img.dcm"]), "split"].nunique() == 1


def test_the_audit_catches_adjacent_slices_of_one_scan_in_two_splits() -> None:
    rows = [{"path": f"s/{i}.dcm", "patient_key": f"pat-{i // 3}", "sop_key": f"sop-{i}", "pixel_hash": f"h{i}",
             "scan_key": "scn-1", "position": 2.0 * i, "split": "train" if i < 3 else "test"} for i in range(6)]
    with pytest.raises(LeakageError, match=r"scan_key=scn-1: 1 adjacent slices of one scan in test\+train.*s/2.dcm, s/3.dcm"):
        audit_leakage(pd.DataFrame(rows))
    far = [dict(r, position=r["position"] + (100.0 if r["split"] == "test" else 0.0)) for r in rows]
    audit_leakage(pd.DataFrame(far))  # same folder and geometry, far apart: two scans, no finding


def test_the_manifest_and_its_fingerprint_do_not_depend_on_the_view(blank_export, tmp_path) -> None:
    from medlora.config import ViewConfig
    from medlora.transforms.samples import prepare_samples

    cfg = DataConfig(root=blank_export, label_key="path", split=SplitConfig(file=tmp_path / "split.csv"))
    one = prepare_samples(cfg, PreprocessConfig(view=ViewConfig(kind="slice")), tmp_path / "a")
    five = prepare_samples(cfg, PreprocessConfig(view=ViewConfig(kind="slab", slab=5)), tmp_path / "b")
    assert one.fingerprint == five.fingerprint
    assert (tmp_path / "a" / "manifest.csv").read_text() == (tmp_path / "b" / "manifest.csv").read_text()
    assert len(one.file_manifest) == len(five.file_manifest) == 10
    assert len(one.manifest) == 10 and len(five.manifest) == 14  # the volume gives 5 samples instead of 1
    volume = five.manifest[five.manifest["kind"] == "series"]
    assert list(volume["view_index"]) == list(range(5)) and volume["study_key"].nunique() == 1


def test_predict_groups_a_blank_identifier_series_like_ingest(blank_export) -> None:
    from medlora.bundle.samples import DEFAULT_RULES, plan_samples
    from medlora.io.dicom import read_dicom_header

    files = sorted((blank_export / "scan1").iterdir()) + [blank_export / "p0" / "img.dcm"]
    specs = plan_samples({f: read_dicom_header(f) for f in files}, [], DEFAULT_RULES, "site secret")
    assert [(s.kind, len(s.files)) for s in specs] == [("series", 20), ("dicom2d", 1)]
    assert specs[0].study_key != specs[1].study_key


def test_nifti_volumes_follow_the_folder_identity(tmp_path) -> None:
    root = tmp_path / "nii"
    for patient in ("P1", "P2"):
        for name in ("ct.nii.gz", "mr.nii.gz"):
            (root / patient).mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(RNG.normal(0, 1, (6, 5, 4)).astype(np.float32), np.eye(4)), root / patient / name)
    labels(root, {"P1": "normal", "P2": "abnormal"})
    assert ingest(root).manifest["patient_key"].nunique() == 4  # tags: a NIfTI file is its own patient
    m = ingest(root, identity="folder:1").manifest
    assert m["patient_key"].nunique() == 2 and m["study_key"].nunique() == 4
