"""medlora.io.dicom: pixel parity with pydicom, the [row, column] convention, HU, errors, MONAI adapter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.pixels import apply_color_lut, apply_modality_lut
from pydicom.sequence import Sequence
from pydicom.uid import (
    JPEG2000,
    MPEG2MPML,
    BasicTextSRStorage,
    DeflatedExplicitVRLittleEndian,
    EnhancedCTImageStorage,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from medlora.errors import InputError, UnsupportedDicomError
from medlora.io import dicom
from medlora.io.dicom import (
    IDENTIFIER_KEYS,
    TECHNICAL_KEYS,
    read_dicom,
    read_dicom_header,
)
from medlora.io.monai_reader import MedloraDicomReader

# MONAI warns once that its optional GPU codec (nvImageCodec) is absent; irrelevant here.
pytestmark = pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning")

# (pydicom bundled test file, transfer syntax it uses). Every row must decode to pydicom's own array.
PARITY_CASES = [
    ("CT_small.dcm", ExplicitVRLittleEndian),
    ("SC_ybr_full_422_uncompressed.dcm", ExplicitVRLittleEndian),  # native YBR_FULL_422 -> RGB
    ("examples_palette.dcm", ExplicitVRLittleEndian),  # PALETTE COLOR -> RGB
    ("MR_small_implicit.dcm", ImplicitVRLittleEndian),
    ("rtdose.dcm", ImplicitVRLittleEndian),  # 15 frames, 32-bit
    ("MR_small_bigendian.dcm", ExplicitVRBigEndian),
    ("ExplVR_BigEnd.dcm", ExplicitVRBigEndian),  # RGB
    ("image_dfl.dcm", DeflatedExplicitVRLittleEndian),
    ("SC_rgb_jpeg_dcmtk.dcm", JPEGBaseline8Bit),  # YBR_FULL
    ("examples_ybr_color.dcm", JPEGBaseline8Bit),  # YBR_FULL_422, 30 frames
    ("JPGExtended.dcm", JPEGExtended12Bit),  # 12-bit
    ("SC_rgb_jpeg_gdcm.dcm", JPEGLosslessSV1),
    ("MR_small_jpeg_ls_lossless.dcm", JPEGLSLossless),
    ("JPEGLSNearLossless_16.dcm", JPEGLSNearLossless),
    ("MR_small_jp2klossless.dcm", JPEG2000Lossless),
    ("GDCMJ2K_TextGBR.dcm", JPEG2000Lossless),  # YBR_RCT
    ("JPEG2000.dcm", JPEG2000),
    ("693_J2KI.dcm", JPEG2000),  # lossy, signed, RescaleIntercept -1024
    ("MR_small_RLE.dcm", RLELossless),
    ("SC_rgb_rle_2frame.dcm", RLELossless),  # RGB, 2 frames
    ("rtdose_rle.dcm", RLELossless),  # 32-bit, 15 frames
]

# Bundled files no installed decoder handles: the error must name the transfer syntax.
# JPEG-lossy.dcm is 12-bit JPEG Extended with a malformed scan: pylibjpeg rejects it and the python-gdcm
# and Pillow plugins refuse 12-bit precision (GDCM's own reader also fails: "Unsupported JPEG data
# precision 12"), whereas the well-formed JPGExtended.dcm above decodes.
UNDECODABLE_CASES = [("JPEG-lossy.dcm", JPEGExtended12Bit)]


def _bundled(name: str) -> Path:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} is not installed")
    return Path(path)


def _pydicom_reference(path: Path) -> np.ndarray:
    """pydicom's own decoded array (+ palette / Modality LUT), moved to channel first."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if ds.PhotometricInterpretation == "PALETTE COLOR":
        arr = apply_color_lut(arr, ds)
    if arr.ndim == (3 if int(ds.get("NumberOfFrames", 1) or 1) > 1 else 2):
        return apply_modality_lut(arr, ds)[np.newaxis].astype(np.float32)
    return np.moveaxis(arr, -1, 0).astype(np.float32)


@pytest.mark.parametrize(("name", "syntax"), PARITY_CASES, ids=[c[0] for c in PARITY_CASES])
def test_pixels_match_pydicom(name: str, syntax: str) -> None:
    path = _bundled(name)
    image = read_dicom(path)
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    channels = 3 if ds.SamplesPerPixel == 3 or ds.PhotometricInterpretation == "PALETTE COLOR" else 1

    assert image.meta["transfer_syntax_uid"] == syntax
    assert image.pixels.dtype == np.float32
    assert image.pixels.shape == (channels, *((frames,) if frames > 1 else ()), ds.Rows, ds.Columns)
    np.testing.assert_array_equal(image.pixels, _pydicom_reference(path))


@pytest.mark.parametrize(("name", "syntax"), UNDECODABLE_CASES, ids=[c[0] for c in UNDECODABLE_CASES])
def test_undecodable_file_names_the_transfer_syntax(name: str, syntax: str) -> None:
    path = _bundled(name)
    with pytest.raises(UnsupportedDicomError) as err:
        read_dicom(path)
    assert str(path) in str(err.value)
    assert syntax in str(err.value) and syntax.name in str(err.value)


def test_missing_decoder_names_syntax_and_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoDecoder:
        is_available = False
        available_plugins: list[str] = []
        missing_dependencies = ["pyjpegls - requires numpy and pyjpegls>=1.2"]

    monkeypatch.setattr(dicom, "get_decoder", lambda uid: NoDecoder())
    path = _bundled("MR_small_jpeg_ls_lossless.dcm")
    with pytest.raises(UnsupportedDicomError, match="pyjpegls") as err:
        read_dicom(path)
    assert JPEGLSLossless in str(err.value) and "JPEG-LS Lossless" in str(err.value)


def test_transfer_syntax_without_any_decoder(write_dicom, make_dataset, tmp_path: Path) -> None:
    ds = make_dataset(np.zeros((4, 4), np.uint8))
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00" * 16])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    path = tmp_path / "mpeg2.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(UnsupportedDicomError, match=MPEG2MPML.replace(".", r"\.")) as err:
        read_dicom(path)
    assert "MPEG2" in str(err.value)


def test_ct_values_are_hounsfield_units(shared_dicom) -> None:
    path = shared_dicom("ct_3slice", "01.dcm")
    image = read_dicom(path)
    raw = pydicom.dcmread(path).pixel_array
    assert image.pixels.dtype == np.float32
    assert (image.meta["rescale_slope"], image.meta["rescale_intercept"]) == (1.0, -1024.0)
    np.testing.assert_array_equal(image.pixels[0], raw.astype(np.float32) - 1024.0)
    hu = image.pixels[0]
    inside = hu[hu > -2000]  # drop the -3024 padding outside the reconstruction circle
    assert np.mean((inside > -1050) & (inside < -950)) > 0.1  # air around the patient
    assert np.mean((inside > -100) & (inside < 100)) > 0.1  # soft tissue
    assert -1100 < np.percentile(inside, 1) < -900 and inside.max() < 3100


def test_dx_monochrome1_is_kept_raw(shared_dicom) -> None:
    path = shared_dicom("highdicom", "dx_image.dcm")
    image = read_dicom(path)
    assert image.meta["photometric_interpretation"] == "MONOCHROME1"
    assert (image.meta["window_center"], image.meta["window_width"]) == (128.0, 256.0)
    np.testing.assert_array_equal(image.pixels[0], pydicom.dcmread(path).pixel_array)  # not inverted


def test_rows_and_columns_follow_pydicom_not_monai(write_dicom) -> None:
    """MONAI's PydicomReader transposes; medlora keeps pixel_array's [row, column] order."""
    from monai.transforms import LoadImaged

    ramp = (10 * np.arange(3)[:, None] + np.arange(5)[None, :]).astype(np.uint16)  # 3 rows, 5 columns
    path = write_dicom("ramp.dcm", ramp)
    assert read_dicom(path).pixels.shape == (1, 3, 5)
    np.testing.assert_array_equal(read_dicom(path).pixels[0], ramp)

    loaded = LoadImaged(keys="image", reader=MedloraDicomReader(), image_only=False)({"image": str(path)})
    image = loaded["image"]
    assert tuple(image.shape) == (1, 3, 5)
    np.testing.assert_array_equal(image.numpy()[0], ramp)
    assert image.meta["original_channel_dim"] == 0
    assert tuple(image.meta["spatial_shape"]) == (3, 5)


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "JPEGLSNearLossless_16.dcm", "examples_palette.dcm"])
def test_monai_reader_matches_read_dicom(name: str) -> None:
    from monai.transforms import LoadImaged

    path = _bundled(name)
    loaded = LoadImaged(keys="image", reader=MedloraDicomReader(), image_only=False)({"image": str(path)})
    np.testing.assert_array_equal(loaded["image"].numpy(), read_dicom(path).pixels)


def test_monai_affine_maps_row_column_to_patient_mm(shared_dicom) -> None:
    path = shared_dicom("ct_3slice", "01.dcm")
    pixels, meta = MedloraDicomReader().get_data(MedloraDicomReader().read(path))
    affine = meta["affine"]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    r, c = 7, 11
    expected = (
        np.asarray(ds.ImagePositionPatient, float)
        + r * float(ds.PixelSpacing[0]) * np.asarray(ds.ImageOrientationPatient[3:], float)
        + c * float(ds.PixelSpacing[1]) * np.asarray(ds.ImageOrientationPatient[:3], float)
    )
    np.testing.assert_allclose((affine @ [r, c, 0, 1])[:3], expected, atol=1e-4)
    assert meta["space"] == "LPS" and pixels.shape == (1, 512, 512)


def test_verify_suffix_sniffs_the_preamble(write_dicom, tmp_path: Path) -> None:
    no_suffix = write_dicom("IM0001", np.zeros((2, 2), np.uint8))
    text = tmp_path / "notes"
    text.write_text("not dicom")
    reader = MedloraDicomReader()
    assert reader.verify_suffix(no_suffix) and reader.verify_suffix([str(no_suffix), "x.dcm"])
    assert not reader.verify_suffix(text) and not reader.verify_suffix(tmp_path / "missing")


def test_multi_frame_shapes() -> None:
    assert read_dicom(_bundled("rtdose.dcm")).pixels.shape == (1, 15, 10, 10)
    rgb = read_dicom(_bundled("SC_rgb_rle_2frame.dcm"))
    assert rgb.pixels.shape == (3, 2, 100, 100) and rgb.meta["frames"] == 2


@pytest.mark.parametrize(
    "name", ["SC_rgb_jpeg_dcmtk.dcm", "SC_ybr_full_422_uncompressed.dcm", "SC_rgb_rle.dcm"]
)
def test_color_is_rgb_channel_first(name: str) -> None:
    """pydicom's SC_rgb* images: 10-row bands, red at the top, then pink, green, ..., blue at rows 40-49."""
    image = read_dicom(_bundled(name))
    assert image.pixels.shape == (3, 100, 100) and image.meta["color_bits"] == 8
    for row, rgb in [(5, (255, 0, 0)), (25, (0, 255, 0)), (45, (0, 0, 255)), (95, (255, 255, 255))]:
        np.testing.assert_allclose(image.pixels[:, row, 50], rgb, atol=6)


def test_enhanced_multi_frame_rescale_per_frame(write_dicom) -> None:
    def rescale(slope: float, intercept: float) -> Dataset:
        item, group = Dataset(), Dataset()
        item.RescaleSlope, item.RescaleIntercept, item.RescaleType = slope, intercept, "HU"
        group.PixelValueTransformationSequence = Sequence([item])
        return group

    frames = np.full((2, 4, 6), 100, np.int16)
    path = write_dicom(
        "enhanced.dcm",
        frames,
        sop_class=EnhancedCTImageStorage,
        PerFrameFunctionalGroupsSequence=Sequence([rescale(1.0, -1024.0), rescale(2.0, 0.0)]),
    )
    image = read_dicom(path)
    assert image.pixels.shape == (1, 2, 4, 6)
    assert image.pixels[0, 0].max() == -924.0 and image.pixels[0, 1].min() == 200.0
    assert (image.meta["rescale_slope"], image.meta["rescale_intercept"]) == (1.0, -1024.0)


def test_voi_lut_sequence_is_kept_in_meta(write_dicom, make_dataset, tmp_path: Path) -> None:
    ds = make_dataset(np.arange(16, dtype=np.uint16).reshape(4, 4))
    item = Dataset()
    item.add_new(0x00283002, "US", [8, 4, 8])  # LUT Descriptor: 8 entries, first mapped 4, 8 bits
    item.add_new(0x00283006, "US", [0, 10, 20, 40, 80, 160, 200, 255])  # LUT Data
    ds.VOILUTSequence = Sequence([item])
    path = tmp_path / "voi.dcm"
    ds.save_as(path, enforce_file_format=True)
    meta = read_dicom(path).meta
    assert meta["has_voi_lut"] and meta["voi_lut"]["first_mapped"] == 4
    np.testing.assert_array_equal(meta["voi_lut"]["data"], [0, 10, 20, 40, 80, 160, 200, 255])


def test_header_holds_identifiers_and_meta_does_not(write_dicom) -> None:
    path = write_dicom("h.dcm", np.zeros((2, 3), np.uint8), AccessionNumber="ACC9", InstanceNumber=7)
    header = read_dicom_header(path)
    assert header["patient_id"] == "PAT-001" and header["accession"] == "ACC9"
    assert header["instance_number"] == 7 and header["study_uid"] and header["sop_uid"]
    meta = read_dicom(path).meta
    assert set(meta) <= {*TECHNICAL_KEYS, "voi_lut", "color_bits"}
    assert not set(meta) & {*IDENTIFIER_KEYS, "instance_number"}
    assert "PAT-001" not in {str(v) for v in meta.values()}
    assert {k: header[k] for k in TECHNICAL_KEYS} == {k: meta[k] for k in TECHNICAL_KEYS}


def _truncate(src: Path, dst: Path, keep: float) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.98])
def test_truncated_file_is_an_input_error(keep: float, tmp_path: Path) -> None:
    path = _truncate(_bundled("CT_small.dcm"), tmp_path / "cut.dcm", keep)
    with pytest.raises(InputError, match="truncated|unreadable|not a DICOM") as err:
        read_dicom(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "match"),
    [(b"", "empty"), (b"patient,label\n1,abnormal\n" * 20, "not a DICOM"), (None, "no such file")],
    ids=["zero-bytes", "text", "missing"],
)
def test_not_dicom_is_an_input_error(content: bytes | None, match: str, tmp_path: Path) -> None:
    path = tmp_path / "input.dcm"
    if content is not None:
        path.write_bytes(content)
    for read in (read_dicom, read_dicom_header):
        with pytest.raises(InputError, match=match) as err:
            read(path)
        assert str(path) in str(err.value)


def test_bundled_truncated_pixel_data() -> None:
    with pytest.raises(InputError, match="truncated"):
        read_dicom(_bundled("MR_truncated.dcm"))


def test_no_pixel_data_names_the_sop_class(write_dicom) -> None:
    path = write_dicom("report.dcm", None, sop_class=BasicTextSRStorage, Modality="SR")
    with pytest.raises(InputError, match="has no pixel data") as err:
        read_dicom(path)
    assert not isinstance(err.value, UnsupportedDicomError)
    assert "Basic Text SR" in str(err.value) and BasicTextSRStorage in str(err.value)


def test_unsupported_photometric_interpretation_names_tag_and_value(write_dicom) -> None:
    path = write_dicom("hsv.dcm", np.zeros((2, 2), np.uint8), PhotometricInterpretation="HSV")
    with pytest.raises(UnsupportedDicomError, match=r"\(0028,0004\) PhotometricInterpretation='HSV'"):
        read_dicom(path)
