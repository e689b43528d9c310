"""PNG figures of an evaluation: ROC with a bootstrap band, PR curve, reliability diagram, histograms.

matplotlib is imported inside each function and used through its object API (``Figure`` rendered by
the Agg canvas, never pyplot), so importing this module is cheap, plotting works on headless
machines and no global backend state is touched. Each function writes one PNG to ``path``
(parent folders created) and returns the path.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .calibration import DEFAULT_BINS, reliability_diagram
from .intervals import bootstrap_roc_band
from .metrics import binary_curve, check_binary, ranking_metrics, require_both_classes, threshold_metrics
from .operating_point import OperatingPoint

logger = logging.getLogger(__name__)

DPI = 150
# text sizes (points) that stay readable when a 5-inch figure is shown about 500 pixels wide
TITLE_SIZE, LABEL_SIZE, TICK_SIZE, LEGEND_SIZE = 15, 14, 12, 12


def _figure() -> tuple[Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 5))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _op_label(op: OperatingPoint) -> str:
    return f"{op.policy} threshold {op.threshold:.3g}"


def _readable(fig: Any) -> None:
    """Titles, axis labels, ticks and legends at sizes a reader can see on the page."""
    for ax in fig.axes:
        ax.title.set_fontsize(TITLE_SIZE)
        ax.xaxis.label.set_fontsize(LABEL_SIZE)
        ax.yaxis.label.set_fontsize(LABEL_SIZE)
        ax.tick_params(labelsize=TICK_SIZE)
        legend = ax.get_legend()
        if legend is not None:
            for text in legend.get_texts():
                text.set_fontsize(LEGEND_SIZE)


def _save(fig: Any, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _readable(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    logger.info("wrote %s", path)
    return path


def plot_roc(
    y_true: np.ndarray,
    scores: np.ndarray,
    path: Path,
    operating_point: OperatingPoint | None = None,
    clusters: np.ndarray | None = None,
    n_bootstrap: int = 200,
    ci: float = 0.95,
    seed: int = 0,
    title: str = "ROC",
) -> Path:
    """ROC curve with a pointwise clustered-bootstrap band; the frozen operating point is marked."""
    y, s = check_binary(y_true, scores)
    require_both_classes(y, "ROC curve")
    fps, tps, _ = binary_curve(y, s)
    fpr, tpr = np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]]
    fig, ax = _figure()
    if n_bootstrap > 0:
        grid, low, high = bootstrap_roc_band(y, s, clusters, n_bootstrap, ci, seed)
        ax.fill_between(grid, low, high, step="post", alpha=0.25, label=f"{ci:.0%} bootstrap band")
    ax.plot(fpr, tpr, drawstyle="steps-post", label=f"AUROC {ranking_metrics(y, s)['auroc']:.3f}")
    if operating_point is not None:
        at = threshold_metrics(y, s, operating_point.threshold)
        ax.plot(1 - at["specificity"], at["sensitivity"], "o", color="k", label=_op_label(operating_point))
    ax.plot([0, 1], [0, 1], ls=":", color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_pr(
    y_true: np.ndarray,
    scores: np.ndarray,
    path: Path,
    operating_point: OperatingPoint | None = None,
    title: str = "Precision-recall",
) -> Path:
    """Precision-recall curve with the prevalence baseline; the frozen operating point is marked."""
    y, s = check_binary(y_true, scores)
    require_both_classes(y, "PR curve")
    fps, tps, _ = binary_curve(y, s)
    recall, precision = np.r_[0.0, tps / tps[-1]], np.r_[1.0, tps / (tps + fps)]
    fig, ax = _figure()
    ax.plot(recall, precision, drawstyle="steps-pre", label=f"AUPRC {ranking_metrics(y, s)['auprc']:.3f}")
    ax.axhline(y.mean(), ls=":", color="grey", label=f"prevalence {y.mean():.3f}")
    if operating_point is not None:
        at = threshold_metrics(y, s, operating_point.threshold)
        ax.plot(at["sensitivity"], at["ppv"], "o", color="k", label=_op_label(operating_point))
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", xlim=(0, 1), ylim=(0, 1.01), title=title)
    ax.legend(loc="lower left")
    return _save(fig, path)


def plot_reliability(
    y_true: np.ndarray, prob: np.ndarray, path: Path, n_bins: int = DEFAULT_BINS, title: str = "Reliability"
) -> Path:
    """Reliability diagram: observed positive rate against mean probability per equal-width bin."""
    rel = reliability_diagram(y_true, prob, n_bins)
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], ls=":", color="grey", label="perfect calibration")
    ax.plot(rel.mean_predicted, rel.fraction_positive, "o-", label="model")
    for x, yv, c in zip(rel.mean_predicted, rel.fraction_positive, rel.count, strict=True):
        ax.annotate(str(int(c)), (x, yv), textcoords="offset points", xytext=(4, -12), fontsize=LEGEND_SIZE - 2)
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed fraction positive",
        xlim=(0, 1),
        ylim=(-0.02, 1.08),  # room for the bin counts written beside the points
        title=title,
    )
    ax.legend(loc="lower right")
    return _save(fig, path)


def plot_score_histograms(
    y_true: np.ndarray,
    scores: np.ndarray,
    path: Path,
    operating_point: OperatingPoint | None = None,
    class_names: Sequence[str] = ("normal", "abnormal"),
    bins: int = 30,
    title: str = "Scores by class",
) -> Path:
    """Overlaid score histograms of the two classes (``class_names`` for labels 0 and 1)."""
    y, s = check_binary(y_true, scores)
    edges = np.histogram_bin_edges(s, bins=bins)
    fig, ax = _figure()
    for label, name in enumerate(class_names):
        ax.hist(s[y == label], bins=edges, alpha=0.5, label=f"{name} (n={int((y == label).sum())})")
    if operating_point is not None:
        ax.axvline(operating_point.threshold, color="k", ls="--", label=_op_label(operating_point))
    ax.set(xlabel="score", ylabel="count", title=title)
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # studies are counted in whole numbers
    ax.legend()
    return _save(fig, path)


def plot_score_shift(shift: Any, path: Path, threshold: float | None = None,
                     names: Sequence[str] = ("internal test", "site"), title: str = "Score distributions") -> Path:
    """The two sets' study-score densities on shared bins (:class:`~medlora.evaluate.shift.ScoreShift`),
    with the KS statistic and p-value in the title and the shipped threshold."""
    fig, ax = _figure()
    centres, width = (shift.edges[:-1] + shift.edges[1:]) / 2, np.diff(shift.edges)
    for density, name, n in ((shift.internal, names[0], shift.n_internal), (shift.external, names[1], shift.n_external)):
        ax.bar(centres, density, width=width, alpha=0.5, label=f"{name} (n={n})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="k", ls="--", label=f"shipped threshold {threshold:.3g}")
    ax.set(xlabel="study score", ylabel="density", title=f"{title}\nKS D={shift.statistic:.2f}, p={shift.p_value:.2g}")
    ax.legend()
    return _save(fig, path)


def plot_familiarity(distances: np.ndarray, threshold: float, path: Path, reference: np.ndarray | None = None,
                     title: str = "Familiarity") -> Path:
    """Histogram of the site studies' familiarity distances with the flag threshold."""
    d = np.asarray(distances, dtype=float)
    fig, ax = _figure()
    edges = np.histogram_bin_edges(np.concatenate([d, reference]) if reference is not None else d, bins=30)
    if reference is not None:
        ax.hist(reference, bins=edges, alpha=0.5, density=True, label=f"bundle validation (n={len(reference)})")
    ax.hist(d, bins=edges, alpha=0.5, density=True, label=f"site (n={len(d)}; {(d > threshold).mean():.0%} flagged)")
    ax.axvline(threshold, color="k", ls="--", label=f"flag above {threshold:.3g}")
    ax.set(xlabel="Mahalanobis distance to the training studies", ylabel="density", title=title)
    ax.legend()
    return _save(fig, path)
