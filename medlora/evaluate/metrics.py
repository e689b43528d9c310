"""Binary and one-vs-rest multi-class metrics, computed in numpy and equal to scikit-learn's.

Each metric has one implementation, :func:`weighted_binary_metrics`: it computes a whole block of
bootstrap resamples at once from per-sample draw counts (one sort and a few matrix products), and
the plain :func:`binary_metrics` is the same call with unit weights (a single row of ones). They are
written out rather than calling scikit-learn per metric because the bootstrap needs thousands of
resamples. The tests check every value against scikit-learn, and the resampled values against one
call per resample.

Metric names (they become MLflow metric names, hence no dots):

``auroc``, ``auprc``
    Area under the ROC curve (trapezoidal, ties count one half: ``roc_auc_score``) and average
    precision (step-wise, ``average_precision_score``). Threshold-free.
``sensitivity``, ``specificity``, ``ppv``, ``npv``, ``f1``, ``balanced_accuracy``, ``accuracy``,
``tp``, ``fp``, ``tn``, ``fn``
    At the given (frozen) threshold; a sample is predicted positive iff ``score >= threshold``.
    ``balanced_accuracy`` is ``(sensitivity + specificity) / 2``.
``brier``, ``ece``
    Only when ``probabilities=True``; see :mod:`medlora.evaluate.calibration` (ECE: 10 equal-width bins).
``sensitivity_at_specificity_90`` / ``_95``, ``specificity_at_sensitivity_90`` / ``_95``
    Best sensitivity among the empirical ROC points whose specificity is at least 0.90 / 0.95 (and
    the converse). These pick their own threshold on the data they are computed on, so they are
    descriptive, not a frozen operating point.

A value that is undefined for the data (``ppv`` with no predicted positives, ``npv`` with no
predicted negatives, ``sensitivity`` with no positives, ...) is ``float("nan")``. Threshold-free
ranking metrics with a single class present raise :class:`~medlora.errors.MetricUndefinedError`
(or are NaN with ``on_one_class="nan"``, which the subgroup analysis uses).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

import numpy as np

from medlora.errors import MetricUndefinedError

from .calibration import DEFAULT_BINS, weighted_brier, weighted_ece
from .checks import check_binary, require_both_classes

__all__ = ["check_binary", "require_both_classes"]  # re-exported: the one input check lives in .checks

logger = logging.getLogger(__name__)

#: Targets of the ``sensitivity_at_specificity_XX`` / ``specificity_at_sensitivity_XX`` metrics.
FIXED_TARGETS: tuple[float, ...] = (0.90, 0.95)

RANKING_METRICS: tuple[str, ...] = ("auroc", "auprc") + tuple(
    f"{a}_at_{b}_{round(t * 100)}"
    for a, b in (("sensitivity", "specificity"), ("specificity", "sensitivity"))
    for t in FIXED_TARGETS
)
THRESHOLD_METRICS: tuple[str, ...] = (
    "sensitivity", "specificity", "ppv", "npv", "f1", "balanced_accuracy", "accuracy", "tp", "fp", "tn", "fn",
)  # fmt: skip
CALIBRATION_METRICS: tuple[str, ...] = ("brier", "ece")
_EPS = 1e-12  # tolerance when comparing a rate such as 19/20 with a target such as 0.95


def binary_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative ``(fps, tps, thresholds)`` at each distinct score, highest threshold first.

    Entry ``k`` counts the samples with ``score >= thresholds[k]`` (scikit-learn's ``_binary_clf_curve``).
    """
    fps, tps, thresholds = _weighted_curve(y, s, np.ones((1, y.size)))
    return fps[:, 0], tps[:, 0], thresholds


def _unit(y: np.ndarray) -> np.ndarray:
    return np.ones((1, y.size))


def ranking_metrics(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """The threshold-free metrics (:data:`RANKING_METRICS`) of checked ``y``/``s``; NaN with one class."""
    return {k: float(v[0]) for k, v in weighted_ranking_metrics(y, s, _unit(y)).items()}


def threshold_metrics(y: np.ndarray, s: np.ndarray, threshold: float) -> dict[str, float]:
    """The metrics at a frozen threshold (:data:`THRESHOLD_METRICS`) of checked ``y``/``s``."""
    return {k: float(v[0]) for k, v in weighted_threshold_metrics(y, s, _unit(y), threshold).items()}


def auroc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """AUROC alone (equal to ``sklearn.metrics.roc_auc_score``); raises with a single class."""
    y, s = check_binary(y_true, scores)
    require_both_classes(y, "AUROC")
    return ranking_metrics(y, s)["auroc"]


def binary_metrics(
    y_true: np.ndarray,
    scores: np.ndarray,
    threshold: float,
    probabilities: bool = True,
    *,
    on_one_class: Literal["raise", "nan"] = "raise",
) -> dict[str, float]:
    """All binary metrics (see the module docstring for names and definitions) at a frozen threshold.

    ``scores`` are probabilities of the positive (abnormal) class when ``probabilities`` is true
    (then ``brier`` and ``ece`` are included); with unbounded scores such as anomaly distances pass
    ``probabilities=False`` and those two are omitted.
    """
    y, s = check_binary(y_true, scores, probabilities=probabilities)
    return _binary_metrics_unchecked(y, s, float(threshold), probabilities, on_one_class)


def _binary_metrics_unchecked(
    y: np.ndarray, s: np.ndarray, threshold: float, probabilities: bool, on_one_class: str
) -> dict[str, float]:
    """:func:`weighted_binary_metrics` with unit weights, as floats."""
    if on_one_class == "raise":
        require_both_classes(y, "AUROC (and AUPRC, sensitivity-at-specificity)")
    return {k: float(v[0]) for k, v in weighted_binary_metrics(y, s, _unit(y), threshold, probabilities).items()}


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else float("nan")


def metric_names(probabilities: bool = True) -> tuple[str, ...]:
    """Names :func:`binary_metrics` returns, in its order."""
    return RANKING_METRICS + THRESHOLD_METRICS + (CALIBRATION_METRICS if probabilities else ())


def _safe_name(name: str) -> str:
    """A class name made safe for an MLflow metric name (letters, digits, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_") or "class"


def multiclass_metrics(
    y_true: np.ndarray, prob_matrix: np.ndarray, class_names: list[str]
) -> dict[str, float]:
    """One-vs-rest metrics for ``K`` classes; ``y_true`` holds class indices ``0..K-1``.

    Per class ``c`` (name made MLflow-safe): ``auroc_<c>``, ``auprc_<c>`` (class ``c`` against the
    rest, scored by column ``c``) and ``sensitivity_<c>`` (recall of ``c`` under the arg-max rule).
    Overall: ``auroc_macro`` / ``auprc_macro`` (unweighted mean over classes; equal to
    ``roc_auc_score(multi_class="ovr", average="macro")``), ``accuracy``, ``balanced_accuracy``
    (mean recall over the classes present) and ``f1_macro`` (arg-max predictions).
    A class absent from ``y_true`` gets NaN per-class ranking metrics and is left out of the macro
    means, with a logged warning; fewer than two classes present raises.
    """
    y = np.asarray(y_true).ravel()
    p = np.asarray(prob_matrix, dtype=float)
    k = len(class_names)
    if p.ndim != 2 or p.shape != (y.size, k):
        raise ValueError(f"prob_matrix must have shape (n={y.size}, classes={k}), got {p.shape}")
    if not np.isfinite(p).all():
        raise MetricUndefinedError("prob_matrix contains non-finite values (NaN or inf)")
    if not np.issubdtype(y.dtype, np.integer) or (y.size and (y.min() < 0 or y.max() >= k)):
        raise ValueError(
            f"y_true must hold class indices 0..{k - 1}, got values {np.unique(y)[:10].tolist()}"
        )
    present = np.unique(y)
    if present.size < 2:
        raise MetricUndefinedError(
            f"multi-class AUROC is undefined: only class(es) {present.tolist()} present"
        )
    out: dict[str, float] = {}
    pred = p.argmax(axis=1)
    aucs, aps, recalls, f1s = [], [], [], []
    for c, name in enumerate(class_names):
        key = _safe_name(name)
        yc = (y == c).astype(np.int64)
        if 0 < yc.sum() < yc.size:
            r = ranking_metrics(yc, p[:, c])
            aucs.append(r["auroc"])
            aps.append(r["auprc"])
            out[f"auroc_{key}"], out[f"auprc_{key}"] = r["auroc"], r["auprc"]
        else:
            logger.warning("class %r is absent from y_true: its one-vs-rest AUROC/AUPRC are NaN", name)
            out[f"auroc_{key}"] = out[f"auprc_{key}"] = float("nan")
        tp = float(np.sum((pred == c) & (yc == 1)))
        recall = _ratio(tp, float(yc.sum()))
        out[f"sensitivity_{key}"] = recall
        if yc.sum():
            recalls.append(recall)
        f1 = _ratio(2 * tp, float((pred == c).sum() + yc.sum()))
        if not np.isnan(f1):  # like scikit-learn, macro F1 covers classes that are true or predicted
            f1s.append(f1)
    out["auroc_macro"] = float(np.mean(aucs))
    out["auprc_macro"] = float(np.mean(aps))
    out["accuracy"] = float(np.mean(pred == y))
    out["balanced_accuracy"] = float(np.mean(recalls))
    out["f1_macro"] = float(np.mean(f1s))
    return out


def weighted_binary_metrics(
    y: np.ndarray, s: np.ndarray, weights: np.ndarray, threshold: float, probabilities: bool = True
) -> dict[str, np.ndarray]:
    """Every binary metric of many resamples at once, one array entry per resample.

    Row ``b`` of ``weights`` (``(B, n)`` counts) says how often each sample is drawn in resample ``b``;
    the values equal the metrics of ``y[idx], s[idx]`` on the drawn indices (single-class
    resamples give NaN ranking metrics). ``y``/``s`` must be checked already (:func:`check_binary`).
    """
    w = np.asarray(weights, dtype=float)
    out = weighted_ranking_metrics(y, s, w)
    out.update(weighted_threshold_metrics(y, s, w, threshold))
    if probabilities:
        pos = y.astype(float)
        out["brier"] = weighted_brier(pos, s, w)
        out["ece"] = weighted_ece(pos, s, w, DEFAULT_BINS)
    return out


def _weighted_groups(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct score (highest first): the positive and the total weight of its samples
    (``(distinct scores, B)`` each), and the distinct scores.

    Samples run along the first axis, resamples along the second, so the gather and the running sums
    are row operations: pass ``w`` as the transpose of an ``(n, B)`` array to avoid a copy.
    """
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    starts = np.r_[0, np.flatnonzero(np.diff(s_sorted)) + 1]  # one group per distinct score
    w_sorted = np.asarray(w).T[order]  # (n, B)
    if not np.issubdtype(w_sorted.dtype, np.floating):
        w_sorted = w_sorted.astype(float)
    pos_w = w_sorted * y[order].astype(w_sorted.dtype)[:, None]
    if starts.size < s.size:  # tied scores: one row per distinct score
        pos_w, w_sorted = np.add.reduceat(pos_w, starts, axis=0), np.add.reduceat(w_sorted, starts, axis=0)
    return pos_w, w_sorted, s_sorted[starts]


def _weighted_curve(y: np.ndarray, s: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative weighted ``(fps, tps)`` (``(distinct scores, B)``) and the distinct scores, highest first."""
    pos_w, all_w, thresholds = _weighted_groups(y, s, w)
    tps = pos_w.cumsum(axis=0)
    return all_w.cumsum(axis=0) - tps, tps, thresholds


def weighted_ranking_metrics(
    y: np.ndarray, s: np.ndarray, w: np.ndarray, names: tuple[str, ...] = RANKING_METRICS
) -> dict[str, np.ndarray]:
    """The threshold-free metrics ``names`` (default all) per row of ``w``; NaN where a row has one class.

    With ``P_g``/``N_g`` the positive/negative weight at distinct score ``g`` and ``TP_g``/``A_g`` the
    positive/total weight at scores ``>= g``: AUROC ``= sum_g N_g (TP_g - P_g / 2) / (P N)`` (the
    trapezoids of the ROC curve, ties counting one half) and AUPRC ``= sum_g P_g (TP_g / A_g) / P``
    (recall steps times precision).
    """
    pos_w, all_w, _ = _weighted_groups(y, s, w)
    tps, cum = pos_w.cumsum(axis=0), all_w.cumsum(axis=0)
    n_pos = tps[-1]
    n_neg = cum[-1] - n_pos
    both = (n_pos > 0) & (n_neg > 0)
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        if "auroc" in names:
            out["auroc"] = ((all_w - pos_w) * (tps - pos_w / 2)).sum(axis=0) / (n_pos.astype(float) * n_neg)
        if "auprc" in names:
            out["auprc"] = (pos_w * np.divide(tps, cum, out=np.zeros_like(tps), where=cum > 0)).sum(axis=0) / n_pos
        if any(n in names for n in RANKING_METRICS[2:]):
            tpr, fpr = tps / n_pos, (cum - tps) / n_neg
            spec = 1.0 - fpr
            for t in FIXED_TARGETS:  # the point (0, 0) never beats a real threshold, so it is left out
                name = f"sensitivity_at_specificity_{round(t * 100)}"
                if name in names:
                    out[name] = np.maximum(np.where(spec >= t - _EPS, tpr, -np.inf).max(axis=0), 0.0)
            for t in FIXED_TARGETS:
                name = f"specificity_at_sensitivity_{round(t * 100)}"
                if name in names:
                    out[name] = np.where(tpr >= t - _EPS, spec, -np.inf).max(axis=0)
    return {name: np.where(both, out[name], np.nan).astype(float) for name in names}


def weighted_threshold_metrics(y: np.ndarray, s: np.ndarray, w: np.ndarray, threshold: float) -> dict[str, np.ndarray]:
    """The metrics at a frozen threshold (a sample is positive iff ``score >= threshold``) per row of ``w``."""
    wt = np.asarray(w).T  # (n, B): sums over sample rows
    pred, pos = s >= threshold, np.asarray(y).astype(bool)
    tp, fp, fn = (wt[m].sum(axis=0, dtype=float) for m in (pred & pos, pred & ~pos, ~pred & pos))
    n = wt.sum(axis=0, dtype=float)
    tn = n - tp - fp - fn
    with np.errstate(divide="ignore", invalid="ignore"):

        def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)

        sens, spec = ratio(tp, tp + fn), ratio(tn, tn + fp)
        return {"sensitivity": sens, "specificity": spec, "ppv": ratio(tp, tp + fp), "npv": ratio(tn, tn + fn),
                "f1": ratio(2 * tp, 2 * tp + fp + fn), "balanced_accuracy": (sens + spec) / 2.0,
                "accuracy": (tp + tn) / n, "tp": tp, "fp": fp, "tn": tn, "fn": fn}
