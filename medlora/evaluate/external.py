"""Internal vs external: a bundle's own test results beside a site's, metric by metric.

Both sets are scored by the same model at the same frozen threshold; they share no study, so the
difference of two metrics is tested as unpaired: DeLong's variances added for the AUROC
(:func:`~medlora.evaluate.delong.delong_unpaired`), independent patient-clustered bootstraps of each set
for the rest (the difference of the two replicate arrays). Each metric gets a plain verdict:

* ``within the internal interval`` — the site's value lies inside the bundle's own confidence interval;
* ``lower, interval excludes 0`` / ``higher, interval excludes 0`` — it does not, and the difference's
  interval excludes zero (a real change at the site);
* ``lower, interval includes 0`` / ``higher, interval includes 0`` — outside the internal interval, but
  the site's data are too few to say the difference is real.

The difference is ``external - internal``: negative means the model does worse at the site (except for
the Brier score and ECE, where lower is better).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .checks import check_binary
from .delong import delong_unpaired
from .intervals import metric_replicates, percentile_intervals
from .metrics import binary_metrics
from .operating_point import choose_operating_point

COMPARED = ("auroc", "sensitivity", "specificity", "ppv", "npv", "brier", "ece")


@dataclass(frozen=True)
class SiteSet:
    """Study labels, scores (in the threshold's units) and patient clusters of one set."""

    y: np.ndarray
    s: np.ndarray
    clusters: np.ndarray | None = None


@dataclass(frozen=True)
class Comparison:
    metric: str
    internal: float
    internal_ci: tuple[float, float]
    external: float
    external_ci: tuple[float, float]
    diff: float  # external - internal
    diff_ci: tuple[float, float]
    method: str  # how the difference's interval was made
    verdict: str
    p: float = float("nan")

    def to_dict(self) -> dict:
        return asdict(self)


def verdict(internal_ci: tuple[float, float], external: float, diff_ci: tuple[float, float]) -> str:
    """The plain-words reading of one metric (module docstring)."""
    low, high = internal_ci
    if not np.isfinite(external):
        return "not measured"
    if np.isfinite(low) and np.isfinite(high) and low <= external <= high:
        return "within the internal interval"
    direction = "lower" if external < (low if np.isfinite(low) else external + 1) else "higher"
    excludes = np.isfinite(diff_ci[0]) and (diff_ci[0] > 0 or diff_ci[1] < 0)
    return f"{direction}, interval {'excludes' if excludes else 'includes'} 0"


def compare_sets(internal: SiteSet, external: SiteSet, threshold: float, n_bootstrap: int = 2000, ci: float = 0.95,
                 seed: int = 0, probabilities: bool = True) -> list[Comparison]:
    """Every metric of :data:`COMPARED` on both sets at ``threshold``, with the difference's interval."""
    yi, si = check_binary(internal.y, internal.s, what="internal scores")
    ye, se = check_binary(external.y, external.s, what="external scores")
    point_i = binary_metrics(yi, si, threshold, probabilities)
    point_e = binary_metrics(ye, se, threshold, probabilities)
    rep_i = metric_replicates(yi, si, threshold, internal.clusters, n_bootstrap, seed, probabilities)
    rep_e = metric_replicates(ye, se, threshold, external.clusters, n_bootstrap, seed + 1, probabilities)
    ci_i, ci_e = percentile_intervals(rep_i, ci), percentile_intervals(rep_e, ci)
    out = []
    for name in COMPARED:
        if name not in point_i:
            continue
        if name == "auroc":
            test = delong_unpaired(ye, se, yi, si, external.clusters, internal.clusters, ci=ci)
            diff_ci, method, p = (test["diff_ci_low"], test["diff_ci_high"]), "DeLong (unpaired)", test["p"]
        else:
            diff_ci = percentile_intervals({name: rep_e[name] - rep_i[name]}, ci)[name]
            method, p = "bootstrap (unpaired)", float("nan")
        a, b = float(point_i[name]), float(point_e[name])
        out.append(Comparison(name, a, ci_i[name], b, ci_e[name], b - a, diff_ci, method,
                              verdict(ci_i[name], b, diff_ci), p))
    return out


def threshold_for_sensitivity(y: np.ndarray, s: np.ndarray, sensitivity: float) -> float:
    """The threshold the site's own data would need to reach ``sensitivity`` (highest such threshold).

    Reported beside the shipped threshold, never applied: choosing it on the studies being evaluated
    would make their metrics optimistic.
    """
    y, s = check_binary(y, s)
    if sensitivity >= 1.0:  # every positive: the lowest positive score is the highest such threshold
        return float(s[y == 1].min())
    if sensitivity <= 0.0:
        return float("nan")
    return float(choose_operating_point(y, s, f"sensitivity:{sensitivity:.6f}").threshold)
