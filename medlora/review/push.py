"""``medlora predict … --push URL``: a bundle's findings back to the PACS, beside the images they were made on.

For every study a bundle scored (a study medlora could not read gets nothing), one Comprehensive SR
with the findings and one Secondary Capture with the saliency map of the study's highest-scoring
image (:mod:`medlora.io.dicomweb.objects`) are sent to ``URL`` by STOW-RS
(:mod:`medlora.io.dicomweb.push`: what the server already holds is skipped). The study's raw
identifiers are read here from the scored files' headers, only to build these objects; they go to
that server and nowhere else (no log line or message names them). A saliency map that cannot be
drawn leaves that study without its Secondary Capture (a warning counts them), never without its SR.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ..bundle.bundle import Bundle
from ..bundle.manifest import MANIFEST_FILE
from ..bundle.predict import Predictor, PredictResult, collect_files
from ..bundle.samples import DEFAULT_RULES, plan_samples, sample_tensors
from ..errors import MedloraError
from ..hashing import sha256_file
from ..io.deid import pseudonym
from ..io.dicomweb.objects import Algorithm, FindingCall, build_sc, build_sr, render_overlay
from ..io.dicomweb.push import PushResult, push
from ..transforms.pipeline import build_transforms
from .saliency import display_pair, saliency_map

log = logging.getLogger(__name__)


@dataclass
class SourceStudy:
    """The readable, scored DICOM files of one study and their headers (raw identifiers: memory only)."""

    uid: str
    files: list[Path] = field(default_factory=list)
    headers: list[Any] = field(default_factory=list)


def algorithm_of(bundle: Bundle) -> Algorithm:
    """The bundle as the SR names it: its folder name (``<dataset>-<method>`` for the generic ``bundle``
    folder a run writes), sha256 (of ``MANIFEST.sha256``, which pins every file of an exported bundle;
    else of its weights), base and medlora version."""
    from .. import __version__

    pin = bundle.path / MANIFEST_FILE
    digest = sha256_file(pin if pin.is_file() else bundle.weights_file)
    name = bundle.name
    if name == "bundle":
        name = f"{(bundle.meta.get('dataset') or {}).get('name') or 'medlora'}-{bundle.method}"
    return Algorithm(name, digest, str(bundle.meta["base"].get("timm_name", "")), __version__)


def source_studies(files: list[Path], secret: bytes | str, failed: set[str]) -> dict[str, SourceStudy]:
    """Study key (as predict makes it) → its DICOM files; files that failed and files without a
    StudyInstanceUID (nothing to put a result beside) are left out."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    out: dict[str, SourceStudy] = {}
    for f in files:
        if str(f) in failed:
            continue
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except (InvalidDicomError, OSError, ValueError):
            continue  # NIfTI or unreadable: predict already reported it
        uid = str(getattr(ds, "StudyInstanceUID", "") or "").strip()
        if not uid or "SOPInstanceUID" not in ds:
            continue
        study = out.setdefault(pseudonym(uid, secret, "stu"), SourceStudy(uid))
        study.files.append(f)
        study.headers.append(ds)
    return out


def findings_of(bundle: Bundle, col: str, row: pd.Series) -> list[FindingCall]:
    """The bundle's calls of one study row: "abnormal" (or "any finding") and each output with a threshold."""
    out = []
    if bundle.binary_call:
        name = str(bundle.meta["labels"].get("abnormal") or "abnormal")
        out.append(FindingCall(name, float(row[f"score{col}"]), bundle.threshold))
    for name, threshold in bundle.output_thresholds.items():
        out.append(FindingCall(name, float(row[f"score.{name}{col}"]), threshold))
    return [f for f in out if not (math.isnan(f.score) or math.isnan(f.threshold))]


def _score_column(bundle: Bundle, col: str) -> str:
    return f"score{col}" if bundle.binary_call else f"score.{bundle.outputs[0]}{col}"


def saliency_picture(predictor: Predictor, index: int, transform: Any, study: SourceStudy, samples: pd.DataFrame,
                     algorithm: Algorithm, findings: list[FindingCall]) -> tuple[Any, Any]:
    """(RGB picture, header of the source image it shows) of the study's highest-scoring sample;
    ``transform``: the bundle's preprocessing (``build_transforms``)."""
    from ..io.dicom import read_dicom_header

    bundle, col = predictor.bundles[index], predictor.columns[index]
    column = _score_column(bundle, col)
    best = str(samples.loc[samples[column].astype(float).idxmax(), "sample_id"])
    pre, _, mean, std = bundle.preprocess()
    headers = {f: read_dicom_header(f) for f in study.files}
    for spec in plan_samples(headers, [], bundle.meta.get("samples") or DEFAULT_RULES, predictor.secret):
        for sid, image in sample_tensors(spec, transform, pre, predictor.secret):
            if sid != best:
                continue
            slot = predictor.slots[index]
            if slot.activate is not None:
                slot.activate()
            heat, _ = saliency_map(slot.model, image)
            ref = study.headers[study.files.index(spec.files[len(spec.files) // 2])]
            shown, heat, _ = display_pair(image, heat, mean, std)
            return render_overlay(shown, heat, algorithm, findings), ref
    raise ValueError("the study's highest-scoring sample was not found again")


def result_objects(predictor: Predictor, result: PredictResult, inputs: list[Path],
                   saliency: bool = True) -> list[Any]:
    """The SR (and, with ``saliency``, the Secondary Capture) of every scored study, for every bundle."""
    files, _ = collect_files(inputs)
    studies = source_studies(files, predictor.secret, set(result.errors["file"].astype(str)))
    objects: list[Any] = []
    no_picture = 0
    for index, (bundle, col) in enumerate(zip(predictor.bundles, predictor.columns, strict=True)):
        algorithm = algorithm_of(bundle)
        transform = build_transforms(*bundle.preprocess()) if saliency else None
        for _, row in result.studies.iterrows():
            study = studies.get(str(row["study_key"]))
            findings = findings_of(bundle, col, row) if study is not None and row["n_images"] else []
            if not findings:
                continue
            objects.append(build_sr(algorithm, study.headers, findings))
            if not saliency:
                continue
            own = result.samples[result.samples["study_key"] == row["study_key"]]
            try:
                rgb, ref = saliency_picture(predictor, index, transform, study, own, algorithm, findings)
            except (MedloraError, RuntimeError, ValueError) as err:
                no_picture += 1
                log.debug("saliency picture not drawn: %s", type(err).__name__)
                continue
            objects.append(build_sc(algorithm, study.headers, findings, rgb, ref))
    if no_picture:
        log.warning("push: %d stud(ies) without a saliency Secondary Capture (the map could not be drawn)", no_picture)
    return objects


def push_predictions(predictor: Predictor, result: PredictResult, inputs: list[Path], url: str,
                     saliency: bool = True) -> PushResult:
    """Build the result objects of ``result`` and send them to ``url`` (skipping those already there)."""
    objects = result_objects(predictor, result, inputs, saliency)
    log.info("push: %d result object(s) for %d bundle(s)", len(objects), len(predictor.bundles))
    return push(url, objects)
