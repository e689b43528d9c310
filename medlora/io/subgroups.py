"""Subgroup fields of each study (``evaluate.subgroups``): from DICOM headers at ingest, or labels-CSV columns.

Header fields recorded in the manifest at ingest (:func:`header_subgroups`): ``sex`` (PatientSex:
M, F, O), ``age_band`` (PatientAge, else the years between PatientBirthDate and StudyDate, put in a
band of :data:`AGE_BANDS`; the dates themselves are read and forgotten, never stored),
``manufacturer`` (Manufacturer), ``modality`` and ``view_position`` (ViewPosition: PA, AP, LL, ...).
Any other name is looked up as a column of the labels CSV, joined through the pseudonymous keys
(``data.label_key``: the CSV's identifiers are keyed with the site secret exactly as at ingest, so the
raw values never meet the manifest).
"""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from ..config import DataConfig
from ..errors import InputError
from .labels import DEFAULT_KEY_COLUMNS

log = logging.getLogger(__name__)

HEADER_FIELDS = ("sex", "age_band", "manufacturer", "modality", "view_position")
#: Lower edges of the age bands (years): 0-17, 18-39, 40-59, 60-79, 80+.
AGE_BANDS = (0, 18, 40, 60, 80)
# label_key → (manifest column, pseudonym kind) of the join
_KEYED = {"patient_id": ("patient_key", "pat"), "study_uid": ("study_key", "stu"), "series_uid": ("series_key", "ser")}


def age_band(years: float | None) -> str | None:
    """``63`` → ``"60-79"``; None stays None."""
    if years is None or years < 0:
        return None
    lows = [a for a in AGE_BANDS if a <= years]
    k = AGE_BANDS.index(lows[-1])
    return f"{AGE_BANDS[k]}+" if k + 1 == len(AGE_BANDS) else f"{AGE_BANDS[k]}-{AGE_BANDS[k + 1] - 1}"


def _years(ds: Any) -> float | None:
    age = str(ds.get("PatientAge") or "").strip().upper()  # "063Y", "018M", "003W", "010D"
    if len(age) == 4 and age[:3].isdigit() and age[3] in "YMWD":
        return int(age[:3]) / {"Y": 1, "M": 12, "W": 52.18, "D": 365.25}[age[3]]
    birth, study = str(ds.get("PatientBirthDate") or ""), str(ds.get("StudyDate") or "")
    try:
        b = date(int(birth[:4]), int(birth[4:6]), int(birth[6:8]))
        s = date(int(study[:4]), int(study[4:6]), int(study[6:8]))
    except ValueError:
        return None
    return (s - b).days / 365.25


def header_subgroups(ds: Any) -> dict[str, str | None]:
    """The subgroup fields of one DICOM header (a pydicom Dataset); no date or identifier is kept."""
    sex = str(ds.get("PatientSex") or "").strip().upper()
    text = {k: str(ds.get(t) or "").strip() or None for k, t in (("manufacturer", "Manufacturer"),
                                                                  ("view_position", "ViewPosition"))}
    return {"sex": sex if sex in ("M", "F", "O") else None, "age_band": age_band(_years(ds)), **text}


def _from_labels(manifest: pd.DataFrame, cfg: DataConfig, fields: list[str]) -> pd.DataFrame:
    """``study_key`` + ``fields`` taken from the labels CSV, joined through the pseudonymous keys."""
    from .deid import load_site_key

    path = Path(cfg.labels) if cfg.labels else Path(cfg.root) / "labels.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    key_column = cfg.key_column or DEFAULT_KEY_COLUMNS[cfg.label_key]
    missing = [f for f in fields if f not in df.columns]
    if missing:
        raise InputError(f"evaluate.subgroups: {missing} is neither a header field recorded at ingest "
                         f"({', '.join(HEADER_FIELDS)}) nor a column of {path} (columns: {list(df.columns)})")
    table = df[[key_column, *fields]].drop_duplicates(key_column)
    if cfg.label_key == "path":
        joined = manifest[["study_key", "path"]].merge(table, left_on="path", right_on=key_column, how="left")
    elif cfg.label_key in _KEYED:
        column, kind = _KEYED[cfg.label_key]
        site = load_site_key(cfg.secret_file)
        table = table.assign(**{column: [site.key(v.strip(), kind) for v in table[key_column]]})
        keys = manifest[list(dict.fromkeys(["study_key", column]))].drop_duplicates()
        joined = keys.merge(table.drop(columns=[key_column]), on=column, how="left")
    else:
        raise InputError(f"evaluate.subgroups from labels-CSV columns need data.label_key path, patient_id, study_uid "
                         f"or series_uid (got {cfg.label_key})")
    return joined[["study_key", *fields]]


def subgroup_table(manifest: pd.DataFrame, cfg: DataConfig, fields: list[str]) -> pd.DataFrame:
    """One row per study: ``study_key`` and each field of ``fields`` (header field or labels-CSV column).

    A field that no study has (every value missing) is an error naming it and where it was looked for.
    """
    from_header = [f for f in fields if f in manifest.columns]
    out = manifest[["study_key", *from_header]].drop_duplicates("study_key")
    rest = [f for f in fields if f not in from_header]
    if rest:
        out = out.merge(_from_labels(manifest, cfg, rest).drop_duplicates("study_key"), on="study_key", how="left")
    for f in fields:
        values = out[f].replace("", pd.NA)
        if values.isna().all():
            where = "DICOM headers at ingest" if f in HEADER_FIELDS else "the labels CSV"
            raise InputError(f"evaluate.subgroups: no study has a value for {f!r} (looked in {where}); "
                             f"header fields: {', '.join(HEADER_FIELDS)}")
    return out.reset_index(drop=True)
