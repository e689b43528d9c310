"""Intensity windowing: values after the Modality LUT (e.g. HU) to display-like ``[0, 1]`` floats.

:func:`window_image` is the array function, :class:`WindowImaged` its thin MONAI dictionary wrapper.
The output convention is *bright = high attenuation / high signal* for every photometric
interpretation: MONOCHROME1 images are inverted (``1 - x``) after windowing, never before.

Modes (:class:`~medlora.config.WindowConfig`):

* ``dicom``: the file's VOI LUT Sequence (``meta["voi_lut"]``, first view) if present, else its
  Window Center/Width with its VOI LUT Function (LINEAR, LINEAR_EXACT or SIGMOID; PS3.3 C.11.2.1.2),
  else the image's min–max.
* ``preset``: a named CT window from :data:`WINDOW_PRESETS` (DICOM LINEAR function).
* ``manual``: ``center``/``width`` (DICOM LINEAR function).
* ``percentile``: the ``lower``/``upper`` percentiles of the image map to 0 and 1.

Colour images (three channels) ignore the mode: they are divided by ``2**color_bits - 1`` (bits
stored, or the palette's entry size). An image whose data-derived range is empty (min–max, percentile,
or a VOI LUT with a single value) maps to zeros, never NaN; :func:`is_constant` lets callers report it.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type, ensure_tuple_rep

from ..config import WindowConfig
from ..errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["WINDOW_PRESETS", "WindowImaged", "get_window_preset", "is_constant", "window_image"]

WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (50.0, 350.0),
    "soft_tissue": (50.0, 400.0),
    "abdomen": (40.0, 400.0),
    "liver": (60.0, 160.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "bone": (400.0, 1800.0),
}
"""Named CT windows as ``(center, width)`` in Hounsfield units."""


def get_window_preset(name: str) -> tuple[float, float]:
    """``(center, width)`` of a named preset; unknown names raise a ConfigError listing the valid ones."""
    try:
        return WINDOW_PRESETS[name.lower()]
    except KeyError:
        raise ConfigError(
            f"preprocess.window.preset={name!r} is not a known window; choose one of {sorted(WINDOW_PRESETS)}"
        ) from None


def is_constant(pixels: np.ndarray | torch.Tensor) -> bool:
    """True if the image holds a single finite value (or none): windowing it by its range is undefined."""
    values = np.asarray(pixels.detach().cpu() if isinstance(pixels, torch.Tensor) else pixels)
    finite = values[np.isfinite(values)]
    return finite.size == 0 or bool(finite.min() == finite.max())


def window_image(pixels: np.ndarray, meta: Mapping[str, Any], window: WindowConfig) -> np.ndarray:
    """Window ``pixels`` (any shape, channel first) into float32 ``[0, 1]`` of the same shape.

    ``meta`` is :func:`medlora.io.dicom.read_dicom`'s metadata (or any mapping; missing keys mean a
    MONOCHROME2 grayscale image without a stored window). See the module docstring for the modes.
    """
    x = np.asarray(pixels, dtype=np.float32)
    if _is_color(x, meta):
        bits = meta.get("color_bits") or meta.get("bits_stored") or 8
        return np.clip(x / np.float32(2 ** int(bits) - 1), 0.0, 1.0).astype(np.float32)

    if window.mode == "dicom":
        out = _dicom_window(x, meta)
    elif window.mode == "preset":
        out = voi_linear(x, *get_window_preset(window.preset or ""))
    elif window.mode == "manual":
        out = voi_linear(x, float(window.center), float(window.width))  # type: ignore[arg-type]
    elif window.mode == "percentile":
        finite = x[np.isfinite(x)]
        lo, hi = np.percentile(finite, [window.lower, window.upper]) if finite.size else (0.0, 0.0)
        out = _range_scale(x, float(lo), float(hi))
    else:  # unreachable with a validated WindowConfig
        raise ConfigError(f"preprocess.window.mode={window.mode!r} is not dicom/preset/manual/percentile")

    if out is None:
        logger.warning("constant image (value range is empty): windowed to zeros")
        return np.zeros_like(x, dtype=np.float32)
    if meta.get("photometric_interpretation") == "MONOCHROME1":
        out = 1.0 - out
    return out.astype(np.float32, copy=False)


def voi_linear(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM PS3.3 C.11.2.1.2 VOI function of ``x`` with output range ``[0, 1]``.

    LINEAR: ``((x - (c - 0.5)) / (w - 1) + 0.5)`` clipped, a step at ``c - 0.5`` when ``w <= 1``;
    LINEAR_EXACT: ``(x - c) / w + 0.5`` clipped; SIGMOID: ``1 / (1 + exp(-4 (x - c) / w))``.
    """
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        return (1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))).astype(np.float32)
    if function == "LINEAR_EXACT":
        return np.clip((x - center) / width + 0.5, 0.0, 1.0).astype(np.float32)
    if function != "LINEAR":
        logger.warning("unknown VOILUTFunction %r: using LINEAR", function)
    if width <= 1.0:
        return (x > center - 0.5).astype(np.float32)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0).astype(np.float32)


def _dicom_window(x: np.ndarray, meta: Mapping[str, Any]) -> np.ndarray | None:
    lut = meta.get("voi_lut")
    if lut:
        data = np.asarray(lut["data"], dtype=np.float64)
        idx = np.clip(np.rint(x).astype(np.int64) - int(lut["first_mapped"]), 0, data.size - 1)
        lo, hi = float(data.min()), float(data.max())
        return None if hi == lo else ((data[idx] - lo) / (hi - lo)).astype(np.float32)
    center, width = meta.get("window_center"), meta.get("window_width")
    if center is not None and width is not None and width > 0:
        return voi_linear(x, float(center), float(width), meta.get("voi_lut_function") or "LINEAR")
    finite = x[np.isfinite(x)]
    return _range_scale(x, float(finite.min()), float(finite.max())) if finite.size else None


def _range_scale(x: np.ndarray, lo: float, hi: float) -> np.ndarray | None:
    if not hi > lo:
        return None
    return np.clip((x - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def _is_color(x: np.ndarray, meta: Mapping[str, Any]) -> bool:
    samples = meta.get("samples_per_pixel")
    if samples is not None:
        return int(samples) == 3 or meta.get("photometric_interpretation") == "PALETTE COLOR"
    return False


class WindowImaged(MapTransform):
    """Dictionary wrapper of :func:`window_image`.

    The metadata is read from the image itself when it is a MONAI ``MetaTensor`` (as produced by
    ``LoadImaged(..., reader=MedloraDicomReader())``), otherwise from ``data[meta_key]`` where
    ``meta_key`` defaults to ``f"{key}_{meta_key_postfix}"`` (``image_meta_dict``), otherwise it is
    empty (grayscale, no stored window). The result keeps the input's type and meta, as float32.
    """

    def __init__(
        self,
        keys: KeysCollection,
        window: WindowConfig | None = None,
        meta_keys: KeysCollection | None = None,
        meta_key_postfix: str = "meta_dict",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.window = window or WindowConfig()
        self.meta_keys = ensure_tuple_rep(None, len(self.keys)) if meta_keys is None else meta_keys
        self.meta_keys = ensure_tuple_rep(self.meta_keys, len(self.keys))
        self.meta_key_postfix = meta_key_postfix

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key, meta_key in self.key_iterator(d, self.meta_keys):
            image = d[key]
            if isinstance(image, MetaTensor):
                meta: Mapping[str, Any] = image.meta
            else:
                meta = d.get(meta_key or f"{key}_{self.meta_key_postfix}") or {}
            array = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
            out = window_image(array, meta, self.window)
            d[key] = convert_to_dst_type(out, image, dtype=out.dtype)[0]
        return d
