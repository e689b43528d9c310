"""The metric rows a clinical reader sees, in the model card and in ``report.html``.

Each metric row carries a human name, a one-line definition, the counts behind a rate ("5/5") and
one interval named with its method: Wilson for sensitivity, specificity, PPV and NPV (a bootstrap
interval of a rate collapses to a point on a handful of cases), DeLong for AUROC, the
patient-clustered bootstrap for the rest. An interval of zero width from a test set below
``evaluate.min_per_class`` is not shown as if it meant something. The binary table
(:mod:`medlora.review.card`) and each finding's row (:mod:`medlora.review.findings_report`) are
built by the same :func:`metric_rows`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..evaluate.intervals import wilson_interval

DEFAULT_MIN_PER_CLASS = 10  # metrics.json written before evaluate.min_per_class existed
HEADLINE = ("auroc", "auprc", "sensitivity", "specificity", "ppv", "npv", "balanced_accuracy", "brier", "ece")
NAMES = {  # metric → (human name, one-line definition)
    "auroc": ("AUROC (area under the ROC curve)",
              "Chance that a random abnormal study scores higher than a random normal one (0.5 = coin flip)."),
    "auprc": ("AUPRC (average precision)",
              "Precision averaged over every sensitivity level; compare it with the share of abnormal studies."),
    "sensitivity": ("Sensitivity", "Share of abnormal studies the model calls abnormal."),
    "specificity": ("Specificity", "Share of normal studies the model calls normal."),
    "ppv": ("Positive predictive value (PPV)",
            "Share of studies called abnormal that are abnormal; depends on how common abnormal studies are."),
    "npv": ("Negative predictive value (NPV)",
            "Share of studies called normal that are normal; depends on how common abnormal studies are."),
    "balanced_accuracy": ("Balanced accuracy", "Mean of sensitivity and specificity."),
    "brier": ("Brier score", "Mean squared gap between score and outcome (0 is perfect; 0.25 is always saying 50 %)."),
    "ece": ("Expected calibration error (ECE)",
            "Average gap between the score and the observed share of abnormal studies, over 10 score bins."),
}
# rates: (numerator, denominator terms) of the confusion counts, with a Wilson interval
RATES = {"sensitivity": ("tp", ("tp", "fn")), "specificity": ("tn", ("tn", "fp")),
         "ppv": ("tp", ("tp", "fp")), "npv": ("tn", ("tn", "fn"))}


def fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def count(value: Any) -> str:
    """A confusion count as an integer (metrics.json stores them as floats)."""
    return "n/a" if value is None else str(int(round(float(value))))


@dataclass(frozen=True)
class MetricRow:
    """One line of the test-performance table."""

    key: str
    name: str
    definition: str
    value: str
    counts: str
    interval: str  # "[low, high]", or why there is none
    method: str  # how the interval was computed, e.g. "95% Wilson"


def min_per_class(metrics: dict[str, Any]) -> int:
    return int(metrics.get("settings", {}).get("min_per_class", DEFAULT_MIN_PER_CLASS))


def _interval(low: Any, high: Any, n: int, need: int) -> str:
    if low is None or high is None:
        return "not available"
    if low == high and n < need:
        return "not estimable from so few studies"
    return f"[{fmt(low)}, {fmt(high)}]"


def metric_rows(metrics: dict[str, Any], labels: dict[str, Any] | None = None) -> list[MetricRow]:
    """The headline test metrics, each with its counts and one labelled interval (``labels``: the
    ``medlora.json`` labels, naming the classes in the counts)."""
    m, iv, settings = metrics.get("metrics", {}), metrics.get("intervals", {}), metrics.get("settings", {})
    c, need = metrics.get("counts", {}), min_per_class(metrics)
    ci = float(settings.get("ci", 0.95))
    n_small = min(int(c.get("n_positive", 0)), int(c.get("n_negative", 0)))
    boot = f"{ci:.0%} bootstrap, patient-clustered ({settings.get('n_bootstrap')} resamples)"
    abnormal, other = "abnormal", "normal"
    if labels:
        abnormal, other = labels["abnormal"], " / ".join(x for x in labels["classes"] if x != labels["abnormal"])
    study_counts = f"{c.get('n_positive')} {abnormal}, {c.get('n_negative')} {other} studies"
    rows = []
    for key in HEADLINE:
        if key not in m:
            continue
        name, definition = NAMES[key]
        if key in RATES:
            num, den = RATES[key]
            k, n = int(round(m.get(num) or 0)), sum(int(round(m.get(d) or 0)) for d in den)
            low, high = wilson_interval(k, n, ci) if n else (None, None)
            rows.append(MetricRow(key, name, definition, fmt(m[key]) if n else "undefined", f"{k}/{n}",
                                  _interval(low, high, n, 1) if n else "no studies to count", f"{ci:.0%} Wilson"))
        elif key == "auroc" and "auroc_delong" in iv:
            low, high = iv["auroc_delong"]
            rows.append(MetricRow(key, name, definition, fmt(m[key]), study_counts, _interval(low, high, n_small, need),
                                  f"{ci:.0%} DeLong"))
        else:
            low, high = iv.get(key, (None, None))
            rows.append(MetricRow(key, name, definition, fmt(m[key]), study_counts, _interval(low, high, n_small, need),
                                  boot))
    return rows
