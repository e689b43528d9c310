"""MONAI ``ImageReader`` over :func:`medlora.io.dicom.read_dicom` (kept apart so that reading
headers and pixels does not import MONAI)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import MetaKeys, SpaceKeys

from ..errors import InputError
from .dicom import DicomImage, affine_from_meta, has_dicm_preamble, read_dicom


class MedloraDicomReader(ImageReader):
    """MONAI :class:`~monai.data.ImageReader` over :func:`read_dicom`, keeping its conventions.

    ``LoadImaged(keys="image", reader=MedloraDicomReader(), image_only=False)`` yields the same
    ``[row, column]`` channel-first float32 array as :func:`read_dicom` (meta ``original_channel_dim``
    is 0, so ``EnsureChannelFirst`` leaves it alone). Meta keys whose value is None are dropped (MONAI's
    collation cannot batch None). Single-frame images with Image Plane geometry get an LPS ``affine``
    mapping ``(row, column)`` indices to patient millimetres; others keep MONAI's default identity.
    Several files are concatenated along the channel axis (MONAI's meaning of a list of files); assembling
    a series into a volume is not this reader's job.
    """

    def __init__(self, suffixes: Sequence[str] = (".dcm", ".dicom", ".dic")) -> None:
        self.suffixes = tuple(s.lower() for s in suffixes)

    def verify_suffix(self, filename: Sequence[str | Path] | str | Path) -> bool:
        """True if every file has a DICOM suffix or, suffix or not, the ``DICM`` preamble."""
        names = [filename] if isinstance(filename, (str, Path)) else list(filename)
        return bool(names) and all(
            Path(n).suffix.lower() in self.suffixes or has_dicm_preamble(Path(n)) for n in names
        )

    def read(self, data: Sequence[str | Path] | str | Path, **kwargs: Any) -> DicomImage | list[DicomImage]:
        """Read one file (or each of several) with :func:`read_dicom`."""
        if isinstance(data, (str, Path)):
            return read_dicom(data)
        images = [read_dicom(name) for name in data]
        return images[0] if len(images) == 1 else images

    def get_data(self, img: DicomImage | Sequence[DicomImage]) -> tuple[np.ndarray, dict]:
        """Return ``(pixels, meta)`` with MONAI's ``spatial_shape``/``original_channel_dim``/``affine``."""
        images = [img] if isinstance(img, DicomImage) else list(img)
        shapes = {i.pixels.shape[1:] for i in images}
        if len(shapes) > 1:
            raise InputError(f"cannot stack DICOM images of different spatial shapes {sorted(shapes)}")
        pixels = images[0].pixels if len(images) == 1 else np.concatenate([i.pixels for i in images])
        meta = {k: v for k, v in images[0].meta.items() if v is not None}
        meta[MetaKeys.ORIGINAL_CHANNEL_DIM] = 0
        meta[MetaKeys.SPATIAL_SHAPE] = np.asarray(pixels.shape[1:])
        affine = affine_from_meta(images[0].meta) if pixels.ndim == 3 else None
        if affine is not None:
            meta[MetaKeys.AFFINE] = affine
            meta[MetaKeys.SPACE] = SpaceKeys.LPS
        return pixels, meta
