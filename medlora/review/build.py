"""``medlora export``: a self-contained review bundle from an MLflow run's artifacts.

Layout (every file listed in ``MANIFEST.sha256``)::

    adapter/ | head/ | model/   the method's trained weights (LoRA adapter in peft's layout with the head,
                                linear-probe head, or a full fine-tune's whole model; medlora.bundle.layout)
    base/base.safetensors       only for a randomly initialised base (source "init"); see below
    medlora.json                base, preprocessing, labels, operating point, provenance, versions
    model_card.md  data_card.md metrics.json
    predictions.csv             study level: split, study_key, patient_key, label, score, call (multi-label/
                                multi-class: also score.<o>, label.<o>, call.<o> per output; multi-class:
                                true_class and class, the arg-max call; without data.normal no label/score/call)
    predictions_samples.csv     per image: split, sample_id, study_key, patient_key, label, score, call
    plots/                      roc, pr, reliability, score_histograms (test studies; of "any finding" for a
                                multi-label/multi-class model), roc_findings (one ROC panel per finding/class)
    saliency/                   saliency overlays (attention rollout / Grad-CAM) of test TP/FN/FP/TN examples
    report.html                 one self-contained page for clinical review
    MANIFEST.sha256

Base weights: an ``init`` base exists nowhere else, is small relative to what it identifies, and
is copied in (``weights_path`` then is ``base/base.safetensors``, relative to the bundle). A ``file``
base (a site's pretrained weights, often large and licensed separately) is referenced by its
path and sha256 and not copied; a ``hub`` base by its timm name and state sha256. Either way
:mod:`medlora.bundle.loading` refuses any base whose hashes differ.

The bundle is built in a hidden folder beside ``out`` and moved into place with ``os.replace``
only after the PHI scan passed and the manifest was written: a failure leaves no bundle behind.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from ..bundle.aggregator import copy_aggregator
from ..bundle.bundle import Bundle
from ..bundle.familiarity import FEATURE_STATS_FILE
from ..bundle.layout import (
    BUNDLE_BASE_FILE,
    METADATA_FILE,
    copy_weights,
    git_commit,
    library_versions,
    require_weights,
)
from ..bundle.loading import load_model
from ..bundle.manifest import write_manifest
from ..bundle.samples import sample_rules
from ..config import read_config_file
from ..errors import BundleError, MedloraError
from ..evaluate.operating_point import OperatingPoint
from ..hashing import sha256_file
from ..tracking import mlflow_run as track
from .attention import write_attention
from .card import model_card, too_small
from .figures import KINDS, pick_examples, sample_items, write_plots, write_saliency
from .html import Figure, render_report
from .phi import known_identifiers, require_no_phi
from .predictions import output_studies, sample_predictions, study_predictions

log = logging.getLogger(__name__)
PLOT_FILES = ("roc.png", "pr.png", "reliability.png", "score_histograms.png")


def download_run(run_id: str, dst: Path, tracking_uri: str | None = None) -> Path:
    """Download every artifact of ``run_id`` into ``dst``; raise :class:`BundleError` if the run is unknown."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri)
    try:
        client.get_run(run_id)
        with track.download_bars_on_terminal():
            local = client.download_artifacts(run_id, "", str(dst))
    except MlflowException as err:
        raise BundleError(f"MLflow run {run_id!r} cannot be read from {tracking_uri or 'the default store'}: "
                          f"{err.message}") from None
    for needed in (METADATA_FILE, "predictions.csv", "metrics.json"):
        if not (Path(local) / needed).is_file():
            raise BundleError(f"MLflow run {run_id} has no artifact {needed}: it is not a finished medlora run")
    require_weights(Path(local), json.loads((Path(local) / METADATA_FILE).read_text()), f"MLflow run {run_id}")
    return Path(local)


def bundle_base(meta: dict[str, Any], tmp: Path) -> dict[str, Any]:
    """Copy an ``init`` base into the bundle (checked by sha256); keep references for file/hub bases."""
    base = dict(meta["base"])
    if not (meta.get("weights") or {}).get("needs_base", True):  # a full fine-tune: the base is only a record
        base["in_bundle"], base["needed"] = False, False
        if base["source"] == "init":
            base["weights_path"] = None  # a file of the training machine, not needed to use the model
        return base
    if base["source"] == "init":
        src = Path(base["weights_path"])
        if not src.is_file():
            raise BundleError(f"the run's randomly initialised base {src} is not on this machine; export where the "
                              "run was trained, or copy that file there")
        if sha256_file(src) != base["sha256"]:
            raise BundleError(f"base weights {src} changed since training (sha256 differs from medlora.json)")
        (tmp / "base").mkdir()
        shutil.copyfile(src, tmp / BUNDLE_BASE_FILE)
        base["weights_path"] = BUNDLE_BASE_FILE
        base["in_bundle"] = True
    else:
        base["in_bundle"] = False
    return base


def _data_card(local: Path, config: dict[str, Any]) -> str | None:
    if (local / "data_card.md").is_file():
        return (local / "data_card.md").read_text()
    card = (config.get("data") or {}).get("card")
    if card and Path(card).is_file():
        return Path(card).read_text()
    return None


SALIENCY_NOTES = {
    "attention rollout": "attention rollout over all transformer blocks (warmer colours: where the model attended)",
    "Grad-CAM": ("Grad-CAM of the abnormal class on the last stage's features (warmer colours: features that "
                 "raised the abnormal score)"),
}


def _saliency(tmp: Path, bundle: Bundle, studies: pd.DataFrame, samples: pd.DataFrame, config: dict[str, Any],
              data_root: Path | None, items: dict[str, dict[str, Any]] | None = None) -> tuple[list, str]:
    try:
        if items is None:  # a standalone export: re-ingest the run's data root to find its images
            items = sample_items(config.get("data") or {}, bundle.preprocess()[0], data_root)
    except (MedloraError, ValueError, OSError) as err:
        log.warning("saliency examples skipped: the run's images cannot be re-read (%s)", err)
        return [], "No examples: the run's source images were not available when this bundle was exported."
    model = load_model(bundle)
    examples = pick_examples(studies, samples)
    lab = bundle.meta["labels"]
    names = (" / ".join(c for c in lab["classes"] if c != lab["abnormal"]), lab["abnormal"])
    # multi-class/multi-label: Grad-CAM of the highest-scoring output, which drives the "any finding" score
    target = bundle.abnormal_index if bundle.task == "binary" else None
    figs, methods, problems = write_saliency(model, bundle.preprocess(), examples, items, bundle.threshold,
                                             tmp / "saliency", target=target, labels=names)
    if "attention" in samples:  # a study model: saliency on its most attended slice, then the slices it attended to
        figs = [replace(f, caption=f.caption.replace("highest-scoring image", "most attended slice")) for f in figs]
        figs += write_attention(examples, samples, items, bundle.preprocess(), tmp / "saliency", names)
    if not figs:
        if problems:
            return [], f"Saliency omitted: no map could be drawn for this model ({problems[0]})."
        return [], "No examples: the test images could not be matched to the run's predictions."
    explained = "; ".join(SALIENCY_NOTES[m] for m in sorted(methods))
    if target is None:
        explained = explained.replace("the abnormal class", "the highest-scoring finding")
    note = ("Saliency by " + explained + ", on the most confident "
            "true/false positives and negatives of the test set. Each overlay has its image beside it.")
    absent = [name for (kind, _, _), name in KINDS.items() if kind not in {e[0] for e in examples}]
    if absent:
        note += f" The test set has no {', no '.join(absent)} at this operating point."
    if "attention" in samples:
        note += (" The model scores each study from all its slices (gated-attention pooling); the overlays are "
                 "drawn on the slice with the highest attention, and each example's attention over its slices "
                 "follows, with the most attended slices.")
    if problems:
        note += f" {len(problems)} example(s) omitted: {problems[0]}."
    return figs, note


def _findings_grid(studies: pd.DataFrame, bundle: Bundle, folder: Path) -> Figure | None:
    """ROC small multiples of a multi-label/multi-class bundle's test studies (``plots/roc_findings.png``)."""
    from ..evaluate.roc_grid import plot_roc_grid

    test = studies[studies["split"] == "test"]
    if not bundle.outputs or test.empty:
        return None
    names = bundle.outputs
    targets = test[[f"label.{n}" for n in names]].astype("Float64").to_numpy(dtype=float, na_value=float("nan"))
    path = plot_roc_grid(names, targets, test[[f"score.{n}" for n in names]].to_numpy(dtype=float),
                         folder / "roc_findings.png", bundle.output_thresholds)
    word = "finding" if bundle.task == "multilabel" else "class (one vs rest)"
    return Figure(path, f"ROC of the test studies per {word}; title: AUROC and positive (+) / negative (−) counts; "
                        "black dot: the validation-chosen threshold; a panel without a curve says why")


def check_test_size(metrics: dict[str, Any], labels: dict[str, Any], run_id: str, strict: bool) -> None:
    """Warn when the test set is below ``evaluate.min_per_class`` studies per class; refuse with ``strict``."""
    small = too_small(metrics, labels)
    if small is None:
        return
    if strict:
        raise BundleError(f"run {run_id}: {small} --strict refuses to export it; evaluate on a larger test set")
    log.warning("run %s: %s The bundle says so at the top of report.html.", run_id, small)


def build_bundle(tmp: Path, local: Path, run_id: str, phi_sources: list[Path], data_root: Path | None,
                 items: dict[str, dict[str, Any]] | None = None, strict: bool = False) -> None:
    """Write the whole bundle into the empty folder ``tmp`` from the downloaded artifacts ``local``."""
    meta = json.loads((local / METADATA_FILE).read_text())
    metrics = json.loads((local / "metrics.json").read_text())
    check_test_size(metrics, meta["labels"], run_id, strict)
    config = read_config_file(local / "config.yaml") if (local / "config.yaml").is_file() else {}
    copy_weights(local, tmp, meta, f"run {run_id}")
    copy_aggregator(local, tmp, meta, f"run {run_id}")
    meta["base"] = bundle_base(meta, tmp)
    meta["samples"] = sample_rules(config.get("data") or {})
    meta["export"] = {"exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "versions": library_versions(), "git_commit": git_commit(), "mlflow_run_id": run_id}
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
    shutil.copyfile(local / "metrics.json", tmp / "metrics.json")
    if (local / FEATURE_STATS_FILE).is_file():  # familiarity statistics (runs before they existed have none)
        shutil.copyfile(local / FEATURE_STATS_FILE, tmp / FEATURE_STATS_FILE)

    op_meta, labels = meta["operating_point"], meta["labels"]
    bundle = Bundle(tmp, meta)
    samples = pd.read_csv(local / "predictions.csv")
    how, threshold = op_meta.get("aggregate", "max"), op_meta.get("threshold")
    studies = study_predictions(samples, threshold, how, bundle.study_scores)
    if bundle.outputs:  # multi-label / multi-class: every output's study score, target and call
        studies = studies.merge(output_studies(samples, bundle.outputs, how, bundle.output_thresholds,
                                               bundle.task == "multiclass"), on=["split", "study_key"], how="left")
    studies.to_csv(tmp / "predictions.csv", index=False)
    sample_predictions(samples, threshold, bundle.outputs).to_csv(tmp / "predictions_samples.csv", index=False)
    plots, grid = [], _findings_grid(studies, bundle, tmp / "plots")
    if bundle.binary_call:
        op = OperatingPoint(**metrics["operating_point"]) if "operating_point" in metrics else \
            OperatingPoint(op_meta["policy"], threshold, float("nan"), float("nan"))
        others = [c for c in labels["classes"] if c != labels["abnormal"]]
        existing = {n: local / n for n in PLOT_FILES if (local / n).is_file()}
        shown = studies
        if bundle.task == "multilabel":  # as evaluated: "any finding" is unknown with no finding present and one unknown
            targets = studies[[f"label.{n}" for n in bundle.outputs]]
            shown, existing = studies[targets.eq(1).any(axis=1) | targets.notna().all(axis=1)], {}
        plots = write_plots(shown, op, (" / ".join(others), labels["abnormal"]), tmp / "plots", existing)

    data_card = _data_card(local, config)
    if data_card is not None:
        (tmp / "data_card.md").write_text(data_card)
    card = model_card(meta, metrics, data_card is not None)
    (tmp / "model_card.md").write_text(card)
    if bundle.binary_call:
        saliency, note = _saliency(tmp, bundle, studies, samples, config, data_root, items)
    else:
        saliency, note = [], ("No examples: a multi-class model without data.normal makes no abnormal-vs-normal call, "
                              "so there are no true/false positives or negatives to show.")
    (tmp / "report.html").write_text(render_report(meta, metrics, plots, saliency, note, card, data_card, grid))

    sources = list(phi_sources)
    root = Path(data_root or (config.get("data") or {}).get("root") or "")
    if not sources and str(root) not in ("", ".") and root.is_dir():
        sources = [root]
    require_no_phi(tmp, known_identifiers(sources) if sources else None)
    write_manifest(tmp)


def export_bundle(run_id: str, out: Path, tracking_uri: str | None = None, phi_check_against: list[Path] | None = None,
                  data_root: Path | None = None, overwrite: bool = False,
                  items: dict[str, dict[str, Any]] | None = None, strict: bool = False) -> Path:
    """Export MLflow run ``run_id`` as a review bundle at ``out`` (atomically); returns ``out``.

    A test set with fewer than ``evaluate.min_per_class`` studies in a class is logged as a warning
    and said in red at the top of ``report.html``; ``strict`` refuses to write such a bundle.

    ``items`` (sample id → MONAI item) spares re-ingesting the data root for the saliency examples when
    the caller already holds the run's manifest (the last stage of ``medlora run``).

    ``phi_check_against``: DICOM files/folders whose identifying header values must not appear in the
    bundle (default: the run's data root, when it exists here). ``data_root`` overrides the run's data
    root for re-reading the saliency example images. An existing ``out`` is replaced only with
    ``overwrite``.
    """
    out = Path(out).absolute()
    if out.exists() and not overwrite:
        raise BundleError(f"{out} already exists; choose another folder or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        with tempfile.TemporaryDirectory(prefix="medlora-artifacts-") as scratch:
            local = download_run(run_id, Path(scratch), tracking_uri)
            build_bundle(tmp, local, run_id, list(phi_check_against or []), data_root, items, strict)
        os.chmod(tmp, 0o755)
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("bundle for run %s written to %s", run_id, out)
    return out
