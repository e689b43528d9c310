"""The one-class anomaly scorer: normal embeddings in, higher scores for what lies far from them."""

import numpy as np
import pytest

from medlora.errors import InputError
from medlora.models.anomaly import AnomalyScorer


@pytest.mark.parametrize("kind", ["knn", "mahalanobis"])
def test_scorer_ranks_outliers_above_normals(kind):
    rng = np.random.default_rng(0)
    centre = np.full(16, 3.0)  # embeddings are not centred at the origin
    normal = rng.normal(size=(200, 16)) + centre
    inliers = rng.normal(size=(50, 16)) + centre
    outliers = rng.normal(size=(50, 16)) + centre + np.r_[8.0, -8.0, np.zeros(14)]
    scorer = AnomalyScorer(kind, k=5).fit(normal)
    s_in, s_out = scorer.score(inliers), scorer.score(outliers)
    assert s_out.mean() > s_in.mean()
    assert (s_out[:, None] > s_in[None, :]).mean() > 0.9  # AUROC of the scores


def test_scorer_errors():
    with pytest.raises(InputError, match="at least 2 normal"):
        AnomalyScorer().fit(np.zeros((1, 4)))
    with pytest.raises(InputError, match="not been fitted"):
        AnomalyScorer().score(np.zeros((1, 4)))
    with pytest.raises(InputError, match="allowed: knn, mahalanobis"):
        AnomalyScorer("lof").fit(np.zeros((3, 4)))
