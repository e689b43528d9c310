"""Batch augmentation: exact flips, identity when nothing is drawn, seeded, bounded, on the batch."""

import pytest
import torch

from medlora.transforms.augment import BatchAugment


def _images(n: int = 8, size: int = 16) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g)


def test_flip_is_exact_left_right_mirror():
    x = _images()
    y = BatchAugment(seed=0, flip_prob=1.0, affine_prob=0.0)(x)
    torch.testing.assert_close(y, x.flip(-1), atol=1e-5, rtol=0)  # columns mirrored, rows kept


def test_nothing_drawn_is_identity():
    x = _images()
    torch.testing.assert_close(BatchAugment(seed=0, flip_prob=0.0, affine_prob=0.0)(x), x, atol=1e-5, rtol=0)


def test_pure_translation_shifts_rows_and_columns_by_whole_pixels():
    """A translation-only matrix moves content; with border padding the interior is a shifted copy."""
    aug = BatchAugment(seed=0, flip_prob=0.0, affine_prob=1.0, rotate=0.0, scale=0.0)
    size = 16
    x = _images(1, size)
    theta = torch.tensor([[[1.0, 0.0, 2 * 2 / size], [0.0, 1.0, 0.0]]])  # read 2 rows further down
    y = aug.resample(x, theta)
    torch.testing.assert_close(y[..., : size - 2, :], x[..., 2:, :], atol=1e-5, rtol=0)


def test_same_seed_same_batches_other_seed_other_batches():
    x = _images()

    def draws(seed: int) -> list[torch.Tensor]:
        aug = BatchAugment(seed=seed)
        return [aug(x) for _ in range(3)]

    a, b, c = draws(0), draws(0), draws(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert any(not torch.equal(p, q) for p, q in zip(a, c, strict=True))
    assert not torch.equal(a[0], a[1])  # successive batches differ


def test_draws_stay_within_their_ranges_and_probabilities():
    aug = BatchAugment(seed=3, rotate=0.15, scale=0.1, translate=0.05)
    theta = aug.matrices(4000).double()
    lin = theta[:, :, :2]
    det = torch.linalg.det(lin)
    zoom = 1 / det.abs().sqrt()  # sampling matrix = rotation / zoom (times a mirror when flipped)
    assert ((zoom > 1 - 0.1 - 1e-6) & (zoom < 1 + 0.1 + 1e-6)).all()
    assert (theta[:, :, 2].abs() <= 2 * 0.05 + 1e-6).all()
    flipped = (det < 0).float().mean()
    moved = ((lin.abs() - torch.eye(2).abs()).abs().sum((1, 2)) > 1e-9) | (theta[:, :, 2].abs().sum(1) > 0)
    assert 0.45 < flipped < 0.55  # flip_prob 0.5
    assert 0.45 < moved.float().mean() < 0.55  # affine_prob 0.5
    angle = torch.atan2(lin[:, 1, 0], lin[:, 0, 0])  # first column: unaffected by the column mirror
    assert angle.abs().max() <= 0.15 + 1e-6


def test_keeps_shape_dtype_and_device_and_rejects_non_square_batches():
    x = _images(4, 12)
    y = BatchAugment(seed=0)(x)
    assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
    with pytest.raises(ValueError, match=r"square \(N, C, H, W\)"):
        BatchAugment()(torch.zeros(2, 3, 8, 10))
    with pytest.raises(ValueError, match="square"):
        BatchAugment()(torch.zeros(3, 8, 8))


def test_a_volumes_slices_move_together_in_plane_as_its_image_would():
    """(N, C, D, H, W): each volume gets one draw, applied to all its slices, the same draw a batch of
    images would get (so a volume of identical slices moves like that image)."""
    x = _images(4)
    volumes = x[:, :, None].repeat(1, 1, 5, 1, 1)
    moved = BatchAugment(seed=3)(volumes)
    flat = BatchAugment(seed=3)(x)
    assert moved.shape == volumes.shape
    for d in range(5):
        torch.testing.assert_close(moved[:, :, d], flat, atol=1e-5, rtol=0)
