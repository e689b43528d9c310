"""One-class anomaly scoring in a ViT's feature space.

Fit on the features of normal studies only; the anomaly score of a sample is its distance from
that normal distribution:

* ``knn`` — mean cosine distance to the ``k`` nearest normal training features (features are
  L2-normalised first, so the scale of a random or adapted backbone does not matter);
* ``mahalanobis`` — Mahalanobis distance to the normal features' mean under a Ledoit–Wolf
  shrunk covariance (well-conditioned with fewer samples than feature dimensions).

Higher is more abnormal. Scores are unbounded distances, not probabilities: evaluation uses them
for ranking and thresholds only (no Brier score or calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


@dataclass
class AnomalyScorer:
    kind: str = "knn"
    k: int = 5
    _state: dict = field(default_factory=dict, repr=False)

    def fit(self, normal: np.ndarray) -> AnomalyScorer:
        """Learn the normal distribution from ``normal`` (n, d) features."""
        normal = np.asarray(normal, dtype=np.float64)
        if normal.ndim != 2 or len(normal) < 2:
            raise InputError(f"one-class mode needs at least 2 normal training samples, got {len(normal)}")
        if self.kind == "knn":
            from sklearn.neighbors import NearestNeighbors

            k = min(self.k, len(normal))
            self._state = {"nn": NearestNeighbors(n_neighbors=k, metric="cosine").fit(_normalise(normal)), "k": k}
        elif self.kind == "mahalanobis":
            from sklearn.covariance import LedoitWolf

            self._state = {"cov": LedoitWolf().fit(normal)}
        else:
            raise InputError(f"unknown anomaly score {self.kind!r}; allowed: knn, mahalanobis")
        return self

    def score(self, features: np.ndarray) -> np.ndarray:
        """Anomaly scores of ``features`` (n, d); higher = further from the normal training data."""
        if not self._state:
            raise InputError("the anomaly scorer has not been fitted")
        x = np.asarray(features, dtype=np.float64)
        if self.kind == "knn":
            dist, _ = self._state["nn"].kneighbors(_normalise(x), n_neighbors=self._state["k"])
            return dist.mean(axis=1)
        return np.sqrt(np.maximum(self._state["cov"].mahalanobis(x), 0.0))
