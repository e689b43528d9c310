"""The explanation of a study-level model (``aggregate: attention``): which slices it looked at.

A study model's pooling gives each slice of a study a weight (they sum to one, :mod:`medlora.models.aggregator`);
the run's per-slice predictions carry it (``attention``). For each TP/FN/FP/TN example of the review
bundle, :func:`write_attention` draws one figure: the weight of every slice in slice order (a bar chart,
the top slices marked) and the ``top`` slices with the highest weights, each titled with its position and
weight. The saliency overlay of the example (:mod:`.figures`) is drawn on the slice with the highest
weight. Pixels and numbers only: no key, file name or header value reaches the picture.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .figures import KINDS
from .html import Figure
from .saliency import display_image

log = logging.getLogger(__name__)


def study_slices(samples: pd.DataFrame, study_key: str) -> pd.DataFrame:
    """The test rows of one study in slice order (the order the run scored them), with their attention."""
    rows = samples[(samples["split"] == "test") & (samples["study_key"] == study_key)]
    return rows.reset_index(drop=True)


def _draw(images: list[np.ndarray], titles: list[str], weights: np.ndarray, top: list[int], path: Path) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(2.2 * max(len(images), 2), 4.2))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, max(len(images), 1), height_ratios=[1, 1.6])
    bar = fig.add_subplot(grid[0, :])
    colours = ["#c0392b" if i in top else "#7f8c8d" for i in range(len(weights))]
    bar.bar(np.arange(1, len(weights) + 1), weights, color=colours)
    bar.set_xlabel("slice (in order)", fontsize=8)
    bar.set_ylabel("attention", fontsize=8)
    bar.tick_params(labelsize=7)
    for k, (image, title) in enumerate(zip(images, titles, strict=True)):
        ax = fig.add_subplot(grid[1, k])
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, metadata={"Software": None})
    return path


def write_attention(examples: list[tuple[str, str, Any]], samples: pd.DataFrame, items: dict[str, dict[str, Any]],
                    bundle_pre: tuple, folder: Path, labels: tuple[str, str], top: int = 4) -> list[Figure]:
    """One figure per example study: its slices' attention and its ``top`` most attended slices."""
    from ..transforms.pipeline import build_transforms

    pre, size, mean, std = bundle_pre
    transform = build_transforms(pre, size, mean, std)
    names = {k[0]: v for k, v in KINDS.items()}
    figures, counters = [], {}
    for kind, _, row in examples:
        rows = study_slices(samples, row.study_key)
        if rows.empty or "attention" not in rows:
            continue
        weights = rows["attention"].to_numpy(dtype=float)
        best = [int(i) for i in np.argsort(-weights, kind="stable")[:top]]
        if any(rows["sample_id"][i] not in items for i in best):
            continue
        images, titles = [], []
        for i in sorted(best):
            image = transform(dict(items[rows["sample_id"][i]]))["image"].as_subclass(torch.Tensor)
            images.append(display_image(image, mean, std))
            titles.append(f"slice {i + 1}/{len(rows)}  a={weights[i]:.2f}")
        counters[kind] = counters.get(kind, 0) + 1
        path = _draw(images, titles, weights, best, folder / f"{kind}_{counters[kind]}_attention.png")
        facts = (("study key (pseudonym)", str(row.study_key)), ("study score", f"{row.score:.3f}"),
                 ("truth", labels[int(row.label)]), ("slices", str(len(rows))),
                 ("top slice's weight", f"{weights[best[0]]:.2f} (uniform: {1 / len(rows):.2f})"))
        figures.append(Figure(path, f"{names[kind]}: attention over the study's slices; below, the {len(best)} "
                                    "slices with the highest attention", None, facts))
    return figures
