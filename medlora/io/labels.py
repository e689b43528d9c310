"""Reading the labels spreadsheet and joining it to scanned studies."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import InputError

# label_key → the column a labels CSV uses by default (DICOM keywords; ``path`` is relative to root).
DEFAULT_KEY_COLUMNS = {
    "path": "path",
    "patient_id": "PatientID",
    "study_uid": "StudyInstanceUID",
    "series_uid": "SeriesInstanceUID",
    "accession": "AccessionNumber",
}


def read_labels(path: Path, key_column: str, label_column: str, classes: list[str]) -> dict[str, int]:
    """Map each key of the labels CSV to a class index.

    Labels may be class names (``normal``/``abnormal``) or integer class indices. A key given
    twice with different labels is an error; unknown label values are errors naming the row.
    """
    if not path.is_file():
        raise InputError(f"labels file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"labels file {path} is not a readable CSV: {err}") from None
    for col in (key_column, label_column):
        if col not in df.columns:
            raise InputError(f"labels file {path} has no column {col!r}; columns are {list(df.columns)}")
    out: dict[str, int] = {}
    for row_no, (key, raw) in enumerate(zip(df[key_column], df[label_column], strict=True), start=2):
        key, raw = key.strip(), raw.strip()
        if not key:
            continue
        if raw in classes:
            label = classes.index(raw)
        elif raw.lstrip("-").isdigit() and 0 <= int(raw) < len(classes):
            label = int(raw)
        else:
            raise InputError(f"labels file {path} line {row_no}: label {raw!r} is not one of {classes} or 0..{len(classes) - 1} "
                             f"(column {label_column!r}; data.classes)")
        if key in out and out[key] != label:
            raise InputError(f"labels file {path} line {row_no}: key given twice with different labels")
        out[key] = label
    return out
