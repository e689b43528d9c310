"""medlora.models.volume: the 3D patch embedding in timm's ViT, a 2D base inflated into it, rebuilt the same."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from medlora.config import ModelConfig
from medlora.errors import ConfigError
from medlora.models.backbone import base_state, create_base, rebuild_base
from medlora.models.volume import VolumeInput, inflate_state

KWARGS = {"img_size": 16, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
VOLUME = VolumeInput(depth=4, tubelet=2)


@pytest.fixture(scope="module")
def base2d(tmp_path_factory) -> Path:
    """A 2D ViT's weights (class token, no head), as a file a site would hand in."""
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("base2d") / "base.safetensors"
    save_file(base_state(timm.create_model("vit_tiny_patch16_224", num_classes=0, **KWARGS)), path)
    return path


def _cfg(weights: Path | None) -> ModelConfig:
    return ModelConfig(backbone="vit_tiny_patch16_224", kwargs=KWARGS, weights=weights)


def test_a_volume_of_one_repeated_image_embeds_as_that_image_does_in_2d(base2d) -> None:
    model3d, info = create_base(_cfg(base2d), 2, volume=VOLUME)
    model2d, _ = create_base(_cfg(base2d), 2)
    image = torch.randn(1, 3, 16, 16)
    tokens3d = model3d.patch_embed(image[:, :, None].repeat(1, 1, 4, 1, 1))  # 2 slabs x 4 patches
    tokens2d = model2d.patch_embed(image)
    assert tokens3d.shape == (1, 8, 32) and info.volume == {"depth": 4, "tubelet": 2}
    torch.testing.assert_close(tokens3d[:, :4], tokens2d, atol=1e-5, rtol=0)
    torch.testing.assert_close(tokens3d[:, 4:], tokens2d, atol=1e-5, rtol=0)


def test_the_position_embedding_keeps_the_2d_code_per_slab_and_tells_slabs_apart(base2d) -> None:
    model3d, _ = create_base(_cfg(base2d), 2, volume=VOLUME)
    model2d, _ = create_base(_cfg(base2d), 2)
    pos3d, pos2d = model3d.pos_embed.detach(), model2d.pos_embed.detach()
    assert pos3d.shape == (1, 1 + 8, 32)
    torch.testing.assert_close(pos3d[:, :1], pos2d[:, :1])  # the class token's is untouched
    slab0, slab1 = pos3d[0, 1:5], pos3d[0, 5:9]
    offset0, offset1 = slab0 - pos2d[0, 1:], slab1 - pos2d[0, 1:]
    torch.testing.assert_close(offset0 - offset0[:1], torch.zeros_like(offset0))  # one code per slab, every patch
    assert not torch.allclose(offset0, offset1)  # slabs differ
    scale = pos2d[0, 1:].std().item()  # a sine-cosine code of amplitude one 2D standard deviation
    assert 0.5 * scale < offset1.abs().max().item() <= scale + 1e-6


def test_the_inflated_base_is_rebuilt_to_the_same_tensors_and_lora_finds_its_attention(base2d) -> None:
    from medlora.models.lora import apply_method

    model3d, info = create_base(_cfg(base2d), 2, volume=VOLUME)
    rebuilt = rebuild_base(info.to_dict())
    x = torch.randn(2, 3, 4, 16, 16)
    torch.testing.assert_close(rebuilt.forward_features(x), model3d.forward_features(x))
    adapted = apply_method(model3d, "lora", _cfg(base2d).lora)
    trainable = [n for n, p in adapted.named_parameters() if p.requires_grad]
    assert any(".attn.qkv.lora_A." in n for n in trainable) and adapted(x).shape == (2, 2)
    assert not any("patch_embed" in n or "pos_embed" in n for n in trainable)  # the inflated base stays frozen


def test_a_random_volume_base_is_saved_3d_and_rebuilt(tmp_path) -> None:
    model, info = create_base(_cfg(None), 2, init_dir=tmp_path, volume=VOLUME)
    assert info.source == "init" and model.patch_embed.proj.weight.shape == (32, 3, 2, 8, 8)
    x = torch.randn(1, 3, 4, 16, 16)
    torch.testing.assert_close(rebuild_base(info.to_dict()).forward_features(x), model.forward_features(x))


def test_a_2d_input_or_another_depth_is_refused_with_the_expected_shape(base2d) -> None:
    model3d, _ = create_base(_cfg(base2d), 2, volume=VOLUME)
    with pytest.raises(ValueError, match=r"built for \(4, 16, 16\) volumes .* expected \(N, C, 4, 16, 16\)"):
        model3d(torch.randn(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="not a multiple of the tubelet"):
        create_base(_cfg(base2d), 2, volume=VolumeInput(depth=5, tubelet=2))


@pytest.mark.parametrize(("backbone", "kwargs"), [("convnext_atto", {}), ("swin_tiny_patch4_window7_224", {"img_size": 28})])
def test_a_model_that_is_not_a_vit_is_refused_for_volumes_naming_the_choice(backbone, kwargs) -> None:
    with pytest.raises(ConfigError, match=rf"volume .*VisionTransformer.*timm '{backbone}'"):
        create_base(ModelConfig(backbone=backbone, kwargs=kwargs), 2, volume=VOLUME, save_init=False)


def test_a_2d_state_of_another_input_size_is_resampled_before_inflation(base2d) -> None:
    """A base made for 32 px used at 16 px: timm's position-embedding resampling, then inflation."""
    import timm

    big = timm.create_model("vit_tiny_patch16_224", num_classes=0, **{**KWARGS, "img_size": 32})
    model3d, _ = create_base(_cfg(None), 2, volume=VOLUME, save_init=False)
    state = inflate_state(base_state(big), model3d)
    assert state["pos_embed"].shape == model3d.pos_embed.shape
    assert state["patch_embed.proj.weight"].shape == model3d.patch_embed.proj.weight.shape


def test_config_wants_depth_a_multiple_of_the_tubelet() -> None:
    from medlora.config.loader import config_from_dict
    from medlora.errors import ConfigError

    with pytest.raises(ConfigError, match=r"depth=5 must be a multiple of model.tubelet=2"):
        config_from_dict({"data": {"root": "."}, "preprocess": {"view": {"kind": "volume", "depth": 5}}})


def test_a_conv_stem_makes_the_patchify_grid_from_local_convolutions_and_is_rebuilt(tmp_path) -> None:
    """``model.stem: conv``: 28³ with 7-pixel, 7-slice patches → three stride-2 halvings → the same 4 × 4 × 4
    tokens as the patchify, independent of the batch, and the random base is rebuilt the same."""
    from medlora.models.volume import VolumeConvStem

    volume = VolumeInput(depth=28, tubelet=7, stem="conv")
    kwargs = {**KWARGS, "img_size": 28, "patch_size": 7, "in_chans": 1}
    model, info = create_base(ModelConfig(backbone="vit_tiny_patch16_224", kwargs=kwargs), 2, init_dir=tmp_path,
                              volume=volume)
    embed = model.patch_embed
    assert isinstance(embed, VolumeConvStem) and embed.grid_size == (4, 4, 4) and model.pos_embed.shape[1] == 65
    assert info.volume == {"depth": 28, "tubelet": 7, "stem": "conv"} and VolumeInput.of(info.to_dict()) == volume
    x = torch.randn(1, 1, 28, 28, 28)
    torch.testing.assert_close(rebuild_base(info.to_dict()).forward_features(x), model.forward_features(x))
    other = torch.randn(3, 1, 28, 28, 28) * 4  # GroupNorm, not BatchNorm: a study's tokens never depend on its batch
    torch.testing.assert_close(embed.train()(torch.cat([x, other]))[:1], embed(x))


def test_a_conv_stem_with_tubelet_one_keeps_every_slice() -> None:
    from medlora.models.volume import VolumeConvStem

    embed = VolumeConvStem(img_size=16, patch_size=8, in_chans=1, embed_dim=32, depth=6, tubelet=1)
    assert embed.grid_size == (6, 2, 2) and embed(torch.randn(2, 1, 6, 16, 16)).shape == (2, 24, 32)


@pytest.mark.parametrize(("extra", "match"), [
    ({"preprocess": {"image_size": 28}}, "is the volume ViT's convolutional stem"),
    ({"model": {"stem": "conv", "weights": "base.safetensors"}}, "starts from random initialisation"),
    ({"model": {"stem": "conv", "method": "lora"}}, r"lora would leave its convolutions"),
    ({"model": {"stem": "conv", "method": "full"}, "pipeline": "fewshot",
      "fewshot": {"methods": ["full", "linear_probe"]}}, r"linear_probe would leave"),
])
def test_a_conv_stem_is_refused_where_it_could_not_be_trained(extra, match) -> None:
    from medlora.config.loader import config_from_dict

    raw = {"data": {"root": "."}, "model": {"stem": "conv", "method": "full"},
           "preprocess": {"view": {"kind": "volume", "depth": 4}}}
    for key, value in extra.items():
        raw[key] = {**raw.get(key, {}), **value} if isinstance(value, dict) and key in raw else value
    if "image_size" in extra.get("preprocess", {}):
        raw["preprocess"] = {"image_size": 28}  # a 2D view
    with pytest.raises(ConfigError, match=match):
        config_from_dict(raw)
    ok = {"data": {"root": "."}, "model": {"stem": "conv", "method": "full"},
          "preprocess": {"view": {"kind": "volume", "depth": 4}}}
    assert config_from_dict(ok).model.stem == "conv"


def test_the_shipped_conv_stem_config_builds_its_4x4x4_token_volume_vit() -> None:
    from medlora.config import load_config
    from medlora.models.volume import VolumeConvStem, volume_input

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "adrenalmnist3d_volume_conv.yaml")
    model, info = create_base(cfg.model, 2, volume=volume_input(cfg.preprocess, cfg.model), save_init=False)
    assert isinstance(model.patch_embed, VolumeConvStem) and model.patch_embed.grid_size == (4, 4, 4)
    assert model(torch.zeros(2, 3, 28, 28, 28)).shape == (2, 2) and info.volume["stem"] == "conv"


def test_a_volume_is_shown_on_its_most_salient_slice_that_shows_anything() -> None:
    """Empty slices above and below the anatomy (one value throughout) are passed over, even where a coarse
    3D map is highest; a volume that is empty throughout still shows its most salient slice."""
    import numpy as np

    from medlora.review.saliency import display_pair

    volume = torch.zeros(3, 5, 8, 8)
    volume[:, 1:4, 2:6, 2:6] = 1.0  # anatomy on slices 2-4 of 5
    heat = np.zeros((5, 8, 8))
    heat[0], heat[2], heat[3] = 1.0, 0.2, 0.4  # highest on the empty first slice
    _, shown_heat, where = display_pair(volume, heat, [0.0] * 3, [1.0] * 3)
    assert where == "slice 4/5" and shown_heat.max() == 0.4
    assert display_pair(torch.zeros(3, 5, 8, 8), heat, [0.0] * 3, [1.0] * 3)[2] == "slice 1/5"
