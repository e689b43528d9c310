"""medlora.io.series: slices sorted by position along the normal, HU kept, geometry problems named."""

from __future__ import annotations

import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from medlora.errors import InputError
from medlora.io.dicom import read_dicom
from medlora.io.series import assemble_series, series_geometry

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dicom" / "ct_3slice"
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def write_slice(path: Path, hu: np.ndarray, z: float, *, iop: list[float] = AXIAL, spacing: float = 0.8,
                ids: dict[str, str] | None = None, instance: int = 1, **tags: Any) -> Path:
    """One CT slice (int16 stored, intercept -1024) at ``z`` mm along the normal of ``iop``."""
    ids = ids or {}
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID = ids.get("patient", "PAT-S1")
    ds.StudyInstanceUID = ids.get("study", "1.2.826.0.1.3680043.8.498.1")
    ds.SeriesInstanceUID = ids.get("series", "1.2.826.0.1.3680043.8.498.2")
    ds.Modality = "CT"
    ds.InstanceNumber = instance
    normal = np.cross(iop[:3], iop[3:])
    ds.ImagePositionPatient = [float(v) for v in (np.array([-100.0, -90.0, 0.0]) + z * normal)]
    ds.ImageOrientationPatient = iop
    ds.PixelSpacing = [spacing, spacing]
    ds.set_pixel_data((hu + 1024).astype(np.int16), "MONOCHROME2", 16)
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)
    return path


def ramp_volume(rows: int = 12, cols: int = 10, slices: int = 6) -> np.ndarray:
    """HU volume (R, C, S) where every voxel is distinct: 100*s + 10*r + c - 500."""
    r, c, s = np.meshgrid(np.arange(rows), np.arange(cols), np.arange(slices), indexing="ij")
    return (100 * s + 10 * r + c - 500).astype(np.float32)


def write_series(folder: Path, hu: np.ndarray, z: list[float] | None = None, shuffle: int | None = 0,
                 **kwargs: Any) -> list[Path]:
    """Write ``hu[..., s]`` at ``z[s]``; file names and instance numbers are shuffled (seeded)."""
    folder.mkdir(parents=True, exist_ok=True)
    n = hu.shape[-1]
    z = list(np.arange(n) * 2.0) if z is None else z
    names = list(range(n))
    if shuffle is not None:
        random.Random(shuffle).shuffle(names)
    return [write_slice(folder / f"IM{names[s]:03d}.dcm", hu[..., s], z[s], instance=names[s] + 1, **kwargs)
            for s in range(n)]


def test_series_is_sorted_by_position_not_by_name_or_instance_number(tmp_path) -> None:
    hu = ramp_volume()
    paths = write_series(tmp_path / "s", hu, shuffle=3)
    vol = assemble_series(sorted(paths))  # name order != position order
    assert vol.pixels.shape == (1, 12, 10, 6) and vol.pixels.dtype == np.float32
    np.testing.assert_array_equal(vol.pixels[0], hu)  # HU preserved, slices in z order
    assert vol.meta["slice_spacing"] == pytest.approx(2.0)
    np.testing.assert_allclose(vol.affine[:3, 3], [-100.0, -90.0, 0.0])
    np.testing.assert_allclose(vol.affine[:3, 2], [0.0, 0.0, 2.0])


def test_sagittal_series_sorts_along_its_own_normal(tmp_path) -> None:
    iop = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]  # normal = (-1, 0, 0)
    hu = ramp_volume(slices=4)
    paths = write_series(tmp_path / "sag", hu, z=[0.0, 1.5, 3.0, 4.5], iop=iop, shuffle=1)
    vol = assemble_series(paths[::-1])
    np.testing.assert_array_equal(vol.pixels[0], hu)


def test_real_ct_3slice_is_sorted_by_ipp_and_keeps_hounsfield_units(tmp_path) -> None:
    files = sorted(SHARED.glob("*.dcm"))
    if len(files) != 3:
        pytest.skip(f"shared data {SHARED} is not available")
    shuffled = []
    for name, src in zip(("b.dcm", "c.dcm", "a.dcm"), files, strict=True):  # names no longer follow order
        shutil.copy(src, tmp_path / name)
        shuffled.append(tmp_path / name)
    vol = assemble_series(shuffled)
    z = [float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files]
    ascending = [files[i] for i in np.argsort(z)]  # 03, 02, 01: z falls with the instance number
    for s, f in enumerate(ascending):
        np.testing.assert_array_equal(vol.pixels[0, ..., s], read_dicom(f).pixels[0])
    assert vol.pixels.min() <= -1000 and vol.meta["slice_spacing"] == pytest.approx(1.0, abs=1e-3)


def _headers(z: list[float], **overrides: Any) -> list[dict[str, Any]]:
    base = {"rows": 8, "columns": 8, "pixel_spacing": [0.8, 0.8], "image_orientation_patient": AXIAL}
    out = [{**base, "image_position_patient": [0.0, 0.0, v]} for v in z]
    for index, changes in overrides.items():
        out[int(index.lstrip("s"))].update(changes)
    return out


GEOMETRY_CASES = [
    ("gap", _headers([0, 2, 4, 8, 10]), r"gap: slice spacing ranges from 2 to 4 mm"),
    ("uneven", _headers([0, 2, 4, 5.5, 7.5]), r"uneven spacing"),
    ("duplicate", _headers([0, 2, 2, 4]), r"share a position"),
    ("orientation", _headers([0, 2, 4], s1={"image_orientation_patient": [1, 0, 0, 0, 0, -1]}), r"mixed orientation: 2"),
    ("size", _headers([0, 2, 4], s2={"rows": 16}), r"mixed size: slices of Rows x Columns 16x8, 8x8"),
    ("spacing", _headers([0, 2, 4], s0={"pixel_spacing": [0.5, 0.5]}), r"mixed PixelSpacing"),
    ("no position", _headers([0, 2, 4], s1={"image_position_patient": None}), r"1 of 3 slices lack ImagePositionPatient"),
    ("one slice", _headers([0]), r"at least 2 slices"),
]


@pytest.mark.parametrize(("case", "headers", "message"), GEOMETRY_CASES, ids=[c[0] for c in GEOMETRY_CASES])
def test_inconsistent_geometry_is_an_error_naming_the_series_and_the_problem(case, headers, message) -> None:
    with pytest.raises(InputError, match=rf"^ser/ies: .*{message}"):
        series_geometry(headers, tolerance=0.1, name="ser/ies")


def test_tolerance_none_sorts_without_checking_spacing() -> None:
    geometry = series_geometry(_headers([8, 0, 2, 4]), tolerance=None)
    assert geometry.order == [1, 2, 3, 0]


def test_gap_in_a_written_series_is_reported_by_assemble(tmp_path) -> None:
    paths = write_series(tmp_path / "gap", ramp_volume(slices=5), z=[0, 2, 4, 6, 10])
    with pytest.raises(InputError, match="gap"):
        assemble_series(paths)


def write_enhanced(path: Path, hu: np.ndarray, z: list[float]) -> np.ndarray:
    """An Enhanced CT object whose frame ``f`` lies at ``z[f]`` (per-frame rescale); returns the z order."""
    from pydicom.sequence import Sequence
    from pydicom.uid import EnhancedCTImageStorage

    def frame_group(zz: float, intercept: float) -> Dataset:
        group, pos, rescale = Dataset(), Dataset(), Dataset()
        pos.ImagePositionPatient = [-100.0, -90.0, zz]
        rescale.RescaleSlope, rescale.RescaleIntercept, rescale.RescaleType = 1, intercept, "HU"
        group.PlanePositionSequence = Sequence([pos])
        group.PixelValueTransformationSequence = Sequence([rescale])
        return group

    n = len(z)
    shared, orient, measures = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = AXIAL
    measures.PixelSpacing, measures.SliceThickness = [0.8, 0.8], 2.0
    shared.PlaneOrientationSequence, shared.PixelMeasuresSequence = Sequence([orient]), Sequence([measures])
    order = np.argsort(z)
    rank = np.empty(n, int)
    rank[order] = np.arange(n)  # frame f holds slice rank[f] of hu
    intercepts = [-1024.0 if f % 2 else -1000.0 for f in range(n)]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = EnhancedCTImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID = "PAT-MF", generate_uid(), generate_uid()
    ds.Modality = "CT"
    ds.set_pixel_data(np.stack([hu[..., rank[f]] - intercepts[f] for f in range(n)]).astype(np.int16), "MONOCHROME2", 16)
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    ds.PerFrameFunctionalGroupsSequence = Sequence([frame_group(z[f], intercepts[f]) for f in range(n)])
    ds.save_as(path, enforce_file_format=True)
    return order


def test_enhanced_multiframe_object_is_assembled_by_its_per_frame_positions(tmp_path) -> None:
    hu = ramp_volume(slices=5)
    order = write_enhanced(tmp_path / "enhanced.dcm", hu, [6.0, 0.0, 8.0, 2.0, 4.0])
    vol = assemble_series([tmp_path / "enhanced.dcm"])
    assert vol.pixels.shape == (1, 12, 10, 5) and vol.order == list(order)
    np.testing.assert_array_equal(vol.pixels[0], hu)  # per-frame rescale applied, frames sorted by z
    np.testing.assert_allclose(vol.affine[:3, 2], [0.0, 0.0, 2.0])


def test_enhanced_multiframe_ct_is_ingested_as_a_volume(tmp_path) -> None:
    import pandas as pd

    from medlora.config import DataConfig, PreprocessConfig, ViewConfig
    from medlora.io.ingest import run_ingest
    from medlora.transforms.samples import expand_views

    write_enhanced(tmp_path / "mf.dcm", ramp_volume(slices=6), [0.0, 2.0, 4.0, 6.0, 8.0, 12.0])  # a gap
    write_enhanced(tmp_path / "ok.dcm", ramp_volume(slices=6), [10.0, 2.0, 4.0, 6.0, 8.0, 0.0])
    pd.DataFrame({"path": ["mf.dcm", "ok.dcm"], "label": ["normal", "abnormal"]}).to_csv(tmp_path / "labels.csv", index=False)
    result = run_ingest(DataConfig(root=tmp_path, label_key="path", volume_min_slices=6, volume_fallback=False))
    m = expand_views(result.manifest, PreprocessConfig(view=ViewConfig(kind="every_k", k=2)))
    assert list(m["kind"]) == ["series"] * 3 and list(m["view_index"]) == [0, 1, 2] and set(m["frames"]) == {6}
    assert list(result.skipped["path"]) == ["mf.dcm"] and "mf.dcm (6 frames)" in result.skipped["reason"].iloc[0]
    assert "gap" in result.skipped["reason"].iloc[0]
