"""Cached linear-probe features equal a direct forward pass, and the head on them equals the model."""

import timm
import torch
from torch.utils.data import DataLoader

from medlora.train.features import FeatureDataset, extract_features, pre_logits, probe_head


def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=2, img_size=32, patch_size=8,
                             depth=2, global_pool="avg").eval()


def samples(n: int = 10):
    g = torch.Generator().manual_seed(1)
    return [{"image": torch.randn(3, 32, 32, generator=g), "label": i % 2, "sample_id": f"s{i}",
             "study_key": f"stu-{i}", "patient_key": f"pat-{i // 2}"} for i in range(n)]


def test_cached_features_equal_a_direct_forward_and_the_head_reproduces_the_logits():
    model, items = tiny_vit(), samples()
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
