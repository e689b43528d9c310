"""Compare the child runs of few-shot sweeps: read them back from MLflow, summarise, test, plot.

A sweep is one parent run (tag ``medlora.role=sweep``) with one nested child run per
(method, shots, seed) (tag ``medlora.role=child``; params ``method``, ``shots``, ``seed``). Exactly one
FINISHED child counts per point: the latest one, if a point was ever rerun. Runs are read with
:class:`mlflow.MlflowClient`, so everything here works on any tracking store (SQLite, a file
store or an ``http://`` server). A multi-class or multi-label sweep is summarised per finding
(``test_auroc.<finding>``) and by the macro AUROC (``test_auroc_macro``) instead of the binary metrics.
"""

from __future__ import annotations

import ast
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import MedloraError, TrackingError
from ..evaluate.metrics import _safe_name
from ..registry import METHODS
from ..tracking import tags as T
from ..tracking.runs import child_runs, search_all

log = logging.getLogger(__name__)

SUMMARY_METRICS = ("test_auroc", "test_auprc", "test_sensitivity", "test_specificity", "val_auroc", "train_seconds")
MACRO = "test_auroc_macro"  # what a multi-class/multi-label child logs instead of test_auroc (mean over findings)
METHOD_ORDER = METHODS


def shots_order(value: Any) -> float:
    """Sort key of a shot count: numbers ascending, ``all`` last."""
    return math.inf if str(value) == "all" else float(value)


def children_frame(runs: Iterable[Any], finished_only: bool = True) -> pd.DataFrame:
    """One row per child run: ids, status, ``method``/``shots``/``seed``, hashes and every metric.

    With ``finished_only`` (the default) only FINISHED runs are kept and, per (method, shots, seed),
    only the latest: a summary never counts a point twice.
    """
    rows = []
    for r in runs:
        p, t = r.data.params, r.data.tags
        if t.get(T.ROLE) != "child" or (finished_only and r.info.status != "FINISHED"):
            continue
        rows.append({"run_id": r.info.run_id, "status": r.info.status, "end_time": r.info.end_time or 0,
                     "method": p.get("method"), "shots": p.get("shots"), "seed": int(p.get("seed", -1)),
                     "config_hash": t.get(T.POINT_HASH), "support_hash": t.get(T.SUPPORT_HASH), **r.data.metrics})
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    if finished_only:
        frame = frame.sort_values("end_time").drop_duplicates(["method", "shots", "seed"], keep="last")
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    keys = [(order.get(m, 99), shots_order(k), s) for m, k, s in zip(frame.method, frame.shots, frame.seed, strict=True)]
    return frame.iloc[sorted(range(len(frame)), key=keys.__getitem__)].reset_index(drop=True)


def summary_metric_names(children: pd.DataFrame, outputs: Sequence[str] | None = None) -> tuple[str, ...]:
    """The metrics a sweep summary shows: :data:`SUMMARY_METRICS` for binary children; for children of a
    multi-class/multi-label sweep (they log ``test_auroc_macro``) the macro AUROC, each finding's
    ``test_auroc.<finding>`` (in the order of ``outputs`` when given), ``val_auroc`` and ``train_seconds``."""
    if MACRO not in children.columns:
        return SUMMARY_METRICS
    found = [c.split(".", 1)[1] for c in children.columns if c.startswith("test_auroc.")]
    if outputs is not None:
        keys = [_safe_name(o) for o in outputs]
        found = [k for k in keys if k in found] + sorted(set(found) - set(keys))
    return (MACRO, *(f"test_auroc.{f}" for f in found), "val_auroc", "train_seconds")


def finding_metrics(summary: pd.DataFrame) -> list[str]:
    """The per-finding AUROC metrics of a :func:`summary_table` (``test_auroc.<finding>``), in its column order."""
    return [c[: -len("_mean")] for c in summary.columns if c.startswith("test_auroc.") and c.endswith("_mean")]


def headline_metric(summary: pd.DataFrame) -> str:
    """``test_auroc`` for a binary sweep's summary, ``test_auroc_macro`` for a multi-class/multi-label one."""
    return MACRO if f"{MACRO}_mean" in summary.columns else "test_auroc"


def summary_table(children: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """Mean and sd over seeds per (method, shots): columns ``method, shots, n_seeds, <m>_mean, <m>_sd``
    (``metrics`` default: :func:`summary_metric_names`)."""
    metrics = summary_metric_names(children) if metrics is None else tuple(metrics)
    rows = []
    for (method, shots), g in children.groupby(["method", "shots"], sort=False):
        row: dict[str, Any] = {"method": method, "shots": shots, "n_seeds": len(g)}
        for m in metrics:
            values = g[m].dropna().to_numpy(float) if m in g else np.array([])
            row[f"{m}_mean"] = float(values.mean()) if len(values) else float("nan")
            row[f"{m}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def summary_metrics(summary: pd.DataFrame, metrics: Iterable[str] | None = None) -> dict[str, float]:
    """Parent-run metrics from a :func:`summary_table`: ``<m>_mean.<method>.<shots>shot`` per row and
    ``best_<m>_mean.<method>`` (the best shot count's mean), so the experiment table compares sweeps
    without opening them. ``metrics`` default: the :func:`headline_metric` (``test_auroc``, or
    ``test_auroc_macro`` for multi-class/multi-label) and ``val_auroc``."""
    metrics = (headline_metric(summary), "val_auroc") if metrics is None else tuple(metrics)
    out: dict[str, float] = {}
    for row in summary.to_dict("records"):
        for m in metrics:
            value = row.get(f"{m}_mean", float("nan"))
            if not math.isfinite(value):
                continue
            out[f"{m}_mean.{row['method']}.{row['shots']}shot"] = value
            best = f"best_{m}_mean.{row['method']}"
            out[best] = max(out.get(best, -math.inf), value)
    return out


def _cell(mean: float, sd: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {sd:.{digits}f}" if math.isfinite(sd) else "")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of string cells."""
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def format_summary(summary: pd.DataFrame, metrics: Iterable[str] | None = None) -> pd.DataFrame:
    """``summary_table`` with ``mean ± sd`` cells (seconds with one decimal, the rest with three);
    ``metrics`` default: every metric the summary holds, in its order."""
    if metrics is None:
        metrics = [c[: -len("_mean")] for c in summary.columns if c.endswith("_mean")]
    out = summary[["method", "shots", "n_seeds"]].copy()
    for m in metrics:
        if f"{m}_mean" in summary:
            digits = 1 if m.endswith("seconds") else 3
            out[m] = [_cell(a, b, digits) for a, b in zip(summary[f"{m}_mean"], summary[f"{m}_sd"], strict=True)]
    return out


def paired_delong(studies: Mapping[tuple[str, str, int], pd.DataFrame], reference: str = "lora") -> pd.DataFrame:
    """DeLong's paired test of ``reference`` against every other method, per (shots, seed).

    ``studies`` maps (method, shots, seed) to a per-test-study frame (``study_key, patient_key, label,
    score``); the two methods are compared on the studies they share, clustered by patient.
    """
    from ..evaluate.delong import delong_test

    rows = []
    for (method, shots, seed), ref in studies.items():
        if method != reference:
            continue
        for (other, shots2, seed2), frame in studies.items():
            if other == reference or (shots2, seed2) != (shots, seed):
                continue
            both = ref.merge(frame, on=["study_key", "patient_key", "label"], suffixes=("_a", "_b"))
            try:
                res = delong_test(both["label"].to_numpy(), both["score_a"].to_numpy(), both["score_b"].to_numpy(),
                                  clusters=both["patient_key"].to_numpy())
            except MedloraError as err:
                log.warning("DeLong %s vs %s at %s shots, seed %s: %s", reference, other, shots, seed, err)
                continue
            rows.append({"shots": shots, "seed": seed, "method_a": reference, "method_b": other,
                         "n_studies": len(both), "auroc_a": res["auc1"], "auroc_b": res["auc2"], "diff": res["diff"],
                         "diff_ci_low": res["diff_ci_low"], "diff_ci_high": res["diff_ci_high"], "p": res["p"]})
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.iloc[sorted(range(len(frame)), key=lambda i: (METHOD_ORDER.index(frame.method_b[i])
                                  if frame.method_b[i] in METHOD_ORDER else 99, shots_order(frame.shots[i]),
                                  frame.seed[i]))].reset_index(drop=True)
    return frame


def paired_delong_findings(tables: Mapping[tuple[str, str, int], pd.DataFrame], findings: Sequence[str],
                           reference: str = "lora") -> pd.DataFrame:
    """:func:`paired_delong` per finding: ``tables`` hold each child's ``test_findings.csv``; each
    finding's test leaves out the studies where it is unknown. A ``finding`` column leads."""
    from ..evaluate.findings import finding_studies

    frames = []
    for name in findings:
        studies = {point: finding_studies(table, name) for point, table in tables.items()}
        frame = paired_delong(studies, reference)
        if not frame.empty:
            frames.append(frame.assign(finding=name)[["finding", *frame.columns]])
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def format_delong(frame: pd.DataFrame) -> pd.DataFrame:
    """Rounded DeLong rows for the Markdown summary."""
    if frame.empty:
        return frame
    out = frame[[c for c in ("finding", "method_a", "method_b", "shots", "seed", "n_studies") if c in frame]].copy()
    out["auroc_a"], out["auroc_b"] = frame["auroc_a"].map("{:.3f}".format), frame["auroc_b"].map("{:.3f}".format)
    out["diff [95% CI]"] = [f"{d:+.3f} [{lo:+.3f}, {hi:+.3f}]" for d, lo, hi in
                            zip(frame["diff"], frame["diff_ci_low"], frame["diff_ci_high"], strict=True)]
    out["p"] = frame["p"].map(lambda p: "n/a" if not math.isfinite(p) else f"{p:.3g}")
    return out


def _curves(ax: Any, summary: pd.DataFrame, metric: str, shots: list[str]) -> None:
    """One line per method: mean ``metric`` against shots, error bars = sd over seeds."""
    for method, g in summary.groupby("method", sort=False):
        g = g.set_index(g["shots"].astype(str)).reindex(shots)
        ax.errorbar(range(len(shots)), g[f"{metric}_mean"], yerr=g[f"{metric}_sd"].fillna(0.0), marker="o",
                    capsize=3, label=str(method))
    ax.set_xticks(range(len(shots)), [f"{s}" for s in shots])
    ax.grid(alpha=0.3)


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def plot_learning_curve(summary: pd.DataFrame, path: Path, metric: str | None = None) -> Path:
    """Mean ``metric`` (default :func:`headline_metric`) against shots, one line per method, error
    bars = sd over seeds (PNG)."""
    metric = metric or headline_metric(summary)
    shots = sorted({str(s) for s in summary["shots"]}, key=shots_order)
    fig = _figure(5.5, 4.0)
    ax = fig.add_subplot()
    _curves(ax, summary, metric, shots)
    ax.set_ylim(top=1.02)
    ax.set_xlabel("patients per class in the training set (shots)")
    ax.set_ylabel(metric.replace("_", " "))
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def plot_finding_curves(summary: pd.DataFrame, path: Path, columns: int = 3) -> Path:
    """Small multiples of a multi-class/multi-label sweep: the macro AUROC's learning curve, then one
    panel per finding (:func:`finding_metrics`), on shared axes, one line per method (PNG)."""
    metrics = [MACRO, *finding_metrics(summary)]
    shots = sorted({str(s) for s in summary["shots"]}, key=shots_order)
    rows = math.ceil(len(metrics) / columns)
    fig = _figure(3.2 * min(columns, len(metrics)), 2.8 * rows)
    axes = fig.subplots(rows, min(columns, len(metrics)), sharex=True, sharey=True, squeeze=False).ravel()
    for ax, metric in zip(axes, metrics, strict=False):
        _curves(ax, summary, metric, shots)
        ax.set_title("macro AUROC" if metric == MACRO else metric.split(".", 1)[1])
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    axes[0].set_ylim(top=1.02)  # shared: after every panel's data, so the lowest curve stays in view
    axes[0].legend(fontsize="small")
    fig.supxlabel("training patients per class or finding (shots)")
    fig.supylabel("test AUROC")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    return path


def _resolve_parents(client: Any, target: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    exp = client.get_experiment_by_name(target)
    if exp is not None:
        parents = search_all(client, exp.experiment_id, f"tags.`{T.ROLE}` = 'sweep'")
        if not parents:
            raise TrackingError(f"experiment {target!r} holds no few-shot sweep (no run tagged {T.ROLE}=sweep)")
        return sorted(parents, key=lambda r: r.info.start_time, reverse=True)
    try:
        run = client.get_run(target)
    except MlflowException:
        raise TrackingError(f"{target!r} is neither an experiment name nor a run id in {client.tracking_uri}") from None
    if run.data.tags.get(T.ROLE) == "child":
        run = client.get_run(run.data.tags["mlflow.parentRunId"])
    if run.data.tags.get(T.ROLE) != "sweep":
        raise TrackingError(f"run {target} is not a few-shot sweep (tag {T.ROLE} is not 'sweep')")
    return [run]


def outputs_of(run: Any) -> list[str] | None:
    """The findings (multilabel) or classes of a run, in config order, from its logged config params;
    ``None`` when they are not there (a summary then orders findings by name)."""
    params = run.data.params
    value = params.get("data.findings" if params.get("data.task") == "multilabel" else "data.classes")
    try:
        names = ast.literal_eval(value) if value else None
    except (ValueError, SyntaxError):  # a param cut at MLflow's length limit
        return None
    return [str(n) for n in names] if isinstance(names, list) else None


def compare(target: str, tracking_uri: str | None = None) -> str:
    """The summary table of every sweep in experiment ``target`` (newest first), or of parent run ``target``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    blocks = []
    for parent in _resolve_parents(client, target):
        children = children_frame(child_runs(client, parent))
        head = (f"sweep {parent.info.run_id} ({parent.info.run_name}, {parent.info.status}): "
                f"{len(children)} finished child runs")
        if children.empty:
            blocks.append(head)
            continue
        names = summary_metric_names(children, outputs_of(parent))
        blocks.append(head + "\n" + markdown_table(format_summary(summary_table(children, names))))
    return "\n\n".join(blocks)
