"""The figures of a review bundle: evaluation plots and saliency examples.

The plots are drawn from the study-level predictions (:mod:`medlora.review.predictions`); the
saliency examples from the test images re-read through the run's data root. Those images are
rendered as pixels with a caption naming the kind of example and its score: no file name, key or
header value reaches the picture.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from ..errors import MedloraError
from ..evaluate.operating_point import OperatingPoint
from .html import Figure

log = logging.getLogger(__name__)
KINDS = {("tp", 1, 1): "true positive", ("fn", 1, 0): "false negative", ("fp", 0, 1): "false positive",
         ("tn", 0, 0): "true negative"}


def write_plots(studies: pd.DataFrame, op: OperatingPoint, classes: tuple[str, str], folder: Path,
                existing: dict[str, Path]) -> list[Figure]:
    """ROC, PR, reliability and score histograms of the test studies; the run's own PNGs are reused."""
    from ..evaluate.plots import plot_pr, plot_reliability, plot_roc, plot_score_histograms

    test = studies[studies["split"] == "test"]
    y, s = test["label"].to_numpy(), test["score"].to_numpy()
    makers = {
        "roc.png": ("ROC of the test studies with a bootstrap band and the operating point",
                    lambda p: plot_roc(y, s, p, operating_point=op, clusters=test["patient_key"].to_numpy())),
        "pr.png": ("Precision-recall of the test studies", lambda p: plot_pr(y, s, p, operating_point=op)),
        "reliability.png": ("Reliability (calibration) of the test study scores", lambda p: plot_reliability(y, s, p)),
        "score_histograms.png": ("Test study scores by class, with the threshold",
                                 lambda p: plot_score_histograms(y, s, p, operating_point=op, class_names=classes)),
    }
    figures = []
    for name, (caption, make) in makers.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name in existing:
            path.write_bytes(existing[name].read_bytes())
        else:
            try:
                make(path)
            except MedloraError as err:  # e.g. one class only in the test set
                log.warning("plot %s not drawn: %s", name, err)
                continue
        figures.append(Figure(path, caption))
    return figures


def pick_examples(studies: pd.DataFrame, samples: pd.DataFrame, per_kind: int = 2) -> list[tuple[str, str, Any]]:
    """``(kind, sample_id, row)`` of the most confident test examples of each kind (TP, FN, FP, TN); the
    sample shown is the study's highest-scoring one, or with a study model's ``attention`` the most attended."""
    test = studies[studies["split"] == "test"]
    picked = []
    for (kind, label, call), _ in KINDS.items():
        rows = test[(test["label"] == label) & (test["call"] == call)]
        rows = rows.sort_values("score", ascending=(kind in ("fn", "tn"))).head(per_kind)
        for row in rows.itertuples():
            imgs = samples[(samples["split"] == "test") & (samples["study_key"] == row.study_key)]
            by = "attention" if "attention" in imgs else "score"
            picked.append((kind, imgs.sort_values(by, ascending=False, kind="stable")["sample_id"].iloc[0], row))
    return picked


def save_image(image: Any, path: Path, title: str) -> Path:
    """The input image alone, framed like its overlay (:func:`~medlora.review.saliency.save_overlay`)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(3, 3.2))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.imshow(image, cmap="gray", vmin=0, vmax=1)
    ax.set_title(title, fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    return path


def write_saliency(model: nn.Module, bundle_pre: tuple, examples: list[tuple[str, str, Any]],
                   items: dict[str, dict[str, Any]], threshold: float, folder: Path,
                   target: int | None = None, labels: tuple[str, str] = ("normal", "abnormal"),
                   ) -> tuple[list[Figure], set[str], list[str]]:
    """Saliency overlays (:func:`~.saliency.saliency_map`: attention rollout or Grad-CAM of class
    ``target``) of ``examples`` whose inputs are in ``items`` (sample id → MONAI item), each with the
    image alone beside it and its study's pseudonymous key, score, call and truth. ``labels`` names
    label 0 and label 1.

    Returns ``(figures, methods used, problems)``: an example whose map cannot be drawn is left out
    and its reason kept, so that an explanation never blocks an export.
    """
    from ..transforms.pipeline import build_transforms
    from .saliency import display_pair, saliency_map, save_overlay

    pre, size, mean, std = bundle_pre
    transform = build_transforms(pre, size, mean, std)
    figures, counters, methods, problems = [], {}, set(), []
    names = {k[0]: v for k, v in KINDS.items()}
    for kind, sample_id, row in examples:
        if sample_id not in items:
            continue
        image = transform(dict(items[sample_id]))["image"].as_subclass(torch.Tensor)
        try:
            heat, method = saliency_map(model, image, target)
        except Exception as err:  # noqa: BLE001 - an explanation must never block an export; the reason is kept
            log.warning("saliency of a %s example not drawn: %s: %s", kind, type(err).__name__, err)
            problems.append(f"{type(err).__name__}: {err}")
            continue
        methods.add(method)
        counters[kind] = counters.get(kind, 0) + 1
        shown, heat, where = display_pair(image, heat, mean, std)
        stem = f"{kind}_{counters[kind]}"
        path = save_overlay(shown, heat, folder / f"{stem}.png", f"{kind.upper()} {row.score:.3f}")
        raw = save_image(shown, folder / f"{stem}_image.png", where or "image")
        facts = (("study key (pseudonym)", str(row.study_key)), ("study score", f"{row.score:.3f}"),
                 ("call", f"{labels[int(row.call)]} (threshold {threshold:.3f})"), ("truth", labels[int(row.label)]),
                 ("saliency", method))
        if where is not None:
            facts += (("slice shown", f"{where}, the one with the most saliency in the volume (empty slices passed over)"),)
        what = "the highest-scoring image of the study" if where is None else "the study's volume"
        figures.append(Figure(path, f"{names[kind]}: {what}", raw, facts))
    return figures, methods, problems


def sample_items(data: dict[str, Any], pre: Any, data_root: Path | None) -> dict[str, dict[str, Any]]:
    """Sample id → MONAI item (file(s), kind, view), by re-ingesting the run's data root (nothing written)."""
    from ..config import DataConfig
    from ..io.ingest import run_ingest
    from ..transforms.pipeline import manifest_items
    from ..transforms.samples import expand_views

    raw = dict(data)
    if data_root is not None:
        raw["root"] = str(data_root)
    cfg = DataConfig.model_validate(raw)
    manifest = expand_views(run_ingest(cfg).manifest, pre)
    return {item["sample_id"]: item for item in manifest_items(manifest, Path(cfg.root))}
