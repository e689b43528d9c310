"""The points of a few-shot sweep (method, shots, seed), the resolved config of each, and their hashes.

Every point of a sweep is identified by a hash of everything that changes its result (method,
shots, seed, the resolved train/model/preprocess/evaluate config and the dataset fingerprint):
the hash tags its MLflow run, so a rerun finds what already finished. The whole sweep has a hash
too (its parent run is found again by it); where the points run (``fewshot.executor``) is not in it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ..config import Config, FewShotConfig
from ..registry import CONTINUED
from ..train.support import Shots


@dataclass(frozen=True)
class SweepPoint:
    """One child run of a sweep."""

    method: str
    shots: Shots
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method}-{self.shots}shot-seed{self.seed}"


def sweep_points(fewshot: FewShotConfig) -> list[SweepPoint]:
    """Every (method, shots, seed), grouped so the methods of one support set run one after another."""
    return [SweepPoint(m, k, s) for k in fewshot.shots for s in fewshot.seeds for m in fewshot.methods]


def point_config(cfg: Config, point: SweepPoint) -> Config:
    """``cfg`` with the point's method, its ``fewshot.overrides`` train values and its seed applied."""
    train = {**cfg.train.model_dump(), **(cfg.fewshot.overrides.get(point.method, {}) if cfg.fewshot else {}),
             "seed": point.seed}
    if point.method == CONTINUED:  # the received head was trained on raw features (its statistics folded in)
        train["head_norm"] = "auto"
    # adapter_continued trains LoRA from the received adapter (model.adapter); every other method starts from the base
    continued = point.method == CONTINUED
    model = cfg.model.model_copy(update={"method": "lora" if continued else point.method,
                                         "adapter": cfg.model.adapter if continued else None})
    out = cfg.model_copy(update={"model": model, "train": type(cfg.train).model_validate(train)})
    return out


def _digest(payload: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _result_relevant(cfg: Config) -> dict[str, Any]:
    dumped = cfg.model_dump(mode="json")
    # device, worker counts and compilation change speed, not results
    train = {k: v for k, v in dumped["train"].items() if k not in {"device", "num_workers", "threads", "compile"}}
    return {"train": train, "model": dumped["model"], "preprocess": dumped["preprocess"],
            "evaluate": dumped["evaluate"], "classes": dumped["data"]["classes"], "abnormal": dumped["data"]["abnormal"]}


def point_hash(cfg: Config, point: SweepPoint, fingerprint: str) -> str:
    """Hash of one point's resolved config (``cfg`` from :func:`point_config`) and the dataset."""
    return _digest({"point": [point.method, str(point.shots), point.seed], **_result_relevant(cfg),
                    "fingerprint": fingerprint})


def sweep_hash(cfg: Config, fingerprint: str) -> str:
    """Hash of a whole sweep: the parent run is found again by it."""
    # where the points run does not change what they measure: a sweep resumes under another executor
    fewshot = cfg.fewshot.model_dump(mode="json", exclude={"executor", "ray"}) if cfg.fewshot else None
    return _digest({"fewshot": fewshot, **_result_relevant(cfg), "fingerprint": fingerprint})
