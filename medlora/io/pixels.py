"""Cheap per-sample pixel checks at ingest: a content hash for the leakage audit, and the reasons an
image or volume cannot be used (non-finite values, a single value everywhere)."""

from __future__ import annotations

import hashlib

import numpy as np


def pixel_hash(pixels: np.ndarray) -> str:
    """A 16-hex-digit sha256 of the *decoded* pixels (float32, C order) and their shape.

    Hashing decoded values rather than the stored ``PixelData`` bytes means that one image saved twice
    with different transfer syntaxes (e.g. uncompressed and JPEG-LS lossless) or a different Rescale
    Slope/Intercept that yields the same HU still has one hash: the audit compares what the model sees.
    """
    arr = np.ascontiguousarray(pixels, dtype=np.float32)
    h = hashlib.sha256(str(arr.shape).encode())
    h.update(arr.tobytes())
    return h.hexdigest()[:16]


def unusable_reason(pixels: np.ndarray, what: str = "image") -> str | None:
    """Why ``pixels`` cannot be a training sample, or None: non-finite values, or one value everywhere."""
    arr = np.asarray(pixels)
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        return f"{what} has {bad} non-finite (NaN/inf) values of {arr.size}"
    if arr.size == 0:
        return f"{what} is empty"
    lo, hi = float(arr.min()), float(arr.max())
    if lo == hi:
        return f"constant {what}: every value is {lo:g}"
    return None
