"""Study-level training end to end (``preprocess.view.aggregate: attention``): a tiny run on phantom
volumes whose lesion lies on a few slices, its export (the pooling pinned beside the adapter), its
review bundle's attention figures, ``predict`` and a plain timm + peft reload reproducing its scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")


@pytest.fixture(scope="module")
def study_run(tmp_path_factory, tiny_cfg):
    """One tiny study-level LoRA run on 20 phantom volumes of 6 slices (lesion on about 2)."""
    from medlora.config import SynthConfig
    from medlora.experiment.single import run_single
    from medlora.io.synth import write_phantoms

    tmp = tmp_path_factory.mktemp("study")
    root = tmp / "volumes"
    write_phantoms(root, SynthConfig(patients=20, images_per_patient=6, size=16, abnormal_fraction=0.5, seed=3,
                                     lesion_slices=2))
    cfg = tiny_cfg(root, tmp, **{
        "data.name": "study_volumes", "data.volume_min_slices": 6, "preprocess.image_size": 16,
        "model.kwargs": "{img_size: 16, patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2, global_pool: avg}",
        "preprocess.view": "{kind: every_k, k: 1, aggregate: attention, max_slices: 4, attention_dim: 8}",
        "train.epochs": 1, "train.batch_size": 8, "evaluate.bootstrap": 20})
    out = tmp / "out"
    summary = run_single(cfg, out)
    return out, cfg, summary


def test_scores_are_per_study_and_attention_sums_to_one_over_each_studys_slices(study_run) -> None:
    out, _, summary = study_run
    samples = pd.read_csv(out / "predictions.csv")
    assert {"attention", "score", "study_key"} <= set(samples.columns)
    per_study = samples.groupby("study_key")
    assert (per_study.size() == 6).all()  # every slice of every study, evaluated whole
    np.testing.assert_allclose(per_study["attention"].sum(), 1.0, atol=1e-5)
    assert (per_study["score"].nunique() == 1).all()  # one score per study
    assert 0 <= summary.metrics["test_auroc"] <= 1


def test_the_pooling_is_exported_beside_the_adapter_and_pinned(study_run) -> None:
    from medlora.models.backbone import sha256_file

    out, _, _ = study_run
    meta = json.loads((out / "bundle" / "medlora.json").read_text())
    entry = meta["aggregator"]
    assert meta["operating_point"]["aggregate"] == "attention" and entry["spec"] == {"dim": 32, "outputs": 2, "hidden": 8}
    assert sha256_file(out / "bundle" / entry["path"]) == entry["sha256"]
    assert (out / "bundle" / "adapter" / "adapter_model.safetensors").is_file()
    report = (out / "bundle" / "report.html").read_text()
    assert "attention over the study" in report and list((out / "bundle" / "saliency").glob("*_attention.png"))
    assert "attention" in pd.read_csv(out / "bundle" / "predictions_samples.csv").columns


def test_predict_reproduces_the_runs_test_scores_with_per_slice_attention(study_run) -> None:
    from medlora.bundle.predict import predict_bundles

    out, cfg, _ = study_run
    manifest = pd.read_csv(out / "manifest.csv")
    folders = sorted({str(Path(cfg.data.root) / p) for p in manifest.loc[manifest["split"] == "test", "path"]})
    result = predict_bundles([out / "bundle"], [Path(f) for f in folders])
    expected = pd.read_csv(out / "bundle" / "predictions.csv").query("split == 'test'").set_index("study_key")
    got = result.studies.set_index("study_key")
    np.testing.assert_allclose(got.loc[expected.index, "score"], expected["score"], atol=1e-5)
    run = pd.read_csv(out / "predictions.csv").set_index("sample_id")
    np.testing.assert_allclose(result.samples.set_index("sample_id")["attention"],
                               run.loc[result.samples["sample_id"], "attention"], atol=1e-5)


def test_plain_timm_peft_reload_reproduces_the_study_scores(study_run) -> None:
    import timm
    from peft import PeftModel
    from safetensors.torch import load_file

    from medlora.io.prepare import prepare_dataset
    from medlora.models.aggregator import GatedAttentionPool, StudyModel
    from medlora.transforms.pipeline import build_transforms, manifest_items

    out, cfg, _ = study_run
    meta = json.loads((out / "medlora.json").read_text())
    b = meta["base"]
    base = timm.create_model(b["timm_name"], pretrained=False, num_classes=b["num_classes"], **b["timm_kwargs"])
    base.load_state_dict(load_file(b["weights_path"]), strict=False)
    pool = GatedAttentionPool(**meta["aggregator"]["spec"])
    pool.load_state_dict(load_file(out / meta["aggregator"]["path"]))
    model = StudyModel(PeftModel.from_pretrained(base, str(out / "adapter")), pool).eval()
    pre = meta["preprocess"]
    transform = build_transforms(cfg.preprocess, pre["image_size"], pre["mean"], pre["std"])
    items = manifest_items(prepare_dataset(cfg.data).split("test"), cfg.data.root)  # one item per volume
    expected = pd.read_csv(out / "predictions.csv").query("split == 'test'").set_index("sample_id")
    studies = list(dict.fromkeys(i["study_key"] for i in items))[:2]
    for key in studies:
        rows = expected[expected["study_key"] == key]
        volume = next(i for i in items if i["study_key"] == key)
        slices = torch.stack([transform({**volume, "view_index": v})["image"].as_subclass(torch.Tensor)
                              for v in range(len(rows))])
        with torch.no_grad():
            logits, attention = model.attend(slices[None])
        score = torch.softmax(logits, 1)[0, meta["labels"]["abnormal_index"]].item()
        assert score == pytest.approx(rows["score"].iloc[0], abs=1e-5)
        np.testing.assert_allclose(attention[0].numpy(), rows["attention"].to_numpy(), atol=1e-5)


def test_the_pyfunc_scores_studies_and_single_slices_through_the_pooling(study_run, tmp_path) -> None:
    """The MLflow pyfunc of a study-level bundle: a study folder gets the run's study score; one
    preprocessed slice is a bag of one (the pooling's output, not the slice encoder's own head)."""
    import mlflow

    from medlora.bundle.bundle import open_bundle
    from medlora.bundle.predict import Predictor
    from medlora.bundle.pyfunc import MedloraPyfunc, signature
    out, cfg, _ = study_run
    bundle_dir = out / "bundle"
    mlflow.pyfunc.save_model(tmp_path / "pyfunc", python_model=MedloraPyfunc(),
                             artifacts={"bundle": str(bundle_dir)}, signature=signature(open_bundle(bundle_dir)))
    model = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    manifest = pd.read_csv(out / "manifest.csv")
    test = manifest[manifest["split"] == "test"]
    folders = sorted({str(Path(cfg.data.root) / Path(p).parent) for p in test["path"]})
    got = model.predict(pd.DataFrame({"path": folders})).set_index("study_key")
    expected = pd.read_csv(bundle_dir / "predictions.csv").query("split == 'test'").set_index("study_key")
    assert sorted(got.index) == sorted(expected.index) and (got["n_images"] == 6).all()
    np.testing.assert_allclose(got["score"].astype(float), expected.loc[got.index, "score"], atol=1e-5)

    bundle = open_bundle(bundle_dir)
    _, size, _, _ = bundle.preprocess()
    image = torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))  # one preprocessed slice
    one = model.predict(pd.DataFrame({"image": [image.numpy().astype(float).tolist()]}))
    score, _, attention = Predictor([bundle]).score_studies(0, ["s"], [image])
    assert one["score"].iloc[0] == pytest.approx(float(bundle.study_scores(score)[0]), abs=1e-6)
    assert attention.tolist() == [1.0]


@pytest.mark.slow  # two torchrun processes and a single one, each a fresh interpreter: ~1 min on 2 cores
def test_two_torchrun_processes_train_the_study_model_as_one_does(study_run, tmp_path) -> None:
    """torchrun (gloo, CPU): each rank takes every other study of a global batch of bags; the slices drawn
    from a study larger than ``max_slices``, their augmentation and LoRA's dropout masks are the single
    process's, and evaluation is sharded by study: the scores and attentions equal the single-process run's."""
    from tests.conftest import run_alone_and_on_two_ranks

    _, cfg, _ = study_run
    one, two = run_alone_and_on_two_ranks(cfg, tmp_path, **{"preprocess.augment": True, "model.lora.dropout": 0.1,
                                                            "train.epochs": 2})
    assert list(one.sample_id) == list(two.sample_id) and (one.groupby("study_key").size() == 6).all()
    np.testing.assert_allclose(two.score, one.score, atol=1e-4)
    np.testing.assert_allclose(two.attention, one.attention, atol=1e-4)
    trained = [json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two")]
    assert trained[0]["metrics"]["auroc"] == pytest.approx(trained[1]["metrics"]["auroc"], abs=1e-6)
