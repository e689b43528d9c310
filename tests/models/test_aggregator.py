"""The study model: gated-attention pooling over a study's slices (shapes, masks, gradients)."""

from __future__ import annotations

import pytest
import torch

from medlora.models.aggregator import GatedAttentionPool, StudyModel, bag_mask


def _padded(lengths: list[int], dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), max(lengths), dim), float("nan"))
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, dim, generator=g)
    return x


def test_pool_gives_one_output_per_study_and_attention_summing_to_one_over_real_slices() -> None:
    pool = GatedAttentionPool(dim=8, outputs=3, hidden=4)
    logits, attention = pool.attend(_padded([5, 2, 1]))
    assert logits.shape == (3, 3) and attention.shape == (3, 5)
    torch.testing.assert_close(attention.sum(1), torch.ones(3))
    assert (attention[1, 2:] == 0).all() and (attention[2, 1:] == 0).all()
    assert attention[2, 0] == 1  # a one-slice study is a bag of one


def test_padding_does_not_change_a_studys_output() -> None:
    pool = GatedAttentionPool(dim=8, outputs=2)
    alone = pool(_padded([2]))
    x = _padded([2, 6])
    x[0, :2] = _padded([2])[0]
    torch.testing.assert_close(pool(x)[0], alone[0])


def test_every_pooling_parameter_gets_a_gradient() -> None:
    pool = GatedAttentionPool(dim=8, outputs=2, hidden=4)
    torch.nn.functional.cross_entropy(pool(_padded([4, 3])), torch.tensor([0, 1])).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
               for p in pool.parameters())


def test_a_study_without_any_slice_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one slice"):
        GatedAttentionPool(dim=8, outputs=2).attend(torch.full((1, 2, 8), float("nan")))


def test_bag_mask_marks_nan_slices_as_padding() -> None:
    x = torch.zeros(2, 3, 1, 4, 4)
    x[1, 2] = float("nan")
    assert bag_mask(x).tolist() == [[True, True, True], [True, True, False]]


def test_study_model_trains_lora_and_pooling_but_not_the_timm_head() -> None:
    import timm
    from peft import LoraConfig, get_peft_model

    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=16, patch_size=8,
                            depth=1, embed_dim=32, num_heads=2, global_pool="avg")
    model = get_peft_model(vit, LoraConfig(r=2, target_modules=["qkv"], modules_to_save=["head"]))
    study = StudyModel(model, GatedAttentionPool(32, 2, 8))
    bags = torch.full((2, 3, 3, 16, 16), float("nan"))
    bags[0] = torch.randn(3, 3, 16, 16)
    bags[1, :1] = torch.randn(1, 3, 16, 16)
    logits, attention = study.attend(bags)
    assert logits.shape == (2, 2) and attention.shape == (2, 3)
    logits.sum().backward()
    named = dict(study.named_parameters())
    assert any("lora_" in n and p.grad is not None and p.grad.abs().sum() > 0 for n, p in named.items())
    assert all(not p.requires_grad for n, p in named.items() if ".head." in n)
    assert all(p.grad is not None for n, p in named.items() if n.startswith("pool."))
    study.eval()
    with torch.no_grad():  # evaluation encodes in chunks: the same outputs
        study.chunk = 1
        torch.testing.assert_close(study(bags), StudyModel(model, study.pool, chunk=64)(bags))
