"""File-level manifest rows → model samples: the views of volumes and the frames of a multi-frame
object, expanded *after* ingest (so the manifest and its fingerprint do not depend on the view).

* ``dicom2d``: one sample (``view`` = ``image``, ``view_index`` 0, ``slices`` = its frames), id unchanged.
* ``series`` / ``nifti``: one sample per view of ``preprocess.view`` (:func:`.views.view_count` of the
  slices along ``view.axis`` after orientation and spacing, predicted by
  :func:`.volume.oriented_shape` from the row's ``shape`` and RAS ``affine``); ``slices`` = that count.
* ``frames`` (a multi-frame object that could not be placed as a volume): one sample per frame
  (``view`` = ``frame``, ``view_index`` = the frame).

``view.kind: volume`` (a model that takes whole volumes) has one sample per volume and no use for 2D
images: a data set holding any is refused, naming them (:func:`expand_views`).

Every sample of a volume keeps the volume's ``study_key``, so evaluation aggregates the view scores
into a study score. A derived sample id is :func:`view_sample_id` of the row's id: already a
pseudonym, it needs no secret, and predict derives the same ids from the same volume.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import DataConfig, PreprocessConfig
from ..errors import InputError
from ..io.prepare import PreparedData, prepare_dataset
from .views import view_count
from .volume import VOLUME_KINDS, oriented_shape

SAMPLE_COLUMNS = ["view", "view_index", "slices"]


def view_sample_id(base: str, view: str, index: int) -> str:
    """The id of sample ``index`` of ``view`` of the volume whose id is ``base`` (``smp-`` + 16 hex)."""
    return "smp-" + hashlib.sha256(f"{base}#{view}#{index}".encode()).hexdigest()[:16]


def volume_slices(row: dict[str, Any], pre: PreprocessConfig) -> int:
    """Slices along ``pre.view.axis`` of a ``series``/``nifti`` row after orientation and spacing."""
    shape = [int(v) for v in str(row["shape"]).split("x")]
    affine = np.asarray(json.loads(row["affine"]), dtype=np.float64)
    return int(oriented_shape(shape, affine, pre.spacing)[pre.view.axis])


def expand_views(manifest: pd.DataFrame, pre: PreprocessConfig) -> pd.DataFrame:
    """One row per model sample (see the module docstring), in manifest order, views consecutive.

    Raises:
        InputError: ``view.kind: volume`` with rows that are not volumes (named, with their count).
    """
    rows: list[dict[str, Any]] = []
    view = pre.view.kind
    if view == "volume":
        _require_volumes(manifest)
    for rec in manifest.to_dict("records"):
        kind = rec.get("kind") if isinstance(rec.get("kind"), str) and rec.get("kind") else "dicom2d"
        if kind in VOLUME_KINDS:
            n = volume_slices(rec, pre)
            rows += [{**rec, "sample_id": view_sample_id(rec["sample_id"], view, i), "view": view, "view_index": i,
                      "slices": n} for i in range(view_count(n, pre.view))]
        elif kind == "frames":
            n = int(rec.get("frames") or 1)
            rows += [{**rec, "sample_id": view_sample_id(rec["sample_id"], "frame", i), "view": "frame",
                      "view_index": i, "slices": n} for i in range(n)]
        else:
            rows.append({**rec, "view": "image", "view_index": 0, "slices": int(rec.get("frames") or 1)})
    return pd.DataFrame(rows, columns=[*manifest.columns, *[c for c in SAMPLE_COLUMNS if c not in manifest.columns]])


def _require_volumes(manifest: pd.DataFrame) -> None:
    kinds = manifest["kind"].fillna("dicom2d") if "kind" in manifest else pd.Series("dicom2d", index=manifest.index)
    flat = manifest[~kinds.isin(VOLUME_KINDS)]
    if flat.empty:
        return
    column = "path" if "path" in flat else "source"
    names = ", ".join(str(v) for v in flat[column].head(5))
    raise InputError(f"preprocess.view.kind: volume trains on whole volumes, but {len(flat)} of {len(manifest)} "
                     f"samples are 2D images or frames that are not a volume ({names}{', ...' if len(flat) > 5 else ''}). "
                     "Keep only CT/MR series (at least data.volume_min_slices slices) and NIfTI volumes in data.root, "
                     "or use a 2D view (every_k, slab, 2.5d) with aggregate: max, mean or attention")


def with_views(data: PreparedData, pre: PreprocessConfig) -> PreparedData:
    """``data`` whose ``manifest`` holds the expanded samples; ``files`` keeps the file-level manifest
    (and the fingerprint stays that of the files)."""
    files = data.file_manifest
    return replace(data, manifest=expand_views(files, pre), files=files)


def prepare_samples(cfg: DataConfig, pre: PreprocessConfig, out: Path | None = None) -> PreparedData:
    """:func:`~medlora.io.prepare.prepare_dataset` (reports written to ``out``), then :func:`with_views`."""
    return with_views(prepare_dataset(cfg, out), pre)
