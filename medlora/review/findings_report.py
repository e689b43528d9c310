"""The per-finding (per-class) part of a multi-label or multi-class bundle's report and model card.

Read from ``metrics.json``'s ``multi`` entry (:func:`medlora.evaluate.findings.to_json`, with the
evaluation ``settings`` beside it). Each finding's row is built with the binary report's own row
helper (:func:`~medlora.review.metric_rows.metric_rows`), so a finding's AUROC carries the same DeLong
interval, its sensitivity and specificity the same Wilson interval and ``k/n`` counts, and an
interval from too few studies is said to be so in the same words. A finding whose metrics are
undefined (no positives, or no operating point) keeps its row, with NaN values and the reason.
Summaries: macro AUROC (mean over the findings with a defined AUROC, its interval from the shared
bootstrap resamples), micro AUROC, and for multi-class the arg-max call's accuracy, balanced
accuracy, quadratic-weighted kappa (ordinal grades) and confusion matrix.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any

from .metric_rows import DEFAULT_MIN_PER_CLASS, MetricRow, count, fmt, metric_rows

SUMMARY_NAMES = {  # summary key → (human name, one-line definition)
    "auroc_macro": ("Macro AUROC", "Mean of the findings' AUROCs (findings with a defined AUROC only)."),
    "auroc_micro": ("Micro AUROC", "AUROC of all known study-finding pairs pooled together."),
    "accuracy": ("Accuracy of the arg-max call", "Share of test studies whose highest-scoring class is the true one."),
    "balanced_accuracy": ("Balanced accuracy of the arg-max call", "Mean over classes of the share of that class's "
                          "studies called as that class (not swayed by class frequency)."),
    "kappa_quadratic": ("Quadratic-weighted kappa", "Agreement of the called grade with the true grade beyond "
                        "chance, large disagreements weighted more (1 = perfect, 0 = chance)."),
}
UNDEFINED = "NaN"


@dataclass(frozen=True)
class FindingRow:
    """One finding's line of the per-finding table."""

    name: str
    n_positive: int
    n_negative: int
    threshold: str
    cells: dict[str, MetricRow]  # auroc, auprc, sensitivity, specificity
    reason: str


def is_multi(labels: dict[str, Any]) -> bool:
    return labels.get("task", "binary") != "binary"


def has_any_finding(labels: dict[str, Any]) -> bool:
    """False for a multi-class model without ``data.normal``: no abnormal-vs-normal score at all."""
    return labels.get("abnormal") is not None


def settings_of(metrics: dict[str, Any]) -> dict[str, Any]:
    """The evaluation settings of the per-finding numbers (older runs: those of "any finding")."""
    return {**metrics.get("settings", {}), **(metrics.get("multi") or {}).get("settings", {})}


def _number(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def _as_binary(f: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """A finding's numbers shaped like a binary ``metrics.json``, for :func:`metric_rows`."""
    m, n_pos = f.get("metrics", {}), int(f.get("n_positive", 0))
    n_neg = int(f.get("n", 0)) - n_pos
    sens, spec = _number(m.get("sensitivity")), _number(m.get("specificity"))
    confusion = {}
    if sens is not None and spec is not None:
        tp, tn = round(sens * n_pos), round(spec * n_neg)
        confusion = {"tp": float(tp), "fn": float(n_pos - tp), "tn": float(tn), "fp": float(n_neg - tn)}
    return {"metrics": {**{k: _number(m.get(k)) for k in ("auroc", "auprc", "sensitivity", "specificity")}, **confusion},
            "intervals": f.get("intervals", {}), "settings": settings,
            "counts": {"n_positive": n_pos, "n_negative": n_neg}}


def finding_rows(metrics: dict[str, Any]) -> list[FindingRow]:
    """One row per finding (class), in the model's output order."""
    multi, settings = metrics.get("multi") or {}, settings_of(metrics)
    rows = []
    for f in multi.get("findings", []):
        cells = {r.key: r for r in metric_rows(_as_binary(f, settings))}
        threshold = _number(f.get("threshold"))
        for key in ("auroc", "auprc", "sensitivity", "specificity"):
            row = cells[key]
            if row.value in ("n/a", "undefined"):  # NaN: said, never hidden
                rate = key in ("sensitivity", "specificity")
                why = "no operating point" if rate and threshold is None else "undefined"
                cells[key] = MetricRow(key, row.name, row.definition, UNDEFINED, "", why, row.method)
        n_pos = int(f.get("n_positive", 0))
        rows.append(FindingRow(f["name"], n_pos, int(f.get("n", 0)) - n_pos,
                               "none" if threshold is None else f"{threshold:.4f}", cells, f.get("reason", "")))
    return rows


def method_labels(metrics: dict[str, Any]) -> dict[str, str]:
    """The interval method of each per-finding column, as the binary rows name them."""
    settings = settings_of(metrics)
    ci = float(settings.get("ci", 0.95))
    boot = f"{ci:.0%} bootstrap, patient-clustered ({settings.get('n_bootstrap')} resamples)"
    return {"auroc": f"{ci:.0%} DeLong", "auprc": boot, "sensitivity": f"{ci:.0%} Wilson",
            "specificity": f"{ci:.0%} Wilson", "auroc_macro": boot.replace("resamples)", "resamples shared by "
                                                                         "every finding)")}


def summary_rows(metrics: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """``(name, definition, value, interval with its method)`` of the macro/micro and multi-class summaries."""
    multi = metrics.get("multi") or {}
    summary, intervals, methods = multi.get("summary", {}), multi.get("intervals", {}), method_labels(metrics)
    rows = []
    for key, (name, definition) in SUMMARY_NAMES.items():
        if key not in summary:
            continue
        value = _number(summary[key])
        interval = "no interval computed"
        if key in intervals:
            low, high = (_number(v) for v in intervals[key])
            interval = "not available" if low is None or high is None else f"[{fmt(low)}, {fmt(high)}] ({methods[key]})"
        rows.append((name, definition, UNDEFINED if value is None else fmt(value), interval))
    evaluated = summary.get("findings_evaluated")
    if evaluated is not None:
        rows.append(("Findings with a defined AUROC", "The macro AUROC averages these only.",
                     f"{int(evaluated)} of {len(multi.get('findings', []))}", ""))
    return rows


def too_small_findings(metrics: dict[str, Any]) -> str | None:
    """Why a multi-class test set without "any finding" is too small: the smallest class's count."""
    need = int(settings_of(metrics).get("min_per_class", DEFAULT_MIN_PER_CLASS))
    small = [f"{f['name']} ({f['n_positive']})" for f in (metrics.get("multi") or {}).get("findings", [])
             if int(f.get("n_positive", 0)) < need]
    if not small:
        return None
    return (f"Test set too small to say anything: fewer than {need} test studies (evaluate.min_per_class) of class "
            f"{', '.join(small)}. The numbers below describe these few studies only; they are not evidence of how "
            "the model performs.")


# ---- Markdown (model card) -------------------------------------------------------------------------


def findings_markdown(metrics: dict[str, Any], outputs_word: str) -> str:
    """The model card's per-finding table and summaries (Markdown)."""
    methods = method_labels(metrics)
    lines = [f"| {outputs_word} | test positives / negatives | AUROC [{methods['auroc']}] | AUPRC | "
             f"sensitivity [{methods['sensitivity']}] | specificity | note |", "|---|---|---|---|---|---|---|"]
    for r in finding_rows(metrics):
        c = r.cells
        lines.append(f"| {r.name} | {r.n_positive} / {r.n_negative} | {c['auroc'].value} {c['auroc'].interval} | "
                     f"{c['auprc'].value} {c['auprc'].interval} | {_rate(c['sensitivity'])} | {_rate(c['specificity'])} | "
                     f"{r.reason or ''} |")
    lines += ["", "| summary | value | interval |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {interval} |" for name, _, value, interval in summary_rows(metrics)]
    return "\n".join(lines)


def _rate(cell: MetricRow) -> str:
    return f"{cell.value} ({cell.counts}) {cell.interval}" if cell.counts else f"{cell.value} {cell.interval}"


# ---- HTML (report.html) ----------------------------------------------------------------------------


def _cell(row: MetricRow, counts: bool = False) -> str:
    main = html.escape(row.value) + (f" <span class=\"k\">{html.escape(row.counts)}</span>" if counts and row.counts else "")
    cls = "num nan" if row.value == UNDEFINED else "num"
    return f'<td class="{cls}">{main}<span class="def">{html.escape(row.interval)}</span></td>'


def findings_table(metrics: dict[str, Any], outputs_word: str) -> str:
    """The per-finding HTML table: counts, AUROC, AUPRC, sensitivity and specificity at each finding's
    own validation-chosen threshold, each with its interval (methods in the header), and the reason
    for any NaN."""
    methods = method_labels(metrics)

    def head(name: str, key: str) -> str:
        return f"<th>{name}<span class=\"def\">[{html.escape(methods[key])}]</span></th>"

    body = []
    for r in finding_rows(metrics):
        c = r.cells
        note = html.escape(r.reason) if r.reason else ""
        body.append(f"<tr><th>{html.escape(r.name)}</th><td class=\"num\">{r.n_positive} / {r.n_negative}</td>"
                    f"{_cell(c['auroc'])}{_cell(c['auprc'])}{_cell(c['sensitivity'], True)}"
                    f"{_cell(c['specificity'], True)}<td class=\"num\">{r.threshold}</td><td class=\"note\">{note}</td></tr>")
    return ('<table class="findings"><thead><tr>'
            f"<th>{html.escape(outputs_word)}</th><th>test studies<span class=\"def\">positive / negative</span></th>"
            f"{head('AUROC', 'auroc')}{head('AUPRC', 'auprc')}{head('sensitivity', 'sensitivity')}"
            f"{head('specificity', 'specificity')}<th>threshold<span class=\"def\">chosen on validation</span></th>"
            f"<th>note</th></tr></thead><tbody>{''.join(body)}</tbody></table>")


def summary_table(metrics: dict[str, Any]) -> str:
    """Macro/micro AUROC and the multi-class summaries as an HTML table."""
    body = "".join(f"<tr><th>{html.escape(n)}<span class=\"def\">{html.escape(d)}</span></th>"
                   f"<td class=\"num\">{html.escape(v)}</td><td class=\"num\">{html.escape(i)}</td></tr>"
                   for n, d, v, i in summary_rows(metrics))
    return ('<table class="metrics"><thead><tr><th>summary</th><th>value</th><th>interval (method)</th></tr></thead>'
            f"<tbody>{body}</tbody></table>")


def confusion_table(metrics: dict[str, Any], classes: list[str]) -> str:
    """The multi-class confusion matrix of the arg-max call (rows: truth, columns: call), or ``""``."""
    matrix = (metrics.get("multi") or {}).get("confusion")
    if not matrix:
        return ""
    head = "".join(f"<th>called {html.escape(c)}</th>" for c in classes)
    body = "".join(f"<tr><th>truly {html.escape(c)}</th>"
                   + "".join(f"<td class=\"num{' diag' if i == j else ''}\">{count(v)}</td>" for j, v in enumerate(row))
                   + "</tr>" for i, (c, row) in enumerate(zip(classes, matrix, strict=True)))
    return f'<table class="confusion"><thead><tr><th>test studies</th>{head}</tr></thead><tbody>{body}</tbody></table>'
