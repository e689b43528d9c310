"""Cached linear-probe features equal a direct forward pass, and the head on them equals the model."""

import pytest
import timm
import torch
from torch.utils.data import DataLoader

from medlora.train.features import FeatureDataset, extract_features, pre_logits, probe_head


def tiny_vit(name: str = "vit_tiny_patch16_224", **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=2, img_size=32, patch_size=8, depth=2, **kw).eval()


# a ViT, and DeiT with a distillation token: two heads (head on the class token, head_dist on the
# distillation token) whose logits timm averages
MODELS = {"vit": lambda: tiny_vit(global_pool="avg"),
          "distilled_deit": lambda: tiny_vit("deit_tiny_distilled_patch16_224", embed_dim=32, num_heads=2)}


def samples(n: int = 10):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(3, 32, 32, generator=g), "label": i % 2, "sample_id": f"s{i}",
             "study_key": f"stu-{i}", "patient_key": f"pat-{i // 2}"} for i in range(n)]


@pytest.mark.parametrize("kind", list(MODELS))
def test_cached_features_equal_a_direct_forward_and_the_head_reproduces_the_logits(kind):
    model, items = MODELS[kind](), samples()
    cache = extract_features(model, DataLoader(items, batch_size=4), torch.device("cpu"))
    x = torch.stack([it["image"] for it in items])
    with torch.no_grad():
        direct = pre_logits(model, x)
        logits = model(x)
        torch.testing.assert_close(cache.features, direct, rtol=0, atol=1e-5)
        torch.testing.assert_close(probe_head(model)(cache.features), logits, rtol=0, atol=1e-5)
    assert cache.keys["sample_id"] == [it["sample_id"] for it in items] and list(cache.label) == [i % 2 for i in range(10)]


def test_feature_dataset_is_a_subset_view_with_the_sample_keys():
    model, items = tiny_vit(), samples()
    cache = extract_features(model, DataLoader(items, batch_size=4), torch.device("cpu"))
    ds = FeatureDataset(cache, positions=[7, 2])
    assert len(ds) == 2 and ds[0]["sample_id"] == "s7" and ds[1]["patient_key"] == "pat-1"
    assert torch.equal(ds[0]["image"], cache.features[7]) and ds[0]["label"] == 1
    assert all(p.requires_grad for p in probe_head(model).parameters())


def test_the_probe_of_a_distilled_deit_trains_both_heads_as_a_linear_probe_of_the_model_does():
    from medlora.config import LoraConfigModel
    from medlora.models.lora import apply_method

    model = MODELS["distilled_deit"]()
    probe = probe_head(model)
    trained = {id(p) for p in probe.parameters() if p.requires_grad}
    assert trained == {id(p) for p in (*model.head.parameters(), *model.head_dist.parameters())}
    probed = apply_method(MODELS["distilled_deit"](), "linear_probe", LoraConfigModel())
    assert {n for n, p in probed.named_parameters() if p.requires_grad} == {f"{m}.{w}" for m in ("head", "head_dist")
                                                                            for w in ("weight", "bias")}
