"""``medlora predict``: reproduces the run's test scores, refuses a different base, shares one base
between bundles, merges without changing scores, reports bad inputs per file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def predicted(bundle_dir, test_split, finished_run, tmp_path_factory):
    """CLI predict on the test files plus a broken file and a missing path: (studies, samples, stdout)."""
    from medlora.cli import main

    _, cfg, _ = finished_run
    tmp = tmp_path_factory.mktemp("predict")
    broken = tmp / "broken.dcm"
    broken.write_bytes(b"\0" * 128 + b"DICM" + b"garbage")
    out = tmp / "predictions.csv"
    args = ["predict", *map(str, test_split["file"]), str(broken), str(tmp / "missing"),
            "--bundle", str(bundle_dir), "--out", str(out), "--samples", str(tmp / "samples.csv")]
    assert main(args) == 1, "an input failed: non-zero exit"
    assert main([*args, "--keep-going"]) == 0
    return pd.read_csv(out, keep_default_na=False, na_values={"score": [""], "call": [""]}), pd.read_csv(tmp / "samples.csv")


def test_predict_reproduces_test_scores_and_calls(predicted, bundle_dir):
    studies, samples = predicted
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    failed = studies[studies["n_images"] == 0]  # a header-only file has a study key, a missing path none
    assert len(failed) == 2 and failed["call"].isna().all() and failed["score"].isna().all()
    assert failed["error"].str.contains("broken.dcm").sum() == 1 and failed["error"].str.contains("missing").sum() == 1
    studies = studies[studies["n_images"] > 0]
    assert sorted(studies["study_key"]) == sorted(expected.index) and (studies["error"] == "").all()
    got = studies.set_index("study_key").loc[expected.index]
    np.testing.assert_allclose(got["score"], expected["score"], atol=1e-5)
    assert (got["call"] == expected["call"]).all()
    exp_samples = pd.read_csv(bundle_dir / "predictions_samples.csv").set_index("sample_id")
    np.testing.assert_allclose(samples["score"], exp_samples.loc[samples["sample_id"], "score"], atol=1e-5)


def test_bad_inputs_are_reported_and_do_not_stop_the_others(bundle_dir, tmp_path):
    from medlora.bundle.predict import predict_bundles

    broken = tmp_path / "broken.dcm"
    broken.write_bytes(b"not a dicom file")
    res = predict_bundles([bundle_dir], [broken, tmp_path / "missing"])
    assert res.failed and res.samples.empty
    assert set(res.errors["file"]) == {str(broken), str(tmp_path / "missing")}
    assert res.errors["reason"].str.len().min() > 5
    # no study could be read: no call at all (never a 0, which would read as "normal"), the reason filled
    assert len(res.studies) == 2 and res.studies["call"].isna().all() and res.studies["score"].isna().all()
    assert (res.studies["n_images"] == 0).all() and (res.studies["error"].str.len() > 10).all()


def test_a_study_whose_files_all_fail_gets_no_call_but_its_key(bundle_dir, test_split, tmp_path):
    """Readable headers, truncated pixels: a study with no readable image is known (its key) but not
    called; a study with one bad file among good ones is scored from the rest and says so."""
    import pydicom
    from pydicom.uid import generate_uid

    from medlora.bundle.predict import predict_bundles

    good = list(test_split["file"])
    ds = pydicom.dcmread(good[0])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]  # truncated pixel data, header intact
    ds.SOPInstanceUID = generate_uid()
    ds.save_as(tmp_path / "partial.dcm")  # same study as good[0]
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.save_as(tmp_path / "alone.dcm")  # a study of its own
    res = predict_bundles([bundle_dir], [tmp_path / "alone.dcm", tmp_path / "partial.dcm", *good])
    row = res.studies[res.studies["n_images"] == 0]
    assert len(row) == 1 and row["study_key"].iloc[0].startswith("stu-")
    assert pd.isna(row["call"].iloc[0]) and np.isnan(row["score"].iloc[0]) and "alone.dcm" in row["error"].iloc[0]
    scored = res.studies[res.studies["n_images"] > 0]
    assert scored["call"].notna().all() and len(scored) == test_split["study_key"].nunique()
    partial = scored[scored["error"] != ""]
    assert len(partial) == 1 and "partial.dcm" in partial["error"].iloc[0] and "scored without 1" in partial["error"].iloc[0]


def _rewrite_manifest(folder: Path) -> None:
    """Make an edited bundle consistent again: the weights' sha256 in medlora.json, then the manifest."""
    import json

    from medlora.bundle.manifest import write_manifest
    from medlora.hashing import sha256_file

    meta = json.loads((folder / "medlora.json").read_text())
    if "weights" in meta:
        meta["weights"]["sha256"] = sha256_file(folder / meta["weights"]["path"])
        (folder / "medlora.json").write_text(json.dumps(meta))
    write_manifest(folder)


@pytest.mark.parametrize("how", ["other_base_file", "other_sha_in_metadata"])
def test_a_bundle_on_a_different_base_is_refused(bundle_copy, how):
    import json

    import timm
    import torch
    from safetensors.torch import save_file

    from medlora.bundle.predict import Predictor
    from medlora.errors import BundleError
    from medlora.models.backbone import base_state

    meta_file = bundle_copy / "medlora.json"
    meta = json.loads(meta_file.read_text())
    if how == "other_base_file":
        torch.manual_seed(123)
        b = meta["base"]
        other = timm.create_model(b["timm_name"], pretrained=False, num_classes=b["num_classes"], **b["timm_kwargs"])
        save_file(base_state(other), bundle_copy / "base" / "base.safetensors")
    else:
        meta["base"]["sha256"] = "0" * 64
        meta_file.write_text(json.dumps(meta))
    _rewrite_manifest(bundle_copy)  # a consistent bundle, but on the wrong base
    with pytest.raises(BundleError, match="different base"):
        Predictor.from_paths([bundle_copy])


def test_predict_refuses_a_tampered_bundle(bundle_copy):
    from medlora.bundle.predict import Predictor
    from medlora.errors import BundleError

    (bundle_copy / "metrics.json").write_text("{}")
    with pytest.raises(BundleError, match="changed: metrics.json"):
        Predictor.from_paths([bundle_copy])


@pytest.fixture(scope="module")
def second_bundle(bundle_dir, tmp_path_factory) -> Path:
    """Another adapter on the same base: the first one's LoRA B matrices and head scaled."""
    from safetensors.torch import load_file, save_file

    dst = Path(shutil.copytree(bundle_dir, tmp_path_factory.mktemp("second") / "second"))
    path = dst / "adapter" / "adapter_model.safetensors"
    state = load_file(path)
    state = {k: v * (1.7 if "lora_B" in k or "head" in k else 1.0) for k, v in state.items()}
    save_file(state, path, metadata={"format": "pt"})
    _rewrite_manifest(dst)
    return dst


def test_two_bundles_share_one_base_and_match_each_alone(bundle_dir, second_bundle, test_split, monkeypatch):
    from medlora.bundle import predict as predict_mod

    files = list(test_split["file"])
    alone = [predict_mod.predict_bundles([b], files).studies.set_index("study_key")["score"]
             for b in (bundle_dir, second_bundle)]
    loads = []
    real = predict_mod.load_base
    monkeypatch.setattr(predict_mod, "load_base", lambda b: loads.append(b) or real(b))
    both = predict_mod.predict_bundles([bundle_dir, second_bundle], files).studies.set_index("study_key")
    assert len(loads) == 1, "the shared base must be loaded once"
    assert list(both.columns) == ["n_images", "score_review", "call_review", "score_second", "call_second", "error",
                                  "familiarity_review", "unfamiliar_review", "familiarity_second", "unfamiliar_second"]
    np.testing.assert_allclose(both["score_review"], alone[0].loc[both.index], atol=1e-6)
    np.testing.assert_allclose(both["score_second"], alone[1].loc[both.index], atol=1e-6)
    assert np.abs(both["score_review"] - both["score_second"]).max() > 1e-3, "the two adapters must differ"


def test_merged_adapter_gives_the_same_scores(bundle_dir, second_bundle, test_split):
    from medlora.bundle.predict import predict_bundles

    files = list(test_split["file"])
    plain = predict_bundles([bundle_dir, second_bundle], files).samples
    merged = predict_bundles([bundle_dir, second_bundle], files, merge=True).samples
    for col in ("score_review", "score_second"):
        np.testing.assert_allclose(merged[col], plain[col], atol=1e-5)


def test_predict_cuts_volumes_into_the_bundles_views_like_ingest(bundle_copy, tmp_path):
    """An 8-slice CT series is a volume: predict yields ingest's samples (ids and pixels) for a view config."""
    import json

    import torch

    from medlora.bundle.bundle import open_bundle
    from medlora.bundle.loading import load_model
    from medlora.bundle.manifest import write_manifest
    from medlora.bundle.predict import predict_bundles
    from medlora.config import DataConfig, SynthConfig
    from medlora.io.ingest import run_ingest
    from medlora.io.synth import write_phantoms
    from medlora.transforms.pipeline import build_transforms, manifest_items
    from medlora.transforms.samples import expand_views

    meta = json.loads((bundle_copy / "medlora.json").read_text())
    meta["preprocess"]["view"] = {"kind": "every_k", "k": 3, "slab": 5, "axis": 2, "aggregate": "max"}
    meta["samples"] = {"volume_min_slices": 8, "volume_modalities": ["CT"]}
    (bundle_copy / "medlora.json").write_text(json.dumps(meta))
    write_manifest(bundle_copy)
    root = tmp_path / "volumes"
    write_phantoms(root, SynthConfig(patients=6, images_per_patient=8, size=32, seed=3))
    res = predict_bundles([bundle_copy], [root])
    assert res.errors.empty and len(res.studies) == 6

    bundle = open_bundle(bundle_copy)
    pre, size, mean, std = bundle.preprocess()
    manifest = expand_views(run_ingest(DataConfig(root=root, volume_min_slices=8)).manifest, pre)
    assert set(manifest["kind"]) == {"series"} and set(res.samples["sample_id"]) == set(manifest["sample_id"])
    items = manifest_items(manifest, root)
    transform = build_transforms(pre, size, mean, std)
    x = torch.stack([transform(it)["image"].as_subclass(torch.Tensor) for it in items])
    with torch.no_grad():
        expected = torch.softmax(load_model(bundle)(x), 1)[:, bundle.abnormal_index].numpy()
    got = res.samples.set_index("sample_id").loc[[it["sample_id"] for it in items], "score"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert (res.studies["n_images"] == manifest.groupby("study_key").size().loc[res.studies["study_key"]].to_numpy()).all()


def test_study_keys_follow_the_site_secret(bundle_dir, test_split, tmp_path):
    """Another site's secret (--secret-file) gives other study keys for the same files, the same scores."""
    from medlora.cli import main

    files = [str(f) for f in test_split["file"][:4]]
    for name, extra in (("here", []), ("elsewhere", ["--secret-file", str(tmp_path / "other.key")])):
        assert main(["predict", *files, "--bundle", str(bundle_dir), "--out", str(tmp_path / f"{name}.csv"), *extra]) == 0
    here, elsewhere = (pd.read_csv(tmp_path / f"{n}.csv") for n in ("here", "elsewhere"))
    assert (tmp_path / "other.key").is_file() and set(here["study_key"]) <= set(test_split["study_key"])
    assert not set(here["study_key"]) & set(elsewhere["study_key"])
    np.testing.assert_allclose(sorted(here["score"]), sorted(elsewhere["score"]), atol=1e-6)


def test_predict_applies_the_bundles_recalibration_before_its_threshold(bundle_dir, bundle_copy, test_split):
    import json

    from medlora.bundle.predict import predict_bundles
    from medlora.evaluate.recalibrate import Calibrator

    meta = json.loads((bundle_copy / "medlora.json").read_text())
    assert meta["calibration"] == {"method": "none"}  # the session's run is not recalibrated
    cal = Calibrator("temperature", 0.25, 0.0)
    meta["calibration"] = cal.to_dict()
    meta["operating_point"]["threshold"] = float(cal.apply(np.array([meta["operating_point"]["threshold"]]))[0])
    (bundle_copy / "medlora.json").write_text(json.dumps(meta))
    _rewrite_manifest(bundle_copy)
    files = list(test_split["file"])
    raw = predict_bundles([bundle_dir], files).studies.set_index("study_key")
    got = predict_bundles([bundle_copy], files).studies.set_index("study_key").loc[raw.index]
    np.testing.assert_allclose(got["score"], cal.apply(raw["score"].to_numpy()), atol=1e-6)
    assert not np.allclose(got["score"], raw["score"])
    assert (got["call"] == raw["call"]).all()  # a monotone map with its threshold mapped alike: the same calls


def test_a_multiclass_study_is_called_its_argmax_class_and_none_without_a_score():
    from medlora.bundle.predict import argmax_class

    studies = pd.DataFrame({"score.a_x": [0.2, 0.5, np.nan], "score.b_x": [0.7, 0.1, np.nan], "score.c_x": [0.1, 0.4, np.nan]})
    assert argmax_class(studies, ["a", "b", "c"], "_x") == ["b", "a", None]


def _foreign_study(folder: Path, index: int) -> Path:
    """An MR-like checkerboard study, nothing like the CT phantoms the bundle was trained on."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = MRImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality, ds.PatientID = generate_uid(), generate_uid(), "MR", f"F{index}"
    tile = 2 + index % 4
    board = ((np.indices((32, 32)) // tile).sum(axis=0) % 2) * 3000 + index * 10
    ds.set_pixel_data(board.astype(np.uint16), "MONOCHROME2", 16)
    path = folder / f"foreign{index}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def test_predict_flags_studies_unlike_the_training_studies(predicted, bundle_dir, tmp_path):
    """Familiarity: the bundle's own test studies are mostly familiar; foreign studies are flagged."""
    from medlora.bundle.predict import predict_bundles

    studies, _ = predicted
    scored = studies[studies["n_images"] > 0]
    assert {"familiarity", "unfamiliar"} <= set(studies.columns)
    distance, flagged = pd.to_numeric(scored["familiarity"]), scored["unfamiliar"].map({"True": True, "False": False})
    assert distance.notna().all() and flagged.notna().all() and flagged.mean() <= 0.25
    foreign = [_foreign_study(tmp_path, i) for i in range(6)]
    res = predict_bundles([bundle_dir], foreign)
    assert res.studies["unfamiliar"].astype(bool).all()
    assert res.studies["familiarity"].min() > distance.max()
