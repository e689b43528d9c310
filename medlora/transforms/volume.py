"""Volumes through MONAI: a DICOM series or NIfTI file → RAS → resampled → windowed ``(1, X, Y, Z)``.

* :func:`load_volume` reads a series (:func:`medlora.io.series.assemble_series`, HU, LPS affine turned
  into RAS) or a NIfTI file (:func:`medlora.io.nifti.read_nifti`, nibabel's RAS affine) into a MONAI
  ``MetaTensor`` with ``space: RAS``.
* :func:`preprocess_volume` applies MONAI's ``Orientation(axcodes="RAS")``, then
  ``Spacing(pixdim=preprocess.spacing)`` when it is set (bilinear), then windowing.

Windowing reuses :func:`medlora.transforms.intensity.window_image` on the whole volume rather than MONAI's
``ScaleIntensityRange``: the same DICOM VOI LINEAR function, presets, ``dicom`` mode (the series' first
slice's window / VOI LUT) and MONOCHROME1 handling as the 2D path, so a slice of an assembled series and
the same slice read as a 2D image get the same values. Data-derived windows (``percentile``, and
``dicom`` without a stored window, e.g. every NIfTI) are computed over the whole volume, so all views of
one volume share one intensity scale.

:func:`oriented_shape` predicts the shape after orientation and spacing from the header geometry alone
(the ingest stage uses it to count the views of a volume without resampling it).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..config import PreprocessConfig
from ..errors import InputError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from monai.data import MetaTensor

RAS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
VOLUME_KINDS = ("series", "nifti")


def load_volume(source: str | Path | Sequence[str | Path], kind: str) -> MetaTensor:
    """Read one volume as a float32 ``(1, X, Y, Z)`` MetaTensor with a RAS ``affine``.

    ``kind`` is ``series`` (``source`` = the slice files, any order) or ``nifti`` (one file). For a
    series the meta holds the first slice's technical DICOM fields (window, photometric interpretation);
    the geometry was checked at ingest and is not re-checked here, only sorted.

    Raises:
        InputError: unknown ``kind`` or an unreadable file (the message names it).
    """
    import torch
    from monai.data import MetaTensor
    from monai.utils import MetaKeys, SpaceKeys

    if kind == "series":
        from ..io.series import assemble_series

        paths = [source] if isinstance(source, (str, Path)) else list(source)
        vol = assemble_series(paths, tolerance=None)
        pixels, affine = vol.pixels, vol.affine_ras
        meta: dict[str, Any] = {k: v for k, v in vol.meta.items() if v is not None}
    elif kind == "nifti":
        from ..io.nifti import read_nifti

        img = read_nifti(source if isinstance(source, (str, Path)) else source[0])
        pixels, affine, meta = img.data[np.newaxis], img.affine, {}
    else:
        raise InputError(f"{source}: unknown volume kind {kind!r}; expected one of {VOLUME_KINDS}")
    meta[MetaKeys.SPACE] = SpaceKeys.RAS
    return MetaTensor(torch.from_numpy(np.ascontiguousarray(pixels, dtype=np.float32)),
                      affine=torch.as_tensor(affine, dtype=torch.float64), meta=meta)


def preprocess_volume(volume: MetaTensor, pre: PreprocessConfig) -> np.ndarray:
    """Orientation → RAS, Spacing (if ``pre.spacing``), window (``pre.window``) → float32 ``(1, X, Y, Z)``."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Spacing

    from .intensity import window_image

    vol = Orientation(axcodes="RAS", labels=RAS_LABELS)(volume)
    if pre.spacing:
        vol = Spacing(pixdim=pre.spacing, mode="bilinear", padding_mode="border", dtype=np.float32)(vol)
    meta = dict(vol.meta) if isinstance(vol, MetaTensor) else {}
    array = vol.detach().cpu().numpy() if isinstance(vol, torch.Tensor) else np.asarray(vol)
    return window_image(array, meta, pre.window)


def oriented_shape(shape: Sequence[int], affine: np.ndarray, spacing: Sequence[float] | None = None) -> tuple[int, ...]:
    """Spatial shape of a volume of ``shape`` with RAS ``affine`` after :func:`preprocess_volume`'s
    Orientation and Spacing (MONAI's own ``compute_shape_offset``/``zoom_affine``, as ``Spacing`` uses)."""
    from nibabel.orientations import axcodes2ornt, inv_ornt_aff, io_orientation, ornt_transform

    affine = np.asarray(affine, dtype=np.float64)
    ornt = ornt_transform(io_orientation(affine), axcodes2ornt("RAS", labels=RAS_LABELS))
    out = [0, 0, 0]
    for axis, (target, _) in enumerate(ornt):
        out[int(target)] = int(shape[axis])
    if not spacing:
        return tuple(out)
    from monai.data.utils import compute_shape_offset, zoom_affine

    oriented_affine = affine @ inv_ornt_aff(ornt, shape)
    new_affine = zoom_affine(oriented_affine, list(spacing), diagonal=False)
    new_shape, _ = compute_shape_offset(out, oriented_affine, new_affine)
    return tuple(int(v) for v in new_shape)
