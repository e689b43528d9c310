"""ROC small multiples: one small ROC panel per finding (class) of a multi-label or multi-class
evaluation, in one PNG.

Each panel shows the finding's test-study ROC curve (unknown targets left out, as in
:mod:`medlora.evaluate.findings`), its AUROC and counts in the title, the chance diagonal and, when
the finding has a validation-chosen threshold, that operating point. A finding whose test studies
hold only one class gets an empty panel that says why, so no finding silently disappears from the
figure. Panels share axes and sizes so findings can be compared at a glance; text sizes stay
readable when the figure is shown at the width of a report page.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .metrics import binary_curve, ranking_metrics, threshold_metrics

logger = logging.getLogger(__name__)

DPI = 150
PANEL_INCHES = 3.4  # one panel; at 4 columns the PNG is about 2,000 px wide, shown about 1,070 px wide
MAX_COLUMNS = 4
TITLE_SIZE, LABEL_SIZE, TICK_SIZE, NOTE_SIZE = 13, 12, 12, 12


def grid_shape(n: int, max_columns: int = MAX_COLUMNS) -> tuple[int, int]:
    """``(rows, columns)`` of ``n`` panels: rows of ``max_columns`` (fewer for fewer panels)."""
    if n < 1:
        raise ValueError("a ROC grid needs at least one finding")
    cols = min(n, max_columns)
    return math.ceil(n / cols), cols


def plot_roc_grid(names: Sequence[str], targets: np.ndarray, scores: np.ndarray, path: Path,
                  thresholds: Mapping[str, float] | None = None, title: str | None = None) -> Path:
    """One ROC panel per column of ``targets``/``scores`` (``(studies, findings)``; NaN target =
    unknown, left out), titled with ``names``; each finding's ``thresholds`` entry is marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    targets, scores = np.asarray(targets, dtype=float), np.asarray(scores, dtype=float)
    if targets.shape != scores.shape or targets.ndim != 2 or targets.shape[1] != len(names):
        raise ValueError(f"targets {targets.shape} and scores {scores.shape} must both be (studies, {len(names)})")
    rows, cols = grid_shape(len(names))
    fig = Figure(figsize=(PANEL_INCHES * cols, PANEL_INCHES * rows + (0.5 if title else 0)))
    FigureCanvasAgg(fig)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for k, (ax, name) in enumerate(zip(axes, names, strict=False)):
        known = ~np.isnan(targets[:, k])
        y, s = targets[known, k].astype(int), scores[known, k]
        n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
        ax.plot([0, 1], [0, 1], ls=":", color="grey")
        ax.set(xlim=(0, 1), ylim=(0, 1.01), aspect="equal")
        if n_pos == 0 or n_neg == 0:
            ax.set_title(f"{name}\nAUROC undefined", fontsize=TITLE_SIZE)
            ax.text(0.5, 0.5, f"{n_pos} positive, {n_neg} negative\ntest studies: no curve",
                    ha="center", va="center", fontsize=NOTE_SIZE, transform=ax.transAxes,
                    bbox={"facecolor": "white", "edgecolor": "#c0262d"})
        else:
            fps, tps, _ = binary_curve(y, s)
            ax.plot(np.r_[0.0, fps / fps[-1]], np.r_[0.0, tps / tps[-1]], drawstyle="steps-post", lw=2)
            ax.set_title(f"{name}\nAUROC {ranking_metrics(y, s)['auroc']:.3f} ({n_pos}+ / {n_neg}−)",
                         fontsize=TITLE_SIZE)
            t = (thresholds or {}).get(name)
            if t is not None and not np.isnan(t):
                at = threshold_metrics(y, s, float(t))
                ax.plot(1 - at["specificity"], at["sensitivity"], "o", color="k", ms=7)
        first_col, last_row = k % cols == 0, k >= len(names) - cols
        ax.set_xlabel("1 − specificity" if last_row else "", fontsize=LABEL_SIZE)
        ax.set_ylabel("sensitivity" if first_col else "", fontsize=LABEL_SIZE)
        ax.set_xticks([0, 0.5, 1], ["0", "0.5", "1"])  # few ticks: a small panel stays legible
        ax.set_yticks([0, 0.5, 1], ["0", "0.5", "1"])
        ax.tick_params(labelsize=TICK_SIZE)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title, fontsize=TITLE_SIZE + 1)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, metadata={"Software": None})
    logger.info("wrote %s", path)
    return path
