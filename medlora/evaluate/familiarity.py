"""Familiarity: how far a study's features lie from the studies a model was trained on.

A bundle carries aggregate statistics of its training studies' pooled features: their mean and a
Ledoit-Wolf shrunk covariance (well-conditioned with fewer studies than feature dimensions). Only
aggregates over at least :data:`MIN_STUDIES` studies are kept, so no single study can be read back from
them. A new study's familiarity distance is its Mahalanobis distance to that distribution; the flag
threshold is a high quantile of the distances of the bundle's own **validation** studies (which the
statistics did not see), so about ``1 - quantile`` of in-distribution studies are flagged by chance
and a study unlike anything the model was trained on is flagged far more often.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InputError

MIN_STUDIES = 20
DEFAULT_QUANTILE = 0.99


def study_means(features: np.ndarray, study_keys: np.ndarray | list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted study keys, one mean feature per study) of per-sample ``features`` (n, d)."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    keys, inverse = np.unique(np.asarray(study_keys), return_inverse=True)
    sums = np.zeros((len(keys), x.shape[1]))
    np.add.at(sums, inverse, x)
    return keys, sums / np.bincount(inverse, minlength=len(keys))[:, None]


@dataclass(frozen=True)
class FeatureStats:
    mean: np.ndarray  # (d,)
    covariance: np.ndarray  # (d, d), shrunk
    n_studies: int
    threshold: float  # distances above it are flagged
    quantile: float  # of the validation distances that set ``threshold``

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Mahalanobis distance of each row of ``features`` (n, d) to the training studies' distribution."""
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.mean.shape[0]:
            raise ValueError(f"features of shape {x.shape} for statistics of dimension {self.mean.shape[0]}")
        centred = x - self.mean
        solved = np.linalg.solve(self.covariance, centred.T).T
        return np.sqrt(np.maximum(np.einsum("ij,ij->i", centred, solved), 0.0))

    def flagged(self, features: np.ndarray) -> np.ndarray:
        return self.distance(features) > self.threshold

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays for a safetensors file (the scalars as 1-element arrays)."""
        return {"mean": self.mean.astype(np.float32), "covariance": self.covariance.astype(np.float32),
                "n_studies": np.array([self.n_studies], dtype=np.int64),
                "threshold": np.array([self.threshold], dtype=np.float64),
                "quantile": np.array([self.quantile], dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> FeatureStats:
        return cls(np.asarray(arrays["mean"], dtype=np.float64), np.asarray(arrays["covariance"], dtype=np.float64),
                   int(arrays["n_studies"][0]), float(arrays["threshold"][0]), float(arrays["quantile"][0]))


def fit_feature_stats(train: np.ndarray, val: np.ndarray, min_studies: int = MIN_STUDIES,
                      quantile: float = DEFAULT_QUANTILE) -> FeatureStats:
    """Statistics of ``train`` study features (n, d) and a flag threshold from ``val`` study features.

    Refused (:class:`InputError`) below ``min_studies`` training studies: too few to publish as an
    aggregate, and too few for a covariance worth the name.
    """
    from sklearn.covariance import LedoitWolf

    train = np.asarray(train, dtype=np.float64)
    val = np.asarray(val, dtype=np.float64)
    if len(train) < min_studies:
        raise InputError(f"feature statistics need at least {min_studies} training studies, got {len(train)}: "
                         "fewer would not be an aggregate that hides each study")
    if len(val) < 1:
        raise InputError("feature statistics need validation studies to set the familiarity threshold")
    lw = LedoitWolf().fit(train)
    stats = FeatureStats(lw.location_, lw.covariance_, len(train), float("inf"), quantile)
    threshold = float(np.quantile(stats.distance(val), quantile, method="higher"))
    return FeatureStats(stats.mean, stats.covariance, len(train), threshold, quantile)
