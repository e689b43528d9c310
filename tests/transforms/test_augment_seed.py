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
