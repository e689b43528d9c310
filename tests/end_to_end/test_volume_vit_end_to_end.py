"""A volume ViT end to end (``preprocess.view.kind: volume``): a tiny LoRA run on phantom volumes whose
2D base is inflated to 3D, its export, its review bundle's 3D saliency, ``predict``, the pyfunc, and a
plain timm + peft reload reproducing its scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")
KWARGS = {"img_size": 16, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2, "global_pool": "avg"}


@pytest.fixture(scope="module")
def volume_run(tmp_path_factory, tiny_cfg):
    """One tiny LoRA run on 20 phantom volumes of 6 slices, the 2D base a saved file inflated to 3D."""
    import timm
    from safetensors.torch import save_file

    from medlora.config import SynthConfig
    from medlora.experiment.single import run_single
    from medlora.io.synth import write_phantoms
    from medlora.models.backbone import base_state

    tmp = tmp_path_factory.mktemp("volume")
    root = tmp / "volumes"
    write_phantoms(root, SynthConfig(patients=20, images_per_patient=6, size=16, abnormal_fraction=0.5, seed=3,
                                     lesion_slices=2))
    torch.manual_seed(5)
    save_file(base_state(timm.create_model("vit_tiny_patch16_224", num_classes=0, **KWARGS)), tmp / "base2d.safetensors")
    cfg = tiny_cfg(root, tmp, **{
        "data.name": "volumes_3d", "data.volume_min_slices": 6, "preprocess.image_size": 16,
        "model.kwargs": json.dumps(KWARGS), "model.weights": str(tmp / "base2d.safetensors"), "model.tubelet": 2,
        "preprocess.view": "{kind: volume, depth: 4}", "train.epochs": 1, "train.batch_size": 4,
        "evaluate.bootstrap": 20})
    out = tmp / "out"
    summary = run_single(cfg, out)
    return out, cfg, summary


def test_each_volume_is_one_sample_of_the_inflated_3d_base(volume_run) -> None:
    out, _, summary = volume_run
    samples = pd.read_csv(out / "predictions.csv")
    assert samples.groupby("study_key").size().eq(1).all()  # one sample per study: the whole volume
    assert 0 <= summary.metrics["test_auroc"] <= 1
    base = json.loads((out / "medlora.json").read_text())["base"]
    assert base["volume"] == {"depth": 4, "tubelet": 2} and base["source"] == "file"


def test_the_review_bundle_explains_the_volume_on_its_most_salient_slice(volume_run) -> None:
    out, _, _ = volume_run
    report = (out / "bundle" / "report.html").read_text()
    assert "attention rollout overlay" in report and "the one with the most saliency in the volume" in report
    assert "the study&#x27;s volume" in report or "the study's volume" in report
    assert list((out / "bundle" / "saliency").glob("*_image.png"))
    card = (out / "bundle" / "model_card.md").read_text()
    assert "input whole volumes resampled to 4 slices of 16 × 16 px (a 3D ViT, patches of 2 slices)" in card


def test_predict_reproduces_the_runs_test_scores(volume_run) -> None:
    from medlora.bundle.predict import predict_bundles

    out, cfg, _ = volume_run
    manifest = pd.read_csv(out / "manifest.csv")
    folders = sorted({str(Path(cfg.data.root) / p) for p in manifest.loc[manifest["split"] == "test", "path"]})
    result = predict_bundles([out / "bundle"], [Path(f) for f in folders])
    expected = pd.read_csv(out / "bundle" / "predictions.csv").query("split == 'test'").set_index("study_key")
    got = result.studies.set_index("study_key")
    assert sorted(got.index) == sorted(expected.index) and (got["n_images"] == 1).all()
    np.testing.assert_allclose(got.loc[expected.index, "score"], expected["score"], atol=1e-5)


def test_plain_timm_peft_reload_with_the_inflated_base_reproduces_the_scores(volume_run) -> None:
    import timm
    from peft import PeftModel
    from safetensors.torch import load_file

    from medlora.io.prepare import prepare_dataset
    from medlora.models.volume import VolumeInput, inflate_state
    from medlora.transforms.pipeline import build_transforms, manifest_items

    out, cfg, _ = volume_run
    meta = json.loads((out / "medlora.json").read_text())
    b = meta["base"]
    base = timm.create_model(b["timm_name"], pretrained=False, num_classes=b["num_classes"],
                             embed_layer=VolumeInput(**b["volume"]).embed_layer(), **b["timm_kwargs"])
    base.load_state_dict(inflate_state(load_file(b["weights_path"]), base), strict=False)
    model = PeftModel.from_pretrained(base, str(out / "adapter")).eval()
    pre = meta["preprocess"]
    transform = build_transforms(cfg.preprocess, pre["image_size"], pre["mean"], pre["std"])
    items = manifest_items(prepare_dataset(cfg.data).split("test"), cfg.data.root)
    expected = pd.read_csv(out / "predictions.csv").query("split == 'test'").set_index("study_key")
    volumes = torch.stack([transform(dict(i))["image"].as_subclass(torch.Tensor) for i in items])
    assert volumes.shape[1:] == (3, 4, 16, 16)
    with torch.no_grad():
        scores = torch.softmax(model(volumes), 1)[:, meta["labels"]["abnormal_index"]].numpy()
    np.testing.assert_allclose(scores, expected.loc[[i["study_key"] for i in items], "score"], atol=1e-5)


def test_the_pyfunc_takes_a_study_folder_or_a_preprocessed_volume(volume_run, tmp_path) -> None:
    import mlflow

    from medlora.bundle.bundle import open_bundle
    from medlora.bundle.predict import Predictor
    from medlora.bundle.pyfunc import MedloraPyfunc, signature

    out, cfg, _ = volume_run
    bundle_dir = out / "bundle"
    bundle = open_bundle(bundle_dir)
    mlflow.pyfunc.save_model(tmp_path / "pyfunc", python_model=MedloraPyfunc(),
                             artifacts={"bundle": str(bundle_dir)}, signature=signature(bundle))
    model = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    manifest = pd.read_csv(out / "manifest.csv")
    folders = sorted({str(Path(cfg.data.root) / p) for p in manifest.loc[manifest["split"] == "test", "path"]})
    got = model.predict(pd.DataFrame({"path": folders})).set_index("study_key")
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    np.testing.assert_allclose(got["score"].astype(float), expected.loc[got.index, "score"], atol=1e-5)

    volume = torch.rand(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))  # one preprocessed volume
    one = model.predict(pd.DataFrame({"image": [volume.numpy().astype(float).tolist()]}))
    score, _ = Predictor([bundle]).score_outputs(0, volume[None])
    assert one["score"].iloc[0] == pytest.approx(float(bundle.study_scores(score)[0]), abs=1e-6)


def test_predict_refuses_a_2d_image_for_a_volume_bundle_naming_it(volume_run, tmp_path) -> None:
    from medlora.bundle.predict import predict_bundles
    from medlora.config import SynthConfig
    from medlora.io.synth import write_phantoms

    out, _, _ = volume_run
    flat = tmp_path / "flat"
    write_phantoms(flat, SynthConfig(patients=6, images_per_patient=1, size=16, seed=1))
    one = next(flat.rglob("*.dcm"))
    result = predict_bundles([out / "bundle"], [one])
    assert result.studies["score"].isna().all()
    assert "takes whole volumes" in result.studies["error"].iloc[0]


@pytest.mark.parametrize("stem", ["patch", "conv"])
def test_a_full_fine_tune_of_a_random_volume_vit_is_reloaded_from_its_own_weights(tmp_path, tiny_cfg, stem) -> None:
    """A volume ViT trained end to end from random initialisation (patchify or a convolutional stem): its
    bundle needs no base, and ``predict`` rebuilds the 3D architecture from ``medlora.json`` to reproduce the
    run's test scores."""
    from medlora.bundle.predict import predict_bundles
    from medlora.config import SynthConfig
    from medlora.experiment.single import run_single
    from medlora.io.synth import write_phantoms

    root = tmp_path / "volumes"
    write_phantoms(root, SynthConfig(patients=12, images_per_patient=6, size=16, abnormal_fraction=0.5, seed=4))
    cfg = tiny_cfg(root, tmp_path, **{
        "data.name": "volumes_full", "data.volume_min_slices": 6, "preprocess.image_size": 16,
        "model.kwargs": json.dumps(KWARGS), "model.method": "full", "model.tubelet": 3, "model.stem": stem,
        "preprocess.view": "{kind: volume, depth: 6}", "train.epochs": 1, "train.batch_size": 4,
        "evaluate.bootstrap": 20})
    out = tmp_path / "out"
    run_single(cfg, out)
    meta = json.loads((out / "bundle" / "medlora.json").read_text())
    assert meta["base"]["volume"] == {"depth": 6, "tubelet": 3, **({"stem": "conv"} if stem == "conv" else {})}
    card = (out / "bundle" / "model_card.md").read_text()
    assert ("a convolutional stem" if stem == "conv" else "patches of 3 slices") in card
    report = (out / "bundle" / "report.html").read_text()
    assert "study score = its volume&#x27;s score" in report or "study score = its volume's score" in report
    assert ("6 slices in, a convolutional stem" if stem == "conv" else "6 slices in, 3D patches of 3 slices") in report
    manifest = pd.read_csv(out / "manifest.csv")
    folders = sorted({str(Path(cfg.data.root) / p) for p in manifest.loc[manifest["split"] == "test", "path"]})
    result = predict_bundles([out / "bundle"], [Path(f) for f in folders])
    expected = pd.read_csv(out / "bundle" / "predictions.csv").query("split == 'test'").set_index("study_key")
    np.testing.assert_allclose(result.studies.set_index("study_key").loc[expected.index, "score"], expected["score"],
                               atol=1e-5)


def test_a_fewshot_sweep_trains_every_method_on_whole_volumes(volume_run, tmp_path, tiny_cfg) -> None:
    """LoRA points trained together, a linear probe on cached volume features and full fine-tuning, all on
    the inflated base, each point scored per study."""
    import contextlib
    import io

    import yaml

    from medlora.cli import main
    from medlora.config import config_to_dict

    _, cfg, _ = volume_run
    sweep = tiny_cfg(cfg.data.root, tmp_path, **{
        "pipeline": "fewshot", "data.name": "volumes_3d", "data.volume_min_slices": 6, "preprocess.image_size": 16,
        "data.split.file": str(cfg.data.split.file), "model.kwargs": json.dumps(KWARGS),
        "model.weights": str(cfg.model.weights), "model.tubelet": 2, "preprocess.view": "{kind: volume, depth: 4}",
        "train.epochs": 1, "train.threads": 1, "evaluate.bootstrap": 20, "fewshot.shots": "[1, 2]",
        "fewshot.seeds": "[0]", "fewshot.methods": "[lora, linear_probe, full]", "fewshot.together": "on",
        "tracking.uri": cfg.tracking.uri})
    cfg_file = tmp_path / "sweep.yaml"
    cfg_file.write_text(yaml.safe_dump(config_to_dict(sweep)))
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["run", str(cfg_file), "--out", str(tmp_path / "sweep")]) == 0
    children = pd.read_csv(tmp_path / "sweep" / "children.csv")
    assert sorted(children["method"].unique()) == ["full", "linear_probe", "lora"] and len(children) == 6
    assert children["test_auroc"].between(0, 1).all()


@pytest.mark.slow
def test_two_torchrun_processes_train_the_volume_vit_as_one_does(volume_run, tmp_path) -> None:
    """torchrun (gloo, CPU): each rank takes its share of the global batch of volumes, augmented in plane as
    the single process would; the scores equal the single-process run's."""
    from tests.conftest import run_alone_and_on_two_ranks

    _, cfg, _ = volume_run
    one, two = run_alone_and_on_two_ranks(cfg, tmp_path, **{"preprocess.augment": True, "model.lora.dropout": 0.0,
                                                            "train.epochs": 2})
    assert list(one.sample_id) == list(two.sample_id)
    np.testing.assert_allclose(two.score, one.score, atol=1e-4)
