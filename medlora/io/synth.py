"""Synthetic CT-like phantom studies written as real DICOM files (the embedded demo dataset).

Each patient has one study with one axial series of ``images_per_patient`` slices: a body
ellipse (soft tissue), two lungs (air-filled parenchyma), a spine (bone) and noise. About
``abnormal_fraction`` of the studies carry a spherical nodule in one lung that is visible on every
slice of the series. Pixels are stored as unsigned 16-bit with ``RescaleIntercept=-1024`` so that
readers must apply the Modality LUT to get Hounsfield units, and each file carries a lung
``WindowCenter/WindowWidth``. Patients carry synthetic names, IDs and birth dates so that
de-identification can be tested. Everything is deterministic from ``seed``. With ``lesion_slices`` the
nodule is an ellipsoid spanning about that many slices at a random height of the series: a volume
phantom whose abnormal studies show the lesion on a few slices only (study-level training's test).

With ``findings`` (multi-label mode) every study carries each listed lesion kind independently
(``nodule``: a solid disk in a lung; ``effusion``: fluid filling the base of one lung;
``cardiomegaly``: an enlarged heart overlapping both lungs; ``calcification``: a chain of dense
specks along the lateral edge of a lung), and ``labels.csv`` holds one 0/1 column per kind (``data.task: multilabel``).

``difficulty`` (:class:`~medlora.config.SynthConfig`) sets how hard the task is:

* ``easy``: a flat background and a large solid nodule (radius 6-10% of the field of view, +880 HU
  against the lung); any working pipeline reaches a test AUROC near 1. Tests use it to check machinery.
* ``subtle``: anatomy varies per patient (body and lung size, position), lungs are textured
  (smoothed noise) and hold vessel cross-sections that look like small nodules in *every* study,
  image noise is higher, and nodule conspicuity is graded (radius 4-10%, +200 to +880 HU with a soft
  edge; :data:`SUBTLE`): the large dense ones are easy, the small faint ones look like vessels. The
  demos use it so that methods and shot counts give different, imperfect results.

``site`` (:data:`SITES`) imitates where the images were made: ``a`` is the demo's own scanner; ``b`` is a
second hospital whose scanner reconstructs thicker, smoother slices (a Gaussian blur), is noisier, reads
a constant HU offset higher, compresses contrast around soft tissue, and names another manufacturer. Its
phantoms are drawn from other patients (the seed is offset), so they test an adapter at a site it was
not trained on; a prevalence of its own is ``abnormal_fraction``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..config import SynthConfig
from ..errors import InputError

log = logging.getLogger(__name__)

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
LABELS_FILE = "labels.csv"
STAMP_FILE = "synth.json"  # the settings (and generator version) a phantom folder was written with
GENERATOR_VERSION = 2  # raised whenever the same settings would draw other pixels
_OURS = re.compile(r"patient\d{4}|labels\.csv|synth\.json")


@dataclass
class SynthResult:
    root: Path
    labels_csv: Path
    patients: int
    studies: int
    images: int
    abnormal_studies: int


def _slice_radius2(rad: float, z: float, z0: float, z_half: float | None) -> float:
    """The squared radius on slice ``z`` of a lesion of in-plane radius ``rad`` centred on slice ``z0``: a
    sphere, or with ``z_half`` an ellipsoid reaching ``z_half`` slices either side."""
    dz = (z - z0) if z_half is None else (z - z0) * rad / z_half
    return rad**2 - dz**2


def _phantom(rng: np.random.Generator, size: int, z: float, lesion: tuple[float, float, float, float] | None,
             z_half: float | None = None) -> np.ndarray:
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
        r_slice2 = _slice_radius2(rad, z, z0, z_half)
        if r_slice2 > 0:
            nodule = (yy - r0) ** 2 + (xx - c0) ** 2 <= r_slice2
            hu[nodule] = 30.0
    hu += rng.normal(0, 25, size=hu.shape).astype(np.float32)
    return hu


@dataclass
class _Anatomy:
    """One subtle-phantom patient: body/lung geometry, vessel cross-sections and an optional nodule.

    Vessels are ``(row, col, radius, contrast HU, drift per slice)``; the nodule is ``(row, col,
    z-centre, radius, contrast HU)``. Lengths are in pixels.
    """

    body: tuple[float, float, float, float]  # centre row, centre col, half-height, half-width
    lungs: tuple[tuple[float, float, float, float], ...]  # per side: centre row, centre col, half-h, half-w
    vessels: list[tuple[float, float, float, float, float, float]]
    nodule: tuple[float, float, float, float, float] | None


def _in_lung(rng: np.random.Generator, lung: tuple[float, float, float, float], margin: float) -> tuple[float, float]:
    """A point drawn uniformly inside the inner ``1 - margin`` of a lung ellipse."""
    r0, c0, h, w = lung
    angle, rho = rng.uniform(0, 2 * np.pi), np.sqrt(rng.uniform(0, 1)) * (1 - margin)
    return r0 + rho * h * np.sin(angle), c0 + rho * w * np.cos(angle)


# The subtle phantoms' knobs: ranges are (low, high) drawn per patient; lengths are fractions of the
# field of view, contrasts HU above the lung. Nodule conspicuity is graded as in real screening: the
# largest, densest nodules are plain to see, the smallest and faintest are hard to tell from the
# vessel cross-sections every study has, so no model is perfect and better models find more of the
# middle ones. Measured with a 6-block ViT-Ti/8 at 64 px on 200 patients (README, "The demo").
SUBTLE = {
    "vessels": (3, 7),  # cross-sections per patient
    "vessel_radius": (0.012, 0.025),
    "vessel_hu": (200.0, 600.0),
    "nodule_radius": (0.04, 0.1),
    "nodule_hu": (200.0, 880.0),
    "nodule_margin": 0.6,  # nodules lie in the inner 1 - margin of a lung ellipse
    "noise_hu": 40.0,
}


def _subtle_anatomy(rng: np.random.Generator, size: int, slices: int, abnormal: bool) -> _Anatomy:
    c = size / 2
    scale = rng.uniform(0.9, 1.08)
    body = (c + rng.uniform(-0.03, 0.03) * size, c + rng.uniform(-0.03, 0.03) * size,
            0.38 * size * scale * rng.uniform(0.95, 1.05), 0.46 * size * scale)
    lungs = tuple((body[0] - 0.02 * size + rng.uniform(-0.02, 0.02) * size,
                   body[1] + side * 0.2 * size * scale + rng.uniform(-0.015, 0.015) * size,
                   0.27 * size * scale * rng.uniform(0.9, 1.05), 0.14 * size * scale * rng.uniform(0.9, 1.1))
                  for side in (-1, 1))
    vessels = []
    for _ in range(int(rng.integers(*SUBTLE["vessels"]))):
        lung = lungs[int(rng.integers(0, 2))]
        r, col = _in_lung(rng, lung, 0.15)
        vessels.append((r, col, rng.uniform(*SUBTLE["vessel_radius"]) * size, rng.uniform(*SUBTLE["vessel_hu"]),
                        rng.uniform(-0.6, 0.6), rng.uniform(-0.6, 0.6)))
    nodule = None
    if abnormal:
        r, col = _in_lung(rng, lungs[int(rng.integers(0, 2))], SUBTLE["nodule_margin"])
        nodule = (r, col, (slices - 1) / 2 + rng.uniform(-0.5, 0.5), rng.uniform(*SUBTLE["nodule_radius"]) * size,
                  rng.uniform(*SUBTLE["nodule_hu"]))
    return _Anatomy(body, lungs, vessels, nodule)


def _ellipse(yy: np.ndarray, xx: np.ndarray, e: tuple[float, float, float, float]) -> np.ndarray:
    return ((yy - e[0]) / e[2]) ** 2 + ((xx - e[1]) / e[3]) ** 2 <= 1


def _subtle_phantom(rng: np.random.Generator, size: int, z: float, a: _Anatomy, z_half: float | None = None) -> np.ndarray:
    """One subtle slice in HU: textured lungs, vessels drifting with ``z``, a faint soft nodule."""
    from scipy.ndimage import gaussian_filter

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    hu = np.full((size, size), -1000.0, dtype=np.float32)
    hu[_ellipse(yy, xx, a.body)] = 40.0
    texture = gaussian_filter(rng.normal(0, 1, size=hu.shape), sigma=max(size / 40, 1.0)).astype(np.float32)
    texture *= 45.0 / max(float(texture.std()), 1e-6)
    lung_mask = np.zeros_like(hu, dtype=bool)
    for lung in a.lungs:
        lung_mask |= _ellipse(yy, xx, lung)
    hu[lung_mask] = -850.0 + texture[lung_mask]
    spine = (yy - a.body[0] - 0.72 * a.body[2]) ** 2 + (xx - a.body[1]) ** 2 <= (0.07 * size) ** 2
    hu[spine] = 700.0
    inside = np.zeros_like(hu)
    for r, col, rad, contrast, dr, dc in a.vessels:
        d2 = (yy - r - dr * z) ** 2 + (xx - col - dc * z) ** 2
        inside += contrast * np.exp(-d2 / (2 * rad**2))
    if a.nodule is not None:
        r, col, z0, rad, contrast = a.nodule
        r_slice2 = _slice_radius2(rad, z, z0, z_half)
        if r_slice2 > 0:
            d2 = (yy - r) ** 2 + (xx - col) ** 2
            inside += contrast / (1 + np.exp((np.sqrt(d2) - np.sqrt(r_slice2)) / 0.6))  # solid, soft edge
    hu[lung_mask] += inside[lung_mask]
    hu += rng.normal(0, SUBTLE["noise_hu"], size=hu.shape).astype(np.float32)
    return hu


# How a second site's scanner differs from the demo's (site ``a``): see the module docstring.
SITES: dict[str, dict[str, float | str] | None] = {
    "a": None,
    "b": {"blur_px": 0.9, "noise_hu": 35.0, "offset_hu": 60.0, "contrast": 0.8, "slice_factor": 2.0,
          "manufacturer": "medlora-synth site B", "seed_offset": 1000},
}


def _site_effects(hu: np.ndarray, rng: np.random.Generator, site: dict[str, float | str] | None) -> np.ndarray:
    """A slice as the site's scanner would show it (unchanged for the demo's own site)."""
    if site is None:
        return hu
    from scipy.ndimage import gaussian_filter

    out = gaussian_filter(hu, sigma=float(site["blur_px"]))
    out = 40.0 + (out - 40.0) * float(site["contrast"]) + float(site["offset_hu"])
    return (out + rng.normal(0, float(site["noise_hu"]), size=out.shape)).astype(np.float32)


def _dataset(pixels_hu: np.ndarray, ids: dict[str, str], index: int, spacing: float, z_mm: float,
             site: dict[str, float | str] | None = None):
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
    ds.Manufacturer = "medlora-synth" if site is None else str(site["manufacturer"])
    ds.InstanceNumber = index + 1
    ds.SeriesNumber = 1
    ds.ImagePositionPatient = [0.0, 0.0, z_mm]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing = [spacing, spacing]
    ds.SliceThickness = spacing if site is None else spacing * float(site["slice_factor"])
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


def _finding_params(rng: np.random.Generator, kind: str, size: int) -> dict[str, float]:
    """Where and how large a lesion kind is in one study (the same on every slice)."""
    c = size / 2
    side = float(rng.choice([-1, 1]))
    if kind == "nodule":
        return {"row": c * 0.95 + rng.uniform(-0.12, 0.12) * size, "col": c + side * 0.2 * size,
                "radius": rng.uniform(0.05, 0.08) * size}
    if kind == "effusion":  # fluid filling the base (posterior, high rows) of one lung
        return {"side": side, "level": c * 0.95 + rng.uniform(0.05, 0.12) * size}
    if kind == "cardiomegaly":  # an enlarged heart between the lungs, overlapping both
        return {"radius": rng.uniform(0.17, 0.21) * size}
    return {"row": c * 0.95 + rng.uniform(-0.15, 0.15) * size, "col": c + side * 0.27 * size}  # lateral lung edge


def _add_finding(hu: np.ndarray, kind: str, f: dict[str, float]) -> None:
    """Draw one lesion kind into a slice (HU, in place)."""
    size = hu.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2
    if kind == "nodule":
        hu[(yy - f["row"]) ** 2 + (xx - f["col"]) ** 2 <= f["radius"] ** 2] = 30.0
    elif kind == "effusion":
        lung = ((yy - c * 0.95) / (0.27 * size)) ** 2 + ((xx - c - f["side"] * 0.2 * size) / (0.14 * size)) ** 2 <= 1
        hu[lung & (yy >= f["level"])] = 15.0
    elif kind == "cardiomegaly":
        hu[((yy - c * 1.05) / f["radius"]) ** 2 + ((xx - c) / (1.2 * f["radius"])) ** 2 <= 1] = 45.0
    else:  # calcification: a vertical chain of very dense specks along the lateral lung edge
        for dy, dx in ((-3, 0), (0, 0), (3, 0)):
            hu[(yy - f["row"] - dy) ** 2 + (xx - f["col"] - dx) ** 2 <= 1.5] = 1500.0


def write_phantoms(out: Path, cfg: SynthConfig) -> SynthResult:
    """Write the phantom dataset under ``out`` (``<patient>/<study>/<series>/IM####.dcm`` + labels.csv)."""
    from pydicom.uid import generate_uid

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    site = SITES[cfg.site]
    seed = cfg.seed + (int(site["seed_offset"]) if site else 0)  # another site: other patients
    rng = np.random.default_rng(seed)
    n_abnormal = int(round(cfg.patients * cfg.abnormal_fraction))
    abnormal = np.zeros(cfg.patients, dtype=bool)
    abnormal[rng.choice(cfg.patients, n_abnormal, replace=False)] = True
    kinds = list(cfg.findings or [])
    frng = np.random.default_rng([seed, 15])  # multi-label draws: the binary phantoms stay as they were
    zrng = np.random.default_rng([seed, 16])  # lesion heights (lesion_slices): the other phantoms stay as they were
    present = frng.random((cfg.patients, len(kinds))) < cfg.abnormal_fraction
    if kinds:
        abnormal[:] = False  # the lesion kinds replace the single nodule
        n_abnormal = int(present.any(axis=1).sum())
    size, spacing = cfg.size, 350.0 / cfg.size
    rows: list[dict[str, str]] = []
    images = 0
    for p in range(cfg.patients):
        uid = lambda kind, p=p: generate_uid(entropy_srcs=["medlora-synth", str(seed), str(p), kind])  # noqa: E731
        ids = {
            "study": uid("study"),
            "series": uid("series"),
            "frame": uid("frame"),
            "name": f"Phantom^Patient{p:04d}",
            "patient": f"PH{seed:02d}{p:05d}",
            "birth": f"19{40 + p % 50:02d}0{1 + p % 9}1{p % 10}",
            "sex": "MF"[p % 2],
            "accession": f"ACC{seed:02d}{p:06d}",
            "date": "20240115",
        }
        lesion = None
        anatomy = _subtle_anatomy(rng, size, cfg.images_per_patient, bool(abnormal[p])) \
            if cfg.difficulty == "subtle" else None
        if abnormal[p] and anatomy is None:
            side = rng.choice([-1, 1])
            rad = rng.uniform(0.06, 0.1) * size
            lesion = (
                size / 2 * 0.95 + rng.uniform(-0.12, 0.12) * size,
                size / 2 + side * 0.2 * size + rng.uniform(-0.04, 0.04) * size,
                (cfg.images_per_patient - 1) / 2 + rng.uniform(-0.5, 0.5),
                float(rad),
            )
        lesions = {k: _finding_params(frng, k, size) for k, has in zip(kinds, present[p], strict=True) if has}
        z_half = None
        if cfg.lesion_slices and abnormal[p]:  # the lesion on a few slices at a random height (own draws)
            z_half = cfg.lesion_slices / 2
            n = cfg.images_per_patient
            z0 = float(zrng.uniform(min(z_half, (n - 1) / 2), max(n - 1 - z_half, (n - 1) / 2)))
            if lesion is not None:
                lesion = (*lesion[:2], z0, lesion[3])
            if anatomy is not None and anatomy.nodule is not None:
                anatomy.nodule = (*anatomy.nodule[:2], z0, *anatomy.nodule[3:])
        series_dir = out / f"patient{p:04d}" / "study1" / "series1"
        series_dir.mkdir(parents=True, exist_ok=True)
        for i in range(cfg.images_per_patient):
            hu = _phantom(rng, size, float(i), lesion, z_half) if anatomy is None else \
                _subtle_phantom(rng, size, float(i), anatomy, z_half)
            for kind, params in lesions.items():
                _add_finding(hu, kind, params)
            hu = _site_effects(hu, rng, site)
            ids["sop"] = uid(f"sop{i}")
            _dataset(hu, ids, i, spacing, z_mm=i * spacing, site=site).save_as(series_dir / f"IM{i + 1:04d}.dcm", enforce_file_format=True)
            images += 1
        if kinds:
            rows.append({"StudyInstanceUID": ids["study"], **{k: str(int(h)) for k, h in zip(kinds, present[p], strict=True)}})
        else:
            rows.append({"StudyInstanceUID": ids["study"], "label": "abnormal" if abnormal[p] else "normal"})
    labels = out / LABELS_FILE
    with labels.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["StudyInstanceUID", *(kinds or ["label"])])
        w.writeheader()
        w.writerows(rows)
    (out / STAMP_FILE).write_text(json.dumps(_stamp(cfg), indent=1, sort_keys=True))
    log.info("wrote %d %s phantom studies (%d abnormal, %d images) to %s", cfg.patients, cfg.difficulty, n_abnormal,
             images, out)
    return SynthResult(out, labels, cfg.patients, cfg.patients, images, n_abnormal)


def _stamp(cfg: SynthConfig) -> dict:
    settings = cfg.model_dump(mode="json")
    if settings.get("site") == "a":  # the demo's own site: folders written before sites existed stay valid
        del settings["site"]
    if settings.get("lesion_slices") is None:  # likewise for folders written before lesion_slices existed
        settings.pop("lesion_slices", None)
    return {"generator": GENERATOR_VERSION, **settings}


def ensure_phantoms(root: Path, cfg: SynthConfig) -> None:
    """Write the phantoms under ``root`` unless it already holds exactly these (same settings and
    generator). A folder written with other settings is rewritten; a folder that holds anything
    medlora did not write is never touched (an error names it)."""
    root = Path(root)
    stamp = root / STAMP_FILE
    if stamp.is_file() and json.loads(stamp.read_text()) == _stamp(cfg):
        return
    if root.exists() and any(root.iterdir()):
        foreign = sorted(p.name for p in root.iterdir() if not _OURS.fullmatch(p.name))
        if foreign:
            raise InputError(f"data.root {root} is not a phantom folder medlora wrote with data.synth = "
                             f"{cfg.model_dump(mode='json')} (it holds {', '.join(foreign[:3])}); point data.root "
                             "at an empty or missing folder, or remove data.synth to use the files there")
        log.warning("phantoms in %s were written with other settings or an older generator; writing them again", root)
        for p in root.iterdir():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    write_phantoms(root, cfg)
