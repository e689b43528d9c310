"""Site adjustments of a received bundle, honestly separated from its validation.

A site may refit the bundle's calibration map and threshold on a **calibration subset** of its own
patients (:mod:`medlora.io.site`). The adjusted map and threshold are then judged on the site's *other*
studies only, side by side with the shipped ones on the very same studies. The adjusted bundle is a new
bundle: the parent's files, a ``medlora.json`` with the new map and threshold plus a ``lineage`` record
(the parent's sha256, what changed, on how many studies of which data), and a new manifest.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..config import EvaluateConfig
from ..errors import ConfigError
from ..evaluate.operating_point import OperatingPoint, choose_operating_point
from ..evaluate.recalibrate import Calibrator, fit_calibrator
from ..evaluate.report import EvaluationResult, _jsonable, evaluate_at
from .bundle import Bundle
from .layout import METADATA_FILE
from .manifest import MANIFEST_FILE, write_manifest


def bundle_sha256(folder: Path) -> str:
    """A bundle's identity: the sha256 of its ``MANIFEST.sha256`` (which hashes every file in it)."""
    return hashlib.sha256((Path(folder) / MANIFEST_FILE).read_bytes()).hexdigest()


@dataclass
class SiteAdjustment:
    calibration: Calibrator
    operating_point: OperatingPoint
    n_calibration_studies: int
    shipped: EvaluationResult  # the shipped map and threshold on the evaluated studies
    adjusted: EvaluationResult  # the site-adjusted ones on the same studies
    changed: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        from ..evaluate.report import to_json

        return _jsonable({"calibration": self.calibration.to_dict(), "operating_point": asdict(self.operating_point),
                          "n_calibration_studies": self.n_calibration_studies, "changed": self.changed,
                          "shipped": to_json(self.shipped), "adjusted": to_json(self.adjusted)})


def adjust_on_site(bundle: Bundle, calibration: pd.DataFrame, evaluated: pd.DataFrame, cfg: EvaluateConfig,
                   seed: int = 0) -> SiteAdjustment:
    """Refit map (the site config's ``evaluate.calibration``, else the bundle's method) and threshold (the
    bundle's policy) on the ``calibration`` studies' raw scores; evaluate both on ``evaluated``."""
    y_cal = calibration["label"].to_numpy(int)
    if len(y_cal) == 0 or y_cal.min() == y_cal.max():
        raise ConfigError(f"the site calibration subset holds {int(y_cal.sum())} abnormal of {len(y_cal)} studies: "
                          "both classes are needed to refit a threshold (use a larger --calibrate-on)")
    shipped_cal = Calibrator.from_dict(bundle.meta.get("calibration"))
    method = cfg.calibration if cfg.calibration != "none" else shipped_cal.method
    cal = fit_calibrator(method, y_cal, calibration["raw_score"].to_numpy(float))
    policy = bundle.meta["operating_point"]["policy"]
    op = choose_operating_point(y_cal, cal.apply(calibration["raw_score"].to_numpy(float)), policy)
    y, clusters = evaluated["label"].to_numpy(int), evaluated["patient_key"].to_numpy(str)
    shipped_op = OperatingPoint(policy, bundle.threshold, float("nan"), float("nan"))
    args = dict(clusters_test=clusters, n_bootstrap=cfg.bootstrap, ci=cfg.ci, seed=seed, min_per_class=cfg.min_per_class)
    shipped = evaluate_at(shipped_op, y, evaluated["score"].to_numpy(float), **args)
    adjusted = evaluate_at(op, y, cal.apply(evaluated["raw_score"].to_numpy(float)), **args)
    changed = ["threshold"] + (["calibration"] if cal.calibrated else [])
    return SiteAdjustment(cal, op, len(y_cal), shipped, adjusted, changed)


def write_adjusted_bundle(parent: Bundle, adjustment: SiteAdjustment, dst: Path, data_name: str) -> Path:
    """Copy ``parent`` to ``dst`` with the site-adjusted map and threshold and its lineage; new manifest."""
    dst = Path(dst)
    if dst.exists():
        shutil.rmtree(dst)
    shutil.copytree(parent.path, dst)
    meta = json.loads((dst / METADATA_FILE).read_text())
    meta["calibration"] = {**adjustment.calibration.to_dict(), "fitted_on": "site calibration studies"}
    meta["operating_point"] = {**meta["operating_point"], "threshold": float(adjustment.operating_point.threshold)}
    meta["lineage"] = {"parent_sha256": bundle_sha256(parent.path), "parent_run_id": parent.meta.get("mlflow_run_id"),
                       "changed": adjustment.changed, "site_data": data_name,
                       "calibration_studies": adjustment.n_calibration_studies,
                       "parent_threshold": parent.threshold,
                       "parent_calibration": parent.meta.get("calibration")}
    (dst / METADATA_FILE).write_text(json.dumps(meta, indent=2, default=str))
    (dst / MANIFEST_FILE).unlink(missing_ok=True)
    write_manifest(dst)
    if not np.isfinite(adjustment.operating_point.threshold):
        raise ValueError("a site-adjusted threshold must be finite")
    return dst
