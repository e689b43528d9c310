"""External-validation statistics: unpaired DeLong, calibration intercept/slope, score shift, familiarity."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from medlora.errors import InputError
from medlora.evaluate.calibration import calibration_intercept_slope
from medlora.evaluate.delong import delong_auc, delong_unpaired
from medlora.evaluate.familiarity import fit_feature_stats
from medlora.evaluate.shift import score_shift


def _scores(n, shift, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, rng.normal(size=n) + shift * y


def test_unpaired_delong_variance_is_the_sum_of_both():
    y1, s1 = _scores(120, 2.0, 0)
    y2, s2 = _scores(90, 0.5, 1)
    out = delong_unpaired(y1, s1, y2, s2)
    a, b = delong_auc(y1, s1), delong_auc(y2, s2)
    assert out["diff"] == pytest.approx(a.auc - b.auc)
    assert out["se_diff"] == pytest.approx(np.sqrt(a.variance + b.variance))
    assert out["diff_ci_low"] > 0 and out["p"] < 0.01  # clearly better on the first set
    same = delong_unpaired(y1, s1, y1, s1)
    assert same["diff"] == 0 and same["p"] == pytest.approx(1.0)


def test_calibration_slope_and_intercept_recover_a_known_miscalibration():
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.random(z.size) < 1 / (1 + np.exp(-z))).astype(int)
    perfect = calibration_intercept_slope(y, 1 / (1 + np.exp(-z)))
    assert perfect.slope == pytest.approx(1.0, abs=0.05) and perfect.intercept == pytest.approx(0.0, abs=0.05)
    too_extreme = calibration_intercept_slope(y, 1 / (1 + np.exp(-(2 * z + 1))))  # over-confident, over-predicting
    assert too_extreme.slope == pytest.approx(0.5, abs=0.03)
    assert too_extreme.intercept < -0.3
    # the slope is the coefficient scikit-learn's unpenalised logistic regression finds on logit(p)
    logit = 2 * z + 1
    ref = LogisticRegression(C=np.inf).fit(logit[:, None], y)
    assert too_extreme.slope == pytest.approx(float(ref.coef_[0, 0]), rel=1e-4)
    assert np.isnan(calibration_intercept_slope(np.ones(5, int), np.full(5, 0.5)).slope)


def test_score_shift_sees_a_moved_distribution_and_not_a_resample():
    rng = np.random.default_rng(0)
    a = rng.beta(2, 5, 300)
    assert score_shift(a, rng.beta(2, 5, 300)).p_value > 0.01
    moved = score_shift(a, rng.beta(5, 2, 300))
    assert moved.p_value < 1e-6 and moved.external_median > moved.internal_median
    assert moved.internal.shape == moved.external.shape == (20,)


def test_familiarity_flags_the_unfamiliar_and_few_of_the_familiar():
    rng = np.random.default_rng(0)
    d = 32
    mix = rng.normal(size=(d, d)) / np.sqrt(d)
    train, val, same = (rng.normal(size=(n, d)) @ mix for n in (200, 100, 400))
    stats = fit_feature_stats(train, val)
    assert stats.flagged(same).mean() < 0.05
    assert stats.flagged(rng.normal(size=(100, d)) @ mix + 3.0).mean() > 0.95
    again = type(stats).from_arrays(stats.to_arrays())
    np.testing.assert_allclose(again.distance(same), stats.distance(same), rtol=1e-4)
    with pytest.raises(InputError, match="at least 20 training studies"):
        fit_feature_stats(train[:10], val)


def test_internal_vs_external_verdicts():
    from medlora.evaluate.external import SiteSet, compare_sets, threshold_for_sensitivity

    y1, s1 = _scores(300, 2.5, 0)
    y2, s2 = _scores(300, 0.7, 1)  # the model separates the classes far less well at the site
    p1, p2 = 1 / (1 + np.exp(-s1)), 1 / (1 + np.exp(-s2))
    rows = {c.metric: c for c in compare_sets(SiteSet(y1, p1), SiteSet(y2, p2), threshold=0.5, n_bootstrap=300)}
    assert rows["auroc"].verdict == "lower, interval excludes 0" and rows["auroc"].diff < -0.2
    assert rows["auroc"].method == "DeLong (unpaired)" and rows["auroc"].p < 1e-6
    assert rows["sensitivity"].diff_ci[1] < 0
    same = {c.metric: c for c in compare_sets(SiteSet(y1, p1), SiteSet(*_scores(300, 2.5, 2)[:1],
                                                                        1 / (1 + np.exp(-_scores(300, 2.5, 2)[1]))),
                                              threshold=0.5, n_bootstrap=300)}
    assert same["auroc"].verdict in ("within the internal interval", "lower, interval includes 0",
                                     "higher, interval includes 0")
    t = threshold_for_sensitivity(y2, p2, 0.9)
    assert ((p2 >= t) & (y2 == 1)).sum() / (y2 == 1).sum() >= 0.9
    assert threshold_for_sensitivity(y2, p2, 1.0) == p2[y2 == 1].min()


def test_validation_never_moves_the_shipped_threshold_and_reports_the_rest():
    from medlora.config import EvaluateConfig
    from medlora.evaluate.external import SiteSet
    from medlora.evaluate.operating_point import OperatingPoint
    from medlora.evaluate.validation import validate_scores, validation_json, validation_metrics

    rng = np.random.default_rng(0)
    yi, si = _scores(200, 2.0, 0)
    ys, ss = _scores(150, 0.8, 1)
    internal = SiteSet(yi, 1 / (1 + np.exp(-si)))
    op = OperatingPoint("youden", 0.5, 0.8, 0.8)
    cfg = EvaluateConfig(bootstrap=200)
    dist = rng.gamma(2, 1, 150)
    site = SiteSet(ys, 1 / (1 + np.exp(-ss)))
    out = validate_scores(site, op, cfg, internal, distances=dist, distance_threshold=3.0)
    shuffled = validate_scores(SiteSet(rng.permutation(ys), site.s), op, cfg, internal, distances=dist,
                               distance_threshold=3.0)
    for r in (out, shuffled):
        assert r.evaluation.operating_point.threshold == 0.5
    metrics = validation_metrics(out)
    assert metrics["threshold"] == 0.5 and "test_auroc" in metrics and "test_calibration_slope" in metrics
    assert metrics["familiarity_flagged_fraction"] == pytest.approx((dist > 3.0).mean())
    assert metrics["familiarity_flagged_n"] + metrics["familiarity_unflagged_n"] == 150
    assert metrics["diff_auroc"] < 0 and np.isfinite(out.threshold_for_internal_sensitivity)
    doc = validation_json(out)
    assert doc["familiarity"]["available"] and doc["comparisons"][0]["metric"] == "auroc"
    none = validate_scores(site, op, cfg)
    assert not none.familiarity.available and none.comparisons == [] and none.shift is None
