"""DICOM series → volume: slices sorted along the slice normal, geometry checked, HU stacked.

Contract of :func:`assemble_series`:

* The slices of one series are sorted by ``ImagePositionPatient`` projected on the slice normal
  (``row direction × column direction`` of ``ImageOrientationPatient``), never by file name or
  ``InstanceNumber``.
* ``pixels`` is float32 ``(1, rows, columns, slices)`` in Hounsfield units (values after the Modality
  LUT, exactly as :func:`~medlora.io.dicom.read_dicom` returns them for each slice): index
  ``[0, r, c, s]`` is pixel ``[r, c]`` of the ``s``-th slice along the normal.
* ``affine`` maps ``(r, c, s)`` to patient millimetres in DICOM's **LPS** space; :meth:`Volume.affine_ras`
  gives the same map in RAS (nibabel's and MONAI's default world space).
* The geometry is consistent or an :class:`~medlora.errors.InputError` says why not (naming the
  series, never an identifier): mixed orientation, mixed size or pixel spacing, missing positions,
  duplicate positions, a gap or uneven spacing beyond ``tolerance`` (relative to the median spacing).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_ORIENTATION_ATOL = 1e-3  # direction cosines that differ by less than this are the same orientation
_SPACING_RTOL = 1e-3  # pixel spacings that differ by less than this (relative) are the same


@dataclass
class SeriesGeometry:
    """Where each slice lies: ``order`` sorts the input slices along ``normal``."""

    order: list[int]
    positions: np.ndarray  # sorted distances along the normal (mm)
    normal: np.ndarray
    slice_spacing: float  # median distance between neighbouring slices (mm)
    shape: tuple[int, int, int]  # rows, columns, slices
    affine: np.ndarray  # (r, c, s) → LPS mm


@dataclass
class Volume:
    """A decoded series: ``pixels`` (1, R, C, S) float32 HU, LPS ``affine``, first slice's ``meta``."""

    pixels: np.ndarray
    affine: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    order: list[int] = field(default_factory=list)  # volume slice s is input slice order[s]

    @property
    def affine_ras(self) -> np.ndarray:
        return LPS_TO_RAS @ self.affine


def series_geometry(slices: Sequence[Mapping[str, Any]], tolerance: float | None = 0.1,
                    name: str = "series") -> SeriesGeometry:
    """Check that ``slices`` (header or read_dicom meta mappings) form one regular volume; sort them.

    Each mapping needs ``rows``, ``columns``, ``pixel_spacing``, ``image_orientation_patient`` and
    ``image_position_patient`` (as :func:`~medlora.io.dicom.read_dicom_header` returns them).
    ``tolerance=None`` sorts without checking the spacing (the loader: ingest already checked it).

    Raises:
        InputError: ``"{name}: <problem>"`` for fewer than two slices, mixed size/spacing/orientation,
            missing or duplicate positions, or a gap/uneven spacing beyond ``tolerance``.
    """
    n = len(slices)
    if n < 2:
        raise InputError(f"{name}: a volume needs at least 2 slices, got {n}")
    sizes = sorted({(s.get("rows"), s.get("columns")) for s in slices}, key=str)
    if len(sizes) > 1:
        shown = ", ".join(f"{r}x{c}" for r, c in sizes[:4])
        raise InputError(f"{name}: mixed size: slices of Rows x Columns {shown}")
    missing = sum(1 for s in slices if not _vec(s.get("image_position_patient"), 3)
                  or not _vec(s.get("image_orientation_patient"), 6) or not _vec(s.get("pixel_spacing"), 2))
    if missing:
        raise InputError(f"{name}: {missing} of {n} slices lack ImagePositionPatient, ImageOrientationPatient "
                         "or PixelSpacing; cannot place them in a volume")
    iops = np.array([s["image_orientation_patient"] for s in slices], dtype=np.float64)
    if np.abs(iops - iops[0]).max() > _ORIENTATION_ATOL:
        distinct = len({tuple(np.round(v, 3)) for v in iops})
        raise InputError(f"{name}: mixed orientation: {distinct} distinct ImageOrientationPatient values")
    spacings = np.array([s["pixel_spacing"] for s in slices], dtype=np.float64)
    if np.abs(spacings - spacings[0]).max() > _SPACING_RTOL * spacings[0].max():
        raise InputError(f"{name}: mixed PixelSpacing: from {spacings.min():g} to {spacings.max():g} mm")
    row_cos, col_cos = iops[0, :3], iops[0, 3:]
    normal = np.cross(row_cos, col_cos)
    ipps = np.array([s["image_position_patient"] for s in slices], dtype=np.float64)
    dist = ipps @ normal
    order = [int(i) for i in np.argsort(dist, kind="stable")]
    positions = dist[order]
    steps = np.diff(positions)
    if (steps < 1e-3).any():
        raise InputError(f"{name}: {int((steps < 1e-3).sum()) + 1} slices share a position along the normal "
                         "(duplicates or several acquisitions in one series)")
    median = float(np.median(steps))
    worst = float(np.abs(steps - median).max())
    if tolerance is not None and worst > tolerance * median:
        kind = "gap" if steps.max() > (1 + tolerance) * median else "uneven spacing"
        raise InputError(f"{name}: {kind}: slice spacing ranges from {steps.min():.3g} to {steps.max():.3g} mm "
                         f"(median {median:.3g} mm, data.slice_spacing_tolerance {tolerance:g})")
    offsets = ipps[order] - ipps[order[0]]
    off_axis = np.linalg.norm(offsets - np.outer(positions - positions[0], normal), axis=1).max()
    if tolerance is not None and off_axis > tolerance * median + 1e-3:
        raise InputError(f"{name}: slice origins drift {off_axis:.3g} mm off the slice normal (gantry tilt?)")
    dr, dc = spacings[0]
    affine = np.eye(4)
    affine[:3, 0] = col_cos * dr  # moving down one row follows the column direction
    affine[:3, 1] = row_cos * dc
    affine[:3, 2] = normal * median
    affine[:3, 3] = ipps[order[0]]
    rows, cols = sizes[0]
    return SeriesGeometry(order, positions, normal, median, (int(rows), int(cols), n), affine)


def assemble_series(paths: Sequence[str | Path], tolerance: float | None = 0.1, name: str | None = None) -> Volume:
    """Decode the single-frame grayscale slices ``paths`` of one series into a :class:`Volume`.

    One multi-frame path (an enhanced CT/MR object) is assembled from its frames, placed by the
    per-frame functional groups (see :func:`frame_geometry`).

    Raises:
        InputError: a slice cannot be decoded, is colour or multi-frame, or the geometry is
            inconsistent (see :func:`series_geometry`).
    """
    from .dicom import read_dicom

    paths = [Path(p) for p in paths]
    return stack_slices(paths, [read_dicom(p) for p in paths], tolerance, name)


def stack_slices(paths: Sequence[Path], images: Sequence[Any], tolerance: float | None = 0.1,
                 name: str | None = None) -> Volume:
    """:func:`assemble_series` over slices already decoded by :func:`~medlora.io.dicom.read_dicom`
    (``images[i]`` of ``paths[i]``), so that ingest decodes each file once."""
    name = name or (paths[0].parent.as_posix() if paths else "series")
    if len(images) == 1 and images[0].pixels.ndim == 4:
        return _assemble_multiframe(paths[0], images[0], tolerance, name)
    for p, im in zip(paths, images, strict=True):
        if im.pixels.ndim != 3 or im.pixels.shape[0] != 1:
            raise InputError(f"{p}: a volume slice must be single-frame grayscale, got pixels {im.pixels.shape}")
    geometry = series_geometry([im.meta for im in images], tolerance, name)
    pixels = np.stack([images[i].pixels[0] for i in geometry.order], axis=-1)[np.newaxis]
    meta = dict(images[geometry.order[0]].meta)
    meta.update(slices=len(paths), slice_spacing=geometry.slice_spacing)
    log.debug("assembled %s: %s slices, spacing %.3g mm", name, len(paths), geometry.slice_spacing)
    return Volume(np.ascontiguousarray(pixels, dtype=np.float32), geometry.affine, meta, geometry.order)


def frame_geometry(path: str | Path) -> list[dict[str, Any]]:
    """Per-frame ``rows``/``columns``/``pixel_spacing``/``image_orientation_patient``/``image_position_patient``
    of a multi-frame object, from its Per-frame (else Shared) Functional Groups: Plane Position, Plane
    Orientation and Pixel Measures macros. A frame without them gets None (series_geometry names it).

    Raises:
        InputError: the file cannot be read.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except (InvalidDicomError, OSError, EOFError, ValueError) as e:
        raise InputError(f"{path}: unreadable DICOM ({type(e).__name__}: {e})") from e
    frames = int(ds.get("NumberOfFrames") or 1)
    shared = ds.get("SharedFunctionalGroupsSequence") or []
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []

    def value(frame: int, macro: str, keyword: str) -> list[float] | None:
        for groups in ([per_frame[frame]] if frame < len(per_frame) else [], shared[:1]):
            for group in groups:
                items = group.get(macro)
                if items and keyword in items[0]:
                    return [float(v) for v in items[0][keyword].value]
        return None

    return [{
        "rows": ds.get("Rows"), "columns": ds.get("Columns"),
        "pixel_spacing": value(f, "PixelMeasuresSequence", "PixelSpacing"),
        "image_orientation_patient": value(f, "PlaneOrientationSequence", "ImageOrientationPatient"),
        "image_position_patient": value(f, "PlanePositionSequence", "ImagePositionPatient"),
    } for f in range(frames)]


def _assemble_multiframe(path: Path, image: Any, tolerance: float | None, name: str) -> Volume:
    if image.pixels.shape[0] != 1:
        raise InputError(f"{path}: a volume must be grayscale, got pixels {image.pixels.shape}")
    geometry = series_geometry(frame_geometry(path), tolerance, name)
    pixels = np.moveaxis(image.pixels[0][geometry.order], 0, -1)[np.newaxis]
    meta = {**image.meta, "slices": pixels.shape[-1], "slice_spacing": geometry.slice_spacing}
    return Volume(np.ascontiguousarray(pixels, dtype=np.float32), geometry.affine, meta, geometry.order)


def _vec(value: Any, n: int) -> bool:
    return value is not None and len(value) == n
