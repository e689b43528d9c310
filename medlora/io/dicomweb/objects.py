"""The DICOM objects an adapter's findings go back to the PACS as, built with highdicom.

For one scored study:

* a **Comprehensive SR** holding a TID 1500 Measurement Report: per finding a qualitative evaluation
  (present / absent at the bundle's operating point) and the score as a numeric measurement, the
  algorithm identification (adapter name, version = its sha256, parameters: base and threshold), a
  device observer context (medlora and the adapter), and references to every source instance scored;
* a **Secondary Capture** image: the scored image with the saliency map over it and the burned-in
  line ``NOT FOR DIAGNOSTIC USE — <adapter name>`` (``BurnedInAnnotation`` YES).

Both belong to the source study (same Study Instance UID; patient and study modules copied from the
source instances) in new series whose SeriesDescription names medlora, the adapter and its hash.
Series UIDs are derived from (bundle sha256, study), instance UIDs from that and the content, so a
second push of the same bundle's same results finds the same UIDs (skipped), new results of the
same bundle become a new instance in its series, and another bundle gets series of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

SR_SERIES_NUMBER, SC_SERIES_NUMBER = 7701, 7702
MANUFACTURER = "medlora"
NOT_FOR_DIAGNOSIS = "NOT FOR DIAGNOSTIC USE"
CODING_SCHEME = "99MEDLORA"  # private codes of medlora's findings and scores
_PROCEDURES = {"CT": ("25045-6", "LN", "CT unspecified body region"),
               "MR": ("25056-3", "LN", "MRI unspecified body region")}
_IMAGING = ("363679005", "SCT", "Imaging")


@dataclass(frozen=True)
class Algorithm:
    """What made the findings: the adapter (bundle) name, its sha256, its base and medlora's version."""

    name: str
    sha256: str
    base: str
    version: str


@dataclass(frozen=True)
class FindingCall:
    """One finding of one study: its score and the bundle's threshold for it."""

    name: str
    score: float
    threshold: float

    @property
    def present(self) -> bool:
        return bool(self.score >= self.threshold)


def derived_uid(*parts: str) -> str:
    """A ``2.25.`` UID (a 128-bit number, as from a UUID) derived from ``parts``: the same parts always
    give the same UID (pydicom's ``generate_uid(prefix=None)`` would ignore them and draw a random one)."""
    digest = hashlib.sha256("\x1f".join(["medlora-dicomweb", *parts]).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def study_uid_of(sources: Sequence[Any]) -> str:
    uids = {str(s.StudyInstanceUID) for s in sources}
    if len(uids) != 1:
        raise ValueError(f"the source instances of one result belong to {len(uids)} studies")
    return uids.pop()


def content_digest(algorithm: Algorithm, sources: Sequence[Any], findings: Sequence[FindingCall]) -> str:
    """sha256 over what an SR says: bundle, source instances, each finding's score (6 digits) and threshold."""
    blob = json.dumps([algorithm.sha256, sorted(str(s.SOPInstanceUID) for s in sources),
                       [[f.name, round(float(f.score), 6), round(float(f.threshold), 6)] for f in findings]])
    return hashlib.sha256(blob.encode()).hexdigest()


def series_uid(algorithm: Algorithm, study_uid: str, kind: str) -> str:
    """The ``kind`` (``sr`` or ``sc``) series of ``algorithm``'s results in one study."""
    return derived_uid(algorithm.sha256, study_uid, f"{kind}-series")


def description(algorithm: Algorithm, what: str) -> str:
    """SeriesDescription (LO, 64 characters): ``medlora <what> <sha256[:8]> <adapter name>``."""
    return f"medlora {what} {algorithm.sha256[:8]} {algorithm.name}"[:64]


def _code(value: str, scheme: str, meaning: str) -> Any:
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning[:64])


def _coding_scheme() -> Any:
    from highdicom.coding_schemes import CodingSchemeIdentificationItem

    return CodingSchemeIdentificationItem(designator=CODING_SCHEME, name="medlora adapter findings and scores",
                                          responsible_organization="medlora")


def _measurement_group(algorithm: Algorithm, sources: Sequence[Any], findings: Sequence[FindingCall],
                       study_uid: str) -> Any:
    from highdicom.sr import (
        AlgorithmIdentification,
        Measurement,
        MeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes

    algo = AlgorithmIdentification(name=algorithm.name[:64], version=algorithm.sha256[:64],
                                   parameters=[f"base={algorithm.base}"[:64], f"medlora={algorithm.version}"[:64],
                                               *[f"threshold.{f.name}={f.threshold:.6g}"[:64] for f in findings]])
    measurements = [Measurement(name=_code(f"score.{f.name}"[:16], CODING_SCHEME, f"{f.name} score"),
                                value=float(f.score), unit=codes.UCUM.NoUnits, algorithm_id=algo) for f in findings]
    evaluations = [QualitativeEvaluation(name=_code(f.name[:16], CODING_SCHEME, f.name),
                                         value=codes.SCT.Present if f.present else codes.SCT.Absent) for f in findings]
    return MeasurementsAndQualitativeEvaluations(
        tracking_identifier=TrackingIdentifier(uid=derived_uid(algorithm.sha256, study_uid, "tracking"),
                                               identifier=f"medlora {algorithm.name}"[:64]),
        algorithm_id=algo, measurements=measurements, qualitative_evaluations=evaluations,
        source_images=[SourceImageForMeasurementGroup.from_source_image(s) for s in _images(sources)],
    )


_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyID", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "AccessionNumber")  # Type 2 patient/study attributes: present, maybe empty


def _images(sources: Sequence[Any]) -> list[Any]:
    """Copies of the source headers, sorted by series and instance, with every Type 2 patient/study
    attribute present (empty where the source has none), which highdicom copies."""
    out = []
    for s in sorted(sources, key=lambda s: (str(s.SeriesInstanceUID), int(getattr(s, "InstanceNumber", 0) or 0),
                                            str(s.SOPInstanceUID))):
        copy = s.copy()
        for name in _TYPE2:
            if name not in copy:
                setattr(copy, name, "")
        out.append(copy)
    return out


def build_sr(algorithm: Algorithm, sources: Sequence[Any], findings: Sequence[FindingCall]) -> Any:
    """The Comprehensive SR (TID 1500) of one study's findings; ``sources``: its scored instances (headers)."""
    from highdicom.sr import (
        ComprehensiveSR,
        DeviceObserverIdentifyingAttributes,
        MeasurementReport,
        ObservationContext,
        ObserverContext,
    )
    from pydicom.sr.codedict import codes

    if not findings:
        raise ValueError("an SR needs at least one finding")
    study = study_uid_of(sources)
    device = ObserverContext(observer_type=codes.DCM.Device,
                             observer_identifying_attributes=DeviceObserverIdentifyingAttributes(
                                 uid=derived_uid(algorithm.sha256, "device"), name=f"medlora {algorithm.name}"[:64],
                                 manufacturer_name=MANUFACTURER, model_name=algorithm.base[:64],
                                 serial_number=algorithm.sha256[:16]))
    modality = str(getattr(sources[0], "Modality", "")).upper()
    report = MeasurementReport(observation_context=ObservationContext(observer_device_context=device),
                               procedure_reported=_code(*_PROCEDURES.get(modality, _IMAGING)),
                               imaging_measurements=[_measurement_group(algorithm, sources, findings, study)])
    digest = content_digest(algorithm, sources, findings)
    return ComprehensiveSR(
        evidence=_images(sources), content=report, series_instance_uid=series_uid(algorithm, study, "sr"),
        series_number=SR_SERIES_NUMBER, sop_instance_uid=derived_uid(digest, "sr"), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description=description(algorithm, "findings"),
        coding_schemes=[_coding_scheme()],
    )


def render_overlay(image: np.ndarray, heat: np.ndarray | None, algorithm: Algorithm,
                   findings: Sequence[FindingCall], width: int = 512) -> np.ndarray:
    """An RGB uint8 picture of ``image`` (2D, values in [0, 1]) with ``heat`` over it and, burned in,
    ``NOT FOR DIAGNOSTIC USE — <adapter name>`` and each finding's call and score."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    lines = [f"{NOT_FOR_DIAGNOSIS} — {algorithm.name}",
             *[f"{f.name}: {'present' if f.present else 'absent'} (score {f.score:.3f}, threshold {f.threshold:.3f})"
               for f in findings[:3]]]
    band = 0.05 * len(lines) + 0.02
    fig = Figure(figsize=(width / 100, width / 100 * (1 + band)), dpi=100, facecolor="black")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1 / (1 + band)))
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="bilinear")
    if heat is not None:
        ax.imshow(heat, cmap="jet", alpha=0.35, vmin=0, vmax=1, interpolation="bilinear")
    ax.axis("off")
    for k, line in enumerate(lines):
        fig.text(0.02, 1 - (0.5 + k) * 0.05 / (1 + band), line, color="yellow" if k == 0 else "white",
                 fontsize=11 if k == 0 else 9, va="center", ha="left", family="DejaVu Sans", weight="bold")
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3]).astype(np.uint8)


_LETTERS = (("L", "R"), ("P", "A"), ("H", "F"))


def _orientation(ref: Any) -> tuple[str, str]:
    """PatientOrientation (row, column directions) of a source image, from its ImageOrientationPatient."""
    iop = [float(v) for v in (getattr(ref, "ImageOrientationPatient", None) or [])]
    if len(iop) == 6:
        out = []
        for vec in (iop[:3], iop[3:]):
            axis = int(np.argmax(np.abs(vec)))
            out.append(_LETTERS[axis][0 if vec[axis] > 0 else 1])
        return out[0], out[1]
    given = list(getattr(ref, "PatientOrientation", None) or [])
    return (str(given[0]), str(given[1])) if len(given) == 2 else ("L", "P")


def build_sc(algorithm: Algorithm, sources: Sequence[Any], findings: Sequence[FindingCall], rgb: np.ndarray,
             ref: Any | None = None) -> Any:
    """The Secondary Capture of one study's saliency picture (``rgb``, from :func:`render_overlay`);
    ``ref``: the source instance it shows (default the first of ``sources``)."""
    from highdicom.sc import SCImage

    study = study_uid_of(sources)
    ref = ref if ref is not None else _images(sources)[0]
    digest = content_digest(algorithm, sources, findings)
    sc = SCImage.from_ref_dataset(
        ref_dataset=ref, pixel_array=rgb, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=series_uid(algorithm, study, "sc"),
        series_number=SC_SERIES_NUMBER, sop_instance_uid=derived_uid(digest, "sc"), instance_number=1,
        manufacturer=MANUFACTURER, patient_orientation=_orientation(ref),
        series_description=description(algorithm, "saliency"),
    )
    sc.BurnedInAnnotation = "YES"
    if "Laterality" not in sc:  # Type 2C: unknown here (dciodvfy asks for it), so present and empty
        sc.Laterality = ""
    sc.ImageComments = f"{NOT_FOR_DIAGNOSIS}: saliency of {algorithm.name}"[:10240]
    sc.SourceImageSequence = _source_reference(ref)
    return sc


def _source_reference(ref: Any) -> Any:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence as DicomSequence

    item = Dataset()
    item.ReferencedSOPClassUID = ref.SOPClassUID
    item.ReferencedSOPInstanceUID = ref.SOPInstanceUID
    return DicomSequence([item])
