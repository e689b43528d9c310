"""Per-finding (per-class) validation of a multi-label or multi-class model at its shipped thresholds.

Each output the site labels is judged one against the rest at the threshold the bundle shipped for it
(never re-chosen here): study labels are the maximum of the study's known sample labels (an unknown
finding leaves the study out of that finding), study scores are aggregated with the bundle's rule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..config import EvaluateConfig
from ..io.findings import decode_column
from .aggregate import aggregate_attribute, aggregate_scores
from .operating_point import OperatingPoint
from .report import evaluate_at

COLUMNS = ("auroc", "sensitivity", "specificity", "ppv", "npv")


def _targets(samples: pd.DataFrame, task: str, site_outputs: list[str]) -> np.ndarray:
    """Per sample and site output: 1, 0 or NaN (unknown)."""
    if task == "multilabel":
        return decode_column(samples["findings"], len(site_outputs)).astype(float)
    label = samples["label"].to_numpy(int)
    return np.stack([(label == k).astype(float) for k in range(len(site_outputs))], axis=1)


def finding_rows(samples: pd.DataFrame, task: str, site_outputs: list[str], thresholds: dict[str, float],
                 how: str, policy: str, cfg: EvaluateConfig, seed: int = 0) -> list[dict]:
    """One row per site output: counts, threshold and each metric with its interval (NaN where undefined)."""
    targets = _targets(samples, task, site_outputs)
    keys = samples["study_key"].to_numpy()
    rows = []
    for j, name in enumerate(site_outputs):
        known = ~np.isnan(targets[:, j])
        column = f"score.{name}"
        row: dict = {"finding": name, "threshold": float(thresholds.get(name, float("nan")))}
        if column not in samples or not known.any():
            rows.append({**row, "n": 0, "note": "not scored or not labelled"})
            continue
        part = samples[known]
        study, score, label = aggregate_scores(keys[known], part[column].to_numpy(float),
                                               targets[known, j].astype(int), how=how)
        patients = aggregate_attribute(keys[known], part["patient_key"].to_numpy(), name="patient_key")
        row.update(n=int(len(study)), n_positive=int(label.sum()), n_negative=int(len(label) - label.sum()))
        if label.min() == label.max() or not np.isfinite(row["threshold"]):
            rows.append({**row, "note": "one class only, or no shipped threshold: not measurable"})
            continue
        ev = evaluate_at(OperatingPoint(policy, row["threshold"], float("nan"), float("nan")), label, score, patients,
                         cfg.bootstrap, cfg.ci, seed, None, True, cfg.min_per_class)
        for metric in COLUMNS:
            band = ev.intervals.get("auroc_delong" if metric == "auroc" else f"{metric}_wilson",
                                    ev.intervals.get(metric, (float("nan"), float("nan"))))
            row[metric] = float(ev.metrics.get(metric, float("nan")))
            row[f"{metric}_ci"] = [float(band[0]), float(band[1])]
        rows.append(row)
    return rows


def finding_metrics(rows: list[dict]) -> dict[str, float]:
    """MLflow metrics named as a training run's per-finding ones (``test_auroc.<finding>`` ...)."""
    out = {}
    for row in rows:
        for metric in COLUMNS:
            value = row.get(metric)
            if value is not None and np.isfinite(value):
                out[f"test_{metric}.{row['finding']}"] = value
    aurocs = [row["auroc"] for row in rows if np.isfinite(row.get("auroc", float("nan")))]
    if aurocs:
        out["test_auroc_macro"] = float(np.mean(aurocs))
    return out
