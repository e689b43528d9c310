"""train.head_norm: the head trains on standardised features; folding gives back the plain head."""

from collections import OrderedDict

import numpy as np
import pytest
import timm
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from medlora.config import LoraConfigModel, TrainConfig
from medlora.models.head_norm import StandardizedHeads, head_linears
from medlora.models.lora import apply_method
from medlora.train.loop import fit
from medlora.train.standardize import feature_moments, training_batches

TINY = {"pretrained": False, "img_size": 32, "patch_size": 8, "depth": 1, "embed_dim": 32, "num_heads": 2}


def _vit(**extra) -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", num_classes=2, **{**TINY, **extra})


def test_head_layers_are_found_in_every_form_the_loop_trains():
    vit = _vit()
    assert head_linears(vit) == [vit.head]
    lora = apply_method(_vit(), "lora", LoraConfigModel())
    found = head_linears(lora)
    wrapper = lora.base_model.model.head
    assert found == [wrapper.modules_to_save["default"]]  # the trained copy, not peft's frozen original
    torch.manual_seed(0)
    deit = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=2, **TINY)
    assert head_linears(deit) == [deit.head, deit.head_dist]
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=2, img_size=56,
                             depths=(1, 1), num_heads=(1, 2), embed_dim=16, window_size=7)
    assert head_linears(swin) == [swin.head.fc]
    probe = nn.Linear(4, 2)
    assert head_linears(probe) == [probe]
    assert head_linears(nn.Sequential(nn.Flatten(), nn.Linear(4, 2))) == []  # no head named as such: left alone
    frozen = _vit()
    frozen.requires_grad_(False)
    assert head_linears(frozen) == []


@pytest.mark.parametrize("method", ["full", "lora"])
def test_folding_keeps_what_the_standardised_head_computes_and_the_state_keys(method):
    model = apply_method(_vit(), method, LoraConfigModel())
    model.eval()
    x = torch.randn(6, 3, 32, 32) * 3 + 1
    before, keys = model(x), list(model.state_dict())
    linears = head_linears(model)
    moments = feature_moments(model, linears, [{"image": x}], torch.device("cpu"))
    assert moments[0].mean.shape == (32,) and bool((moments[0].scale > 0).all())
    heads = StandardizedHeads(linears, moments)
    standardized = model(x)
    assert not torch.allclose(standardized, before)  # the same weights, now on unit-scale features
    with torch.no_grad():  # what training does: change the head in standardised space
        linears[0].weight.add_(0.1)
    changed = model(x)
    heads.fold()
    assert not linears[0]._forward_pre_hooks
    torch.testing.assert_close(model(x), changed, atol=1e-5, rtol=1e-4)
    assert list(model.state_dict()) == keys
    heads.fold()  # a second fold changes nothing
    torch.testing.assert_close(model(x), changed, atol=1e-5, rtol=1e-4)


def test_statistics_come_from_the_whole_split_behind_a_support_set():
    from torch.utils.data import DataLoader, Subset

    items = [{"image": torch.full((3,), float(i)), "label": 0} for i in range(10)]
    support = DataLoader(Subset(items, [0, 1]), batch_size=2)
    seen = torch.cat([b["image"][:, 0] for b in training_batches(support, batch_size=4)])
    assert seen.tolist() == [float(i) for i in range(10)]
    capped = torch.cat([b["image"][:, 0] for b in training_batches(support, batch_size=4, limit=4)])
    assert capped.tolist() == [0.0, 3.0, 6.0, 9.0]


def _scaled_batches(n: int, seed: int) -> list[dict]:
    """Features whose only informative dimension is a thousand times smaller than a noisy offset one."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in range(n):
        y = torch.randint(0, 2, (16,), generator=g)
        signal = (y.float() * 2 - 1 + 0.5 * torch.randn(16, generator=g)) * 1e-3
        nuisance = 500 + 300 * torch.randn(16, generator=g)
        keys = [f"{seed}-{b}-{i}" for i in range(16)]
        out.append({"image": torch.stack([signal, nuisance], 1), "label": y, "sample_id": keys, "study_key": keys,
                    "patient_key": keys})
    return out


@pytest.mark.parametrize("head_norm", [True, False])
def test_standardised_features_let_a_head_learn_a_small_scale_signal(head_norm):
    torch.manual_seed(0)
    model = nn.Sequential(OrderedDict(head=nn.Linear(2, 2)))
    train, val = _scaled_batches(8, 0), _scaled_batches(4, 1)
    cfg = TrainConfig(epochs=10, batch_size=16, warmup_epochs=0, patience=10, lr=5e-2, head_norm=head_norm)
    fit(model, train, val, cfg, torch.device("cpu"), 1, val_metric=lambda p: roc_auc_score(p.label, p.score))
    assert not model.head._forward_pre_hooks  # folded
    x = torch.cat([b["image"] for b in val])
    y = np.concatenate([b["label"].numpy() for b in val])
    with torch.no_grad():
        auroc = roc_auc_score(y, model(x).softmax(1)[:, 1].numpy())
    if head_norm:
        assert auroc > 0.95
    else:  # the raw nuisance dimension swamps the logits: the same training learns far less
        assert auroc < 0.8


def test_auto_standardises_only_where_the_head_alone_trains(caplog):
    import logging

    def trained(model: nn.Module, head_norm) -> bool:
        caplog.clear()
        cfg = TrainConfig(epochs=1, batch_size=16, warmup_epochs=0, patience=1, head_norm=head_norm)
        with caplog.at_level(logging.INFO, logger="medlora.train.standardize"):
            fit(model, _scaled_batches(2, 0), _scaled_batches(1, 1), cfg, torch.device("cpu"), 1,
                val_metric=lambda p: 0.5)
        return any("head input statistics" in r.getMessage() for r in caplog.records)

    def deep() -> nn.Module:
        return nn.Sequential(OrderedDict(body=nn.Linear(2, 2), head=nn.Linear(2, 2)))

    probe = deep()
    probe.body.requires_grad_(False)
    assert trained(probe, "auto")  # a linear probe: frozen features, exact statistics
    assert not trained(deep(), "auto")  # the body trains too: its features move
    assert trained(deep(), True)
    assert not trained(probe, False)
