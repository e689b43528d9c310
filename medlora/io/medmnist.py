"""MedMNIST npz files → a study folder medlora ingests like any other (real DICOM or NIfTI + labels.csv).

2D sets become one DICOM file per image: Secondary Capture Image Storage carrying the modality the
images came from (``US`` for BreastMNIST, ``DX`` for PneumoniaMNIST), MONOCHROME2, 8-bit unsigned,
pixels ``[row, column]`` exactly as in the npz, no pixel spacing (the resized images have none).
3D sets become one ``.nii.gz`` per volume, stored in the npz's axis order with a 1 mm isotropic
identity affine. MedMNIST has no patient identifiers, so every image is its own synthetic patient,
study and series; the UIDs are derived deterministically from dataset, size, split and index.

``labels.csv`` has columns ``path`` (relative to the output folder), ``label`` (the class *name*
from the dataset's data card, whose ``classes`` are listed in label-index order), ``split`` (the
official train/val/test split of the npz) and ``index`` (the image's position in its official
split). ``medmnist_source.json`` records the npz file, its md5 and the options used.

Official MedMNIST splits are not free of exact duplicates: BreastMNIST's train image 115 (malignant) has
the same pixels as test image 76 (normal or benign), and ten PneumoniaMNIST train images repeat val
images. medlora's leakage audit refuses such data, so by default an image whose exact pixels also sit
in a later evaluation split (test before val before train) is left out of the earlier one, keeping the
official val and test sets whole; the dropped images are listed in ``medmnist_source.json``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import ConfigError, InputError
from .datacard import DataCard, load_card
from .medmnist_info import dataset_info

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SIZES = (28, 64, 128, 224)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
LABELS_FILE = "labels.csv"
SOURCE_FILE = "medmnist_source.json"
Format = Literal["dicom", "nifti"]


@dataclass(frozen=True)
class MedmnistSpec:
    """How one MedMNIST set is written: image dimensionality and the DICOM modality / body part."""

    dims: Literal[2, 3]
    modality: str
    body_part: str


# Sets medlora has a data card for; class names come from the card (data_cards/<name>.md).
MEDMNIST_SETS: dict[str, MedmnistSpec] = {
    "breastmnist": MedmnistSpec(2, "US", "BREAST"),
    "pneumoniamnist": MedmnistSpec(2, "DX", "CHEST"),
    "adrenalmnist3d": MedmnistSpec(3, "CT", "ABDOMEN"),
}


@dataclass
class MedmnistResult:
    out: Path
    labels_csv: Path
    format: Format
    counts: dict[str, int] = field(default_factory=dict)  # images written per split
    seconds: float = 0.0

    @property
    def images(self) -> int:
        return sum(self.counts.values())


def spec_for(name: str) -> MedmnistSpec:
    """How ``name`` is written (any of the 18 MedMNIST sets); an unknown name is an error listing them."""
    if name in MEDMNIST_SETS:
        return MEDMNIST_SETS[name]
    info = dataset_info(name)
    return MedmnistSpec(info.dims, info.modality, info.body_part)


def default_card(name: str) -> Path | None:
    """``data_cards/<name>.md`` in the working directory, else in the repository medlora runs from; None
    when neither has one (the label names then come from :mod:`.medmnist_info`)."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        path = base / "data_cards" / f"{name}.md"
        if path.is_file():
            return path
    return None


def npz_filename(name: str, size: int) -> str:
    """MedMNIST's file naming: ``<name>.npz`` at 28 px, ``<name>_<size>.npz`` otherwise."""
    return f"{name}.npz" if size == 28 else f"{name}_{size}.npz"


def fetch_npz(name: str, size: int, cache: Path) -> Path:
    """Download ``name`` at ``size`` through the ``medmnist`` package (imported here, not a dependency)."""
    hint = f"pass --npz PATH to a local {npz_filename(name, size)} instead"
    try:
        import medmnist
    except ImportError:
        raise InputError(f"the medmnist package is not installed (pip install medmnist); {hint}") from None
    info = getattr(medmnist, "INFO", {}).get(name)
    if info is None:
        raise InputError(f"the installed medmnist package does not know {name!r}; {hint}")
    cache.mkdir(parents=True, exist_ok=True)
    try:
        getattr(medmnist, info["python_class"])(split="train", download=True, size=size, root=str(cache))
    except (OSError, RuntimeError, ValueError) as err:  # urllib's URLError is an OSError
        raise InputError(f"downloading {name} ({size} px) with medmnist failed ({err}); {hint}") from None
    path = cache / npz_filename(name, size)
    if not path.is_file():
        raise InputError(f"medmnist reported success but {path} does not exist; {hint}")
    return path


def load_npz(path: Path, spec: MedmnistSpec, n_classes: int,
             multilabel: bool = False) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (uint8 images, int labels (N,), or (N, findings) when ``multilabel``)}; checks keys,
    shapes, dimensionality and label range. 2D images are (N, H, W) or RGB (N, H, W, 3)."""
    if not path.is_file():
        raise InputError(f"MedMNIST file {path} does not exist")
    try:
        npz = np.load(path)
    except (OSError, ValueError) as err:
        raise InputError(f"MedMNIST file {path} is not a readable npz: {err}") from None
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    with npz:
        for split in SPLITS:
            for key in (f"{split}_images", f"{split}_labels"):
                if key not in npz.files:
                    raise InputError(f"MedMNIST file {path} has no array {key!r}; arrays are {sorted(npz.files)}")
            images, labels = npz[f"{split}_images"], npz[f"{split}_labels"]
            rgb = spec.dims == 2 and images.ndim == 4 and images.shape[-1] == 3  # PathMNIST, DermaMNIST, ...
            if images.ndim != spec.dims + 1 and not rgb:
                raise InputError(f"MedMNIST file {path}: {split}_images has shape {images.shape}; "
                                 f"expected (N, {', '.join(['size'] * spec.dims)}) for a {spec.dims}D set"
                                 + (" (or (N, size, size, 3) in colour)" if spec.dims == 2 else ""))
            if labels.ndim == 2 and labels.shape[1] == 1:
                labels = labels[:, 0]
            if multilabel:  # ChestMNIST: (N, findings) of 0/1
                if labels.shape != (len(images), n_classes) or not np.isin(labels, (0, 1)).all():
                    raise InputError(f"MedMNIST file {path}: {split}_labels has shape {labels.shape}; expected "
                                     f"({len(images)}, {n_classes}) of 0/1 for a multi-label set")
                out[split] = (images, labels.astype(np.int64))
                continue
            if labels.ndim != 1 or len(labels) != len(images):
                raise InputError(f"MedMNIST file {path}: {split}_labels has shape {labels.shape}; expected ({len(images)},) "
                                 f"or ({len(images)}, 1)")
            bad = (labels < 0) | (labels >= n_classes)
            if bad.any():
                raise InputError(f"MedMNIST file {path}: {split}_labels holds {sorted(set(labels[bad].tolist()))}, "
                                 f"outside 0..{n_classes - 1} of the card's classes")
            if images.dtype != np.uint8:
                raise InputError(f"MedMNIST file {path}: {split}_images is {images.dtype}; MedMNIST images are uint8")
            out[split] = (images, labels.astype(np.int64))
    return out


def limit_indices(labels: np.ndarray, limit: int | None) -> np.ndarray:
    """The first ``limit`` indices of a split, stratified by label (class proportions kept, every class kept)."""
    n = len(labels)
    if limit is None or limit >= n:
        return np.arange(n)
    if labels.ndim == 2:  # multi-label: stratified by "any finding"
        labels = labels.any(axis=1).astype(np.int64)
    chosen: list[np.ndarray] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        chosen.append(idx[: max(1, round(limit * len(idx) / n))])
    return np.sort(np.concatenate(chosen))


def cross_split_duplicates(splits: dict[str, tuple[np.ndarray, np.ndarray]],
                           keep: dict[str, np.ndarray]) -> list[dict[str, str | int]]:
    """Kept images whose exact pixels also appear in another split: the copy in test, else val, stays.

    Returns one record per image to drop (split, index, label, and the split/index/label it repeats).
    Repeats inside one split are not leakage and are kept.
    """
    owner: dict[bytes, tuple[str, int]] = {}
    dropped: list[dict[str, str | int]] = []
    for split in ("test", "val", "train"):
        images, labels = splits[split]
        for i in keep[split]:
            digest = hashlib.sha256(images[i].tobytes()).digest()
            first = owner.setdefault(digest, (split, int(i)))
            if first[0] != split:
                dropped.append({"split": split, "index": int(i), "label": _label_text(labels[i]),
                                "same_pixels_as": f"{first[0]}/{first[1]}",
                                "label_there": _label_text(splits[first[0]][1][first[1]])})
    return dropped


def _label_text(label: np.ndarray) -> int | str:
    """A class index, or a multi-label row as its 0/1 string."""
    return int(label) if np.ndim(label) == 0 else "".join(str(int(v)) for v in label)


def _uid(*parts: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=["medlora-medmnist", *parts])


def write_dicom(image: np.ndarray, path: Path, spec: MedmnistSpec, ident: str, description: str) -> None:
    """Write one 2D uint8 image as a Secondary Capture DICOM file; ``ident`` seeds its synthetic IDs/UIDs."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

    sop = _uid(ident, "sop")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SECONDARY_CAPTURE
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = SECONDARY_CAPTURE, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = _uid(ident, "study"), _uid(ident, "series")
    ds.PatientID = ds.PatientName = ident
    ds.PatientBirthDate = ds.PatientSex = ds.StudyDate = ds.StudyTime = ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ds.StudyID = ""
    ds.PatientIdentityRemoved = "YES"
    ds.StudyDescription = description
    ds.Modality, ds.BodyPartExamined, ds.ConversionType = spec.modality, spec.body_part, "WSD"
    ds.Manufacturer = "medlora-medmnist"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = "MedMNIST image, resized by the MedMNIST authors; written by medlora"
    ds.BurnedInAnnotation = "NO"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.Rows, ds.Columns = image.shape[:2]
    if image.ndim == 3:  # colour (PathMNIST, DermaMNIST, BloodMNIST, RetinaMNIST): interleaved RGB
        ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PlanarConfiguration = 3, "RGB", 0
    else:
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)


def write_nifti(volume: np.ndarray, path: Path) -> None:
    """Write one uint8 array as NIfTI-1 in its own axis order with a 1 mm isotropic identity affine."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume, dtype=np.uint8), np.eye(4))
    img.header.set_xyzt_units("mm")
    img.set_qform(np.eye(4), code=1)
    img.set_sform(np.eye(4), code=1)
    nib.save(img, str(path))


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_medmnist(name: str, out: Path, npz: Path | None = None, size: int | None = None,
                     fmt: Format | None = None, limit: int | None = None, card: Path | DataCard | None = None,
                     cache: Path | None = None, keep_duplicates: bool = False) -> MedmnistResult:
    """Convert MedMNIST set ``name`` into ``out`` (files per split, ``labels.csv``, ``medmnist_source.json``).

    ``npz``: a local copy; without it the file is downloaded with the ``medmnist`` package into ``cache``
    (default ``~/.medmnist``). ``size`` must match the npz's images when both are given. ``fmt``
    defaults to ``dicom`` for 2D and ``nifti`` for 3D sets (3D sets are NIfTI only). ``limit`` keeps
    the first N images of each split, stratified by label. ``card`` (default ``data_cards/<name>.md``)
    supplies the class names, in label-index order. Images repeating another split's pixels are left
    out (see the module docstring) unless ``keep_duplicates``, which leaves the leakage to the audit.
    """
    start = time.perf_counter()
    spec = spec_for(name)
    if size is not None and size not in SIZES:
        raise ConfigError(f"--size {size} is not a MedMNIST size; allowed: {', '.join(map(str, SIZES))}")
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit} must be at least 1")
    fmt = fmt or ("dicom" if spec.dims == 2 else "nifti")
    if spec.dims == 3 and fmt != "nifti":
        raise ConfigError(f"{name} is a 3D set and is written as NIfTI only (--format nifti), not {fmt}")
    out = Path(out)
    if out.is_dir() and any(out.iterdir()):
        raise InputError(f"--out {out} is not empty; convert into a new folder so no stale file is ingested")
    info = dataset_info(name)
    path = card if isinstance(card, DataCard) else (card or default_card(name))
    card = load_card(path) if path is not None and not isinstance(path, DataCard) else path
    if card is not None and card.task == "none":
        raise ConfigError(f"data card {card.path} has task: none; a MedMNIST card must list its classes")
    classes = list(card.classes) if card is not None else list(info.labels)  # label-index order
    multilabel = info.task == "multilabel"
    if npz is None:
        npz = fetch_npz(name, size or 28, cache or Path.home() / ".medmnist")
    npz = Path(npz)
    splits = load_npz(npz, spec, len(classes), multilabel)
    found = splits["train"][0].shape[1]
    if size is not None and found != size:
        raise InputError(f"MedMNIST file {npz} holds {found} px images but --size {size} was asked for")
    out.mkdir(parents=True, exist_ok=True)
    result = MedmnistResult(out, out / LABELS_FILE, fmt)
    rows: list[dict[str, str | int]] = []
    keeps = {split: limit_indices(splits[split][1], limit) for split in SPLITS}
    dropped = [] if keep_duplicates else cross_split_duplicates(splits, keeps)
    for d in dropped:
        log.warning("%s %s/%s (label %s) has the same pixels as %s (label %s): left out", name, d["split"], d["index"],
                    d["label"], d["same_pixels_as"], d["label_there"])
        keeps[str(d["split"])] = keeps[str(d["split"])][keeps[str(d["split"])] != d["index"]]
    from tqdm import tqdm

    for split in SPLITS:
        images, labels = splits[split]
        keep = keeps[split]
        (out / split).mkdir(exist_ok=True)
        for i in tqdm(keep, desc=f"{name} {split}", disable=None, leave=False):
            ident = f"{name}-{found}-{split}-{int(i):05d}"
            if fmt == "dicom":
                rel = f"{split}/{ident}.dcm"
                write_dicom(images[i], out / rel, spec, ident, f"MedMNIST {name} {found}px")
            else:
                rel = f"{split}/{ident}.nii.gz"
                write_nifti(images[i], out / rel)
            label = ({c: int(v) for c, v in zip(classes, labels[i], strict=True)} if multilabel
                     else {"label": classes[int(labels[i])]})
            rows.append({"path": rel, **label, "split": split, "index": int(i)})
        result.counts[split] = len(keep)
    with result.labels_csv.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", *(classes if multilabel else ["label"]), "split", "index"])
        w.writeheader()
        w.writerows(rows)
    (out / SOURCE_FILE).write_text(json.dumps({
        "dataset": name, "size": int(found), "npz": str(npz), "md5": _md5(npz), "format": fmt, "limit": limit,
        "card": str(card.path) if card else None, "card_version": card.version if card else None,
        "task": info.task, "ordinal": info.ordinal, ("findings" if multilabel else "classes"): classes,
        "counts": result.counts,
        "dropped_duplicates": dropped,
    }, indent=2))
    result.seconds = time.perf_counter() - start
    log.info("wrote %d %s files of %s (%s) to %s in %.1f s", result.images, fmt, name,
             ", ".join(f"{k}={v}" for k, v in result.counts.items()), out, result.seconds)
    return result
