"""The ``oneclass:`` section of ``pipeline: oneclass``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from .base import Strict


class OneClassConfig(Strict):
    """One-class anomaly mode (``pipeline: oneclass``): fit on normal training studies only; the
    anomaly score is a distance in the ViT's feature space."""

    score: Literal["knn", "mahalanobis"] = Field("knn", description="`knn` or `mahalanobis` distance to the normal "
                                                 "training studies' features")
    k: int = Field(5, ge=1, description="neighbours of the kNN score")
    adapter: Path | None = Field(None, description="a run or bundle folder (`adapter/` + `medlora.json`): features "
                                 "after its LoRA adaptation")
