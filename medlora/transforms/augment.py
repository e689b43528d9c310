"""Training augmentation applied to a whole batch at once, after the cached dataset.

A random left-right flip and a random affine (rotation, isotropic scale, translation) per image, as
one affine matrix per image, resampled for the whole batch in one call of MONAI's batched spatial
transformer (:class:`monai.networks.layers.AffineTransform`, i.e. ``affine_grid`` + ``grid_sample``)
on the device that trains. Per-sample ``RandFlipd``/``RandAffined`` after the cache cost 2–4 ms per
image and epoch on a CPU core; the batched call costs a fraction of that and never copies the
cached item. A batch of volumes ``(N, C, D, H, W)`` moves in plane: each volume's slices all get that
volume's one matrix (the slices are folded into the channels for the call).

Draws come from a :class:`torch.Generator` seeded with the run's seed, so a run repeats. Images are
``(N, C, H, W)`` and square (``Resized`` makes them so); rotation is about the image centre.
Augmentation is for training only: validation, test and exported preprocessing never call it.
"""

from __future__ import annotations

import torch


class BatchAugment:
    """Random flip (``flip_prob``) then affine (``affine_prob``) per image of a batch.

    ``rotate`` is the largest rotation in radians, ``scale`` the largest relative zoom, ``translate``
    the largest shift as a fraction of the image side; pixels pulled from outside repeat the border.
    """

    def __init__(self, seed: int = 0, flip_prob: float = 0.5, affine_prob: float = 0.5, rotate: float = 0.15,
                 scale: float = 0.1, translate: float = 0.05) -> None:
        from monai.networks.layers import AffineTransform

        self.flip_prob, self.affine_prob = flip_prob, affine_prob
        self.rotate, self.scale, self.translate = rotate, scale, translate
        self.generator = torch.Generator().manual_seed(seed)
        self.resample = AffineTransform(normalized=True, mode="bilinear", padding_mode="border",
                                        align_corners=False, reverse_indexing=True)

    def matrices(self, n: int) -> torch.Tensor:
        """``(n, 2, 3)`` sampling matrices in normalised ``(row, col)`` coordinates, medlora's pixel order
        (MONAI's ``reverse_indexing``); each maps an output pixel to where it is read from."""
        g = self.generator

        def uniform(limit: float) -> torch.Tensor:
            return (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * limit

        flip = torch.rand(n, generator=g, dtype=torch.float64) < self.flip_prob
        moved = torch.rand(n, generator=g, dtype=torch.float64) < self.affine_prob
        angle, zoom = uniform(self.rotate), 1 + uniform(self.scale)
        shift = torch.stack([uniform(2 * self.translate), uniform(2 * self.translate)], 1)  # [-1, 1] spans the side
        angle, zoom, shift = angle * moved, torch.where(moved, zoom, 1.0), shift * moved[:, None]
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
        theta = torch.zeros(n, 2, 3, dtype=torch.float64)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        theta[:, :, 2] = shift
        theta[flip, :, 1] *= -1  # mirror the output's column before rotating: a left-right flip
        return theta.float()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, rank: int = 0, world: int = 1, total: int | None = None) -> torch.Tensor:
        """``images`` augmented. Under torchrun they are every ``world``-th image of a global batch of
        ``total`` from ``rank`` on: the draws are made for the whole global batch, as one process
        would make them, and this rank keeps its images' rows (each image moves as it would in a
        single-process run)."""
        if images.ndim not in (4, 5) or images.shape[-1] != images.shape[-2]:
            raise ValueError(f"batch augmentation needs square (N, C, H, W) images or (N, C, D, H, W) volumes, got "
                             f"shape {tuple(images.shape)}")
        theta = self.matrices(images.shape[0] if total is None else total)[rank::world]
        if len(theta) != images.shape[0]:
            raise ValueError(f"rank {rank} of {world} holds {images.shape[0]} images of a global batch of {total}; "
                             f"expected {len(theta)}")
        theta = theta.to(images.device)
        planes = images.flatten(1, 2) if images.ndim == 5 else images  # a volume's slices move together
        return self.resample(planes.float(), theta).to(images.dtype).reshape(images.shape)

