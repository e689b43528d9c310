"""A bundle on disk, opened: its folder and its parsed ``medlora.json``.

Start here. A bundle (or a run's output folder) holds the method's trained weights, ``medlora.json``
and, once exported, the review files and ``MANIFEST.sha256`` (:mod:`medlora.bundle.layout` lists what
each method saves; :mod:`medlora.bundle.metadata` what ``medlora.json`` holds). :func:`open_bundle`
reads and checks one; :class:`Bundle` answers what a caller asks of it (method, threshold, task,
outputs, preprocessing). To score with it: :func:`medlora.bundle.loading.load_model` puts its weights
back into a model, :class:`medlora.bundle.predict.Predictor` scores new studies with one or more
bundles, :mod:`medlora.bundle.manifest` verifies its files first.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import PreprocessConfig
from ..errors import BundleError
from .layout import METADATA_FILE, MethodArtifact, artifact_of, require_weights


@dataclass
class Bundle:
    """An exported bundle (or a run's output folder) on disk: its folder and parsed ``medlora.json``."""

    path: Path
    meta: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def method(self) -> str:
        return str(self.meta["method"])

    @property
    def artifact(self) -> MethodArtifact:
        return artifact_of(self.method)

    @property
    def weights_file(self) -> Path:
        """The safetensors file of the trained weights (adapter, head or whole model)."""
        return self.path / self.artifact.weights_path

    @property
    def threshold(self) -> float:
        """The abnormal / "any finding" threshold; NaN for a bundle without one (:attr:`binary_call`)."""
        value = self.meta["operating_point"].get("threshold")
        return float("nan") if value is None else float(value)

    @property
    def binary_call(self) -> bool:
        """False for a multi-class bundle without ``data.normal``: no abnormal-vs-normal score or call,
        studies are called by their arg-max class."""
        return self.meta["operating_point"].get("threshold") is not None

    @property
    def aggregate(self) -> str:
        return self.meta["operating_point"].get("aggregate", "max")

    def study_scores(self, scores: Any) -> Any:
        """Aggregated study scores through the bundle's recalibration map (identity without one):
        the units its threshold is in."""
        from ..evaluate.recalibrate import Calibrator

        return Calibrator.from_dict(self.meta.get("calibration")).apply(scores)

    @property
    def task(self) -> str:
        """``binary``, ``multiclass`` or ``multilabel`` (bundles written before tasks existed are binary)."""
        return str(self.meta["labels"].get("task", "binary"))

    @property
    def outputs(self) -> list[str]:
        """The findings (classes) the model scores one by one; empty for a binary bundle."""
        return list(self.meta["labels"].get("outputs") or []) if self.task != "binary" else []

    @property
    def output_thresholds(self) -> dict[str, float]:
        """Each finding's (class's) own validation-chosen threshold (NaN where none could be chosen)."""
        given = self.meta["operating_point"].get("per_output") or {}
        return {name: float("nan") if given.get(name) is None else float(given[name]) for name in self.outputs}

    @property
    def abnormal_index(self) -> int:
        if self.task != "binary":  # one sigmoid per finding / a softmax without one positive class
            raise BundleError(f"bundle {self.path} is a {self.task} model: it has no single abnormal class "
                              "(score its outputs, Predictor.score_outputs)")
        return int(self.meta["labels"]["abnormal_index"])

    def base_info(self) -> dict[str, Any]:
        """The base record with a bundle-relative weights path made absolute."""
        info = dict(self.meta["base"])
        path = info.get("weights_path")
        if path and not Path(path).is_absolute():
            info["weights_path"] = str(self.path / path)
        return info

    def preprocess(self) -> tuple[PreprocessConfig, int, list[float], list[float]]:
        """(preprocess config, input size, mean, std) exactly as the run used them."""
        pre = self.meta["preprocess"]
        cfg = PreprocessConfig(**{k: pre[k] for k in ("window", "view", "spacing") if k in pre}, augment=False)
        return cfg, int(pre["image_size"]), list(pre["mean"]), list(pre["std"])


def open_bundle(path: Path) -> Bundle:
    """Read ``path/medlora.json`` and check that the method's artifact is there; :class:`BundleError` if not."""
    path = Path(path)
    meta_file = path / METADATA_FILE
    if not meta_file.is_file():
        raise BundleError(f"{path} is not a medlora bundle: {METADATA_FILE} is missing")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as err:
        raise BundleError(f"{meta_file} is not valid JSON: {err}") from None
    for key in ("base", "preprocess", "labels", "operating_point", "method"):
        if key not in meta:
            raise BundleError(f"{meta_file} has no {key!r} entry")
    require_weights(path, meta, f"bundle {path}")
    return Bundle(path, meta)
