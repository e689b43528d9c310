"""Turn new DICOM/NIfTI files into model inputs the way ingest turned the training data into samples.

The rules mirror :mod:`medlora.io.ingest`: files are grouped into series and studies by their UIDs, or
where those are blank by folder and geometry (:mod:`medlora.io.identity`); a series of at least
``volume_min_slices`` single-frame slices of a ``volume_modalities`` modality (or one multi-frame object
with that many frames) is a volume that yields one sample per view of ``preprocess.view``; any other
DICOM instance is one 2D sample; a NIfTI file is a volume of its own study. The bundle records the
rules it was trained with (``medlora.json`` → ``samples``). Keys are HMAC pseudonyms under the site secret, as in ingest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..config import PreprocessConfig
from ..errors import InputError
from ..io.deid import pseudonym
from ..io.identity import IdentityMode, group_instances
from ..io.scan import Instance

log = logging.getLogger(__name__)
DEFAULT_RULES = {"volume_min_slices": 8, "volume_modalities": ["CT", "MR"]}


@dataclass
class SampleSpec:
    """One 2D image, or one volume to be cut into views, with its pseudonymous keys."""

    kind: str  # dicom2d | series | nifti
    files: list[Path]
    study_key: str
    name: str  # what the sample id is derived from (SOP / series UID or path)
    label: str = field(default="")  # how a skip names it (a file or a folder, never a UID)


def sample_rules(config_data: dict[str, Any]) -> dict[str, Any]:
    """The volume rules of a run's ``data`` config section (defaults where the run predates them)."""
    return {k: config_data.get(k, v) for k, v in DEFAULT_RULES.items()}


def _is_volume(group: list[dict[str, Any]], rules: dict[str, Any]) -> bool:
    modalities = {m.upper() for m in rules["volume_modalities"]}
    h = group[0]
    return (len(group) >= rules["volume_min_slices"]
            and str(h.get("modality") or "").upper() in modalities and all((g.get("frames") or 1) == 1 for g in group))


def _is_multiframe_volume(h: dict[str, Any], rules: dict[str, Any]) -> bool:
    return ((h.get("frames") or 1) >= rules["volume_min_slices"]
            and str(h.get("modality") or "").upper() in {m.upper() for m in rules["volume_modalities"]})


def plan_samples(headers: dict[Path, dict[str, Any]], niftis: list[Path], rules: dict[str, Any], salt: str) -> list[SampleSpec]:
    """Sample specs of readable DICOM files (``headers``: path → :func:`read_dicom_header`) and NIfTI files.

    Series and studies are grouped as ingest groups them (:func:`medlora.io.identity.group_instances`,
    ``data.identity: tags``): files with blank identifiers in one folder with one geometry are one
    series of one study, never a study each."""
    instances = [Instance(str(p.resolve()), p, h) for p, h in headers.items()]
    groups, _ = group_instances(instances, IdentityMode("tags"))
    specs = []
    for g in groups:
        paths, group = [m.path for m in g.members], [m.header for m in g.members]
        study = pseudonym(g.study, salt, "stu")
        if _is_volume(group, rules):
            specs.append(SampleSpec("series", sorted(paths), study, g.series, str(paths[0].parent)))
            continue
        for p, h in zip(paths, group, strict=True):
            kind = "series" if _is_multiframe_volume(h, rules) else "dicom2d"
            specs.append(SampleSpec(kind, [p], study, g.series if kind == "series" else str(h.get("sop_uid") or
                                                                                              p.resolve()), str(p)))
    for p in niftis:
        key = str(p.resolve())
        specs.append(SampleSpec("nifti", [p], pseudonym(key, salt, "stu"), key, str(p)))
    return specs


def sample_tensors(spec: SampleSpec, transform: Any, pre: PreprocessConfig, salt: str) -> list[tuple[str, torch.Tensor]]:
    """``(sample_id, preprocessed image)`` of each sample of ``spec`` (one, or one per view of a volume)."""
    if spec.kind == "dicom2d":
        if pre.view.kind == "volume":
            raise InputError(f"{spec.label}: a 2D image, but this bundle's model takes whole volumes "
                             "(preprocess.view.kind: volume); give it a CT/MR series or a NIfTI volume")
        image = transform({"image": str(spec.files[0]), "kind": "dicom2d"})["image"]
        return [(pseudonym(spec.name, salt, "smp"), image.as_subclass(torch.Tensor))]
    from ..transforms.samples import view_sample_id
    from ..transforms.views import view_count
    from ..transforms.volume import load_volume, preprocess_volume

    source: str | list[str] = [str(f) for f in spec.files] if spec.kind == "series" else str(spec.files[0])
    loader = transform.transforms[0]
    volume = loader.volume(source, spec.kind) if hasattr(loader, "volume") else \
        preprocess_volume(load_volume(source, spec.kind), pre)
    n = view_count(int(volume.shape[1 + pre.view.axis]), pre.view)
    if n < 1:
        raise InputError(f"{spec.label}: the volume has no slice along axis {pre.view.axis}")
    base = pseudonym(spec.name, salt, "smp")  # the volume's id in ingest's manifest
    return [(view_sample_id(base, pre.view.kind, i),
             transform({"image": source, "kind": spec.kind, "view_index": i})["image"].as_subclass(torch.Tensor))
            for i in range(n)]
