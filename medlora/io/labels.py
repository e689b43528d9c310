"""Reading the labels spreadsheet and joining it to scanned studies.

Every key remembers its CSV line, so a problem names ``labels.csv line N (column)``. Path keys
(``data.label_key: path``) may be written relative to ``data.root``, relative to the CSV's own folder,
or absolute; :func:`normalise_path_key` turns each into the root-relative POSIX path ingest uses
(normalised, symlinks resolved), so all three spellings of one file match it.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
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


@dataclass
class LabelTable:
    """Key → label (a class index, or a findings code for ``data.task: multilabel``), the CSV line of
    each key, and (``data.identity: labels``) key → patient."""

    path: Path
    key_column: str
    labels: dict[str, int | str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    patients: dict[str, str] = field(default_factory=dict)  # raw identifiers: hash before writing
    written: dict[str, str] = field(default_factory=dict)  # normalised key → the key as written (path keys)

    def where(self, key: str) -> str:
        """``labels.csv line N (column)``: names a row without its value (a key may be an identifier)."""
        return f"{self.path.name} line {self.lines.get(key, '?')} ({self.key_column})"


def read_labels(path: Path, key_column: str, label_column: str, classes: list[str]) -> dict[str, int]:
    """Map each key of the labels CSV to a class index (see :func:`read_label_table`)."""
    return read_label_table(path, key_column, label_column, classes).labels


def read_labels_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    """The labels CSV as text cells; a missing file, an unreadable CSV or a missing column is an error."""
    if not path.is_file():
        raise InputError(f"labels file {path} does not exist")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise InputError(f"labels file {path} is not a readable CSV: {err}") from None
    for col in columns:
        if col not in df.columns:
            raise InputError(f"labels file {path} has no column {col!r}; columns are {list(df.columns)}")
    return df


def read_label_table(path: Path, key_column: str, label_column: str, classes: list[str],
                     patient_column: str | None = None, root: Path | None = None) -> LabelTable:
    """Read the labels CSV into a :class:`LabelTable`.

    Labels may be class names (``normal``/``abnormal``) or integer class indices. A key given twice
    with different labels is an error; unknown label values are errors naming the line. With
    ``root``, keys are paths and are normalised by :func:`normalise_path_key`. ``patient_column``
    (``data.identity: labels``) must name a column holding each row's patient.
    """
    df = read_labels_csv(path, [key_column, label_column, *([patient_column] if patient_column else [])])

    def class_index(row: int, row_no: int) -> int:
        raw = df[label_column].iloc[row].strip()
        if raw in classes:
            return classes.index(raw)
        if raw.lstrip("-").isdigit() and 0 <= int(raw) < len(classes):
            return int(raw)
        raise InputError(f"labels file {path} line {row_no}: label {raw!r} is not one of {classes} or 0..{len(classes) - 1} "
                         f"(column {label_column!r}; data.classes)")

    return label_table(df, path, key_column, class_index, patient_column, root)


def label_table(df: pd.DataFrame, path: Path, key_column: str, label_of: Callable[[int, int], int | str],
                patient_column: str | None = None, root: Path | None = None, what: str = "a different label") -> LabelTable:
    """A :class:`LabelTable` of ``df`` (the labels CSV) whose row ``i`` (CSV line ``n``) has the label
    ``label_of(i, n)``, called for rows with a key only; rows without a key are skipped. A key given
    again with a different label (``what`` says so in the error) is an error naming both lines."""
    table = LabelTable(path, key_column)
    patients = df[patient_column] if patient_column else [""] * len(df)
    for row, (key, patient) in enumerate(zip(df[key_column], patients, strict=True)):
        row_no, key = row + 2, key.strip()
        if not key:
            continue
        if root is not None:
            written, key = key, normalise_path_key(key, root, path.parent)
            table.written.setdefault(key, written)
        label = label_of(row, row_no)
        if key in table.labels and table.labels[key] != label:
            raise InputError(f"labels file {path} line {row_no} ({key_column}): key of line {table.lines[key]} given "
                             f"again with {what}")
        table.labels[key] = label
        table.lines.setdefault(key, row_no)
        if patient_column:
            if not patient.strip():
                raise InputError(f"labels file {path} line {row_no}: column {patient_column!r} is empty "
                                 "(data.identity: labels needs a patient on every row)")
            table.patients[key] = patient.strip()
    return table


def normalise_path_key(key: str, root: Path, csv_dir: Path) -> str:
    """The root-relative POSIX path a labels-CSV path key names.

    Tried in order: relative to ``root``, relative to ``csv_dir`` (the CSV's folder), absolute; each
    normalised (``..``, ``.``, doubled slashes) and with symlinks resolved. A key that names nothing
    under ``root`` is returned normalised as written, so it is reported as unmatched.
    """
    given = Path(key).expanduser()
    candidates = [given] if given.is_absolute() else [root / given, csv_dir / given]
    bases = {Path(os.path.normpath(root.absolute())), root.resolve()}
    for cand in candidates:
        for form in (Path(os.path.normpath(cand.absolute())), cand.resolve()):
            for base in bases:
                try:
                    rel = form.relative_to(base)
                except ValueError:
                    continue
                if (base / rel).exists():
                    return "" if rel.as_posix() == "." else rel.as_posix()
    return Path(os.path.normpath(key)).as_posix()


def closest_names(key: str, names: list[str], n: int = 3) -> list[str]:
    """The scanned paths most like an unmatched key (difflib), for a "did you mean" hint."""
    found = difflib.get_close_matches(key, names, n=n, cutoff=0.4)
    if found:
        return found
    by_name = {Path(p).name: p for p in names}
    return [by_name[m] for m in difflib.get_close_matches(Path(key).name, list(by_name), n=n, cutoff=0.4)]
