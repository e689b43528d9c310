"""NIfTI volumes (``.nii``/``.nii.gz``) read with nibabel for ingest checks.

The training pipeline reads the same files through MONAI's ``NibabelReader``
(:mod:`medlora.transforms.volume`), which returns the same voxel array and affine; this module only
serves the ingest stage (shape, affine, pixel hash, NaN/constant checks) without importing MONAI.

Contract of :func:`read_nifti`: ``data`` is float32 ``(X, Y, Z)`` in file index order, scaled by the
header's ``scl_slope``/``scl_inter`` (nibabel's ``get_fdata``); ``affine`` maps voxel indices to RAS
millimetres (nibabel's best affine: sform, else qform). A 2D image becomes ``(X, Y, 1)``; a 4D image
with one volume is squeezed; more volumes raise :class:`~medlora.errors.InputError`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class NiftiImage:
    data: np.ndarray  # float32 (X, Y, Z)
    affine: np.ndarray  # voxel → RAS mm


def is_nifti(path: str | Path) -> bool:
    """True for ``*.nii`` and ``*.nii.gz`` names (case-insensitive)."""
    name = Path(path).name.lower()
    return name.endswith(NIFTI_SUFFIXES)


def read_nifti(path: str | Path) -> NiftiImage:
    """Read a NIfTI file (see the module docstring for the contract).

    Raises:
        InputError: missing, empty, truncated or invalid file; more than one volume (4D).
    """
    import nibabel as nib
    from nibabel.filebasedimages import ImageFileError

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: file is empty (0 bytes)")
    try:
        img = nib.load(path)
        data = np.asarray(img.get_fdata(dtype=np.float32))
    except (ImageFileError, EOFError, OSError, ValueError, TypeError) as e:
        raise InputError(f"{path}: not a readable NIfTI file ({type(e).__name__}: {e})") from e
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim == 2:
        data = data[..., np.newaxis]
    if data.ndim != 3:
        raise InputError(f"{path}: NIfTI shape {data.shape} is not a single 3D volume; "
                         "split 4D series into one file per volume")
    return NiftiImage(data, np.asarray(img.affine, dtype=np.float64))
