"""Multi-adapter LoRA layers: one frozen base, each point's update on its own rows; what is refused."""

import copy

import pytest
import timm
import torch

from medlora.config import LoraConfigModel
from medlora.models.lora import apply_method
from medlora.models.multi_lora import MultiLora, TogetherUnsupported, adapter_weights

KW = {"img_size": 32, "patch_size": 8, "depth": 2, "global_pool": "avg"}


def point_model(base, seed, **lora):
    torch.manual_seed(seed)
    m = copy.deepcopy(base)
    m.reset_classifier(2)
    model = apply_method(m, "lora", LoraConfigModel(**lora))
    with torch.no_grad():  # B away from zero, so that every update shows
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


@pytest.fixture(scope="module")
def base():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, **KW).requires_grad_(False)


@pytest.mark.parametrize("kernel", ["loop", "bmm"])
@pytest.mark.parametrize("lora", [{"targets": "attn_qkv"}, {"targets": "attn_mlp", "use_rslora": True, "r": 4}])
def test_each_point_rows_get_that_points_model_output(base, kernel, lora):
    models = [point_model(base, s, **lora) for s in (0, 1, 2)]
    multi = MultiLora(base, [adapter_weights(m) for m in models], kernel=kernel).eval()
    xs = [torch.randn(n, 3, 32, 32) for n in (3, 1, 5)]
    multi.routing.counts = [3, 0, 5]  # point 1 holds no rows in this batch
    with torch.no_grad():
        out = multi(torch.cat([xs[0], xs[2]])).split([3, 5])
        for m, x, o in zip([models[0], models[2]], [xs[0], xs[2]], out, strict=True):
            torch.testing.assert_close(o, m.eval()(x), rtol=1e-5, atol=1e-5)


def test_write_back_gives_a_peft_model_equal_to_the_points_own(base):
    models = [point_model(base, s) for s in (0, 1)]
    multi = MultiLora(base, [adapter_weights(m) for m in models])
    fresh = multi.write_back(1, point_model(base, 7))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), models[1].eval()(x))
    assert len(multi.point_parameters(0)) == 2 * 2 + 2  # A and B of two qkv layers, head weight and bias


@pytest.mark.parametrize("lora, message", [({"use_dora": True}, "DoRA"), ({}, "random layers")])
def test_dora_and_bases_with_random_layers_are_refused(base, lora, message):
    b = copy.deepcopy(base)
    if not lora:
        b.blocks[0].attn.proj_drop = torch.nn.Dropout(0.1)
    with pytest.raises(TogetherUnsupported, match=message):
        MultiLora(b, [adapter_weights(point_model(b, 0, **lora))])


def test_the_batch_must_be_the_first_dimension(base):
    multi = MultiLora(base, [adapter_weights(point_model(base, 0))])
    multi.routing.counts = [3]
    with pytest.raises(ValueError, match="does not split over a batch of 3"):
        multi(torch.randn(2, 3, 32, 32))
