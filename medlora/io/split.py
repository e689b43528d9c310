"""Patient-level, label-stratified, seeded splits that are persisted and reused.

A patient is never in two splits. Patients are stratified by their label (a patient is
abnormal if any of their studies is; multi-class: the patient's highest class index). A
multi-label manifest (a ``findings`` column, :mod:`.findings`) is stratified over every finding
and "no finding present" at once by iterative stratification (:mod:`.stratify`): each finding
with at least three positive patients has positives in train, validation and test. The split is written to a CSV of pseudonymous patient
keys; a later run of the same dataset with the same fractions and seed reuses it, and patients
that were not there before are added without moving anyone who was.

A new draw is a function of the data and ``data.split.seed`` alone, not of the site secret: patients
are put in a stable order by a digest of their images' pixel hashes (:func:`draw_order`) before the
seeded shuffle, so two machines with different secrets draw the same split of the same data.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import SplitConfig
from ..errors import InputError, LeakageError
from .findings import decode_column
from .labels import normalise_path_key
from .stratify import iterative_stratification, split_counts

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")


def draw_order(manifest: pd.DataFrame) -> pd.Series:
    """A sort token per patient key that does not depend on the site secret.

    The token is a sha256 of the patient's sorted sample pixel hashes (what the images hold, the same on
    every machine), with the key itself as the tie-breaker for patients whose images are identical. It is
    used only to order patients before the seeded draw and is never written anywhere. A manifest without
    pixel hashes orders by key (and then depends on the secret, as keys do).
    """
    if "pixel_hash" not in manifest.columns or manifest["pixel_hash"].isna().any():
        keys = manifest["patient_key"].drop_duplicates()
        return pd.Series(keys.to_numpy(), index=keys.to_numpy())
    digests = manifest.groupby("patient_key")["pixel_hash"].agg(
        lambda h: hashlib.sha256("\n".join(sorted(h.astype(str))).encode()).hexdigest())
    return digests + ":" + digests.index.to_series()


def _draw(patients: pd.Series, cfg: SplitConfig, order: pd.Series) -> dict[str, str]:
    """Assign patients (index = key, value = label) to splits, stratified by label (binary, multi-class)."""
    rng = np.random.default_rng(cfg.seed)
    out: dict[str, str] = {}
    fractions = np.array([cfg.train, cfg.val, cfg.test])
    for _, group in patients.groupby(patients):
        keys = sorted(group.index, key=order.__getitem__)
        rng.shuffle(keys)
        bounds = np.cumsum(split_counts(len(keys), fractions))
        for i, key in enumerate(keys):
            out[key] = SPLITS[int(np.searchsorted(bounds, i, side="right"))]
    return out


def _draw_findings(findings: pd.DataFrame, cfg: SplitConfig, order: pd.Series) -> dict[str, str]:
    """Assign patients (rows of :func:`patient_findings`) to splits by iterative stratification over
    their positive findings and "no finding present" (:func:`~medlora.io.stratify.iterative_stratification`)."""
    findings = findings.loc[sorted(findings.index, key=order.__getitem__)]
    positive = findings.to_numpy() == 1.0  # unknown (NaN) is not a positive
    strata = np.column_stack([positive, ~positive.any(axis=1)])
    fractions = np.array([cfg.train, cfg.val, cfg.test])
    drawn = iterative_stratification(strata, fractions, np.random.default_rng(cfg.seed))
    return {key: SPLITS[int(i)] for key, i in zip(findings.index, drawn, strict=True)}


def patient_findings(manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per patient (sorted keys), one column per finding of a multi-label manifest's ``findings``
    codes: 1 when any of the patient's studies has it, 0 when every known value is 0, NaN when unknown."""
    codes = manifest["findings"].astype(str)
    n = codes.iloc[0].count(",") + 1 if len(codes) else 0
    matrix = pd.DataFrame(decode_column(codes, n), index=manifest["patient_key"].to_numpy())
    return matrix.groupby(level=0).max().sort_index()  # max skips NaN; all-NaN stays NaN


def _params(cfg: SplitConfig) -> str:
    return f"train={cfg.train};val={cfg.val};test={cfg.test};seed={cfg.seed}"


def assign_splits(manifest: pd.DataFrame, cfg: SplitConfig, file: Path) -> pd.DataFrame:
    """Return ``manifest`` with a ``split`` column; read/update the persisted split at ``file``."""
    patients = manifest.groupby("patient_key")["label"].max()
    stored: dict[str, str] = {}
    if file.is_file():
        prev = pd.read_csv(file, dtype=str)
        if set(prev["params"]) == {_params(cfg)}:
            stored = dict(zip(prev["patient_key"], prev["split"], strict=True))
        else:
            log.warning("split file %s was drawn with other fractions/seed; drawing a new split", file)
    known = patients[patients.index.isin(stored)]
    new = patients[~patients.index.isin(stored)]
    assignment = {k: stored[k] for k in known.index}
    if len(new):
        multilabel = "findings" in manifest.columns
        order = draw_order(manifest)
        assignment.update(_draw_findings(patient_findings(manifest).loc[new.index], cfg, order) if multilabel
                          else _draw(new, cfg, order))
        if stored:
            log.info("split %s: %d new patients assigned, %d kept", file, len(new), len(known))
    file.parent.mkdir(parents=True, exist_ok=True)
    keep = {**stored, **assignment}
    pd.DataFrame(
        {"patient_key": list(keep), "split": list(keep.values()), "params": _params(cfg)}
    ).sort_values("patient_key").to_csv(file, index=False)
    out = manifest.copy()
    out["split"] = out["patient_key"].map(assignment)
    return out


def audit_leakage(manifest: pd.DataFrame, columns: tuple[str, ...] = ("patient_key", "sop_key", "pixel_hash"),
                  where: Path | None = None) -> None:
    """Fail when a patient, an instance or an identical pixel array sits in two splits, or when slices
    of one scan do (:func:`same_scan_findings`).

    The error lists the offending keys (pseudonymous) and the splits they were found in, the first
    offending files by path (the manifest's ``path``: local, for the person at this machine) and
    ``where`` (the manifest written before the audit).
    """
    problems: list[str] = []
    files: list[str] = []
    for col in columns:
        if col not in manifest.columns:
            continue
        sub = manifest[[col, "split"]].dropna()
        spread = sub.groupby(col)["split"].nunique()
        for key in spread[spread > 1].index:
            rows = manifest[manifest[col] == key]
            problems.append(f"{col}={key} in {'+'.join(sorted(rows['split'].dropna().unique()))}")
            files += list(rows["path"].astype(str)) if "path" in rows else []
    for finding, paths in same_scan_findings(manifest):
        problems.append(finding)
        files += paths
    if problems:
        shown = ", ".join(dict.fromkeys(files[:6]))
        raise LeakageError(f"leakage audit failed ({len(problems)} findings): " + "; ".join(problems[:20])
                           + (f"; first files: {shown}" if shown else "") + (f"; manifest: {where}" if where else ""))


def same_scan_findings(manifest: pd.DataFrame, adjacent: float = 1.5) -> list[tuple[str, list[str]]]:
    """Slices of one scan in two splits: same folder and geometry (``scan_key``) and neighbouring
    positions along the slice normal (at most ``adjacent`` times the scan's median slice step apart).

    Catches a series whose identifiers were lost in a way the identity rules could not repair (a scan
    split over two patient keys). Returns ``(finding, paths)`` per scan.
    """
    if not {"scan_key", "position", "split"} <= set(manifest.columns):
        return []
    sub = manifest.dropna(subset=["scan_key", "position", "split"])
    out = []
    for key, rows in sub.groupby("scan_key"):
        if rows["split"].nunique() < 2 or len(rows) < 2:
            continue
        rows = rows.sort_values("position")
        pos = rows["position"].to_numpy(dtype=float)
        steps = np.diff(pos)
        positive = steps[steps > 1e-3]
        if not len(positive):
            continue
        limit = adjacent * float(np.median(positive))
        splits = rows["split"].to_numpy()
        cross = [i for i in range(len(steps)) if splits[i] != splits[i + 1] and steps[i] <= limit]
        if cross:
            paths = [str(p) for i in cross[:2] for p in rows["path"].iloc[[i, i + 1]]] if "path" in rows else []
            out.append((f"scan_key={key}: {len(cross)} adjacent slices of one scan in "
                        f"{'+'.join(sorted(set(splits)))}", paths))
    return out


def check_splits_usable(manifest: pd.DataFrame, n_classes: int, where: Path | None = None) -> None:
    """Validation and test must each hold every class, or no threshold/AUROC can be computed."""
    for split in ("val", "test"):
        present = set(manifest.loc[manifest["split"] == split, "label"])
        if len(present) < min(n_classes, 2):
            raise InputError(
                f"the {split} split holds labels {sorted(present)} only; add patients or change data.split fractions"
                + (f" (manifest: {where})" if where else "")
            )


def splits_from_column(manifest: pd.DataFrame, labels_path: Path, key_column: str, column: str, file: Path,
                       root: Path | None = None) -> pd.DataFrame:
    """Return ``manifest`` with the ``split`` given per sample by ``column`` of the labels CSV (no draw).

    The CSV's ``key_column`` must hold the manifest's ``path`` (``data.label_key: path``). Values must
    be train/val/test, and all samples of a patient must share one split; the assignment is written
    to ``file`` like a drawn split, so runs record it the same way.
    """
    df = pd.read_csv(labels_path, dtype=str, keep_default_na=False)
    for col in (key_column, column):
        if col not in df.columns:
            raise InputError(f"labels file {labels_path} has no column {col!r} (data.split.column); columns are {list(df.columns)}")
    keys, values = df[key_column].str.strip(), df[column].str.strip()
    if root is not None:  # path keys as ingest normalised them (relative to root or the CSV, or absolute)
        keys = keys.map(lambda k: normalise_path_key(k, root, labels_path.parent))
    bad = values[~values.isin(SPLITS)]
    if len(bad):
        raise InputError(f"labels file {labels_path} line {bad.index[0] + 2}: {column}={bad.iloc[0]!r} is not one of "
                         f"{', '.join(SPLITS)} ({len(bad)} such rows)")
    mapping: dict[str, str] = {}
    for row_no, (key, value) in enumerate(zip(keys, values, strict=True), start=2):
        if mapping.setdefault(key, value) != value:
            raise InputError(f"labels file {labels_path} line {row_no}: {key_column} given twice with different {column} values")
    out = manifest.copy()
    out["split"] = out["path"].map(mapping)
    if out["split"].isna().any():
        raise InputError(f"labels file {labels_path}: {int(out['split'].isna().sum())} ingested files have no {column!r} "
                         f"value, e.g. {out.loc[out['split'].isna(), 'path'].iloc[0]}")
    spread = out.groupby("patient_key")["split"].nunique()
    if (spread > 1).any():
        keys_ = list(spread[spread > 1].index)
        raise LeakageError(f"labels file {labels_path}: column {column!r} puts {len(keys_)} patients in more than one "
                           f"split, e.g. {keys_[0]} in {'+'.join(sorted(out.loc[out['patient_key'] == keys_[0], 'split'].unique()))}")
    per_patient = out.groupby("patient_key")["split"].first()
    file.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"patient_key": per_patient.index, "split": per_patient.values, "params": f"column={column}"}).to_csv(file, index=False)
    log.info("split taken from column %r of %s", column, labels_path)
    return out
