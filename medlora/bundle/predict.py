"""Score new DICOM/NIfTI studies with one or more exported bundles of any method.

Files (or folders of files) are grouped into studies by StudyInstanceUID, which becomes a
pseudonymous study key (HMAC under the site secret, :func:`medlora.io.deid.pseudonym`, as in ingest)
before anything is written. Each file goes through the bundle's exact preprocessing
(:func:`medlora.transforms.pipeline.build_transforms` with the window/view/size/mean/std of
``medlora.json``); sample scores are aggregated per study with the bundle's rule, put through its
recalibration map when it has one (``calibration`` in ``medlora.json``), and called at its frozen
operating point (``score >= threshold``). A multi-label or multi-class bundle adds a
``score.<finding>`` and ``call.<finding>`` column per output, called at that output's own threshold;
its ``score``/``call`` are "any finding" (such bundles carry no recalibration map). A multi-class
bundle also gives ``class``, the arg-max class of the study's class scores; one without
``data.normal`` has no "any finding" and so no ``score``/``call`` columns at all. A bundle that carries
familiarity statistics (``feature_stats.safetensors``) adds ``familiarity`` (the study's distance to its
training studies) and ``unfamiliar`` (beyond the bundle's flag threshold: a study unlike anything the
model was trained on, whose call deserves less trust).

Bundles that need the same base share one base model in memory, loaded and checked once: LoRA
adapters are loaded side by side with peft's ``load_adapter`` and switched with ``set_adapter``;
linear-probe heads are swapped on one copy of the base. A full fine-tune is its own model.
``merge=True`` merges each LoRA adapter into a copy of the base (``merge_and_unload``): the same
scores, faster inference; it is refused for the other methods, which have nothing to merge.

A failure is never a negative finding: a study none of whose images could be read gets a row with
no score and no call (``call`` empty) and its reason in ``error``; an input whose study cannot even
be told (a missing path, an unreadable header) gets such a row too. A study scored from only some
of its files names the others in ``error``.
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import BundleError, InputError, MedloraError
from ..evaluate.aggregate import aggregate_scores
from ..evaluate.familiarity import study_means
from ..models.aggregator import StudyModel
from .aggregator import is_study_level, study_model
from .bundle import Bundle, open_bundle
from .familiarity import load_feature_stats
from .loading import (
    attach_adapters,
    head_state,
    load_base,
    load_full,
    merged_model,
    put_head,
    refuse_merge,
    same_base,
)
from .manifest import require_verified
from .samples import DEFAULT_RULES, plan_samples, sample_tensors

log = logging.getLogger(__name__)
SKIP_SUFFIXES = {".csv", ".md", ".json", ".txt", ".html", ".png", ".yaml"}  # side files in study folders


@dataclass
class PredictResult:
    """Study-level scores/calls (with an ``error`` column), per-sample scores, and every input that
    failed with why (``file``, ``reason``, ``study_key`` when known)."""

    studies: pd.DataFrame
    samples: pd.DataFrame
    errors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["file", "reason", "study_key"]))

    @property
    def failed(self) -> bool:
        """True when any input could not be used."""
        return len(self.errors) > 0


@dataclass
class Slot:
    """The model that scores one bundle, and what to do before using it (switch adapter or head)."""

    model: nn.Module
    activate: Callable[[], None] | None = None


def collect_files(inputs: list[Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand folders (recursively, hidden files and side files skipped); report missing inputs."""
    files, errors = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() not in SKIP_SUFFIXES and p.name != "DICOMDIR")
            if not found:
                errors.append({"file": str(item), "reason": "folder holds no image file"})
            files += found
        elif item.is_file():
            files.append(item)
        else:
            errors.append({"file": str(item), "reason": "no such file or folder"})
    return files, errors


def column_names(bundles: list[Bundle]) -> list[str]:
    """Score column suffixes: ``""`` for one bundle, else the bundle folder names (made unique)."""
    if len(bundles) == 1:
        return [""]
    names: list[str] = []
    for b in bundles:
        name = b.name
        while f"_{name}" in names:
            name = f"{name}_{len(names)}"
        names.append(f"_{name}")
    return names


def site_secret(secret: bytes | str | None) -> bytes | str:
    """The secret study keys are made with: the given one, else this site's key file."""
    if secret is not None:
        return secret
    from ..io.deid import load_site_key

    return load_site_key().secret


class Predictor:
    """Loaded bundles ready to score inputs; each base is loaded (and checked) once."""

    def __init__(self, bundles: list[Bundle], merge: bool = False, secret: bytes | str | None = None,
                 batch_size: int = 32) -> None:
        if not bundles:
            raise BundleError("no bundle given")
        if merge:
            for bundle in bundles:
                refuse_merge(bundle)
        self.bundles, self.batch_size, self.merge = bundles, batch_size, merge
        self.secret = site_secret(secret)
        self.columns = column_names(bundles)
        self.stats = [load_feature_stats(b) for b in bundles]  # familiarity, where a bundle carries it
        self._transforms: dict[str, object] = {}
        self.slots: dict[int, Slot] = {}
        for i, bundle in enumerate(bundles):
            if bundle.method == "full":
                self.slots[i] = Slot(load_full(bundle))
        done: set[int] = set(self.slots)
        for i, bundle in enumerate(bundles):
            if i in done:
                continue
            group = [j for j in range(len(bundles)) if j not in done and same_base(bundle, bundles[j])]
            done.update(group)
            self._load_group(group)
        for i, bundle in enumerate(bundles):  # a study-level bundle: its slice encoder with its attention pooling
            if is_study_level(bundle.meta):
                self.slots[i] = Slot(study_model(self.slots[i].model, bundle), self.slots[i].activate)

    def _load_group(self, group: list[int]) -> None:
        """Bundles on one base: load it once; heads swap on one copy, adapters sit side by side."""
        base = load_base(self.bundles[group[0]])
        log.info("base %s loaded once for %d bundle(s)", self.bundles[group[0]].meta["base"]["timm_name"], len(group))
        lora = [j for j in group if self.bundles[j].method == "lora"]
        probes = [j for j in group if self.bundles[j].method == "linear_probe"]
        if probes:
            model = copy.deepcopy(base) if lora else base  # peft changes the base it is attached to
            for j in probes:
                state, bundle = head_state(self.bundles[j]), self.bundles[j]
                put_head(model, state, bundle)  # fail at load time, not at the first input
                self.slots[j] = Slot(model, _head_switch(model, state, bundle))
        if not lora:
            return
        if self.merge:
            for j in lora:
                self.slots[j] = Slot(merged_model(base, self.bundles[j]))
            return
        names = [f"b{j}" for j in lora]
        shared = attach_adapters(base, [self.bundles[j] for j in lora], names)
        for j, name in zip(lora, names, strict=True):
            self.slots[j] = Slot(shared, lambda m=shared, n=name: m.set_adapter(n))

    @classmethod
    def from_paths(cls, paths: list[Path], verify: bool = True, **kwargs) -> Predictor:
        """Open (and by default verify against their manifests) the bundles at ``paths``."""
        if verify:
            for p in paths:
                require_verified(Path(p))
        return cls([open_bundle(Path(p)) for p in paths], **kwargs)

    def score_tensors(self, index: int, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """P(abnormal) of bundle ``index`` for preprocessed ``(C, H, W)`` images ("any finding" for a
        multi-class or multi-label bundle), stacked batch by batch."""
        return self.score_outputs(index, images)[0]

    @torch.inference_mode()
    def score_outputs(self, index: int, images: torch.Tensor | Sequence[torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
        """``(abnormal or any-finding score (n,), per-output probabilities (n, outputs))``; a binary
        bundle has no outputs (``(n, 0)``). Multi-label: one sigmoid per finding, "any finding" their
        maximum; multi-class: the softmax, "any finding" ``1 - P(normal)`` (first class without one)."""
        bundle, slot = self.bundles[index], self.slots[index]
        if slot.activate is not None:
            slot.activate()
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack(list(images[i:i + self.batch_size])).as_subclass(torch.Tensor)
            logits = slot.model(x).float()
            out.append(torch.sigmoid(logits) if bundle.task == "multilabel" else torch.softmax(logits, 1))
        probs = torch.cat(out).numpy().astype(np.float64) if out else np.empty((0, max(len(bundle.outputs), 2)))
        return _task_scores(bundle, probs)

    @torch.inference_mode()
    def score_studies(self, index: int, studies: Sequence[str], images: Sequence[torch.Tensor],
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """A study-level bundle's :meth:`score_outputs` of the samples of ``studies`` (one key per image):
        each study's images are scored together, and each image gets its study's scores and its own
        attention weight ``(n,)``."""
        bundle, slot = self.bundles[index], self.slots[index]
        if slot.activate is not None:
            slot.activate()
        keys = np.asarray(studies, dtype=object)
        n_out = max(len(bundle.outputs), 2)
        probs, attention = np.empty((len(keys), n_out)), np.empty(len(keys))
        for key in dict.fromkeys(keys.tolist()):
            at = np.flatnonzero(keys == key)
            bag = torch.stack([images[i] for i in at])[None].as_subclass(torch.Tensor)
            logits, weights = slot.model.attend(bag)
            p = torch.sigmoid(logits.float()) if bundle.task == "multilabel" else torch.softmax(logits.float(), 1)
            probs[at] = p.numpy()[0]
            attention[at] = weights.float().numpy()[0]
        score, per_output = _task_scores(bundle, probs)
        return score, per_output, attention

    @torch.inference_mode()
    def pooled_features(self, index: int, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """Bundle ``index``'s pooled (pre-logits) features of preprocessed images, ``(n, d)``."""
        from ..train.features import pre_logits

        slot = self.slots[index]
        if slot.activate is not None:
            slot.activate()
        model = slot.model.encoder if isinstance(slot.model, StudyModel) else slot.model  # a slice's own features
        out = [pre_logits(model, torch.stack(list(images[i:i + self.batch_size])).as_subclass(torch.Tensor))
               .flatten(1).float().numpy() for i in range(0, len(images), self.batch_size)]
        return np.concatenate(out).astype(np.float64) if out else np.empty((0, 0))

    def familiarity(self, index: int, rows: list[tuple[str, str, torch.Tensor]]) -> dict[str, float]:
        """Study key → distance to bundle ``index``'s training studies (empty without its statistics)."""
        stats = self.stats[index]
        if stats is None or not rows:
            return {}
        keys, means = study_means(self.pooled_features(index, [x for _, _, x in rows]), [r[1] for r in rows])
        return dict(zip(keys, stats.distance(means), strict=True))

    def _key(self, bundle: Bundle) -> str:
        pre, size, mean, std = bundle.preprocess()
        rules = bundle.meta.get("samples") or DEFAULT_RULES
        return json.dumps([pre.model_dump(mode="json"), size, mean, std, rules], sort_keys=True)

    def _inputs(self, bundle: Bundle, headers: dict[Path, dict], niftis: list[Path],
                errors: dict[str, tuple[str, str]]) -> list[tuple[str, str, torch.Tensor]]:
        """``(sample_id, study_key, image)`` of every readable sample under ``bundle``'s preprocessing;
        failures go to ``errors`` (label → (reason, study key))."""
        from ..transforms.pipeline import build_transforms

        pre, size, mean, std = bundle.preprocess()
        key = self._key(bundle)
        transform = self._transforms.get(key) or build_transforms(pre, size, mean, std)
        self._transforms[key] = transform
        out = []
        specs = plan_samples(headers, niftis, bundle.meta.get("samples") or DEFAULT_RULES, self.secret)
        for spec in tqdm(specs, desc="preprocess", unit="sample", disable=not sys.stderr.isatty()):
            try:
                out += [(sid, spec.study_key, x) for sid, x in sample_tensors(spec, transform, pre, self.secret)]
            except (MedloraError, RuntimeError, ValueError, OSError) as err:
                errors.setdefault(spec.label, (_root_cause(err), spec.study_key))
        return out

    def predict_files(self, inputs: list[Path]) -> PredictResult:
        """Score the DICOM/NIfTI files and folders in ``inputs`` at sample and study level."""
        from ..io.dicom import read_dicom_header
        from ..io.nifti import is_nifti

        files, missing = collect_files(inputs)
        errors: dict[str, tuple[str, str]] = {e["file"]: (e["reason"], "") for e in missing}
        headers: dict[Path, dict] = {}
        niftis = [f for f in files if is_nifti(f)]
        for f in files:
            if f in niftis:
                continue
            try:
                headers[f] = read_dicom_header(f)
            except MedloraError as err:
                errors[str(f)] = (str(err), "")
        inputs_by_key: dict[str, list[tuple[str, str, torch.Tensor]]] = {}
        samples = pd.DataFrame(columns=["sample_id", "study_key"])
        familiar: dict[str, dict[str, float]] = {}
        for i, (bundle, col) in enumerate(zip(self.bundles, self.columns, strict=True)):
            key = self._key(bundle)
            if key not in inputs_by_key:
                inputs_by_key[key] = self._inputs(bundle, headers, niftis, errors)
            rows = inputs_by_key[key]
            extra = {}
            if is_study_level(bundle.meta):  # every image gets its study's score and its attention weight
                scores, per_output, attention = self.score_studies(i, [r[1] for r in rows], [x for _, _, x in rows])
                extra = {f"attention{col}": attention}
            else:
                scores, per_output = self.score_outputs(i, [x for _, _, x in rows])
            frame = pd.DataFrame({"sample_id": [r[0] for r in rows], "study_key": [r[1] for r in rows],
                                  **({f"score{col}": scores} if bundle.binary_call else {}),
                                  **{f"score.{n}{col}": per_output[:, k] for k, n in enumerate(bundle.outputs)},
                                  **extra})
            samples = frame if samples.empty else samples.merge(frame, on=["sample_id", "study_key"], how="outer")
            if self.stats[i] is not None:
                familiar[col] = self.familiarity(i, rows)
        for name, (reason, _) in errors.items():
            log.warning("skipped %s: %s", name, reason)
        errs = pd.DataFrame([{"file": k, "reason": r, "study_key": s} for k, (r, s) in errors.items()],
                            columns=["file", "reason", "study_key"])
        studies = self._studies(samples, errs)
        for i, col in enumerate(self.columns):
            if col in familiar:  # distance to the training studies, flagged above the bundle's threshold
                studies[f"familiarity{col}"] = studies["study_key"].map(familiar[col]).astype(float)
                studies[f"unfamiliar{col}"] = pd.array([pd.NA if np.isnan(d) else bool(d > self.stats[i].threshold)
                                                        for d in studies[f"familiarity{col}"]], dtype="boolean")
        return PredictResult(studies, samples, errs)

    def _score_columns(self) -> list[tuple[Bundle, str, str, float]]:
        """``(bundle, suffix, score column, threshold)``: each bundle's abnormal / any-finding score, then
        one ``score.<finding>`` per output of a multi-class or multi-label bundle at its own threshold."""
        out = []
        for bundle, col in zip(self.bundles, self.columns, strict=True):
            if bundle.binary_call:  # a multi-class bundle without data.normal has no abnormal-vs-normal score
                out.append((bundle, col, f"score{col}", bundle.threshold))
            out += [(bundle, col, f"score.{n}{col}", t) for n, t in bundle.output_thresholds.items()]
        return out

    def _studies(self, samples: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
        """One row per study (scored or not) and per input of unknown study; each bundle's score is
        aggregated with its rule and called at its threshold; no score means no call."""
        counts = samples.groupby("study_key").size() if len(samples) else pd.Series(dtype=int)
        failed = defaultdict(list)
        for e in errors.itertuples():
            failed[e.study_key].append(f"{Path(e.file).name}: {e.reason}")
        keys = list(counts.index) + sorted(k for k in failed if k and k not in counts.index)
        studies = pd.DataFrame({"study_key": keys, "n_images": [int(counts.get(k, 0)) for k in keys]})
        for bundle, col, name, threshold in self._score_columns():
            part = samples.dropna(subset=[name]) if name in samples else samples.iloc[:0]
            by_key: dict[str, float] = {}
            if len(part):
                uniq, scores, _ = aggregate_scores(part["study_key"].to_numpy(), part[name].to_numpy(),
                                                   np.zeros(len(part), dtype=int), how=bundle.aggregate)
                if name == f"score{col}":  # the abnormal / any-finding score: in its threshold's units
                    scores = bundle.study_scores(scores)
                by_key = dict(zip(uniq, scores, strict=True))
            score = studies["study_key"].map(by_key).astype(float)
            studies[name] = score
            studies["call" + name.removeprefix("score")] = pd.array(
                [pd.NA if np.isnan(s) or np.isnan(threshold) else int(s >= threshold) for s in score], dtype="Int64")
        for bundle, col in zip(self.bundles, self.columns, strict=True):
            if bundle.task == "multiclass":
                studies[f"class{col}"] = argmax_class(studies, bundle.outputs, col)
        studies["error"] = [_study_error(n, failed.get(k, []))
                            for k, n in zip(studies["study_key"], studies["n_images"], strict=True)]
        unknown = pd.DataFrame({"study_key": [""] * len(failed.get("", [])), "n_images": 0, "error": failed.get("", [])})
        for _, _, name, _ in self._score_columns():
            unknown[name] = np.nan
            unknown["call" + name.removeprefix("score")] = pd.array([pd.NA] * len(unknown), dtype="Int64")
        for name in (c for c in studies.columns if c.startswith("class")):
            unknown[name] = None
        return pd.concat([studies, unknown[studies.columns]], ignore_index=True) if len(unknown) else studies


def argmax_class(studies: pd.DataFrame, outputs: list[str], col: str = "") -> list[str | None]:
    """A multi-class bundle's call per study: the class with the highest study score
    (``score.<class>``, aggregated class by class); ``None`` where the study has no score."""
    scores = studies[[f"score.{n}{col}" for n in outputs]].to_numpy(dtype=float)
    return [None if np.isnan(row).any() else outputs[int(np.argmax(row))] for row in scores]


def _head_switch(model: nn.Module, state: dict[str, torch.Tensor], bundle: Bundle) -> Callable[[], None]:
    """Put ``bundle``'s head on the shared base before it scores (a few kB copied, no new model)."""
    def activate() -> None:
        put_head(model, state, bundle)
    return activate


def _study_error(n_images: int, reasons: list[str]) -> str:
    """A study's ``error``: empty when every input was read, else which inputs were not and why."""
    if not reasons:
        return "" if n_images else "no readable image"
    if n_images:
        return f"scored without {len(reasons)} unreadable input(s): " + "; ".join(reasons)
    return "no readable image: " + "; ".join(reasons)


def _root_cause(err: BaseException) -> str:
    """MONAI wraps a reader's error in RuntimeErrors: report the innermost medlora error."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"


def predict_bundles(bundles: list[Path], inputs: list[Path], merge: bool = False, secret: bytes | str | None = None,
                    verify: bool = True) -> PredictResult:
    """Load ``bundles`` (bases once, verified) and score ``inputs``."""
    return Predictor.from_paths(bundles, verify=verify, merge=merge, secret=secret).predict_files(inputs)


def _task_scores(bundle: Bundle, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(abnormal or any-finding score, per-output probabilities)`` of a bundle's ``(n, outputs)`` probabilities."""
    if bundle.task == "binary":
        return probs[:, bundle.abnormal_index], np.empty((len(probs), 0))
    if bundle.task == "multilabel":
        return probs.max(axis=1) if len(probs) else np.empty(0), probs
    normal = bundle.meta["labels"].get("normal")
    return 1.0 - probs[:, bundle.outputs.index(normal) if normal else 0], probs
