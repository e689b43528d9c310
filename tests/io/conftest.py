"""Fixtures for the DICOM reader tests: tiny DICOM files built in ``tmp_path`` and the shared real data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

SHARED_DICOM = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "dicom"


def _shared_dicom(*parts: str) -> Path:
    path = SHARED_DICOM.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared data {path} is not available")
    return path


@pytest.fixture
def shared_dicom() -> Callable[..., Path]:
    """``shared_dicom("ct_3slice", "01.dcm")``: a file of ../shared/data/dicom, or skip when absent."""
    return _shared_dicom


def build_dataset(
    pixels: np.ndarray | None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    sop_class: str = CTImageStorage,
    **tags: Any,
) -> Dataset:
    """A minimal valid Part-10 dataset with ``pixels`` (or none) and extra ``tags`` by keyword."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientID = "PAT-001"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CT"
    if pixels is not None:
        ds.set_pixel_data(pixels, photometric, bits_stored or 8 * pixels.dtype.itemsize)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    return ds


@pytest.fixture
def make_dataset() -> Callable[..., Dataset]:
    """:func:`build_dataset`, for tests that edit the dataset before writing it."""
    return build_dataset


@pytest.fixture
def write_dicom(tmp_path: Path) -> Callable[..., Path]:
    """``write_dicom(name, pixels, **build_dataset_kwargs) -> path`` of a file written in tmp_path."""

    def _write(name: str, pixels: np.ndarray | None, **kwargs: Any) -> Path:
        path = tmp_path / name
        build_dataset(pixels, **kwargs).save_as(path, enforce_file_format=True)
        return path

    return _write
