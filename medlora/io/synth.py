"""Synthetic CT-like phantom studies written as real DICOM files (the embedded demo dataset).

Each patient has one study with one axial series of ``images_per_patient`` slices: a body
ellipse (soft tissue), two lungs (air-filled parenchyma), a spine (bone) and noise. About
``abnormal_fraction`` of the studies carry a spherical nodule in one lung that is visible on every
slice of the series. Pixels are stored as unsigned 16-bit with ``RescaleIntercept=-1024`` so that
readers must apply the Modality LUT to get Hounsfield units, and each file carries a lung
``WindowCenter/WindowWidth``. Patients carry synthetic names, IDs and birth dates so that
de-identification can be tested. Everything is deterministic from ``seed``.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import SynthConfig

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LABELS_FILE = "labels.csv"


@dataclass
class SynthResult:
    root: Path
    labels_csv: Path
    patients: int
    studies: int
    images: int
    abnormal_studies: int


def _phantom(rng: np.random.Generator, size: int, z: float, lesion: tuple[float, float, float, float] | None) -> np.ndarray:
    """One slice in HU. ``lesion`` = (row, col, z-centre, radius) in pixels, or None."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    hu = np.full((size, size), -1000.0, dtype=np.float32)  # air outside the body
    body = ((yy - c) / (0.38 * size)) ** 2 + ((xx - c) / (0.46 * size)) ** 2 <= 1
    hu[body] = 40.0
    for side in (-1, 1):
        lung = ((yy - c * 0.95) / (0.27 * size)) ** 2 + ((xx - c - side * 0.2 * size) / (0.14 * size)) ** 2 <= 1
        hu[lung] = -850.0
    spine = (yy - c * 1.55) ** 2 + (xx - c) ** 2 <= (0.07 * size) ** 2
    hu[spine] = 700.0
    if lesion is not None:
        r0, c0, z0, rad = lesion
        r_slice2 = rad**2 - (z - z0) ** 2
        if r_slice2 > 0:
            nodule = (yy - r0) ** 2 + (xx - c0) ** 2 <= r_slice2
            hu[nodule] = 30.0
    hu += rng.normal(0, 25, size=hu.shape).astype(np.float32)
    return hu


def _dataset(pixels_hu: np.ndarray, ids: dict[str, str], index: int, spacing: float, z_mm: float):
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = ids["sop"]
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.SOPInstanceUID = ids["sop"]
    ds.StudyInstanceUID = ids["study"]
    ds.SeriesInstanceUID = ids["series"]
    ds.FrameOfReferenceUID = ids["frame"]
    ds.PatientName = ids["name"]
    ds.PatientID = ids["patient"]
    ds.PatientBirthDate = ids["birth"]
    ds.PatientSex = ids["sex"]
    ds.AccessionNumber = ids["accession"]
    ds.StudyDate = ids["date"]
    ds.StudyDescription = "Synthetic chest phantom"
    ds.Modality = "CT"
    ds.Manufacturer = "medlora-synth"
    ds.InstanceNumber = index + 1
    ds.SeriesNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, z_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = spacing
    ds.Rows, ds.Columns = pixels_hu.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.WindowCenter = -600
    ds.WindowWidth = 1500
    stored = np.clip(np.round(pixels_hu + 1024), 0, 65535).astype(np.uint16)
    ds.PixelData = stored.tobytes()
    return ds


def write_phantoms(out: Path, cfg: SynthConfig) -> SynthResult:
    """Write the phantom dataset under ``out`` (``<patient>/<study>/<series>/IM####.dcm`` + labels.csv)."""
    from pydicom.uid import generate_uid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    n_abnormal = int(round(cfg.patients * cfg.abnormal_fraction))
    abnormal = np.zeros(cfg.patients, dtype=bool)
    abnormal[rng.choice(cfg.patients, n_abnormal, replace=False)] = True
    size, spacing = cfg.size, 350.0 / cfg.size
    rows: list[dict[str, str]] = []
    images = 0
    for p in range(cfg.patients):
        uid = lambda kind, p=p: generate_uid(entropy_srcs=["medlora-synth", str(cfg.seed), str(p), kind])  # noqa: E731
        ids = {
            "study": uid("study"),
            "series": uid("series"),
            "frame": uid("frame"),
            "name": f"Phantom^Patient{p:04d}",
            "patient": f"PH{cfg.seed:02d}{p:05d}",
            "birth": f"19{40 + p % 50:02d}0{1 + p % 9}1{p % 10}",
            "sex": "MF"[p % 2],
            "accession": f"ACC{cfg.seed:02d}{p:06d}",
            "date": "20240115",
        }
        lesion = None
        if abnormal[p]:
            side = rng.choice([-1, 1])
            rad = rng.uniform(0.06, 0.1) * size
            lesion = (
                size / 2 * 0.95 + rng.uniform(-0.12, 0.12) * size,
                size / 2 + side * 0.2 * size + rng.uniform(-0.04, 0.04) * size,
                (cfg.images_per_patient - 1) / 2 + rng.uniform(-0.5, 0.5),
                float(rad),
            )
        series_dir = out / f"patient{p:04d}" / "study1" / "series1"
        series_dir.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.images_per_patient):
            hu = _phantom(rng, size, float(i), lesion)
            ids["sop"] = uid(f"sop{i}")
            _dataset(hu, ids, i, spacing, z_mm=i * spacing).save_as(series_dir / f"IM{i + 1:04d}.dcm", enforce_file_format=True)
            images += 1
        rows.append({"StudyInstanceUID": ids["study"], "label": "abnormal" if abnormal[p] else "normal"})
    labels = out / LABELS_FILE
    with labels.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["StudyInstanceUID", "label"])
        w.writeheader()
        w.writerows(rows)
    log.info("wrote %d phantom studies (%d abnormal, %d images) to %s", cfg.patients, n_abnormal, images, out)
    return SynthResult(out, labels, cfg.patients, cfg.patients, images, n_abnormal)
