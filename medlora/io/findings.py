"""Labels of several findings per study (``data.task: multilabel``) and the task-aware label reader.

A labels CSV gives the findings of a key in one of two layouts:

* **one column per finding** (named as in ``data.findings``): ``1`` present, ``0`` absent, blank
  unknown (not mentioned), ``-1`` uncertain (CheXpert's convention). ``data.uncertain`` says what
  ``-1`` means: ``ignore`` (unknown), ``positive`` or ``negative``. When ``data.normal`` names a
  column too (e.g. CheXpert's ``No Finding``), a study marked ``1`` there has its blank findings
  read as absent; a finding marked present as well is an error.
* **one column** (``data.label_column``) of ``|``-separated finding names (NIH ChestX-ray14's
  ``Finding Labels``): the listed findings are present, the others absent; ``data.normal`` (e.g.
  ``No Finding``) alone means none is present; a blank cell is unknown for every finding.

Unknown values are masked out of the loss and out of each finding's metrics, never counted as
negatives. In the manifest a key's findings travel as one text code (:func:`encode`: ``1``, ``0`` or
blank per finding, comma-separated, in ``data.findings`` order) in the ``findings`` column; the
``label`` column becomes "any finding present" (0/1), which stratifies the patient-level split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import DataConfig
from ..errors import InputError
from .labels import LabelTable, label_table, read_label_table, read_labels_csv

log = logging.getLogger(__name__)

_CELL = {"1": 1.0, "1.0": 1.0, "0": 0.0, "0.0": 0.0, "": np.nan, "-1": -1.0, "-1.0": -1.0}
_UNCERTAIN = {"ignore": np.nan, "positive": 1.0, "negative": 0.0}


def encode(values: np.ndarray) -> str:
    """``[1, 0, nan]`` → ``"1,0,"`` (the manifest's ``findings`` code)."""
    return ",".join("" if np.isnan(v) else str(int(v)) for v in values)


def decode(code: str, n: int | None = None) -> np.ndarray:
    """``"1,0,"`` → ``[1., 0., nan]`` (float32; NaN = unknown, masked)."""
    out = np.array([float(v) if v else np.nan for v in str(code).split(",")], dtype=np.float32)
    if n is not None and out.size != n:
        raise InputError(f"findings code {code!r} holds {out.size} values, expected {n}")
    return out


def decode_column(codes: pd.Series, n: int) -> np.ndarray:
    """A manifest's ``findings`` column → an ``(rows, n)`` float32 matrix (NaN = unknown)."""
    return np.stack([decode(c, n) for c in codes]) if len(codes) else np.zeros((0, n), np.float32)


def _from_columns(df: pd.DataFrame, path: Path, cfg: DataConfig) -> np.ndarray:
    findings = list(cfg.findings or [])
    values = np.full((len(df), len(findings)), np.nan)
    for j, name in enumerate(findings):
        cells = df[name].str.strip()
        bad = ~cells.isin(list(_CELL))
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(f"labels file {path} line {row + 2}: column {name!r} holds {cells.iloc[row]!r}; "
                             "accepted: 1 (present), 0 (absent), blank (unknown), -1 (uncertain)")
        values[:, j] = cells.map(_CELL).to_numpy(dtype=float)
    values[values == -1.0] = _UNCERTAIN[cfg.uncertain]
    if cfg.normal is not None and cfg.normal in df.columns:
        normal = df[cfg.normal].str.strip().map(_CELL).to_numpy(dtype=float) == 1.0
        clash = normal & (values == 1.0).any(axis=1)
        if clash.any():
            row = int(np.flatnonzero(clash)[0])
            raise InputError(f"labels file {path} line {row + 2}: column {cfg.normal!r} (data.normal) is 1 "
                             "but a finding is marked present")
        values[normal[:, None] & np.isnan(values)] = 0.0
    return values


def _from_names(df: pd.DataFrame, path: Path, cfg: DataConfig) -> np.ndarray:
    findings = list(cfg.findings or [])
    values = np.zeros((len(df), len(findings)))
    for row, cell in enumerate(df[cfg.label_column].str.strip()):
        names = [n.strip() for n in cell.split("|") if n.strip()]
        if not names:
            values[row] = np.nan
            continue
        for name in names:
            if name in findings:
                values[row, findings.index(name)] = 1.0
            elif name != cfg.normal:
                raise InputError(f"labels file {path} line {row + 2}: column {cfg.label_column!r} names {name!r}, "
                                 f"which is not one of data.findings {findings}"
                                 + (f" or data.normal {cfg.normal!r}" if cfg.normal else ""))
        if cfg.normal in names and len(names) > 1:
            raise InputError(f"labels file {path} line {row + 2}: column {cfg.label_column!r} lists "
                             f"{cfg.normal!r} (data.normal) together with findings")
    return values


def read_findings_table(path: Path, key_column: str, cfg: DataConfig, patient_column: str | None = None,
                        root: Path | None = None) -> LabelTable:
    """A :class:`~medlora.io.labels.LabelTable` of each key's findings code (:func:`encode`), in either
    layout; keys, CSV lines, patients and path keys as :func:`~medlora.io.labels.read_label_table`."""
    df = read_labels_csv(path, [key_column, *([patient_column] if patient_column else [])])
    findings = list(cfg.findings or [])
    missing = [f for f in findings if f not in df.columns]
    if not missing:
        values = _from_columns(df, path, cfg)
    elif cfg.label_column in df.columns:
        values = _from_names(df, path, cfg)
    else:
        raise InputError(f"labels file {path} has neither a column per finding (missing {missing}) nor the "
                         f"column {cfg.label_column!r} (data.label_column) of |-separated findings; "
                         f"columns are {list(df.columns)}")
    table = label_table(df, path, key_column, lambda row, _line: encode(values[row]), patient_column, root,
                        what="different findings")
    known = ~np.isnan(values)
    log.info("findings of %s: %s", path.name, ", ".join(
        f"{f} {int(np.nansum(values[:, j]))}+/{int(known[:, j].sum())}" for j, f in enumerate(findings)))
    return table


def read_findings(path: Path, key_column: str, cfg: DataConfig) -> dict[str, str]:
    """Map each key of the labels CSV to its findings code (:func:`encode`), in either layout."""
    return read_findings_table(path, key_column, cfg).labels


def read_task_table(path: Path, key_column: str, cfg: DataConfig, patient_column: str | None = None,
                    root: Path | None = None) -> LabelTable:
    """The labels of ``cfg.task``: class indices (binary, multiclass) or findings codes (multilabel)."""
    if cfg.task == "multilabel":
        return read_findings_table(path, key_column, cfg, patient_column, root)
    return read_label_table(path, key_column, cfg.label_column, cfg.classes, patient_column, root)


def split_findings_label(manifest: pd.DataFrame, cfg: DataConfig) -> pd.DataFrame:
    """A multilabel manifest (findings codes in ``label``) with the codes moved to ``findings`` and
    ``label`` set to "any finding present"; other tasks' manifests are returned unchanged."""
    if cfg.task != "multilabel" or manifest.empty:
        return manifest
    codes = manifest["label"].astype(str)
    matrix = decode_column(codes, len(cfg.findings or []))
    return manifest.assign(findings=codes.to_numpy(), label=(np.nan_to_num(matrix) == 1).any(axis=1).astype(int))


def normal_vs_abnormal(frame: pd.DataFrame, cfg: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    """Per manifest row: (known normal, abnormal), the two sides of an "any finding" vs normal task.

    binary: ``label`` is the index of ``data.abnormal`` or not; multiclass: the class is ``data.normal``
    or another one; multilabel: any finding present is abnormal, every finding known absent is normal,
    and a row with no finding present but one unknown is neither (it is left out, never a normal).
    """
    label = frame["label"].to_numpy(dtype=int)
    if cfg.task == "binary":
        abnormal = label == cfg.classes.index(cfg.abnormal)
        return ~abnormal, abnormal
    if cfg.task == "multiclass":
        if cfg.normal is None:
            raise InputError("an 'any finding vs normal' task of data.task multiclass needs data.normal")
        normal = label == cfg.classes.index(cfg.normal)
        return normal, ~normal
    values = decode_column(frame["findings"], len(cfg.outputs))
    abnormal = (values == 1.0).any(axis=1)
    return (values == 0.0).all(axis=1), abnormal
