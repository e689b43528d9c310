"""The masked autoencoder: masking counts, an encoder that sees only visible patches, a loss on masked
patches only, and clear errors for a bad mask ratio or patch geometry."""

import pytest
import timm
import torch

from medlora.errors import ConfigError
from medlora.models.mae import MaskedAutoencoder, masked_loss, patchify, random_mask, unpatchify

TINY = {"img_size": 32, "patch_size": 8, "depth": 2, "global_pool": "avg"}


def encoder(**kw):
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, **{**TINY, **kw})


def test_patchify_round_trip_and_order_follows_timm():
    x = torch.randn(2, 3, 32, 32)
    patches = patchify(x, 8)
    assert patches.shape == (2, 16, 8 * 8 * 3)
    assert torch.equal(unpatchify(patches, 8, 3, (4, 4)), x)
    # patch 1 is the second patch of the first row (timm flattens the grid row by row)
    assert torch.equal(patches[0, 1].reshape(8, 8, 3).permute(2, 0, 1), x[0, :, 0:8, 8:16])


@pytest.mark.parametrize("ratio, keep", [(0.75, 4), (0.5, 8), (0.9, 2), (0.99, 1)])
def test_random_mask_keeps_the_visible_count(ratio, keep):
    kept, restore, mask = random_mask(3, 16, ratio, torch.device("cpu"))
    assert kept.shape == (3, keep)
    assert mask.sum(1).tolist() == [16 - keep] * 3
    for b in range(3):  # the kept indices are exactly the unmasked patches
        assert set(kept[b].tolist()) == set(torch.nonzero(mask[b] == 0).flatten().tolist())
    assert torch.equal(torch.gather(torch.argsort(restore, 1), 1, restore), torch.arange(16).expand(3, 16))


@pytest.mark.parametrize("kw, prefix", [({}, 1), ({"reg_tokens": 2}, 3), ({"class_token": False}, 0)])
def test_encoder_sees_only_visible_tokens(kw, prefix):
    mae = MaskedAutoencoder(encoder(**kw), 32, mask_ratio=0.75, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    seen = []
    mae.encoder.blocks[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0].shape))
    out = mae(torch.randn(2, 3, 32, 32))
    assert seen == [torch.Size([2, prefix + 4, 192])]  # 4 of 16 patches + prefix tokens, never the masked 12
    assert out.pred.shape == (2, 16, 192) and out.mask.sum().item() == 24
    out.loss.backward()
    assert mae.encoder.patch_embed.proj.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("norm_pix", [False, True])
def test_loss_counts_masked_patches_only(norm_pix):
    target = torch.randn(2, 16, 12)
    mask = torch.zeros(2, 16)
    mask[:, ::3] = 1
    goal = target
    if norm_pix:
        goal = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
    pred = torch.where(mask[..., None] == 1, goal, goal + 5.0)  # right where masked, wrong where visible
    assert masked_loss(pred, target, mask, norm_pix).item() == pytest.approx(0.0, abs=1e-6)
    pred = torch.where(mask[..., None] == 1, goal + 2.0, goal)  # wrong where masked only
    assert masked_loss(pred, target, mask, norm_pix).item() == pytest.approx(4.0, rel=1e-5)


def test_reconstruction_copies_visible_patches():
    mae = MaskedAutoencoder(encoder(), 32, decoder_dim=32, decoder_depth=1, decoder_heads=2)
    x = torch.randn(2, 3, 32, 32)
    visible, masked, recon = mae.reconstruct(x, torch.Generator().manual_seed(0))
    assert visible.shape == (2, 1, 32, 32) and visible.mean().item() == pytest.approx(0.25)
    assert torch.allclose(recon * visible, x * visible, atol=1e-5)
    assert torch.equal(masked * (1 - visible), torch.zeros_like(masked))


@pytest.mark.parametrize("size, kw, message", [
    (30, {"img_size": 30}, "preprocess.image_size=30 is not a multiple of the patch size 8"),
    (64, {}, "preprocess.image_size=64 differs from the model's img_size=32"),
])
def test_bad_geometry_is_refused_naming_the_values(size, kw, message):
    with pytest.raises(ConfigError, match=message):  # timm itself would drop the last 6 pixels silently
        MaskedAutoencoder(encoder(**kw), size)


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5])
def test_mask_ratio_outside_the_open_interval_is_refused(ratio):
    with pytest.raises(ConfigError, match=f"pretrain.mask_ratio={ratio}"):
        MaskedAutoencoder(encoder(), 32, mask_ratio=ratio)
