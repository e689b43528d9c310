"""Cached datasets: keys follow file content and item fields; cached items are never modified."""

import shutil

import torch

from medlora.config import DataConfig, PreprocessConfig
from medlora.transforms.pipeline import build_dataset, build_transforms


def test_disk_cache_keys_follow_content_and_labels(phantom_root, tmp_path):
    """The on-disk cache is keyed by file content and the item's other fields, not by file name."""
    src = next(phantom_root.rglob("*.dcm"))
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    shutil.copy(src, a)
    shutil.copy(src, b)  # the same image under another sample with another label
    t = build_transforms(PreprocessConfig(), 32, [0.5] * 3, [0.5] * 3)
    items = [{"image": str(a), "kind": "dicom2d", "label": 0, "sample_id": "s-a"},
             {"image": str(b), "kind": "dicom2d", "label": 1, "sample_id": "s-b"}]
    cfg = DataConfig(root=tmp_path, cache="disk", cache_dir=tmp_path / "cache")
    ds = build_dataset(items, t, cfg, "fp")
    first = [ds[i] for i in range(2)]
    assert [d["label"] for d in first] == [0, 1] and [d["sample_id"] for d in first] == ["s-a", "s-b"]
    assert torch.equal(first[0]["image"], first[1]["image"])
    assert len(list((tmp_path / "cache" / "fp").iterdir())) == 2
    again = build_dataset(items, t, cfg, "fp")[1]  # served from the cache
    assert again["sample_id"] == "s-b" and torch.equal(again["image"], first[1]["image"])


def test_memory_cache_serves_items_unchanged_through_augmented_batches(phantom_root):
    """The memory cache hands out its items without a copy: batching and batch augmentation must
    leave them as they were."""
    from torch.utils.data import DataLoader

    from medlora.transforms.augment import BatchAugment

    paths = sorted(phantom_root.rglob("*.dcm"))[:4]
    items = [{"image": str(p), "kind": "dicom2d", "label": i % 2, "sample_id": f"s{i}"} for i, p in enumerate(paths)]
    ds = build_dataset(items, build_transforms(PreprocessConfig(), 32, [0.5] * 3, [0.5] * 3),
                       DataConfig(root=phantom_root, cache="memory"), "fp")
    before = [ds[i]["image"].clone() for i in range(len(ds))]
    assert type(ds[0]["image"]) is torch.Tensor  # plain tensors, no MONAI metadata to collate
    augment = BatchAugment(seed=0, flip_prob=1.0, affine_prob=1.0)
    for batch in DataLoader(ds, batch_size=2):
        batch["image"].mul_(0)  # whatever a consumer does to its batch ...
        augment(batch["image"])
    assert all(torch.equal(ds[i]["image"], before[i]) for i in range(len(ds)))  # ... the cache is untouched
