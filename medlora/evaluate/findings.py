"""Evaluation of several findings (multi-label) or classes (multi-class, one-vs-rest) per study.

Per finding (or class), at the study level: AUROC, AUPRC, and sensitivity/specificity/PPV/NPV at the
finding's own operating point, chosen on the validation studies (``evaluate.operating_point``) and
frozen. Unknown targets (NaN) are left out of that finding's numbers, never counted as negatives.
Intervals: a patient-clustered bootstrap whose resamples are drawn **once** and shared by every
finding (:func:`cluster_bootstrap_weights`), so the macro AUROC (mean over findings) gets an interval
from the same replicates, and a DeLong interval per finding. Also the micro AUROC (all known
study-finding pairs pooled) and an "any finding" score (the highest finding probability, or
``1 - P(normal)`` for multi-class with ``data.normal``) evaluated as a binary task with
:func:`~medlora.evaluate.report.evaluate_binary`. Multi-class adds accuracy and balanced accuracy of
the arg-max call, the confusion matrix and, for ordinal grades, the quadratic-weighted kappa.

A finding without positives (or negatives) in validation or test is reported with NaN metrics and
the reason; the evaluation goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ..config import EvaluateConfig
from .delong import delong_auc
from .intervals import Interval, percentile_intervals
from .metrics import _safe_name, ranking_metrics, weighted_ranking_metrics, weighted_threshold_metrics
from .operating_point import choose_operating_point
from .report import EvaluationResult, evaluate_binary, flat_metrics

log = logging.getLogger(__name__)

FINDING_METRICS = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv")
_NAN = float("nan")


@dataclass
class StudyMatrix:
    """Study-level scores and targets, one column per finding (targets NaN where unknown)."""

    study_key: np.ndarray
    patient_key: np.ndarray
    scores: np.ndarray
    targets: np.ndarray

    def frame(self, names: Sequence[str]) -> pd.DataFrame:
        """One row per study: ``study_key, patient_key, score.<name>, label.<name>`` (label NaN = unknown)."""
        cols = {"study_key": self.study_key, "patient_key": self.patient_key}
        for k, name in enumerate(names):
            cols[f"score.{name}"], cols[f"label.{name}"] = self.scores[:, k], self.targets[:, k]
        return pd.DataFrame(cols)


@dataclass
class FindingResult:
    name: str
    n: int
    n_positive: int
    threshold: float
    metrics: dict[str, float]
    intervals: dict[str, Interval]
    reason: str = ""  # why some metrics are NaN


@dataclass
class MultiResult:
    task: str
    findings: list[FindingResult]
    summary: dict[str, float]
    intervals: dict[str, Interval]
    any_finding: EvaluationResult | None = None
    confusion: list[list[int]] | None = None
    warnings: list[str] = field(default_factory=list)


def finding_studies(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    """From a :meth:`StudyMatrix.frame` table: ``study_key, patient_key, label, score`` of one finding,
    studies whose finding is unknown left out."""
    known = frame[f"label.{name}"].notna()
    return pd.DataFrame({"study_key": frame["study_key"][known], "patient_key": frame["patient_key"][known],
                         "label": frame[f"label.{name}"][known].astype(int), "score": frame[f"score.{name}"][known]})


def study_matrix(frame: pd.DataFrame, names: tuple[str, ...], how: str = "max") -> StudyMatrix:
    """Aggregate per-sample ``score.<name>``/``label.<name>`` columns to one row per study (sorted keys)."""
    score_cols, label_cols = [f"score.{n}" for n in names], [f"label.{n}" for n in names]
    groups = frame.groupby("study_key", sort=True)
    # attention: a study model gave every sample of a study the study's scores; max keeps them
    scores = groups[score_cols].agg("max" if how == "attention" else how)
    first = groups[label_cols + ["patient_key"]].first()
    spread = groups[label_cols].nunique(dropna=False).max(axis=1)
    if (spread > 1).any():
        from ..errors import InputError

        raise InputError(f"study {spread.index[int(np.argmax(spread.to_numpy() > 1))]!r} has conflicting findings "
                         "across its samples; every sample of a study must agree")
    return StudyMatrix(scores.index.to_numpy(), first["patient_key"].to_numpy(),
                       scores.to_numpy(dtype=float), first[label_cols].to_numpy(dtype=float))


def mean_auroc(m: StudyMatrix) -> float:
    """Mean AUROC over the findings with both classes among their known targets (early stopping)."""
    aucs = []
    for k in range(m.scores.shape[1]):
        known = ~np.isnan(m.targets[:, k])
        y = m.targets[known, k].astype(int)
        if 0 < y.sum() < y.size:
            aucs.append(ranking_metrics(y, m.scores[known, k])["auroc"])
    return float(np.mean(aucs)) if aucs else _NAN


def cluster_bootstrap_weights(clusters: np.ndarray, strata: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """``(n, B)`` draw counts of each sample in ``B`` resamples of whole clusters, drawn with
    replacement within each stratum (a cluster's stratum: the max of ``strata`` over its samples)."""
    _, inv = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(inv.max()) + 1 if inv.size else 0
    stratum = np.zeros(n_clusters, dtype=np.int64)
    np.maximum.at(stratum, inv, np.asarray(strata, dtype=np.int64))
    rng = np.random.default_rng(seed)
    counts = np.zeros((n_clusters, n_bootstrap))
    for value in np.unique(stratum):
        members = np.flatnonzero(stratum == value)
        counts[members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size), size=n_bootstrap).T
    return counts[inv]


def _replicates(y: np.ndarray, s: np.ndarray, weights: np.ndarray, threshold: float,
                chunk: int | None = None) -> dict[str, np.ndarray]:
    """A finding's metrics in every resample (columns of ``weights``), a block of columns at a time
    so that each block's running sums stay in cache (about 4 MB per block)."""
    chunk = chunk or max(8, min(256, 500_000 // max(y.size, 1)))
    names = FINDING_METRICS if not np.isnan(threshold) else FINDING_METRICS[:2]
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, weights.shape[1], chunk):
        # (block, n) view of an (n, block) float32 array: draw counts are small integers, exact in float32
        w = np.ascontiguousarray(weights[:, start:start + chunk], dtype=np.float32).T
        part = weighted_ranking_metrics(y, s, w, ("auroc", "auprc"))
        if not np.isnan(threshold):
            part.update(weighted_threshold_metrics(y, s, w, threshold))
        parts.append(part)
    return {k: np.concatenate([p[k] for p in parts]) for k in names}


def _one_finding(name: str, val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 clusters: np.ndarray, weights: np.ndarray | None, cfg: EvaluateConfig) -> tuple[FindingResult, np.ndarray]:
    """A finding's result and its AUROC replicates (NaN replicates where undefined)."""
    (yv, sv), (y, s) = val, test
    n_pos = int(y.sum())
    metrics = dict.fromkeys(FINDING_METRICS, _NAN)
    intervals: dict[str, Interval] = dict.fromkeys([*FINDING_METRICS, "auroc_delong"], (_NAN, _NAN))
    replicates = np.full(0 if weights is None else weights.shape[1], _NAN)
    reasons = []
    threshold = _NAN
    if 0 < yv.sum() < yv.size:
        threshold = choose_operating_point(yv, sv, cfg.operating_point).threshold
    else:
        reasons.append(f"validation holds {int(yv.sum())} positives of {yv.size} known: no operating point")
    if not 0 < n_pos < y.size:
        reasons.append(f"test holds {n_pos} positives of {y.size} known: AUROC undefined")
        return FindingResult(name, int(y.size), n_pos, threshold, metrics, intervals, "; ".join(reasons)), replicates
    unit = np.ones((1, y.size))
    metrics.update({k: float(v[0]) for k, v in weighted_ranking_metrics(y, s, unit, ("auroc", "auprc")).items()})
    if not np.isnan(threshold):
        point = weighted_threshold_metrics(y, s, unit, threshold)
        metrics.update({k: float(point[k][0]) for k in FINDING_METRICS[2:]})
    if weights is not None:
        reps = _replicates(y, s, weights, threshold)
        intervals.update(percentile_intervals(reps, cfg.ci))
        replicates = reps["auroc"]
    dl = delong_auc(y, s, ci=cfg.ci, clusters=clusters)
    intervals["auroc_delong"] = (dl.ci_low, dl.ci_high)
    return FindingResult(name, int(y.size), n_pos, threshold, metrics, intervals, "; ".join(reasons)), replicates


def evaluate_findings(val: StudyMatrix, test: StudyMatrix, names: tuple[str, ...], cfg: EvaluateConfig,
                      task: str = "multilabel", normal: int | None = None, ordinal: bool = False, seed: int = 0,
                      subgroups: dict[str, np.ndarray] | None = None) -> MultiResult:
    """Every finding's (class's) metrics with shared-resample intervals, macro/micro AUROC, "any finding"."""
    known_test = ~np.isnan(test.targets)
    any_test = (np.nan_to_num(test.targets) == 1).any(axis=1).astype(int)
    weights = (cluster_bootstrap_weights(test.patient_key, any_test, cfg.bootstrap, seed)
               if cfg.bootstrap > 0 else None)
    results, reps, warnings = [], [], []
    for k, name in enumerate(names):
        kv, kt = ~np.isnan(val.targets[:, k]), known_test[:, k]
        res, rep = _one_finding(name, (val.targets[kv, k].astype(int), val.scores[kv, k]),
                                (test.targets[kt, k].astype(int), test.scores[kt, k]), test.patient_key[kt],
                                None if weights is None else weights[kt], cfg)
        if res.reason:
            warnings.append(f"finding {name}: {res.reason}; the metrics it needs are NaN")
        results.append(res)
        reps.append(rep)
    aucs = np.array([r.metrics["auroc"] for r in results])
    defined = ~np.isnan(aucs)
    summary = {"auroc_macro": float(aucs[defined].mean()) if defined.any() else _NAN,
               "auroc_micro": _micro_auroc(test),
               "findings_evaluated": float(defined.sum())}
    intervals: dict[str, Interval] = {"auroc_macro": (_NAN, _NAN)}
    if weights is not None and defined.any():
        intervals.update(percentile_intervals({"auroc_macro": np.stack(reps)[defined].mean(axis=0)}, cfg.ci))
    confusion = None
    if task == "multiclass":
        confusion = _multiclass_summary(test, names, ordinal, summary)
    any_result = _any_finding(val, test, task, normal, cfg, seed, subgroups, warnings)
    for note in warnings:
        log.warning(note)
    return MultiResult(task, results, summary, intervals, any_result, confusion, warnings)


def _micro_auroc(test: StudyMatrix) -> float:
    known = ~np.isnan(test.targets)
    y = test.targets[known].astype(int)
    return ranking_metrics(y, test.scores[known])["auroc"] if 0 < y.sum() < y.size else _NAN


def _multiclass_summary(test: StudyMatrix, names: tuple[str, ...], ordinal: bool, summary: dict[str, float]) -> list[list[int]]:
    from sklearn.metrics import balanced_accuracy_score, cohen_kappa_score, confusion_matrix

    y, pred = test.targets.argmax(axis=1), test.scores.argmax(axis=1)
    summary["accuracy"] = float(np.mean(pred == y))
    summary["balanced_accuracy"] = float(balanced_accuracy_score(y, pred))
    if ordinal:
        summary["kappa_quadratic"] = float(cohen_kappa_score(y, pred, weights="quadratic"))
    return confusion_matrix(y, pred, labels=list(range(len(names)))).tolist()


def _any_finding(val: StudyMatrix, test: StudyMatrix, task: str, normal: int | None, cfg: EvaluateConfig,
                 seed: int, subgroups: dict[str, np.ndarray] | None, warnings: list[str]) -> EvaluationResult | None:
    """The binary "any finding vs normal" evaluation (multi-class: only with ``data.normal``)."""
    if task == "multiclass" and normal is None:
        return None

    def binary(m: StudyMatrix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if task == "multiclass":
            return (m.targets[:, normal] != 1).astype(int), 1.0 - m.scores[:, normal], np.ones(len(m.scores), bool)
        positive = (np.nan_to_num(m.targets) == 1).any(axis=1)
        known = positive | ~np.isnan(m.targets).any(axis=1)  # no finding present and one unknown: unknown
        return positive.astype(int), m.scores.max(axis=1), known

    (yv, sv, kv), (yt, st, kt) = binary(val), binary(test)
    for label, y in (("validation", yv[kv]), ("test", yt[kt])):
        if not 0 < y.sum() < y.size:
            warnings.append(f"any finding: {label} holds {int(y.sum())} abnormal of {y.size} studies; not evaluated")
            return None
    groups = None if not subgroups else {k: np.asarray(v)[kt] for k, v in subgroups.items()}
    result = evaluate_binary(yv[kv], sv[kv], yt[kt], st[kt], clusters_test=test.patient_key[kt],
                             policy=cfg.operating_point, n_bootstrap=cfg.bootstrap, ci=cfg.ci, seed=seed,
                             subgroups=groups, min_per_class=cfg.min_per_class)
    result.calibration = {"method": "none"}  # evaluate.calibration is for data.task binary only
    return result


def flat_multi_metrics(result: MultiResult, prefix: str = "test_") -> dict[str, float]:
    """MLflow names: ``{prefix}<metric>.<finding>`` with ``_ci_low``/``_ci_high`` before the dot,
    ``threshold.<finding>``, ``{prefix}n_positive.<finding>``, ``{prefix}auroc_macro`` (+ interval),
    ``{prefix}auroc_micro``, multi-class summaries, and the "any finding" metrics as
    ``{prefix}any_<metric>`` (see :func:`~medlora.evaluate.report.flat_metrics`)."""
    out: dict[str, float] = {}
    for f in result.findings:
        key = _safe_name(f.name)
        for name, value in f.metrics.items():
            out[f"{prefix}{name}.{key}"] = value
        for name, (low, high) in f.intervals.items():
            out[f"{prefix}{name}_ci_low.{key}"], out[f"{prefix}{name}_ci_high.{key}"] = low, high
        out[f"threshold.{key}"] = f.threshold
        out[f"{prefix}n.{key}"], out[f"{prefix}n_positive.{key}"] = float(f.n), float(f.n_positive)
    out.update({f"{prefix}{k}": v for k, v in result.summary.items()})
    for name, (low, high) in result.intervals.items():
        out[f"{prefix}{name}_ci_low"], out[f"{prefix}{name}_ci_high"] = low, high
    if result.any_finding is not None:
        out.update(flat_metrics(result.any_finding, prefix=f"{prefix}any_"))
    return out


def to_json(result: MultiResult) -> dict:
    """A JSON-serialisable dict of the whole result (intervals as ``[low, high]``, NaN as null)."""
    from dataclasses import asdict

    from .report import _jsonable
    from .report import to_json as binary_json

    return _jsonable({"task": result.task, "findings": [asdict(f) for f in result.findings],
                      "summary": result.summary, "intervals": result.intervals, "confusion": result.confusion,
                      "any_finding": None if result.any_finding is None else binary_json(result.any_finding),
                      "warnings": result.warnings})
