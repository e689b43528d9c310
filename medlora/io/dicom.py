"""DICOM decoding into medlora's array convention.

Contract of :func:`read_dicom` (and of :class:`medlora.io.monai_reader.MedloraDicomReader`, its MONAI adapter):

* ``pixels`` is ``float32``, channel first: ``(C, H, W)`` for one frame, ``(C, F, H, W)`` for a
  multi-frame object. ``C`` is 1 for grayscale and 3 for colour (YBR_FULL, YBR_FULL_422, YBR_RCT and
  YBR_ICT are converted to RGB, PALETTE COLOR is expanded through its palette; ``meta["color_bits"]``
  is the bit depth of the RGB values). Rows and columns are indexed ``[row, column]`` exactly like
  pydicom's ``pixel_array`` (MONAI's own ``PydicomReader`` transposes them; this reader does not).
* Grayscale values are *after* the Modality LUT (Rescale Slope/Intercept, Modality LUT Sequence, or the
  Pixel Value Transformation of an enhanced multi-frame object): Hounsfield units for CT. They are not
  windowed and not inverted; MONOCHROME1 stays MONOCHROME1 and is inverted by
  :func:`medlora.transforms.intensity.window_image` after windowing.
* ``meta`` holds non-identifying technical fields only (see :data:`TECHNICAL_KEYS`); the pydicom dataset
  is not kept. A VOI LUT Sequence is copied into ``meta["voi_lut"]`` as ``{"first_mapped": int,
  "data": np.ndarray}`` (the first view, decoded by pydicom) so windowing never re-opens the file.

Errors: a file that cannot be read or is not DICOM, has no pixel data or truncated pixel data raises
:class:`~medlora.errors.InputError`; a transfer syntax without an installed decoder or a photometric
interpretation medlora does not handle raises :class:`~medlora.errors.UnsupportedDicomError` naming the
tag and its value. Every message starts with the file path, and every error carries a ``category``
attribute (one of :data:`CATEGORIES`: empty file, not DICOM, unreadable header, truncated pixel data,
absent pixel data, undecodable pixel data, no decoder, unsupported image) so an ingest report can count
failures by kind. A file whose Pixel Data element is cut off is *truncated* (pydicom drops the element
and reads on, so "no pixel data" alone would be misleading); an image object without the element is
*absent pixel data*.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, get_decoder, pixel_array
from pydicom.pixels.processing import apply_voi

from ..errors import InputError, UnsupportedDicomError
from .subgroups import header_subgroups

logger = logging.getLogger(__name__)

__all__ = [
    "DicomImage",
    "TECHNICAL_KEYS",
    "IDENTIFIER_KEYS",
    "read_dicom",
    "read_dicom_header",
]

GRAYSCALE = ("MONOCHROME1", "MONOCHROME2")
# Colour interpretations pydicom returns as RGB (YBR_FULL*, via raw=False; YBR_RCT/ICT by the J2K codec).
COLOR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "PALETTE COLOR")
SUPPORTED_PHOTOMETRIC = GRAYSCALE + COLOR

TECHNICAL_KEYS = (
    "modality", "sop_class_uid", "photometric_interpretation", "transfer_syntax_uid", "transfer_syntax_name",
    "rows", "columns", "frames", "samples_per_pixel", "bits_allocated", "bits_stored", "pixel_representation",
    "rescale_slope", "rescale_intercept", "has_modality_lut", "window_center", "window_width",
    "voi_lut_function", "has_voi_lut", "presentation_lut_shape", "pixel_spacing", "slice_thickness",
    "image_position_patient", "image_orientation_patient",
)  # fmt: skip
"""Keys of :func:`read_dicom`'s meta (plus ``voi_lut`` and, for colour output, ``color_bits``)."""

IDENTIFIER_KEYS = {
    "patient_id": "PatientID",
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "sop_uid": "SOPInstanceUID",
    "accession": "AccessionNumber",
}
"""Raw identifiers returned by :func:`read_dicom_header` only; the caller must hash them."""

_READ_ERRORS = (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError)

EMPTY, NOT_DICOM, UNREADABLE = "empty file", "not DICOM", "unreadable header"
TRUNCATED, NO_PIXELS, UNDECODABLE = "truncated pixel data", "absent pixel data", "undecodable pixel data"
NO_DECODER, UNSUPPORTED = "no decoder", "unsupported image"
CATEGORIES = (EMPTY, NOT_DICOM, UNREADABLE, TRUNCATED, NO_PIXELS, UNDECODABLE, NO_DECODER, UNSUPPORTED)
_PIXEL_DATA_TAGS = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")  # (7FE0,0010) little / big endian


def _error(cls: type[InputError], category: str, message: str) -> InputError:
    """``cls(message)`` with its ``category`` set (see the module docstring)."""
    err = cls(message)
    err.category = category  # type: ignore[attr-defined]
    return err


@dataclass
class DicomImage:
    """Decoded pixels (channel first, float32, after the Modality LUT) and technical metadata."""

    pixels: np.ndarray
    meta: dict[str, Any]


def read_dicom(path: str | Path) -> DicomImage:
    """Decode one DICOM file into medlora's convention (see the module docstring for the contract).

    Returns a :class:`DicomImage` whose ``pixels`` are float32 ``(C, H, W)`` or ``(C, F, H, W)``,
    ``[row, column]`` like pydicom, after the Modality LUT and before any windowing or inversion, and
    whose ``meta`` holds the :data:`TECHNICAL_KEYS` (plus ``voi_lut``; ``color_bits`` for colour).

    Raises:
        InputError: unreadable, empty, truncated or non-DICOM file; no pixel data.
        UnsupportedDicomError: no installed decoder for the transfer syntax; unsupported photometric
            interpretation or samples per pixel.
    """
    path = Path(path)
    ds = _dcmread(path, stop_before_pixels=False)
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        sop = ds.get("SOPClassUID")
        name = getattr(sop, "name", "")
        head = path.read_bytes()
        if any(tag in head for tag in _PIXEL_DATA_TAGS):
            raise _error(InputError, TRUNCATED, f"{path}: truncated pixel data: the file ends inside its "
                         f"(7FE0,0010) Pixel Data element ({len(head)} bytes; SOPClassUID={sop} {name})")
        hint = "" if "Image" in name else "; only image objects can be read"
        raise _error(InputError, NO_PIXELS, f"{path}: has no pixel data (SOPClassUID={sop} {name}){hint}")
    meta = _technical_meta(ds)
    pi = meta["photometric_interpretation"]
    if pi is None:
        raise _error(UnsupportedDicomError, UNSUPPORTED, f"{path}: (0028,0004) PhotometricInterpretation is missing")
    if pi not in SUPPORTED_PHOTOMETRIC:
        raise _error(
            UnsupportedDicomError, UNSUPPORTED,
            f"{path}: (0028,0004) PhotometricInterpretation={pi!r} is not supported; "
            f"medlora reads {', '.join(SUPPORTED_PHOTOMETRIC)}"
        )
    expected_samples = 1 if pi in GRAYSCALE or pi == "PALETTE COLOR" else 3
    if meta["samples_per_pixel"] != expected_samples:
        raise _error(
            UnsupportedDicomError, UNSUPPORTED,
            f"{path}: (0028,0002) SamplesPerPixel={meta['samples_per_pixel']} does not match "
            f"PhotometricInterpretation={pi!r} (expected {expected_samples})"
        )
    arr = _decode(ds, path)
    if pi == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)[..., :3]  # drop a possible alpha channel
    if pi in GRAYSCALE:
        pixels = _modality_lut(arr, ds, meta["frames"])[np.newaxis]
    else:
        meta["color_bits"] = 8 * arr.dtype.itemsize if pi == "PALETTE COLOR" else meta["bits_stored"]
        pixels = np.moveaxis(arr, -1, 0).astype(np.float32)
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    logger.debug("read %s: %s %s", path, pi, pixels.shape)
    return DicomImage(pixels=pixels, meta=meta)


def read_dicom_header(path: str | Path) -> dict[str, Any]:
    """Read the header only (pixel data is not loaded): technical meta plus grouping identifiers.

    Besides :data:`TECHNICAL_KEYS` the result holds ``patient_id``, ``study_uid``, ``series_uid``,
    ``sop_uid``, ``accession`` (strings or None), ``instance_number`` (int or None) and
    ``sop_class_uid``, and the subgroup fields of :func:`~medlora.io.subgroups.header_subgroups`.
    **These identifiers are raw protected health information: the caller must hash
    them (HMAC keys under the site secret) before they are logged, saved, or leave memory in any other way.**

    Raises:
        InputError: unreadable, empty, truncated or non-DICOM file.
    """
    path = Path(path)
    ds = _dcmread(path, stop_before_pixels=True)
    header = _technical_meta(ds)
    for key, keyword in IDENTIFIER_KEYS.items():
        value = ds.get(keyword)
        header[key] = str(value) if value not in (None, "") else None
    header["instance_number"] = _as_int(ds.get("InstanceNumber"), None)
    header.update(header_subgroups(ds))  # sex, age band, manufacturer, view position (evaluate.subgroups)
    return header


def has_dicm_preamble(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _dcmread(path: Path, stop_before_pixels: bool) -> Dataset:
    if not path.is_file():
        raise _error(InputError, UNREADABLE, f"{path}: no such file")
    if path.stat().st_size == 0:
        raise _error(InputError, EMPTY, f"{path}: file is empty (0 bytes)")
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError as e:
        raise _error(InputError, NOT_DICOM, f"{path}: not a DICOM file ({e})") from e
    except _READ_ERRORS as e:
        if not stop_before_pixels:
            try:  # the header reads: the damage is in the pixel data
                pydicom.dcmread(path, stop_before_pixels=True)
            except _READ_ERRORS:
                pass
            else:
                raise _error(InputError, TRUNCATED, f"{path}: truncated pixel data ({type(e).__name__}: {e})") from e
        raise _error(InputError, UNREADABLE, f"{path}: unreadable or truncated DICOM header ({type(e).__name__}: {e})") from e


def _decode(ds: Dataset, path: Path) -> np.ndarray:
    """pydicom's ``pixel_array`` (YBR converted to RGB) with its failures mapped to medlora errors."""
    tsuid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if not tsuid:
        raise _error(UnsupportedDicomError, NO_DECODER, f"{path}: (0002,0010) TransferSyntaxUID is missing from the file meta")
    ts = f"(0002,0010) TransferSyntaxUID={tsuid} ({tsuid.name})"
    try:
        decoder = get_decoder(tsuid)
    except NotImplementedError as e:
        raise _error(
            UnsupportedDicomError, NO_DECODER,
            f"{path}: {ts} has no pixel data decoder in pydicom {pydicom.__version__}; "
            "decompress it first (e.g. `gdcmconv --raw` or dcmtk `dcmdjpeg`)"
        ) from e
    if not decoder.is_available:
        raise _error(
            UnsupportedDicomError, NO_DECODER,
            f"{path}: no decoder is installed for {ts}; install one of: "
            + "; ".join(decoder.missing_dependencies)
        )
    try:
        return pixel_array(ds, raw=False)
    except RuntimeError as e:  # every available plugin raised: damaged data, or a variant none handles
        missing = "; ".join(decoder.missing_dependencies) or "none"
        raise _error(
            UnsupportedDicomError, UNDECODABLE,
            f"{path}: the installed decoders could not decode the pixel data of {ts} "
            f"(tried {', '.join(decoder.available_plugins)}; not installed: {missing}): {_first_line(e)}"
        ) from e
    except NotImplementedError as e:
        raise _error(UnsupportedDicomError, NO_DECODER, f"{path}: {ts}: {e}") from e
    except (ValueError, AttributeError, KeyError, TypeError) as e:
        short = "less than expected" in str(e) or "truncated" in str(e).lower()
        raise _error(
            InputError, TRUNCATED if short else UNDECODABLE,
            f"{path}: pixel data is {'truncated' if short else 'inconsistent with its Image Pixel module'} ({e})"
        ) from e


def _first_line(err: BaseException) -> str:
    """The first line of an exception's message (pydicom joins every plugin's traceback into one)."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _modality_lut(arr: np.ndarray, ds: Dataset, frames: int) -> np.ndarray:
    """Grayscale values after the Modality LUT, float32."""
    if "ModalityLUTSequence" in ds or ("RescaleSlope" in ds and "RescaleIntercept" in ds):
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float32)
    per_frame = _functional_group_rescale(ds, frames)
    if per_frame is None:
        return arr.astype(np.float32)
    slopes, intercepts = per_frame
    shape = (-1, 1, 1) if arr.ndim == 3 else ()
    out = arr.astype(np.float64) * slopes.reshape(shape) + intercepts.reshape(shape)
    return out.astype(np.float32)


def _functional_group_rescale(ds: Dataset, frames: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Per-frame (slope, intercept) from an enhanced multi-frame object's functional groups."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    shared = _fg_item(ds.get("SharedFunctionalGroupsSequence"), "PixelValueTransformationSequence")
    items = [_fg_item([f], "PixelValueTransformationSequence") or shared for f in (per_frame or [])]
    if not items:
        items = [shared] * frames
    if len(items) != frames or any(i is None or "RescaleSlope" not in i for i in items):
        return None
    slopes = np.array([float(i.RescaleSlope) for i in items])
    intercepts = np.array([float(i.RescaleIntercept) for i in items])
    return (slopes[0], intercepts[0]) if frames == 1 else (slopes, intercepts)


def _fg_item(groups: Sequence[Dataset] | None, name: str) -> Dataset | None:
    """First item of macro ``name`` in the first functional-group item, if present."""
    if not groups or name not in groups[0] or not groups[0][name].value:
        return None
    return groups[0][name].value[0]


def _fg_first(ds: Dataset, name: str) -> Dataset | None:
    """Macro ``name`` from the shared functional groups, else from the first frame's."""
    return _fg_item(ds.get("SharedFunctionalGroupsSequence"), name) or _fg_item(
        ds.get("PerFrameFunctionalGroupsSequence"), name
    )


def _technical_meta(ds: Dataset) -> dict[str, Any]:
    fm = getattr(ds, "file_meta", None)
    tsuid = fm.get("TransferSyntaxUID") if fm is not None else None
    frames = _as_int(ds.get("NumberOfFrames"), 1) or 1
    voi_src = ds if "WindowCenter" in ds or "VOILUTSequence" in ds else _fg_first(ds, "FrameVOILUTSequence")
    rescale_src = ds if "RescaleSlope" in ds else _fg_first(ds, "PixelValueTransformationSequence")
    function = voi_src.get("VOILUTFunction") if voi_src is not None else None
    sop = ds.get("SOPClassUID")
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    plut = ds.get("PresentationLUTShape")
    meta = {
        "modality": str(ds.get("Modality")) if ds.get("Modality") else None,
        "sop_class_uid": str(sop) if sop else None,
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")).strip() or None,
        "transfer_syntax_uid": str(tsuid) if tsuid else None,
        "transfer_syntax_name": tsuid.name if tsuid else None,
        "rows": _as_int(ds.get("Rows"), None),
        "columns": _as_int(ds.get("Columns"), None),
        "frames": frames,
        "samples_per_pixel": _as_int(ds.get("SamplesPerPixel"), 1),
        "bits_allocated": _as_int(ds.get("BitsAllocated"), None),
        "bits_stored": _as_int(ds.get("BitsStored"), None),
        "pixel_representation": _as_int(ds.get("PixelRepresentation"), None),
        "rescale_slope": _first_float(rescale_src.get("RescaleSlope") if rescale_src else None),
        "rescale_intercept": _first_float(rescale_src.get("RescaleIntercept") if rescale_src else None),
        "has_modality_lut": "ModalityLUTSequence" in ds,
        "window_center": _first_float(voi_src.get("WindowCenter") if voi_src is not None else None),
        "window_width": _first_float(voi_src.get("WindowWidth") if voi_src is not None else None),
        "voi_lut_function": str(function).strip().upper() if function else None,
        "has_voi_lut": bool(voi_src is not None and voi_src.get("VOILUTSequence")),
        "presentation_lut_shape": str(plut) if plut else None,
        "pixel_spacing": _floats(spacing),
        "slice_thickness": _first_float(ds.get("SliceThickness")),
        "image_position_patient": _floats(ds.get("ImagePositionPatient")),
        "image_orientation_patient": _floats(ds.get("ImageOrientationPatient")),
    }
    meta["voi_lut"] = _voi_lut(voi_src) if meta["has_voi_lut"] else None
    return meta


def _voi_lut(src: Dataset) -> dict[str, Any] | None:
    """First VOI LUT view as ``{"first_mapped", "data"}``, decoded by pydicom (handles US/OW, endianness)."""
    try:
        descriptor = [int(v) for v in src.VOILUTSequence[0].LUTDescriptor]
        entries, first = descriptor[0] or 2**16, descriptor[1]
        data = apply_voi(np.arange(first, first + entries, dtype=np.int64), src)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError, NotImplementedError) as e:
        logger.warning("ignoring an unusable VOI LUT Sequence (%s); falling back to window/min-max", e)
        return None
    return {"first_mapped": first, "data": np.asarray(data)}


def affine_from_meta(meta: dict[str, Any]) -> np.ndarray | None:
    """4x4 LPS affine from (row, column) index to patient mm, or a pure spacing matrix, or None."""
    spacing = meta.get("pixel_spacing")
    if not spacing or len(spacing) != 2:
        return None
    affine = np.diag([spacing[0], spacing[1], meta.get("slice_thickness") or 1.0, 1.0])
    iop, ipp = meta.get("image_orientation_patient"), meta.get("image_position_patient")
    if iop and ipp and len(iop) == 6 and len(ipp) == 3:
        row_cos, col_cos = np.asarray(iop[:3]), np.asarray(iop[3:])
        affine[:3, 0] = col_cos * spacing[0]  # moving down one row follows the column direction
        affine[:3, 1] = row_cos * spacing[1]
        affine[:3, 2] = np.cross(row_cos, col_cos) * (meta.get("slice_thickness") or 1.0)
        affine[:3, 3] = ipp
    return affine


def _first_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, (list, tuple, pydicom.multival.MultiValue)):
        if len(value) == 0:
            return None
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        logger.warning("ignoring a non-numeric DICOM value %r", value)
        return None


def _floats(value: Any) -> list[float] | None:
    if value is None or value == "":
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        logger.warning("ignoring a non-numeric DICOM value %r", value)
        return None


def _as_int(value: Any, default: int | None) -> int | None:
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        logger.warning("ignoring a non-integer DICOM value %r", value)
        return default
