"""LoRA on the upper blocks: the frozen prefix is found, run once, and the rest reproduces the model."""

import re

import pytest
import timm
import torch

from medlora.config import LoraConfigModel
from medlora.errors import ConfigError
from medlora.models.lora import apply_method, for_inference, resolve_targets
from medlora.models.prefix import SuffixModel, frozen_prefix_depth, prefix_tokens


def _vit(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=32, patch_size=8,
                             depth=3, **kw)


def _lora(blocks=None, **kw):
    model = apply_method(_vit(**kw), "lora", LoraConfigModel(blocks=blocks, dropout=0.0))
    with torch.no_grad():  # a trained-looking adapter: B is zero at initialisation
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return model


def test_blocks_restrict_the_preset_to_those_blocks():
    regex = resolve_targets("attn_qkv", [-1, 0], [f"blocks.{i}" for i in range(3)])
    assert re.fullmatch(regex, "blocks.2.attn.qkv") and re.fullmatch(regex, "blocks.0.attn.qkv")
    assert not re.fullmatch(regex, "blocks.1.attn.qkv") and not re.fullmatch(regex, "blocks.12.attn.qkv")
    adapted = {n.split(".lora_A")[0] for n, _ in _lora([-1]).named_parameters() if "lora_A" in n}
    assert adapted == {"base_model.model.blocks.2.attn.qkv"}


@pytest.mark.parametrize("blocks, message", [([3], r"blocks 0\.\.2"), ([], r"blocks 0\.\.2"), ([-4], r"blocks 0\.\.2")])
def test_blocks_out_of_range_are_named(blocks, message):
    with pytest.raises(ConfigError, match=message):
        apply_method(_vit(), "lora", LoraConfigModel(blocks=blocks))


def test_blocks_with_explicit_module_names_is_refused():
    with pytest.raises(ConfigError, match="already name their blocks"):
        resolve_targets(["blocks.0.attn.qkv"], [0], ["blocks.0"])


def test_prefix_depth_follows_the_first_trainable_or_random_block():
    assert frozen_prefix_depth(_lora([-1])) == 2
    assert frozen_prefix_depth(_lora([1, 2])) == 1
    assert frozen_prefix_depth(_lora()) == 0  # every block adapted
    assert frozen_prefix_depth(apply_method(_vit(), "full", LoraConfigModel())) == 0
    # random layers would make the tokens differ per epoch: stop below them (timm's drop-path rate
    # rises linearly from 0 in block 0), and not at all with dropout on the position embedding
    assert frozen_prefix_depth(_lora([-1], drop_path_rate=0.2)) == 1
    assert frozen_prefix_depth(_lora([-1], pos_drop_rate=0.1)) == 0
    assert frozen_prefix_depth(torch.nn.Linear(2, 2)) == 0  # not a ViT


def test_suffix_on_cached_tokens_equals_the_whole_model_and_trains_only_the_adapter():
    model = _lora([-1]).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        tokens = prefix_tokens(model, x, 2)
        full = model(x)
        suffix = SuffixModel(model, 2)
        torch.testing.assert_close(suffix(tokens), full, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(for_inference(suffix)(tokens), full, atol=1e-5, rtol=1e-5)  # merged copy
    suffix.train()
    suffix(tokens).sum().backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad and all(("lora_" in n and ".blocks.2." in n) or ".head." in n for n in with_grad)


def test_prefix_tokens_that_would_not_fit_in_memory_fall_back_to_images(monkeypatch, caplog):
    import os

    from medlora.train import features

    model = _lora([-1])
    datasets = {"train": [{"image": torch.zeros(3, 32, 32)}] * 4}
    assert features.fits_in_memory(model, datasets, 2, torch.device("cpu"))
    real = os.sysconf
    monkeypatch.setattr(os, "sysconf", lambda name: 1 if name == "SC_PHYS_PAGES" else real(name))  # one page
    assert features.prefix_loaders(model, datasets, lambda ds, shuffle: ds, torch.device("cpu"), augment=False) is None
    assert "training on images instead" in caplog.text


def _swin():
    """A tiny Swin with stages of 2, 1 and 2 blocks: blocks 0..4 over all stages."""
    torch.manual_seed(0)
    return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=2, img_size=32,
                             depths=[2, 1, 2], num_heads=[1, 2, 4], embed_dim=16, window_size=2)


@pytest.mark.parametrize("blocks, expected", [
    ([0], {"layers.0.blocks.0"}),
    ([2], {"layers.1.blocks.0"}),  # the third block overall: the second stage's only one
    ([-1], {"layers.2.blocks.1"}),  # the last block of the last stage
    ([-2, -3], {"layers.2.blocks.0", "layers.1.blocks.0"}),
    ([1, -4], {"layers.0.blocks.1"}),  # the same block twice
])
def test_swin_blocks_count_over_all_stages_in_order(blocks, expected):
    from medlora.models.families import transformer_blocks

    assert transformer_blocks(_swin()) == ["layers.0.blocks.0", "layers.0.blocks.1", "layers.1.blocks.0",
                                           "layers.2.blocks.0", "layers.2.blocks.1"]
    model = apply_method(_swin(), "lora", LoraConfigModel(targets="attn_all", blocks=blocks))
    adapted = {n.split(".lora_A")[0].removeprefix("base_model.model.") for n, _ in model.named_parameters()
               if "lora_A" in n}
    assert adapted == {f"{b}.attn.{m}" for b in expected for m in ("qkv", "proj")}
    model.eval()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 2)


def test_swin_blocks_out_of_range_are_named():
    with pytest.raises(ConfigError, match=r"blocks 0\.\.4 counted over all stages"):
        apply_method(_swin(), "lora", LoraConfigModel(blocks=[-6]))
