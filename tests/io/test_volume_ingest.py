"""Ingest of volumes and of a corrupted corpus: series/NIfTI rows per view, every bad input reported with
its reason and without identifiers, pixel hashes that catch an image planted under two patients."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import BasicTextSRStorage, CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medlora.config import DataConfig, PreprocessConfig, SplitConfig, ViewConfig
from medlora.errors import LeakageError
from medlora.io.deid import load_site_key
from medlora.io.ingest import MANIFEST_COLUMNS, run_ingest
from medlora.io.prepare import prepare_dataset
from medlora.transforms.samples import expand_views

RNG = np.random.default_rng(0)


def write_ct(path: Path, hu: np.ndarray | None, ids: dict[str, str], z: float = 0.0, sop_class: str = CTImageStorage) -> Path:
    """A CT slice (or, with ``hu=None``, an object without pixels) at ``z`` mm in an axial series."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = ids["patient"], ids["study"], ids["series"]
    ds.AccessionNumber = "ACC" + ids["patient"]
    ds.Modality = "CT" if hu is not None else "SR"
    if hu is not None:
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, z], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.set_pixel_data((hu + 1024).astype(np.int16), "MONOCHROME2", 16)
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def ids_for(name: str) -> dict[str, str]:
    return {"patient": f"PID-{name}", "study": generate_uid(), "series": generate_uid()}


def write_series(folder: Path, name: str, slices: int = 8, z: list[float] | None = None) -> dict[str, str]:
    ids = ids_for(name)
    for s, zz in enumerate(z if z is not None else [2.0 * i for i in range(slices)]):
        write_ct(folder / f"{(s * 5) % 11:02d}.dcm", RNG.normal(0, 100, (16, 12)), ids, zz)
    return ids


def write_nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), np.diag([-1.0, -1.0, 2.5, 1.0])), path)
    return path


@pytest.fixture
def corpus(tmp_path) -> tuple[Path, list[dict[str, str]]]:
    """A folder of good and bad inputs; labels by relative path. Returns (root, raw ids written)."""
    root = tmp_path / "corpus"
    ids = [write_series(root / "vol_good", "A"), write_series(root / "vol_gap", "B", z=[0, 2, 4, 6, 8, 10, 12, 18]),
           write_series(root / "two_slices", "C", slices=2), write_series(root / "vol_nolabel", "D")]
    e = ids_for("E")
    write_ct(root / "img" / "good.dcm", RNG.normal(0, 50, (16, 16)), e)
    write_ct(root / "img" / "constant.dcm", np.full((16, 16), 40.0), ids_for("F"))
    write_ct(root / "img" / "report.dcm", None, ids_for("G"), sop_class=BasicTextSRStorage)
    good = (root / "img" / "good.dcm").read_bytes()
    (root / "img" / "truncated.dcm").write_bytes(good[: len(good) - 100])
    (root / "img" / "empty.dcm").write_bytes(b"")
    (root / "img" / "notes").write_text("not a dicom file")
    write_nifti(root / "nii" / "ct.nii.gz", RNG.normal(0, 1, (10, 9, 6)))
    nan = RNG.normal(0, 1, (10, 9, 6))
    nan[2, 2, 2] = np.nan
    write_nifti(root / "nii" / "nan.nii.gz", nan)
    write_nifti(root / "nii" / "flat.nii.gz", np.zeros((10, 9, 6)))
    (root / "nii" / "broken.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    labelled = ["vol_good", "vol_gap", "two_slices/00.dcm", "two_slices/05.dcm", "img/good.dcm", "img/constant.dcm",
                "img/report.dcm", "img/truncated.dcm", "img/empty.dcm", "nii/ct.nii.gz", "nii/nan.nii.gz",
                "nii/flat.nii.gz", "nii/broken.nii.gz", "gone/missing.dcm"]
    pd.DataFrame({"path": labelled, "label": ["abnormal", "normal"] * 7}).to_csv(root / "labels.csv", index=False)
    return root, [*ids, e]


EXPECTED_SKIPS = {  # report path (a file, or every file of a folder/) → a piece of its reason
    "vol_gap/": "gap: slice spacing ranges from 2 to 6 mm",
    "vol_nolabel/": "no label for its path",
    "img/constant.dcm": "constant image: every value is 40",
    "img/report.dcm": "not an image (SOPClassUID=1.2.840.10008.5.1.4.1.1.88.11 Basic Text SR",
    "img/truncated.dcm": "truncated",  # not "duplicate": it shares good.dcm's SOPInstanceUID but cannot be read
    "img/empty.dcm": "file is empty (0 bytes)",
    "img/notes": "not a DICOM file",
    "nii/nan.nii.gz": "volume has 1 non-finite (NaN/inf) values",
    "nii/flat.nii.gz": "constant volume",
    "nii/broken.nii.gz": "not a readable NIfTI file",
    "gone/missing.dcm": "labels.csv line 15 (path): label row with no matching file or folder 'gone/missing.dcm'",
}


def expected_piece(path: str) -> str:
    keys = [k for k in EXPECTED_SKIPS if path == k or (k.endswith("/") and path.startswith(k))]
    assert len(keys) == 1, path
    return EXPECTED_SKIPS[keys[0]]


def test_corrupted_corpus_reports_every_bad_input_and_keeps_every_good_one(corpus) -> None:
    root, raw_ids = corpus
    result = run_ingest(DataConfig(root=root, label_key="path", volume_fallback=False))
    m, report = result.manifest, result.skipped
    assert list(m.columns) == MANIFEST_COLUMNS
    kept = dict(zip(m["path"], m["kind"], strict=True))
    assert kept == {"vol_good": "series", "two_slices/00.dcm": "dicom2d", "two_slices/05.dcm": "dicom2d",
                    "img/good.dcm": "dicom2d", "nii/ct.nii.gz": "nifti"}
    reasons = dict(zip(report["path"], report["reason"], strict=True))
    assert len(reasons) == len(report) == len(EXPECTED_SKIPS) - 2 + 16  # two folders of 8 slices, a row per file
    for path, reason in reasons.items():
        assert expected_piece(path) in reason, (path, reason)
    text = m.to_csv() + report.to_csv()
    for ids in raw_ids:
        for raw in (*ids.values(), "ACC" + ids["patient"]):
            assert raw not in text
    assert str(root) not in text


def test_series_rows_list_their_slices_in_position_order(corpus) -> None:
    root, _ = corpus
    m = expand_views(run_ingest(DataConfig(root=root, label_key="path")).manifest, PreprocessConfig())
    row = m[m["kind"] == "series"].iloc[0]
    files = json.loads(row["source"])
    assert files == [f"vol_good/{(s * 5) % 11:02d}.dcm" for s in range(8)]  # by z, not by name
    assert (row["rows"], row["columns"], row["slices"], row["view"], row["view_index"]) == (16, 12, 8, "slice", 0)
    assert row["pixel_spacing"] == "0.7x0.7" and len(row["pixel_hash"]) == 16


VIEW_CASES = [  # (view, rows of the 8-slice series, rows of the 6-slice NIfTI)
    (ViewConfig(kind="slice"), 1, 1),
    (ViewConfig(kind="every_k", k=2), 4, 3),
    (ViewConfig(kind="slab", slab=5), 5, 5),
    (ViewConfig(kind="2.5d", slab=3), 3, 3),
    (ViewConfig(kind="mip"), 1, 1),
]


@pytest.mark.parametrize(("view", "series_rows", "nifti_rows"), VIEW_CASES, ids=[c[0].kind for c in VIEW_CASES])
def test_each_view_of_a_volume_is_a_row_of_the_same_study(corpus, view, series_rows, nifti_rows) -> None:
    root, _ = corpus
    m = expand_views(run_ingest(DataConfig(root=root, label_key="path")).manifest, PreprocessConfig(view=view))
    for kind, count in (("series", series_rows), ("nifti", nifti_rows)):
        rows = m[m["kind"] == kind]
        assert list(rows["view_index"]) == list(range(count)) and set(rows["view"]) == {view.kind}
        assert rows["study_key"].nunique() == 1 and rows["sample_id"].nunique() == count


def test_volume_min_slices_decides_between_volume_and_2d_samples(corpus) -> None:
    root, _ = corpus
    result = run_ingest(DataConfig(root=root, label_key="path", volume_min_slices=2))
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"], strict=True))
    for name in ("two_slices/00.dcm", "two_slices/05.dcm"):  # its two files were labelled differently
        assert "series two_slices (2 slices): conflicting labels" in reasons[name]
    assert not result.manifest["path"].str.startswith("two_slices").any()
    m = run_ingest(DataConfig(root=root, label_key="path", volume_modalities=["MR"])).manifest
    assert (m["kind"] != "series").all() and m["path"].str.startswith("vol_good/").sum() == 8


def test_an_image_planted_under_two_patients_in_different_splits_fails_the_audit(tmp_path) -> None:
    root = tmp_path / "planted"
    rows, planted = [], RNG.normal(0, 80, (16, 16))
    for p in range(8):
        ids = ids_for(f"P{p}")
        hu = planted if p in (0, 1) else RNG.normal(0, 80, (16, 16))
        write_ct(root / f"p{p}.dcm", hu, ids)
        rows.append({"StudyInstanceUID": ids["study"], "label": ["normal", "abnormal"][p % 2]})
    pd.DataFrame(rows).to_csv(root / "labels.csv", index=False)
    split = SplitConfig(file=tmp_path / "split.csv")
    params = f"train={split.train};val={split.val};test={split.test};seed={split.seed}"
    pd.DataFrame({"patient_key": [load_site_key().key("PID-P0", "pat"), load_site_key().key("PID-P1", "pat")],
                  "split": ["train", "test"], "params": params}).to_csv(split.file, index=False)
    with pytest.raises(LeakageError, match=r"pixel_hash=[0-9a-f]{16} in test\+train") as err:
        prepare_dataset(DataConfig(root=root, split=split))
    assert "PID-P0" not in str(err.value) and "patient_key" not in str(err.value)


def test_nifti_samples_carry_the_configured_modality_else_the_cards_else_unknown(tmp_path) -> None:
    root = tmp_path / "nii"
    for name in ("a", "b"):
        write_nifti(root / f"{name}.nii.gz", RNG.normal(0, 1, (10, 9, 6)))
    pd.DataFrame({"path": ["a.nii.gz", "b.nii.gz"], "label": ["normal", "abnormal"]}).to_csv(root / "labels.csv", index=False)
    card = Path(__file__).resolve().parents[2] / "data_cards" / "adrenalmnist3d.md"  # modality: CT
    cases = [({}, "unknown"), ({"modality": "MR"}, "MR"),
             ({"card": card, "classes": ["normal", "hyperplasia"], "abnormal": "hyperplasia"}, "CT")]
    for extra, expected in cases:
        labels = {"classes": ["normal", "abnormal"], "abnormal": "abnormal"}
        if "card" in extra:
            pd.DataFrame({"path": ["a.nii.gz", "b.nii.gz"], "label": ["normal", "hyperplasia"]}).to_csv(
                tmp_path / "card_labels.csv", index=False)
            labels = {"labels": tmp_path / "card_labels.csv"}
        m = run_ingest(DataConfig(root=root, label_key="path", **{**labels, **extra})).manifest
        assert set(m["modality"]) == {expected}, extra
