"""MedMNIST npz → DICOM/NIfTI study folders with the official split, and runs that respect that split."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medlora.errors import ConfigError, InputError, LeakageError
from medlora.io.medmnist import convert_medmnist, cross_split_duplicates, fetch_npz, limit_indices
from medlora.io.split import splits_from_column

REPO = Path(__file__).resolve().parents[2]
COUNTS = {"train": 5, "val": 3, "test": 4}


def _npz(path: Path, shape: tuple[int, ...], column_labels: bool = False, seed: int = 0) -> Path:
    """A tiny MedMNIST-like npz: random uint8 images, labels alternating 0/1, (N,) or (N, 1)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in COUNTS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
        labels = (np.arange(n) % 2).astype(np.uint8)
        arrays[f"{split}_labels"] = labels[:, None] if column_labels else labels
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A synthetic 2D npz (non-square, to catch a row/column swap) converted to DICOM."""
    tmp = tmp_path_factory.mktemp("medmnist")
    npz = _npz(tmp / "breastmnist.npz", (28, 20), column_labels=True)
    return npz, convert_medmnist("breastmnist", tmp / "out", npz=npz)


def test_dicom_pixels_labels_and_splits(converted):
    from medlora.io.dicom import read_dicom

    npz, res = converted
    data = np.load(npz)
    labels = pd.read_csv(res.labels_csv)
    assert list(labels.columns) == ["path", "label", "split", "index"]
    assert labels["split"].value_counts().to_dict() == COUNTS and res.counts == COUNTS
    for row in labels.itertuples():
        image = read_dicom(res.out / row.path)
        assert image.pixels.shape == (1, 28, 20) and image.meta["modality"] == "US"
        assert image.meta["photometric_interpretation"] == "MONOCHROME2" and image.meta["bits_stored"] == 8
        np.testing.assert_array_equal(image.pixels[0], data[f"{row.split}_images"][row.index])
        expected = ["malignant", "normal_or_benign"][int(data[f"{row.split}_labels"][row.index, 0])]
        assert row.label == expected  # label 0 = malignant, the card's class order


def test_uids_are_unique_and_deterministic(converted, tmp_path):
    import pydicom

    npz, res = converted
    again = convert_medmnist("breastmnist", tmp_path / "again", npz=npz)

    def ids(root: Path) -> pd.DataFrame:
        rows = []
        for p in sorted(root.rglob("*.dcm")):
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7" and ds.PatientIdentityRemoved == "YES"
            rows.append((p.name, ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
        return pd.DataFrame(rows, columns=["file", "patient", "study", "series", "sop"])

    a, b = ids(res.out), ids(again.out)
    pd.testing.assert_frame_equal(a, b)
    n = sum(COUNTS.values())
    assert all(a[c].nunique() == n for c in ("patient", "study", "series", "sop"))  # one patient per image
    assert len(set(a[["study", "series", "sop"]].to_numpy().ravel())) == 3 * n


def test_nifti_volumes_shape_and_affine(tmp_path):
    import nibabel as nib

    npz = _npz(tmp_path / "adrenalmnist3d.npz", (8, 7, 6))
    res = convert_medmnist("adrenalmnist3d", tmp_path / "out", npz=npz)
    assert res.format == "nifti"
    labels = pd.read_csv(res.labels_csv)
    assert set(labels["label"]) == {"normal", "hyperplasia"} and labels["path"].str.endswith(".nii.gz").all()
    row = labels.iloc[-1]
    img = nib.load(res.out / row.path)
    assert img.shape == (8, 7, 6) and img.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(img.affine, np.eye(4))
    assert img.header.get_zooms() == (1.0, 1.0, 1.0)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.load(npz)[f"{row.split}_images"][row["index"]])


def test_limit_keeps_both_classes_in_order():
    labels = np.array([1] * 40 + [0] * 10)
    keep = limit_indices(labels, 10)
    assert len(keep) == 10 and list(keep) == sorted(keep)
    assert (labels[keep] == 0).sum() == 2 and (labels[keep] == 1).sum() == 8
    assert len(limit_indices(labels, None)) == 50 and len(limit_indices(labels, 500)) == 50


@pytest.mark.parametrize(
    "name, shape, kwargs, error, message",
    [
        ("notamnist", (4, 4), {}, ConfigError, "available: adrenalmnist3d, bloodmnist, breastmnist, chestmnist"),
        ("adrenalmnist3d", (4, 4, 4), {"fmt": "dicom"}, ConfigError, "written as NIfTI only"),
        ("breastmnist", (4, 4), {"size": 64}, InputError, "holds 4 px images but --size 64"),
        ("breastmnist", (4, 4), {"size": 30}, ConfigError, "not a MedMNIST size"),
        ("breastmnist", (4, 4, 4), {}, InputError, "expected (N, size, size) for a 2D set"),
        ("breastmnist", (4, 4), {"card": REPO / "data_cards" / "ct_3slice.md"}, ConfigError, "task: none"),
    ],
)
def test_conversion_errors(tmp_path, name, shape, kwargs, error, message):
    npz = _npz(tmp_path / "x.npz", shape)
    with pytest.raises(error) as err:
        convert_medmnist(name, tmp_path / "out", npz=npz, **kwargs)
    assert message in str(err.value)


def test_bad_npz_names_the_file(tmp_path):
    npz = tmp_path / "bad.npz"
    np.savez(npz, train_images=np.zeros((2, 4, 4), np.uint8), train_labels=np.array([0, 1]))
    with pytest.raises(InputError, match="has no array 'val_images'"):
        convert_medmnist("breastmnist", tmp_path / "o", npz=npz)
    np.savez(npz, **{f"{s}_{k}": (np.zeros((2, 4, 4), np.uint8) if k == "images" else np.array([0, 3]))
                     for s in ("train", "val", "test") for k in ("images", "labels")})
    with pytest.raises(InputError, match=r"bad.npz: train_labels holds \[3\], outside 0..1"):
        convert_medmnist("breastmnist", tmp_path / "o", npz=npz)


def test_download_without_the_package_points_to_npz(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "medmnist", None)  # import medmnist → ImportError
    with pytest.raises(InputError, match=r"medmnist package is not installed.*--npz PATH to a local breastmnist_64.npz"):
        fetch_npz("breastmnist", 64, tmp_path)


def test_download_goes_through_the_medmnist_package(monkeypatch, tmp_path):
    """A stand-in ``medmnist`` module: the real package's INFO / class(split, download, size, root) API."""
    source = _npz(tmp_path / "src.npz", (28, 28))
    seen = {}

    class BreastMNIST:
        def __init__(self, split, download, size, root):
            seen.update(split=split, download=download, size=size)
            Path(root, "breastmnist.npz").write_bytes(source.read_bytes())

    class Offline:
        def __init__(self, **kwargs):
            raise OSError("network is unreachable")

    fake = types.SimpleNamespace(INFO={"breastmnist": {"python_class": "BreastMNIST"},
                                       "pneumoniamnist": {"python_class": "Offline"}},
                                 BreastMNIST=BreastMNIST, Offline=Offline)
    monkeypatch.setitem(sys.modules, "medmnist", fake)
    res = convert_medmnist("breastmnist", tmp_path / "out", cache=tmp_path / "cache")
    assert seen == {"split": "train", "download": True, "size": 28} and res.images == sum(COUNTS.values())
    with pytest.raises(InputError, match="network is unreachable.*--npz PATH"):
        fetch_npz("pneumoniamnist", 28, tmp_path / "cache")


def _manifest(paths, patients):
    return pd.DataFrame({"path": paths, "patient_key": patients})


def test_split_column_is_taken_per_sample(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\na.dcm,x,train\nb.dcm,x,val\nc.dcm,x,test\n")
    out = splits_from_column(_manifest(["a.dcm", "b.dcm", "c.dcm"], ["p1", "p2", "p3"]), csv, "path", "split",
                             tmp_path / "split.csv")
    assert list(out["split"]) == ["train", "val", "test"]
    assert pd.read_csv(tmp_path / "split.csv")["params"].unique().tolist() == ["column=split"]


@pytest.mark.parametrize(
    "rows, patients, error, message",
    [
        ("a.dcm,x,train\nb.dcm,x,validation\n", ["p1", "p2"], InputError, "line 3: split='validation' is not one of train, val, test"),
        ("a.dcm,x,train\nb.dcm,x,test\n", ["p1", "p1"], LeakageError, "puts 1 patients in more than one split, e.g. p1 in test+train"),
        ("a.dcm,x,train\n", ["p1", "p2"], InputError, "1 ingested files have no 'split' value, e.g. b.dcm"),
        ("a.dcm,x,train\na.dcm,x,val\nb.dcm,x,val\n", ["p1", "p2"], InputError, "line 3: path given twice"),
    ],
)
def test_split_column_errors(tmp_path, rows, patients, error, message):
    csv = tmp_path / "labels.csv"
    csv.write_text("path,label,split\n" + rows)
    with pytest.raises(error) as err:
        splits_from_column(_manifest(["a.dcm", "b.dcm"], patients), csv, "path", "split", tmp_path / "s.csv")
    assert message in str(err.value) and str(csv) in str(err.value)


def test_split_column_needs_path_keys(tmp_path):
    from medlora.config import load_config
    from medlora.io.prepare import prepare_dataset

    cfg = load_config(REPO / "configs" / "breastmnist.yaml", ["data.label_key=study_uid", f"data.root={tmp_path}"])
    with pytest.raises(ConfigError, match="data.split.column='split' needs data.label_key: path"):
        prepare_dataset(cfg.data)


@pytest.fixture(scope="module")
def real_breastmnist(tmp_path_factory, shared_data):
    """The real BreastMNIST npz, 12 images per split, through ``medlora datasets medmnist``."""
    from medlora.cli import main

    npz = shared_data("medmnist", "breastmnist.npz")
    out = tmp_path_factory.mktemp("breastmnist") / "data"
    assert main(["datasets", "medmnist", "breastmnist", "--out", str(out), "--npz", str(npz), "--limit", "12"]) == 0
    return npz, out


def test_real_breastmnist_ingest_respects_the_official_split(real_breastmnist, tmp_path):
    from medlora.cli import main

    npz, root = real_breastmnist
    labels = pd.read_csv(root / "labels.csv")
    assert labels["split"].value_counts().to_dict() == {"train": 12, "val": 12, "test": 12}
    assert main(["ingest", str(REPO / "configs" / "breastmnist.yaml"), "--set", f"data.root={root}",
                 "--set", f"data.split.file={tmp_path / 'split.csv'}", "--set", f"data.card={REPO / 'data_cards' / 'breastmnist.md'}",
                 "--out", str(tmp_path / "ingest")]) == 0
    manifest = pd.read_csv(tmp_path / "ingest" / "manifest.csv")
    merged = manifest.merge(labels, on="path", suffixes=("", "_csv"))
    assert len(merged) == 36 and (merged["split"] == merged["split_csv"]).all()
    data = np.load(npz)
    official = np.array([data[f"{s}_labels"].reshape(-1)[i] for s, i in zip(merged["split"], merged["index"], strict=True)])
    np.testing.assert_array_equal(merged["label"].to_numpy(), official)  # label index 0 = malignant, as in the npz
    assert manifest["patient_key"].nunique() == 36 and set(manifest["modality"]) == {"US"}


@pytest.mark.slow
def test_breastmnist_run_end_to_end_with_malignant_positive(real_breastmnist, tmp_path):
    """``medlora run configs/breastmnist.yaml`` on the 36-image subset with a 2-block ViT (about a minute on 2 cores)."""
    import json

    from mlflow import MlflowClient
    from sklearn.metrics import roc_auc_score

    from medlora.cli import main

    _, root = real_breastmnist
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sets = [f"data.root={root}", f"data.split.file={tmp_path / 'split.csv'}", f"data.card={REPO / 'data_cards' / 'breastmnist.md'}",
            f"tracking.uri={uri}", "model.kwargs.depth=2", "train.epochs=2", "train.batch_size=16", "evaluate.bootstrap=50"]
    out = tmp_path / "out"
    assert main(["run", str(REPO / "configs" / "breastmnist.yaml"), *sum((["--set", s] for s in sets), []), "--out", str(out)]) == 0
    meta = json.loads((out / "medlora.json").read_text())
    assert meta["labels"] == {"classes": ["malignant", "normal_or_benign"], "abnormal": "malignant", "abnormal_index": 0}
    preds = pd.read_csv(out / "predictions.csv")
    test = preds[preds["split"] == "test"]
    labels = pd.read_csv(root / "labels.csv")
    assert len(test) == 12 and test["patient_key"].nunique() == 12
    client = MlflowClient(uri)
    run = client.get_run(meta["mlflow_run_id"])
    # predictions' label is 1 for the abnormal class whatever its index: here the malignant images (index 0)
    positive = (test["label"] == 1).to_numpy()
    assert positive.sum() == (labels.query("split == 'test'")["label"] == "malignant").sum()
    assert run.data.metrics["test_auroc"] == pytest.approx(roc_auc_score(positive, test["score"]), abs=1e-9)
    assert run.data.tags["medlora.data_card.name"] == "breastmnist" and run.data.tags["medlora.data_card.version"] == "1"
    assert "data_card.md" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_real_adrenalmnist3d_to_nifti(tmp_path, shared_data):
    import nibabel as nib

    npz = shared_data("medmnist", "adrenalmnist3d.npz")
    res = convert_medmnist("adrenalmnist3d", tmp_path / "out", npz=npz, limit=3)
    labels = pd.read_csv(res.labels_csv)
    assert res.counts == {"train": 3, "val": 3, "test": 3} and set(labels["label"]) <= {"normal", "hyperplasia"}
    img = nib.load(res.out / labels["path"].iloc[0])
    assert img.shape == (28, 28, 28)
    np.testing.assert_array_equal(img.affine, np.eye(4))
    np.testing.assert_array_equal(np.asanyarray(img.dataobj), np.load(npz)["train_images"][labels["index"].iloc[0]])


def test_cross_split_duplicates_leave_the_earlier_split(tmp_path):
    npz = tmp_path / "dup.npz"
    data = dict(np.load(_npz(tmp_path / "src.npz", (6, 6))))
    data["train_images"][2] = data["test_images"][1]  # train/2 repeats test/1
    data["val_images"][0] = data["test_images"][1]  # val/0 too
    data["train_images"][4] = data["train_images"][3]  # a repeat inside train is not leakage
    np.savez(npz, **data)
    res = convert_medmnist("breastmnist", tmp_path / "out", npz=npz)
    assert res.counts == {"train": 4, "val": 2, "test": 4}
    import json

    dropped = json.loads((res.out / "medmnist_source.json").read_text())["dropped_duplicates"]
    assert {(d["split"], d["index"], d["same_pixels_as"]) for d in dropped} == {("train", 2, "test/1"), ("val", 0, "test/1")}
    kept = convert_medmnist("breastmnist", tmp_path / "kept", npz=npz, keep_duplicates=True)
    assert kept.counts == COUNTS


@pytest.mark.parametrize("name, dropped", [("breastmnist.npz", {("train", 115, "test/76")}),
                                           ("pneumoniamnist.npz", {("train", i, "") for i in (221, 2327, 492, 1067, 2847, 1344, 1500, 2300, 2968, 3096)})])
def test_real_official_splits_hold_cross_split_duplicates(shared_data, name, dropped):
    from medlora.io.medmnist import MEDMNIST_SETS, SPLITS, load_npz

    stem = name.removesuffix(".npz")
    splits = load_npz(shared_data("medmnist", name), MEDMNIST_SETS[stem], 2)
    found = cross_split_duplicates(splits, {s: np.arange(len(splits[s][1])) for s in SPLITS})
    if stem == "breastmnist":  # the same pixels, labelled malignant in train and normal/benign in test
        assert {(d["split"], d["index"], d["same_pixels_as"]) for d in found} == dropped
        assert (found[0]["label"], found[0]["label_there"]) == (0, 1)
    else:
        assert {(d["split"], d["index"], "") for d in found} == dropped and {d["same_pixels_as"][:3] for d in found} == {"val"}


def test_refuses_a_non_empty_out(converted):
    npz, res = converted
    with pytest.raises(InputError, match="is not empty"):
        convert_medmnist("breastmnist", res.out, npz=npz)


def test_cli_without_npz_or_package_says_use_npz(monkeypatch, tmp_path, capsys):
    from medlora.cli import main

    monkeypatch.setitem(sys.modules, "medmnist", None)
    assert main(["datasets", "medmnist", "pneumoniamnist", "--out", str(tmp_path / "o"), "--size", "64"]) == 2
    err = capsys.readouterr().err
    assert "medmnist package is not installed" in err and "--npz PATH to a local pneumoniamnist_64.npz" in err


def test_every_medmnist_set_has_a_task_labels_and_modality():
    from medlora.io.medmnist_info import TABLE, dataset_info

    assert len(TABLE) == 18 and sum(v[0] == 3 for v in TABLE.values()) == 6
    tasks = {name: dataset_info(name).task for name in TABLE}
    assert tasks["chestmnist"] == "multilabel" and tasks["pathmnist"] == "multiclass" and tasks["breastmnist"] == "binary"
    assert dataset_info("retinamnist").ordinal and len(dataset_info("chestmnist").labels) == 14
    assert dataset_info("dermamnist").labels[0] == "actinic_keratoses_and_intraepithelial_carcinoma"


def test_multilabel_set_becomes_finding_columns(tmp_path):
    from medlora.io.medmnist_info import dataset_info

    rng = np.random.default_rng(0)
    findings = list(dataset_info("chestmnist").labels)
    arrays = {}
    for split, n in COUNTS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 8, 8), dtype=np.uint8)
        arrays[f"{split}_labels"] = (rng.random((n, 14)) < 0.3).astype(np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **arrays)
    res = convert_medmnist("chestmnist", tmp_path / "out", npz=tmp_path / "chestmnist.npz")
    labels = pd.read_csv(res.labels_csv)
    assert list(labels.columns) == ["path", *findings, "split", "index"]
    for row in labels.itertuples(index=False):
        want = arrays[f"{row.split}_labels"][row.index]
        assert [getattr(row, f) for f in findings] == want.tolist()
    source = json.loads((res.out / "medmnist_source.json").read_text())
    assert source["task"] == "multilabel" and source["findings"] == findings
    assert source["card"].endswith("data_cards/chestmnist.md")  # its card lists the table's findings


def test_colour_set_becomes_rgb_dicom(tmp_path):
    from medlora.io.dicom import read_dicom
    from medlora.io.medmnist_info import dataset_info

    rng = np.random.default_rng(1)
    arrays = {}
    for split, n in COUNTS.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, size=(n, 8, 6, 3), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 9, size=(n, 1)).astype(np.uint8)
    np.savez(tmp_path / "pathmnist.npz", **arrays)
    res = convert_medmnist("pathmnist", tmp_path / "out", npz=tmp_path / "pathmnist.npz")
    row = pd.read_csv(res.labels_csv).iloc[0]
    assert json.loads((res.out / "medmnist_source.json").read_text())["card"] is None  # names from the table
    assert row["label"] in dataset_info("pathmnist").labels
    image = read_dicom(res.out / row["path"])
    assert image.meta["photometric_interpretation"] == "RGB" and image.meta["modality"] == "SM"
    np.testing.assert_array_equal(np.moveaxis(image.pixels, 0, -1), arrays[f"{row['split']}_images"][row["index"]])
