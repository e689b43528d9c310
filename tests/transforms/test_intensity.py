"""medlora.transforms.intensity: DICOM VOI functions, presets, percentiles, MONOCHROME1, WindowImaged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydicom.dataset import Dataset
from pydicom.pixels import apply_windowing

from medlora.config import WindowConfig
from medlora.errors import ConfigError
from medlora.transforms.intensity import (
    WINDOW_PRESETS,
    WindowImaged,
    get_window_preset,
    is_constant,
    voi_linear,
    window_image,
)

# MONAI warns once that its optional GPU codec (nvImageCodec) is absent; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

SHARED_DICOM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dicom"
RAMP = np.arange(-2000, 3001, 5, dtype=np.float32).reshape(1, 1, -1)  # (C, H, W) HU ramp

# (function, center, width, input, expected) straight from PS3.3 C.11.2.1.2 / C.11.2.1.3.
VOI_CASES = [
    ("LINEAR", 40, 400, -160.0, 0.0),  # x <= c - 0.5 - (w-1)/2
    ("LINEAR", 40, 400, 239.0, 1.0),  # x > c - 0.5 + (w-1)/2 is the first value at 1 ...
    ("LINEAR", 40, 400, 39.5, 0.5),  # ... and c - 0.5 is the midpoint
    ("LINEAR", 40, 1, 39.0, 0.0),  # w = 1: a step at c - 0.5
    ("LINEAR", 40, 1, 40.0, 1.0),
    ("LINEAR_EXACT", 40, 400, -160.0, 0.0),
    ("LINEAR_EXACT", 40, 400, 40.0, 0.5),
    ("LINEAR_EXACT", 40, 400, 240.0, 1.0),
    ("SIGMOID", 40, 400, 40.0, 0.5),
    ("SIGMOID", 40, 400, 140.0, 1.0 / (1.0 + np.exp(-1.0))),
]


@pytest.mark.parametrize(("function", "center", "width", "x", "expected"), VOI_CASES)
def test_voi_functions_follow_the_standard(function, center, width, x, expected) -> None:
    out = voi_linear(np.array([x], np.float32), center, width, function)
    assert out.dtype == np.float32
    assert out[0] == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("function", ["LINEAR", "LINEAR_EXACT", "SIGMOID"])
def test_voi_functions_match_pydicom_apply_windowing(function: str) -> None:
    ds = Dataset()
    ds.PhotometricInterpretation, ds.BitsStored, ds.PixelRepresentation = "MONOCHROME2", 16, 0
    ds.WindowCenter, ds.WindowWidth, ds.VOILUTFunction = 1000, 700, function
    x = np.arange(0, 2048, dtype=np.uint16)
    reference = apply_windowing(x, ds) / 65535.0
    ours = window_image(
        x.astype(np.float32),
        {"window_center": 1000, "window_width": 700, "voi_lut_function": function},
        WindowConfig(),
    )
    np.testing.assert_allclose(ours, reference, atol=1e-6)


def test_presets_are_center_width_pairs_and_unknown_names_list_the_valid_ones() -> None:
    assert WINDOW_PRESETS["lung"] == (-600.0, 1500.0) and get_window_preset("Brain") == (40.0, 80.0)
    with pytest.raises(ConfigError, match="mediastinum"):
        get_window_preset("lungs")


def test_lung_preset_maps_its_window_to_unit_range() -> None:
    out = window_image(RAMP, {}, WindowConfig(mode="preset", preset="lung"))[0, 0]
    hu = RAMP[0, 0]
    assert out[hu <= -1350].max() == 0.0 and out[hu >= 150].min() == 1.0
    assert out[hu == -600][0] == pytest.approx(0.5, abs=1e-3)


def test_manual_window_ignores_the_files_window() -> None:
    meta = {"window_center": 0.0, "window_width": 10.0}
    out = window_image(RAMP, meta, WindowConfig(mode="manual", center=500, width=1000))[0, 0]
    assert out[RAMP[0, 0] == 500][0] == pytest.approx(0.5, abs=1e-3)


def test_percentile_window() -> None:
    x = np.arange(1000, dtype=np.float32).reshape(1, 10, 100)
    out = window_image(x, {}, WindowConfig(mode="percentile", lower=10, upper=90))
    assert out.min() == 0.0 and out.max() == 1.0
    assert np.mean(out == 0.0) == pytest.approx(0.1, abs=0.002)
    assert np.median(out) == pytest.approx(0.5, abs=0.01)


def test_dicom_mode_falls_back_to_min_max() -> None:
    x = np.array([[[-10.0, 0.0, 30.0]]], np.float32)
    np.testing.assert_allclose(window_image(x, {}, WindowConfig()), [[[0.0, 0.25, 1.0]]])


def test_dicom_mode_prefers_the_voi_lut_sequence() -> None:
    meta = {
        "voi_lut": {"first_mapped": 4, "data": np.array([0, 10, 20, 40, 80, 160, 200, 255])},
        "window_center": 0.0,
        "window_width": 1.0,
    }
    x = np.array([[[0.0, 4.0, 6.0, 11.0, 500.0]]], np.float32)  # below, first, inside, last, above
    np.testing.assert_allclose(window_image(x, meta, WindowConfig()), [[[0, 0, 20 / 255, 1, 1]]])


@pytest.mark.parametrize(
    "window",
    [
        WindowConfig(),
        WindowConfig(mode="preset", preset="bone"),
        WindowConfig(mode="manual", center=3, width=8),
        WindowConfig(mode="percentile"),
    ],
    ids=["dicom", "preset", "manual", "percentile"],
)
def test_monochrome1_is_inverted_after_windowing(window: WindowConfig) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(0, 500, (1, 2, 8, 9)).astype(np.float32)  # (C, F, H, W)
    base = {"window_center": 100.0, "window_width": 400.0}
    m2 = window_image(x, {**base, "photometric_interpretation": "MONOCHROME2"}, window)
    m1 = window_image(x, {**base, "photometric_interpretation": "MONOCHROME1"}, window)
    assert m1.shape == x.shape and m1.dtype == np.float32
    assert 0.0 <= m1.min() and m1.max() <= 1.0
    np.testing.assert_allclose(m1, 1.0 - m2, atol=1e-6)


def test_real_dx_monochrome1_shows_air_dark() -> None:
    path = SHARED_DICOM / "highdicom" / "dx_image.dcm"
    if not path.is_file():
        pytest.skip(f"shared data {path} is not available")
    from medlora.io.dicom import read_dicom

    image = read_dicom(path)
    out = window_image(image.pixels, image.meta, WindowConfig())[0]
    air_below_the_body, spine = out[-8:, :].mean(), out[45:60, 80:180].mean()
    assert air_below_the_body < 0.1 < 0.35 < spine  # bright = high attenuation


@pytest.mark.parametrize("mode", ["dicom", "percentile"])
@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_constant_image_maps_to_zeros_without_nan(mode: str, photometric: str) -> None:
    x = np.full((1, 4, 4), -1000.0, np.float32)
    out = window_image(x, {"photometric_interpretation": photometric}, WindowConfig(mode=mode))
    assert is_constant(x) and not np.isnan(out).any() and not out.any()


def test_is_constant() -> None:
    assert is_constant(torch.zeros(1, 3, 3)) and is_constant(np.array([np.nan, 2.0, 2.0]))
    assert not is_constant(np.array([0.0, 1.0]))


@pytest.mark.parametrize(("bits", "value"), [(8, 255.0), (16, 65535.0)])
def test_rgb_passes_through_scaled_by_bits(bits: int, value: float) -> None:
    x = np.zeros((3, 2, 2), np.float32)
    x[0], x[2] = value, value / 2
    meta = {"samples_per_pixel": 3, "photometric_interpretation": "YBR_FULL", "color_bits": bits}
    out = window_image(x, meta, WindowConfig(mode="preset", preset="lung"))
    np.testing.assert_allclose(out[:, 0, 0], [1.0, 0.0, 0.5], atol=1e-4)


def test_window_imaged_reads_meta_from_meta_tensor_and_meta_dict() -> None:
    from monai.data import MetaTensor

    meta = {"window_center": 40.0, "window_width": 400.0, "photometric_interpretation": "MONOCHROME2"}
    expected = window_image(RAMP, meta, WindowConfig())
    transform = WindowImaged(keys="image")

    out = transform({"image": MetaTensor(torch.from_numpy(RAMP), meta=dict(meta))})["image"]
    assert isinstance(out, MetaTensor) and out.dtype == torch.float32 and out.meta["window_center"] == 40.0
    np.testing.assert_allclose(out.numpy(), expected)

    out = transform({"image": RAMP.astype(np.int16), "image_meta_dict": meta})["image"]
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, expected)


def test_load_and_window_pipeline(tmp_path: Path) -> None:
    """LoadImaged(MedloraDicomReader) -> WindowImaged on a MONOCHROME1 file written here."""
    from monai.transforms import Compose, LoadImaged
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    from medlora.io.monai_reader import MedloraDicomReader

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "DX"
    ds.set_pixel_data(np.array([[0, 100], [200, 255]], np.uint8), "MONOCHROME1", 8)
    ds.WindowCenter, ds.WindowWidth = 128, 256
    ds.save_as(tmp_path / "m1", enforce_file_format=True)

    load = Compose([LoadImaged(keys="image", reader=MedloraDicomReader()), WindowImaged(keys="image")])
    out = load({"image": str(tmp_path / "m1")})["image"]
    np.testing.assert_allclose(out.numpy()[0], 1.0 - voi_linear(np.array([[0, 100], [200, 255]]), 128, 256))
    assert out[0, 0, 0] > 0.99 and out[0, 1, 1] < 0.01  # low MONOCHROME1 values are bright
