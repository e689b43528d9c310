"""Every timm family users pick, tiny and from random init: LoRA (or, without attention, a clear refusal and
a linear probe), one training step, medlora's export, a reload with plain timm + peft that reproduces the
scores, and a saliency map. Each case takes about a second or two on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from medlora.config import config_from_dict
from medlora.errors import ConfigError

# (backbone, tiny kwargs, image size, saliency method, frozen-prefix path engages)
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
            32, "attention rollout", True),
    "deit": ("deit_tiny_distilled_patch16_224",
             {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}, 32, "attention rollout", True),
    "dinov2": ("vit_small_patch14_reg4_dinov2", {"img_size": 28, "depth": 2, "embed_dim": 32, "num_heads": 2}, 28,
               "attention rollout", True),
    "eva02": ("eva02_tiny_patch14_224", {"img_size": 28, "depth": 2, "embed_dim": 32, "num_heads": 2}, 28, "Grad-CAM",
              False),
    "beit": ("beit_base_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2},
             32, "Grad-CAM", False),
    "swin": ("swin_tiny_patch4_window7_224",
             {"img_size": 32, "depths": [1, 1], "num_heads": [1, 2], "embed_dim": 16, "window_size": 4}, 32, "Grad-CAM",
             False),
}
CNNS = {"convnext": ("convnext_atto", {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}, 32),
        "resnet": ("resnet10t", {}, 32)}


def _cfg(tmp_path: Path, backbone: str, kwargs: dict, size: int, method: str = "lora", **lora):
    return config_from_dict({
        "data": {"name": "families", "root": str(tmp_path)},
        "preprocess": {"image_size": size},
        "model": {"backbone": backbone, "kwargs": kwargs, "method": method, "lora": {"targets": "attn_all", **lora}},
    })


def _train_one_step(model: torch.nn.Module, size: int) -> torch.Tensor:
    torch.manual_seed(0)
    x, y = torch.randn(4, 3, size, size), torch.tensor([0, 1, 0, 1])
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    return x


def _export(model, cfg, built, out: Path) -> dict:
    from medlora.bundle.layout import write_export
    from medlora.bundle.metadata import run_metadata
    from medlora.evaluate.operating_point import OperatingPoint

    op = OperatingPoint("youden", 0.5, float("nan"), float("nan"))
    write_export(out, model, run_metadata(cfg, built, op, "run-id", "fingerprint"))
    return json.loads((out / "medlora.json").read_text())


def _plain_base(meta: dict):
    """The base as a plain timm user rebuilds it from medlora.json (no medlora code)."""
    import timm
    from safetensors.torch import load_file

    b = meta["base"]
    base = timm.create_model(b["timm_name"], pretrained=False, num_classes=b["num_classes"], **b["timm_kwargs"])
    missing, unexpected = base.load_state_dict(load_file(b["weights_path"]), strict=False)
    assert not unexpected and all(k.split(".")[0] in ("head", "head_dist", "fc") for k in missing), missing
    return base


@pytest.mark.parametrize("family", list(FAMILIES))
def test_family_trains_exports_and_reloads_with_plain_timm_and_peft(tmp_path, family):
    from peft import PeftModel

    from medlora.bundle.bundle import open_bundle
    from medlora.bundle.loading import load_model
    from medlora.models.build import build_model
    from medlora.models.families import family_of
    from medlora.models.prefix import frozen_prefix_depth
    from medlora.review.saliency import saliency_map

    backbone, kwargs, size, saliency, prefix = FAMILIES[family]
    cfg = _cfg(tmp_path, backbone, kwargs, size)
    built = build_model(cfg, tmp_path / "run")
    assert built.data_config["image_size"] == size
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in built.model.named_parameters() if "lora_A" in n}
    assert adapted == {"qkv", "proj"}, adapted  # attention in every family, patch_embed.proj never
    x = _train_one_step(built.model, size)
    built.model.eval()
    with torch.no_grad():
        expected = built.model(x)

    meta = _export(built.model, cfg, built, tmp_path / "run")
    assert meta["base"]["origin"]["kind"] == "init" and meta["preprocess"]["image_size"] == size
    plain = PeftModel.from_pretrained(_plain_base(meta), str(tmp_path / "run" / "adapter")).eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(x), expected, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(load_model(open_bundle(tmp_path / "run"))(x), expected, atol=1e-5, rtol=1e-4)

    heat, method = saliency_map(plain, x[0], target=1)
    assert method == saliency and heat.shape == (size, size) and heat.min() == 0 and heat.max() == pytest.approx(1)
    assert family_of(plain).saliency == saliency
    # the frozen-prefix path engages for plain ViTs only (LoRA on the last block, everything below frozen)
    upper = build_model(_cfg(tmp_path, backbone, kwargs, size, blocks=[-1], dropout=0.0) if prefix
                        else _cfg(tmp_path, backbone, kwargs, size, dropout=0.0), tmp_path / "upper").model
    assert frozen_prefix_depth(upper) == (1 if prefix else 0)


@pytest.mark.parametrize("method", ["lora", "linear_probe", "full"])
def test_distilled_deit_trains_both_heads_and_its_export_reproduces_the_averaged_logits(tmp_path, method):
    """DeiT's distillation head (``head_dist``, averaged with ``head`` by timm) trains and travels with the
    export in every method: a head left at its random initialisation would halve the trained one."""
    from medlora.bundle.bundle import open_bundle
    from medlora.bundle.loading import load_model
    from medlora.models.build import build_model

    backbone, kwargs, size, _, _ = FAMILIES["deit"]
    cfg = _cfg(tmp_path, backbone, kwargs, size, method=method)
    built = build_model(cfg, tmp_path / "run")
    heads = {n: p.detach().clone() for n, p in built.model.named_parameters() if ".head" in f".{n}"}
    x = _train_one_step(built.model, size)
    moved = {n.replace("base_model.model.", "").replace("modules_to_save.default.", "")
             for n, p in built.model.named_parameters() if n in heads and not torch.equal(heads[n], p)}
    assert moved == {f"{h}.{w}" for h in ("head", "head_dist") for w in ("weight", "bias")}, moved
    built.model.eval()
    with torch.no_grad():
        expected = built.model(x)
        _export(built.model, cfg, built, tmp_path / "run")
        torch.testing.assert_close(load_model(open_bundle(tmp_path / "run"))(x), expected, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", list(CNNS))
def test_models_without_attention_refuse_lora_and_work_as_linear_probe(tmp_path, family):
    from medlora.bundle.bundle import open_bundle
    from medlora.bundle.loading import load_model
    from medlora.models.build import build_model, check_model
    from medlora.review.saliency import saliency_map

    backbone, kwargs, size = CNNS[family]
    for check in (check_model, lambda c: build_model(c, tmp_path / "lora")):
        with pytest.raises(ConfigError, match="no attention blocks.*linear_probe.*full"):
            check(_cfg(tmp_path, backbone, kwargs, size))
    cfg = _cfg(tmp_path, backbone, kwargs, size, method="linear_probe")
    built = build_model(cfg, tmp_path / "run")
    x = _train_one_step(built.model, size)
    built.model.eval()
    with torch.no_grad():
        expected = built.model(x)
    meta = _export(built.model, cfg, built, tmp_path / "run")
    from safetensors.torch import load_file

    plain = _plain_base(meta)
    plain.load_state_dict(load_file(tmp_path / "run" / "head" / "head.safetensors"), strict=False)
    with torch.no_grad():
        torch.testing.assert_close(plain.eval()(x), expected)
        torch.testing.assert_close(load_model(open_bundle(tmp_path / "run"))(x), expected)
    heat, method = saliency_map(plain, x[0], target=1)
    assert method == "Grad-CAM" and heat.shape == (size, size)


@pytest.mark.parametrize("backbone, kwargs, size, message", [
    ("vit_small_patch14_reg4_dinov2", {"img_size": 64, "depth": 1}, 64,
     r"image_size=64 is not a multiple of the patch size 14.*drop the last 8 pixel.*Use 56 or 70"),
    ("swin_tiny_patch4_window7_224", {"img_size": 30, "depths": [1, 1], "num_heads": [1, 2], "embed_dim": 16}, 30,
     r"image_size=30 is not a multiple of the patch size 4"),
    ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 1}, 48,
     r"preprocess.image_size=48 but timm VisionTransformer is built for 32 px.*model.kwargs.img_size: 48"),
])
def test_image_sizes_the_model_would_crop_are_refused(tmp_path, backbone, kwargs, size, message):
    from medlora.models.build import check_model

    with pytest.raises(ConfigError, match=message):
        check_model(_cfg(tmp_path, backbone, kwargs, size))


def test_swin_windows_that_do_not_tile_the_grid_are_a_warning(tmp_path, caplog):
    from medlora.models.build import check_model

    check_model(_cfg(tmp_path, "swin_tiny_patch4_window7_224",
                     {"img_size": 36, "depths": [1, 1], "num_heads": [1, 2], "embed_dim": 16, "window_size": 4}, 36))
    assert "not a multiple of the window 4; timm pads the windows" in caplog.text


def test_model_size_is_the_default_input_size(tmp_path):
    """A ViT built for 32 px inputs is fed 32 px without preprocess.image_size (timm's pretrained config says 224)."""
    from medlora.models.build import build_model

    cfg = config_from_dict({"data": {"name": "x", "root": str(tmp_path)},
                            "model": {"backbone": "vit_tiny_patch16_224", "kwargs": {"img_size": 32, "patch_size": 8, "depth": 1}}})
    assert build_model(cfg, tmp_path).data_config["image_size"] == 32


def test_run_refuses_lora_on_a_cnn_before_reading_any_data(tmp_path, capsys):
    import yaml

    from medlora.cli import main

    cfg = {"data": {"name": "x", "root": str(tmp_path / "studies-not-read")},
           "model": {"backbone": "convnext_atto", "kwargs": {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}}}
    (tmp_path / "cnn.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "cnn.yaml"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ConvNeXt" in err and "model.method: linear_probe" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not (tmp_path / "studies-not-read").exists()


@pytest.mark.slow
def test_swin_run_finishes_with_a_bundle_and_grad_cam(phantom_root, finished_run, tiny_cfg, tmp_path):
    """The whole pipeline on Swin (attention rollout cannot explain it): FINISHED, bundle, saliency (~20 s)."""
    import yaml
    from mlflow import MlflowClient

    from medlora.cli import main
    from medlora.config import config_to_dict

    swin = '{"img_size": 32, "depths": [1, 1], "num_heads": [1, 2], "embed_dim": 16, "window_size": 4}'
    cfg = tiny_cfg(phantom_root, tmp_path, **{"model.backbone": "swin_tiny_patch4_window7_224", "model.kwargs": swin,
                                                 "train.epochs": 2, "data.name": "swin",
                                                 "tracking.uri": finished_run[1].tracking.uri})
    (tmp_path / "swin.yaml").write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["run", str(tmp_path / "swin.yaml"), "--out", str(tmp_path / "out")]) == 0
    meta = json.loads((tmp_path / "out" / "medlora.json").read_text())
    assert MlflowClient(cfg.tracking.uri).get_run(meta["mlflow_run_id"]).info.status == "FINISHED"
    bundle = tmp_path / "out" / "bundle"
    assert list((bundle / "saliency").glob("*.png"))
    assert "Grad-CAM of the abnormal class" in (bundle / "report.html").read_text()
