"""``medlora pretrain`` end to end on tiny phantoms: a base loadable through ``model.weights``, its card,
MLflow logging, reuse, resume, the training split only, and bad input refused in seconds."""

import shutil
import time
from pathlib import Path

import pytest
import torch
import yaml

from medlora.config import config_from_dict, config_to_dict, load_config
from medlora.errors import ConfigError, InputError

PRETRAIN = {"pretrain.epochs": 2, "pretrain.batch_size": 16, "pretrain.decoder_dim": 32, "pretrain.decoder_depth": 1,
            "pretrain.decoder_heads": 2, "train.threads": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("pretrain_store")


def pretrain_config(tiny_cfg, root, tmp, store, **overrides):
    """A tiny config with a pretrain section, bases under ``tmp``, MLflow in the module's store."""
    return tiny_cfg(root, tmp, **{**PRETRAIN, "pretrain.out": str(tmp / "bases"),
                                  "tracking.uri": f"sqlite:///{store / 'mlflow.db'}", **overrides})


def write(cfg, path: Path) -> Path:
    path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    return path


@pytest.fixture(scope="module")
def pretrained(phantom_root, tiny_cfg, tmp_path_factory, store):
    """``medlora pretrain`` once: (config, config file, summary printed, base folder)."""
    import contextlib
    import io

    from medlora.cli import main

    tmp = tmp_path_factory.mktemp("pretrain")
    cfg = pretrain_config(tiny_cfg, phantom_root, tmp, store)
    cfg_file = write(cfg, tmp / "pretrain.yaml")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["pretrain", str(cfg_file)]) == 0
    (folder,) = (tmp / "bases").iterdir()
    return cfg, cfg_file, printed.getvalue(), folder


def test_pretrain_writes_a_base_that_model_weights_loads(pretrained):
    from safetensors.torch import load_file

    from medlora import basecard
    from medlora.hashing import sha256_file
    from medlora.models.backbone import create_base

    cfg, _, printed, folder = pretrained
    assert {p.name for p in folder.iterdir()} == {"base.safetensors", "base_card.md", "reconstructions.png"}
    record = basecard.read(folder / "base_card.md")
    assert record["sha256"] == sha256_file(folder / "base.safetensors")
    assert record["timm_name"] == cfg.model.backbone and record["timm_kwargs"] == cfg.model.kwargs
    assert record["pretraining"]["epochs"] == 2 and record["pretraining"]["mask_ratio"] == 0.75
    assert record["mlflow_run_id"] in printed and str(folder / "base_card.md") in printed
    text = (folder / "base_card.md").read_text()
    assert "mask ratio 0.75" in text and record["sha256"] in text and record["mlflow_run_id"] in text
    state = load_file(folder / "base.safetensors")
    assert not any(k.startswith("head.") for k in state) and not any("decoder" in k for k in state)
    for given in ("base_card.md", "base.safetensors"):  # the card or the file beside it
        run_cfg = config_from_dict({**config_to_dict(cfg), "pretrain": None,
                                    "model": {**config_to_dict(cfg)["model"], "weights": str(folder / given)}})
        assert run_cfg.model.weights == folder / "base.safetensors"
        model, info = create_base(run_cfg.model, 2)
        assert info.sha256 == record["sha256"]
        assert torch.equal(model.state_dict()["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])


def test_pretraining_is_tracked_and_sees_the_training_split_only(pretrained, phantom_root):
    import pandas as pd
    from mlflow import MlflowClient

    from medlora import basecard
    from medlora.transforms.samples import prepare_samples

    cfg, _, _, folder = pretrained
    record = basecard.read(folder / "base_card.md")
    client = MlflowClient(cfg.tracking.uri)
    run = client.get_run(record["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.data.tags["medlora.role"] == "pretrain"
    assert run.data.tags["medlora.dataset_fingerprint"] == record["data"]["fingerprint"]
    assert run.data.params["pretrain.mask_ratio"] == "0.75"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pretrain_loss")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reconstructions.png", "base_card.md", "config.yaml", "manifest.csv"} <= artifacts
    logged = pd.read_csv(client.download_artifacts(run.info.run_id, "manifest.csv"))
    full = prepare_samples(cfg.data, cfg.preprocess).manifest
    assert set(logged["split"]) == {"train"}
    assert set(logged["sample_id"]) == set(full.loc[full["split"] == "train", "sample_id"])
    assert record["data"]["images"] == len(logged) < len(full)


def test_a_second_pretrain_reuses_the_base(pretrained):
    from mlflow import MlflowClient

    from medlora.experiment.pretrain import run_pretrain

    cfg, _, _, folder = pretrained
    client = MlflowClient(cfg.tracking.uri)
    before = len(client.search_runs([e.experiment_id for e in client.search_experiments()]))
    mtime = (folder / "base.safetensors").stat().st_mtime_ns
    summary = run_pretrain(cfg)
    assert summary.reused and summary.folder == folder
    assert (folder / "base.safetensors").stat().st_mtime_ns == mtime
    assert len(client.search_runs([e.experiment_id for e in client.search_experiments()])) == before


def test_medlora_run_with_a_pretrain_section_adapts_the_pretrained_base(pretrained):
    from medlora.experiment.pretrain import with_pretrained_base

    cfg, _, _, folder = pretrained
    run_cfg = with_pretrained_base(cfg)
    assert run_cfg.pretrain is None and run_cfg.model.weights == folder / "base.safetensors"


def test_an_interrupted_pretraining_resumes_in_the_same_run(phantom_root, tiny_cfg, tmp_path, store, monkeypatch):
    import torch
    from mlflow import MlflowClient
    from safetensors.torch import load_file

    from medlora import basecard
    from medlora.experiment.pretrain import run_pretrain
    from medlora.train import checkpoint as ckpt

    cfg = pretrain_config(tiny_cfg, phantom_root, tmp_path, store)
    whole = run_pretrain(cfg, tmp_path / "whole")
    real_save = ckpt.save

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt, "save", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_pretrain(cfg, tmp_path / "cut")
    assert (tmp_path / "cut" / "checkpoint.pt").is_file() and not (tmp_path / "cut" / "base.safetensors").exists()
    monkeypatch.setattr(ckpt, "save", real_save)
    resumed = run_pretrain(cfg, tmp_path / "cut")
    assert not resumed.reused and not (tmp_path / "cut" / "checkpoint.pt").exists()
    client = MlflowClient(cfg.tracking.uri)
    assert [m.step for m in client.get_metric_history(resumed.run_id, "pretrain_loss")] == [0, 1]
    assert client.get_run(resumed.run_id).info.status == "FINISHED"
    # the resumed epochs are the ones an uninterrupted pretraining computes (up to float summation order:
    # the BLAS may split a product over fewer threads on a busy machine)
    a, b = load_file(resumed.weights), load_file(whole.weights)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-4, atol=1e-5, msg=name)
    assert basecard.read(resumed.card)["pretraining"]["key"] == basecard.read(whole.card)["pretraining"]["key"]


def test_an_unlabelled_folder_is_pretrained_on_every_image(phantom_root, tiny_cfg, tmp_path, store):
    from medlora.experiment.pretrain import run_pretrain

    root = tmp_path / "unlabelled"
    files = sorted(phantom_root.rglob("*.dcm"))[:10]
    for i, f in enumerate(files):
        (root / f"s{i}").mkdir(parents=True)
        shutil.copy(f, root / f"s{i}" / f.name)
    cfg = pretrain_config(tiny_cfg, root, tmp_path, store, **{"pretrain.epochs": 1})
    summary = run_pretrain(cfg)
    assert not (root / "labels.csv").exists()
    assert summary.record["data"]["images"] == 10 and "unlabelled" in summary.record["data"]["used"]


def _refused_fast(call, error, message):
    t0 = time.perf_counter()
    with pytest.raises(error, match=message):
        call()
    assert time.perf_counter() - t0 < 5


def test_a_folder_without_readable_images_is_refused_fast(tiny_cfg, tmp_path, store):
    from medlora.experiment.pretrain import run_pretrain

    root = tmp_path / "junk"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.dcm").write_bytes(b"not a dicom file")
    cfg = pretrain_config(tiny_cfg, root, tmp_path, store)
    _refused_fast(lambda: run_pretrain(cfg), InputError, f"no usable images under {root}")


@pytest.mark.parametrize("key, value, message", [
    ("pretrain.mask_ratio", 1.5, r"pretrain.mask_ratio: .*less than 1 \(got 1.5\)"),
    ("pretrain.mask_ratio", 0, r"pretrain.mask_ratio: .*greater than 0 \(got 0\)"),
])
def test_a_mask_ratio_outside_the_open_interval_is_a_config_error(phantom_root, tiny_cfg, tmp_path, key, value, message):
    cfg_file = tmp_path / "bad.yaml"
    raw = config_to_dict(tiny_cfg(phantom_root, tmp_path))
    raw["pretrain"] = {"mask_ratio": value}
    cfg_file.write_text(yaml.safe_dump(raw))
    _refused_fast(lambda: load_config(cfg_file), ConfigError, message)


def test_an_image_size_the_patch_does_not_divide_is_refused_before_the_ingest(tiny_cfg, tmp_path, store, monkeypatch):
    from medlora.experiment import pretrain as pt

    monkeypatch.setattr(pt, "prepare_pretraining_data", lambda *a: pytest.fail("ingest started"))
    cfg = pretrain_config(tiny_cfg, tmp_path, tmp_path, store, **{"preprocess.image_size": 30,
                                                                 "model.kwargs.img_size": 30})
    _refused_fast(lambda: pt.run_pretrain(cfg), ConfigError, "preprocess.image_size=30 is not a multiple of the patch size 8")


def test_a_base_card_that_disagrees_with_the_config_or_its_file_is_refused(pretrained, tmp_path):
    from medlora.experiment.preflight import preflight

    cfg, _, _, folder = pretrained
    raw = {**config_to_dict(cfg), "pretrain": None}
    raw["model"] = {**raw["model"], "weights": str(folder / "base_card.md"), "kwargs": {**cfg.model.kwargs, "depth": 3}}
    with pytest.raises(ConfigError, match="was pretrained as vit_tiny_patch16_224 with kwargs"):
        preflight(config_from_dict(raw))
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    (copy / "base.safetensors").write_bytes((copy / "base.safetensors").read_bytes() + b" ")
    raw["model"] = {**raw["model"], "weights": str(copy / "base_card.md"), "kwargs": cfg.model.kwargs}
    with pytest.raises(ConfigError, match="the file changed after pretraining"):
        preflight(config_from_dict(raw))
    (copy / "base.safetensors").unlink()
    with pytest.raises(ConfigError, match="names base.safetensors, which is not beside it"):
        config_from_dict(raw)


def test_medlora_json_and_the_model_card_cite_the_pretraining(pretrained):
    from types import SimpleNamespace

    from medlora import basecard
    from medlora.bundle.metadata import run_metadata
    from medlora.models.backbone import BaseInfo
    from medlora.review.card import model_card

    cfg, _, _, folder = pretrained
    record = basecard.read(folder / "base_card.md")
    info = BaseInfo(cfg.model.backbone, dict(cfg.model.kwargs), "file", str(folder / "base.safetensors"),
                    record["sha256"], "0" * 64, 2)
    built = SimpleNamespace(base=info, data_config={"image_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3})
    meta = run_metadata(cfg, built, SimpleNamespace(policy="youden", threshold=0.5), "run123", "fp")
    assert meta["base"]["pretrain"]["mlflow_run_id"] == record["mlflow_run_id"]
    assert meta["base"]["pretrain"]["card"] == str((folder / "base_card.md").resolve())
    card = model_card(meta, {}, False)
    assert f"MLflow run `{record['mlflow_run_id']}`" in card and "mask ratio 0.75" in card
    plain = run_metadata(cfg, SimpleNamespace(base=BaseInfo("x", {}, "init", None, "", "", 2),
                                              data_config=built.data_config),
                         SimpleNamespace(policy="youden", threshold=0.5), "run123", "fp")
    assert "pretrain" not in plain["base"] and "Base pretraining" not in model_card(plain, {}, False)


@pytest.mark.parametrize("name", ["demo_base.yaml", "demo_pretrained.yaml", "breastmnist_pretrain.yaml", "pneumoniamnist_pretrain.yaml"])
def test_shipped_configs_pretrain_their_base(name):
    repo = Path(__file__).resolve().parents[2]
    cfg = load_config(repo / "configs" / name)
    assert cfg.pretrain is not None and cfg.pretrain.out.resolve() == (repo / "runs" / "pretrain").resolve()
    size, patch = cfg.preprocess.image_size, cfg.model.kwargs["patch_size"]
    assert size == cfg.model.kwargs["img_size"] and size % patch == 0


def test_a_volume_runs_base_is_pretrained_on_its_slices_and_inflated_to_3d(tiny_cfg, tmp_path, store):
    """``preprocess.view.kind: volume`` with a ``pretrain:`` section: the masked autoencoder learns every
    slice of the training volumes as a 2D image; the run then builds the volume ViT on that base, inflated."""
    from safetensors.torch import load_file

    from medlora.config import SynthConfig
    from medlora.experiment.pretrain import with_pretrained_base
    from medlora.io.synth import write_phantoms
    from medlora.models.build import build_model
    from medlora.transforms.samples import prepare_samples

    root = tmp_path / "volumes"
    write_phantoms(root, SynthConfig(patients=12, images_per_patient=6, size=16, seed=2))
    cfg = pretrain_config(tiny_cfg, root, tmp_path, store, **{
        "pretrain.epochs": 1, "data.name": "pretrain_volumes", "data.volume_min_slices": 6,
        "preprocess.image_size": 16, "preprocess.view": "{kind: volume, depth: 4}", "model.tubelet": 2,
        "model.kwargs": "{img_size: 16, patch_size: 8, depth: 1, embed_dim: 32, num_heads: 2, global_pool: avg}"})
    run_cfg = with_pretrained_base(cfg)
    card = (Path(run_cfg.model.weights).parent / "base_card.md").read_text()
    train_volumes = (prepare_samples(cfg.data, cfg.preprocess).manifest["split"] == "train").sum()
    assert f"images: {train_volumes * 6}" in card  # every slice of every training volume
    built = build_model(run_cfg, tmp_path / "run")
    kernel2d = load_file(run_cfg.model.weights)["patch_embed.proj.weight"]
    kernel3d = built.model.get_base_model().patch_embed.proj.weight
    assert built.base.volume == {"depth": 4, "tubelet": 2} and kernel3d.shape == (32, 3, 2, 8, 8)
    torch.testing.assert_close(kernel3d[:, :, 0] * 2, kernel2d)


def test_auto_head_norm_is_settled_by_the_bases_card(pretrained, tmp_path):
    """``train.head_norm: auto`` standardises the head under LoRA and full fine-tuning on a base whose card says
    masked autoencoder; a base without a card, an explicit choice, and a continued adapter are left alone."""
    from medlora.experiment.head_input import settle_head_norm
    from medlora.experiment.pretrain import with_pretrained_base

    cfg, _, _, folder = pretrained
    run_cfg = with_pretrained_base(cfg)
    assert run_cfg.train.head_norm == "auto" and settle_head_norm(run_cfg).train.head_norm is True
    full = run_cfg.model_copy(update={"model": run_cfg.model.model_copy(update={"method": "full"})})
    assert settle_head_norm(full).train.head_norm is True
    explicit = run_cfg.model_copy(update={"train": run_cfg.train.model_copy(update={"head_norm": False})})
    assert settle_head_norm(explicit).train.head_norm is False
    bare = tmp_path / "base.safetensors"  # the same weights, no card beside them: nothing says how they were made
    shutil.copy(folder / "base.safetensors", bare)
    uncarded = run_cfg.model_copy(update={"model": run_cfg.model.model_copy(update={"weights": bare})})
    assert settle_head_norm(uncarded).train.head_norm == "auto"
    received = run_cfg.model_copy(update={"model": run_cfg.model.model_copy(update={"adapter": tmp_path / "bundle"})})
    assert settle_head_norm(received).train.head_norm == "auto"  # its head was trained on raw features


def test_a_run_on_a_masked_autoencoders_base_logs_and_trains_the_settled_head_norm(pretrained, tmp_path, caplog):
    import logging

    from mlflow import MlflowClient

    from medlora.experiment.pretrain import with_pretrained_base
    from medlora.experiment.single import run_single

    cfg, _, _, _ = pretrained
    run_cfg = with_pretrained_base(cfg)
    run_cfg = run_cfg.model_copy(update={"train": run_cfg.train.model_copy(update={"epochs": 1})})
    assert run_cfg.train.head_norm == "auto" and run_cfg.model.method == "lora"
    with caplog.at_level(logging.INFO, logger="medlora"):
        summary = run_single(run_cfg, tmp_path / "run")
    assert "train.head_norm=True: the head trains on its input standardised" in caplog.text
    params = MlflowClient(cfg.tracking.uri).get_run(summary.run_id).data.params
    assert params["train.head_norm"] == "True"


def test_a_sweep_on_a_masked_autoencoders_base_settles_head_norm_for_its_points(pretrained, tmp_path):
    from mlflow import MlflowClient

    from medlora.config import FewShotConfig
    from medlora.experiment.pretrain import with_pretrained_base
    from medlora.sweep.driver import run_sweep
    from medlora.transforms.samples import prepare_samples

    cfg, _, _, _ = pretrained
    run_cfg = with_pretrained_base(cfg)
    run_cfg = run_cfg.model_copy(update={
        "pipeline": "fewshot", "train": run_cfg.train.model_copy(update={"epochs": 1}),
        "fewshot": FewShotConfig(shots=[1], seeds=[0], methods=["lora"], together="off")})
    summary = run_sweep(run_cfg, prepare_samples(run_cfg.data, run_cfg.preprocess, tmp_path / "sweep"),
                        tmp_path / "sweep")
    client = MlflowClient(cfg.tracking.uri)
    parent = client.get_run(summary.run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{summary.run_id}'")
    assert parent.data.params["train.head_norm"] == "True"
    assert [c.data.params["train.head_norm"] for c in children] == ["True"]
