"""Training augmentation is random but repeatable: the same seed gives the same images."""

import torch

from medlora.config import PreprocessConfig
from medlora.transforms.pipeline import build_transforms


def test_augmentation_is_seeded(phantom_root):
    path = str(next(phantom_root.rglob("*.dcm")))

    def draws(seed: int) -> list[torch.Tensor]:
        t = build_transforms(PreprocessConfig(), 32, [0.5] * 3, [0.5] * 3, train=True, seed=seed)
        return [t({"image": path, "kind": "dicom2d"})["image"] for _ in range(6)]

    a, b, c = draws(0), draws(0), draws(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert any(not torch.equal(a[0], x) for x in a[1:])  # it does augment


def test_disk_cache_keys_follow_content_and_labels(phantom_root, tmp_path):
    """The on-disk cache is keyed by file content and the item's other fields, not by file name."""
    import shutil

    from medlora.config import DataConfig
    from medlora.transforms.pipeline import build_dataset

    src = next(phantom_root.rglob("*.dcm"))
    a, b = tmp_path / "a.dcm", tmp_path / "b.dcm"
    shutil.copy(src, a)
    shutil.copy(src, b)  # the same image under another sample with another label
    t = build_transforms(PreprocessConfig(augment=False), 32, [0.5] * 3, [0.5] * 3, train=False)
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
