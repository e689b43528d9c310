"""Score new DICOM studies with one or more exported bundles.

Files (or folders of files) are grouped into studies by StudyInstanceUID, which becomes a salted
pseudonymous study key (:func:`medlora.io.deid.pseudonym`) before anything is written. Each file goes
through the bundle's exact preprocessing (:func:`medlora.transforms.pipeline.build_transforms` with the
window/view/size/mean/std of ``medlora.json``); sample scores are aggregated per study with the
bundle's rule and called at its frozen operating point (``score >= threshold``).

Several bundles trained on the same base share one base model in memory: their adapters are loaded
side by side with peft's ``load_adapter`` and switched with ``set_adapter``. ``merge=True`` instead
merges each adapter into a copy of the base (``merge_and_unload``): the same scores, faster
inference. A file that cannot be read is reported with its reason and skipped; the others go on.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import BundleError, InputError, MedloraError
from ..evaluate.aggregate import aggregate_scores
from .loading import Bundle, attach_adapters, load_base, merged_model, open_bundle, same_base
from .manifest import require_verified
from .samples import DEFAULT_RULES, plan_samples, sample_tensors

log = logging.getLogger(__name__)
SKIP_SUFFIXES = {".csv", ".md", ".json", ".txt", ".html", ".png", ".yaml"}  # side files in study folders


@dataclass
class PredictResult:
    """Study-level scores/calls, per-sample scores, and the inputs that were skipped with why."""

    studies: pd.DataFrame
    samples: pd.DataFrame
    errors: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["file", "reason"]))


def collect_files(inputs: list[Path]) -> tuple[list[Path], list[dict[str, str]]]:
    """Expand folders (recursively, hidden files and side files skipped); report missing inputs."""
    files, errors = [], []
    for item in map(Path, inputs):
        if item.is_dir():
            files += sorted(p for p in item.rglob("*") if p.is_file() and not p.name.startswith(".")
                            and p.suffix.lower() not in SKIP_SUFFIXES and p.name != "DICOMDIR")
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


class Predictor:
    """Loaded bundles ready to score inputs; each base is loaded (and checked) once."""

    def __init__(self, bundles: list[Bundle], merge: bool = False, salt: str = "medlora", batch_size: int = 32) -> None:
        if not bundles:
            raise BundleError("no bundle given")
        self.bundles, self.salt, self.batch_size, self.merge = bundles, salt, batch_size, merge
        self.columns = column_names(bundles)
        self._transforms: dict[str, object] = {}
        self.models: dict[int, tuple[nn.Module, str | None]] = {}
        done: set[int] = set()
        for i, bundle in enumerate(bundles):
            if i in done:
                continue
            group = [j for j in range(len(bundles)) if j not in done and same_base(bundle, bundles[j])]
            done.update(group)
            base = load_base(bundle)
            log.info("base %s loaded once for %d bundle(s)", bundle.meta["base"]["timm_name"], len(group))
            if merge:
                for j in group:
                    self.models[j] = (merged_model(base, bundles[j]), None)
            else:
                names = [f"b{j}" for j in group]
                shared = attach_adapters(base, [bundles[j] for j in group], names)
                for j, name in zip(group, names, strict=True):
                    self.models[j] = (shared, name)

    @classmethod
    def from_paths(cls, paths: list[Path], verify: bool = True, **kwargs) -> Predictor:
        """Open (and by default verify against their manifests) the bundles at ``paths``."""
        if verify:
            for p in paths:
                require_verified(Path(p))
        return cls([open_bundle(Path(p)) for p in paths], **kwargs)

    @torch.inference_mode()
    def score_tensors(self, index: int, images: torch.Tensor | Sequence[torch.Tensor]) -> np.ndarray:
        """P(abnormal) of bundle ``index`` for preprocessed ``(C, H, W)`` images, stacked batch by batch."""
        model, adapter = self.models[index]
        if adapter is not None:
            model.set_adapter(adapter)
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack(list(images[i:i + self.batch_size])).as_subclass(torch.Tensor)
            out.append(torch.softmax(model(x).float(), 1)[:, self.bundles[index].abnormal_index])
        return torch.cat(out).numpy().astype(np.float64) if out else np.empty(0)

    def _key(self, bundle: Bundle) -> str:
        pre, size, mean, std = bundle.preprocess()
        rules = bundle.meta.get("samples") or DEFAULT_RULES
        return json.dumps([pre.model_dump(mode="json"), size, mean, std, rules], sort_keys=True)

    def _inputs(self, bundle: Bundle, headers: dict[Path, dict], niftis: list[Path],
                errors: dict[str, str]) -> list[tuple[str, str, torch.Tensor]]:
        """``(sample_id, study_key, image)`` of every readable sample under ``bundle``'s preprocessing."""
        from ..transforms.pipeline import build_transforms

        pre, size, mean, std = bundle.preprocess()
        key = self._key(bundle)
        transform = self._transforms.get(key) or build_transforms(pre, size, mean, std)
        self._transforms[key] = transform
        out = []
        specs = plan_samples(headers, niftis, bundle.meta.get("samples") or DEFAULT_RULES, self.salt)
        for spec in tqdm(specs, desc="preprocess", unit="sample", disable=not sys.stderr.isatty()):
            try:
                out += [(sid, spec.study_key, x) for sid, x in sample_tensors(spec, transform, pre, self.salt)]
            except (MedloraError, RuntimeError, ValueError, OSError) as err:
                errors.setdefault(spec.label, _root_cause(err))
        return out

    def predict_files(self, inputs: list[Path]) -> PredictResult:
        """Score the DICOM/NIfTI files and folders in ``inputs`` at sample and study level."""
        from ..io.dicom import read_dicom_header
        from ..io.nifti import is_nifti

        files, missing = collect_files(inputs)
        errors = {e["file"]: e["reason"] for e in missing}
        headers: dict[Path, dict] = {}
        niftis = [f for f in files if is_nifti(f)]
        for f in files:
            if f in niftis:
                continue
            try:
                headers[f] = read_dicom_header(f)
            except MedloraError as err:
                errors[str(f)] = str(err)
        inputs_by_key: dict[str, list[tuple[str, str, torch.Tensor]]] = {}
        samples = pd.DataFrame(columns=["sample_id", "study_key"])
        for i, (bundle, col) in enumerate(zip(self.bundles, self.columns, strict=True)):
            key = self._key(bundle)
            if key not in inputs_by_key:
                inputs_by_key[key] = self._inputs(bundle, headers, niftis, errors)
            rows = inputs_by_key[key]
            scores = self.score_tensors(i, [x for _, _, x in rows])
            frame = pd.DataFrame({"sample_id": [r[0] for r in rows], "study_key": [r[1] for r in rows],
                                  f"score{col}": scores})
            samples = frame if samples.empty else samples.merge(frame, on=["sample_id", "study_key"], how="outer")
        for name, reason in errors.items():
            log.warning("skipped %s: %s", name, reason)
        errs = pd.DataFrame([{"file": k, "reason": v} for k, v in errors.items()], columns=["file", "reason"])
        return PredictResult(self._studies(samples), samples, errs)

    def _studies(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Aggregate sample scores per study with each bundle's rule; call at its threshold."""
        counts = samples.groupby("study_key").size() if len(samples) else pd.Series(dtype=int)
        studies = pd.DataFrame({"study_key": counts.index.to_numpy(), "n_images": counts.to_numpy()})
        for bundle, col in zip(self.bundles, self.columns, strict=True):
            part = samples.dropna(subset=[f"score{col}"]) if f"score{col}" in samples else samples.iloc[:0]
            if not len(part):
                studies[f"score{col}"], studies[f"call{col}"] = np.nan, 0
                continue
            keys, scores, _ = aggregate_scores(part["study_key"].to_numpy(), part[f"score{col}"].to_numpy(),
                                               np.zeros(len(part), dtype=int), how=bundle.aggregate)
            by_key = dict(zip(keys, scores, strict=True))
            studies[f"score{col}"] = studies["study_key"].map(by_key).astype(float)
            studies[f"call{col}"] = (studies[f"score{col}"] >= bundle.threshold).astype(int)
        return studies


def _root_cause(err: BaseException) -> str:
    """MONAI wraps a reader's error in RuntimeErrors: report the innermost medlora error."""
    while err.__cause__ is not None:
        err = err.__cause__
    return str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"


def predict_bundles(bundles: list[Path], inputs: list[Path], merge: bool = False, salt: str = "medlora",
                    verify: bool = True) -> PredictResult:
    """Load ``bundles`` (bases once, verified) and score ``inputs``."""
    return Predictor.from_paths(bundles, verify=verify, merge=merge, salt=salt).predict_files(inputs)
