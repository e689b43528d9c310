"""Views: how a RAS-oriented volume becomes 2D samples (:class:`~medlora.config.ViewConfig`).

A volume is channel first ``(C, X, Y, Z)`` in RAS orientation (indices increase towards the patient's
Right, Anterior, Superior: MONAI's ``Orientation(axcodes="RAS")`` output). ``view.axis`` is the axis the slices are taken across: 2 =
axial, 1 = coronal, 0 = sagittal. The positions along that axis (``n`` slices) are:

==========  ======================================================================  =============
kind        samples                                                                  channels
==========  ======================================================================  =============
``slice``   the central slice ``n // 2``                                             C
``every_k`` every ``k``-th slice, centred: ``range(((n - 1) % k) // 2, n, k)``       C
``slab``    the ``slab`` central slices (fewer when ``n < slab``)                    C
``2.5d``    the ``slab`` central slices, each with its two neighbours as channels    3 (C must be 1)
            ``(i - 1, i, i + 1)``, clamped at the volume's ends; ``slab: 1`` = one
``mip``     one maximum-intensity projection over all ``n`` slices                   C
``volume``  the whole volume, one 3D sample ``(C, n, H, W)``: its ``n`` slices in       C
            order, each a display plane (resampled to ``view.depth`` slices later)
==========  ======================================================================  =============

Each returned image is in *radiological display* orientation: for an axial view rows run anterior →
posterior and columns patient right → left, which is exactly the ``[row, column]`` layout of an axial
DICOM slice (ImageOrientationPatient ``1\\0\\0\\0\\1\\0``), so a slice view of an assembled series equals
the pixels of the 2D path. The same rule (flip both in-plane axes, transpose) gives the usual
coronal and sagittal displays (superior at the top).
"""

from __future__ import annotations

import numpy as np

from ..config import ViewConfig

__all__ = ["display_plane", "extract_view", "view_count", "view_positions"]


def view_positions(n: int, view: ViewConfig) -> list[int]:
    """Slice indices (along ``view.axis``) of each sample of a volume with ``n`` slices; ``mip`` → ``[n // 2]``."""
    if n < 1:
        return []
    centre = n // 2
    if view.kind in ("slice", "mip", "volume"):
        return [centre]
    if view.kind == "every_k":
        return list(range(((n - 1) % view.k) // 2, n, view.k))
    size = min(view.slab, n)  # slab and 2.5d
    start = max(0, min(centre - size // 2, n - size))
    return list(range(start, start + size))


def view_count(n: int, view: ViewConfig) -> int:
    """How many samples (manifest rows) a volume with ``n`` slices along ``view.axis`` yields."""
    return len(view_positions(n, view))


def display_plane(plane: np.ndarray) -> np.ndarray:
    """``(..., a, b)`` plane(s) of a RAS array → radiological display ``(..., b, a)`` (both axes flipped)."""
    return np.ascontiguousarray(np.swapaxes(np.flip(plane, (-2, -1)), -2, -1))


def extract_view(volume: np.ndarray, view: ViewConfig, index: int) -> np.ndarray:
    """Sample ``index`` of ``view`` from a ``(C, X, Y, Z)`` RAS volume → ``(C', H, W)`` float32, or for
    ``volume`` the whole of it as ``(C, n, H, W)`` (slices along ``view.axis`` in increasing RAS order).

    ``index`` beyond the last position is clamped to it (the manifest's count was estimated at ingest
    from the header geometry; see :func:`medlora.transforms.volume.oriented_shape`).

    Raises:
        ValueError: not a 4D channel-first array, or ``2.5d`` on a multi-channel volume.
    """
    vol = np.asarray(volume)
    if vol.ndim != 4:
        raise ValueError(f"a volume must be (C, X, Y, Z), got shape {vol.shape}")
    axis = view.axis + 1
    n = vol.shape[axis]
    if view.kind == "mip":
        return display_plane(vol.max(axis=axis)).astype(np.float32, copy=False)
    if view.kind == "volume":
        return display_plane(np.moveaxis(vol, axis, 1)).astype(np.float32, copy=False)
    positions = view_positions(n, view)
    pos = positions[min(max(index, 0), len(positions) - 1)]
    if view.kind == "2.5d":
        if vol.shape[0] != 1:
            raise ValueError(f"2.5d views need a single-channel volume, got {vol.shape[0]} channels")
        picks = [min(max(p, 0), n - 1) for p in (pos - 1, pos, pos + 1)]
        plane = np.concatenate([np.take(vol, [p], axis=axis) for p in picks], axis=axis)
        plane = np.moveaxis(plane[0], axis - 1, 0)  # the three slices become the channels
    else:
        plane = np.take(vol, pos, axis=axis)
    return display_plane(plane).astype(np.float32, copy=False)
