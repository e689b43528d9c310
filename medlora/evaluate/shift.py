"""Score-distribution shift between two sets of study scores (a bundle's own test studies and a site's).

A model applied where it was not trained often shows it first in its scores: the same model, other
scanners or patients, and the scores move. The two-sample Kolmogorov-Smirnov test (scipy) says whether
the two distributions differ; the histograms on shared bins let a reader see how.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.stats import ks_2samp


@dataclass(frozen=True)
class ScoreShift:
    statistic: float  # KS D: the largest gap between the two empirical CDFs
    p_value: float
    n_internal: int
    n_external: int
    edges: np.ndarray  # shared histogram bin edges
    internal: np.ndarray  # densities per bin
    external: np.ndarray
    internal_median: float
    external_median: float

    def to_dict(self) -> dict[str, float]:
        return {"ks_statistic": self.statistic, "ks_p": self.p_value, "n_internal": self.n_internal,
                "n_external": self.n_external, "internal_median": self.internal_median,
                "external_median": self.external_median}


def score_shift(internal: np.ndarray, external: np.ndarray, bins: int = 20) -> ScoreShift:
    """Compare two score samples; NaN scores (studies that could not be scored) are left out."""
    a = np.asarray(internal, dtype=float)
    b = np.asarray(external, dtype=float)
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a score-shift test needs at least 2 scores per set, got {len(a)} and {len(b)}")
    test = ks_2samp(a, b)
    lo, hi = float(min(a.min(), b.min())), float(max(a.max(), b.max()))
    edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
    return ScoreShift(float(test.statistic), float(test.pvalue), len(a), len(b), edges,
                      np.histogram(a, edges, density=True)[0], np.histogram(b, edges, density=True)[0],
                      float(np.median(a)), float(np.median(b)))
