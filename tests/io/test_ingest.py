import pandas as pd
import pydicom
import pytest

from medlora.config import DataConfig
from medlora.errors import InputError
from medlora.io.ingest import run_ingest
from medlora.io.labels import read_labels


def test_synthetic_phantoms_are_real_dicom_with_rescale(phantom_root):
    files = sorted(phantom_root.rglob("*.dcm"))
    assert len(files) == 120  # 60 patients x 2 images
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and ds.RescaleIntercept == -1024 and ds.RescaleSlope == 1
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu.min() < -900 and hu.max() > 500  # air and bone
    labels = pd.read_csv(phantom_root / "labels.csv")
    assert 0.25 < (labels["label"] == "abnormal").mean() < 0.45
    assert len({pydicom.dcmread(f).PatientID for f in files}) == 60


def test_ingest_manifest_is_deidentified(phantom_root):
    result = run_ingest(DataConfig(root=phantom_root))
    m = result.manifest
    assert len(m) == 120 and result.skipped.empty
    assert m["patient_key"].nunique() == 60 and m["study_key"].nunique() == 60
    text = m.to_csv()
    for f in list(phantom_root.rglob("*.dcm"))[:10]:
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        for raw in (
            str(ds.PatientID),
            str(ds.PatientName),
            ds.StudyInstanceUID,
            ds.SOPInstanceUID,
            ds.AccessionNumber,
        ):
            assert raw not in text


def test_ingest_reports_bad_files_and_keeps_good_ones(phantom_root, tmp_path):
    import shutil

    root = tmp_path / "mixed"
    shutil.copytree(phantom_root, root)
    (root / "empty.dcm").write_bytes(b"")
    (root / "notes").write_text("not a dicom file")
    good = sorted(root.rglob("*.dcm"))[1]
    (root / "truncated.dcm").write_bytes(good.read_bytes()[:300])
    labels = root / "labels.csv"
    labels.write_text(labels.read_text() + "1.2.3.4.5,abnormal\n")
    result = run_ingest(DataConfig(root=root))
    assert len(result.manifest) == 120
    reasons = dict(zip(result.skipped["path"], result.skipped["reason"], strict=True))
    assert {"empty.dcm", "notes", "truncated.dcm"} <= set(reasons)
    assert any("no matching study" in r for r in reasons.values())
    with pytest.raises(InputError, match="data.strict"):
        run_ingest(DataConfig(root=root, strict=True))


def test_labels_errors_name_the_file_and_row(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("StudyInstanceUID,label\n1.2,normal\n1.3,tumour\n")
    with pytest.raises(InputError, match=r"labels.csv line 3: label 'tumour' is not one of"):
        read_labels(f, "StudyInstanceUID", "label", ["normal", "abnormal"])
    with pytest.raises(InputError, match="has no column 'PatientID'"):
        read_labels(f, "PatientID", "label", ["normal", "abnormal"])


def test_dataset_fingerprint_changes_with_the_pixels_under_the_same_identifiers(tmp_path):
    """A re-export with other pixels but the same UIDs and labels is another dataset (sweeps and the
    pretraining cache must not reuse results of the old one)."""
    from medlora.config import SynthConfig
    from medlora.io.prepare import fingerprint
    from medlora.io.synth import write_phantoms

    prints = {}
    for difficulty in ("easy", "subtle", "easy"):
        root = tmp_path / f"{difficulty}-{len(prints)}"
        write_phantoms(root, SynthConfig(patients=6, images_per_patient=1, size=32, difficulty=difficulty))
        m = run_ingest(DataConfig(root=root)).manifest
        prints.setdefault(difficulty, set()).add(fingerprint(m))
        keys = tuple(sorted(m["study_key"]))
        prints.setdefault("keys", set()).add(keys)
    assert len(prints["keys"]) == 1  # the same identifiers every time
    assert len(prints["easy"]) == 1 and prints["easy"] != prints["subtle"]
