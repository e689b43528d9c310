"""Multi-label evaluation: its cost against single-label evaluation, and the coverage of its intervals.

Cost: :func:`medlora.evaluate.findings.evaluate_findings` on 2,000 test studies (1,000 patients)
with 14 findings and 2,000 bootstrap resamples, against
:func:`medlora.evaluate.report.evaluate_binary` on the same studies with one label (the baseline).
Both include the operating point on validation, DeLong and the bootstrap; the multi-label call also
evaluates "any finding" as a binary task. Target: at most 3× the single-label time, which holds
only because the resamples are drawn once and shared by the findings.

Coverage: binormal scores with a known AUROC per finding (``Phi(d / sqrt 2)``), independent
findings of different prevalences, patients with two studies each; the fraction of replicates whose
95% percentile interval (shared resamples, as in a run) holds the true per-finding and macro AUROC.
Target: 93-97%.

    .venv/bin/python -m benchmarks.multilabel_eval                 # both (~2 min on 2 cores)
    .venv/bin/python -m benchmarks.multilabel_eval --reps 200 --skip-cost
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.stats import norm

PREVALENCE = (0.3, 0.2, 0.15, 0.1, 0.08, 0.05, 0.05, 0.04, 0.03, 0.03, 0.02, 0.02, 0.02, 0.015)


def _studies(n: int, k: int, seed: int, d: float | np.ndarray = 1.2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(patient keys, scores (n, k), targets (n, k)): two studies per patient, binormal scores."""
    rng = np.random.default_rng(seed)
    prev = np.resize(np.array(PREVALENCE[:k]), k)
    y = (rng.random((n, k)) < prev).astype(float)
    y[0, :], y[1, :] = 1.0, 0.0  # every finding has both classes
    shift = np.broadcast_to(np.asarray(d, dtype=float), (k,))
    s = norm.cdf(rng.normal(size=(n, k)) + shift * y)
    return np.arange(n) // 2, s, y


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def measure_cost(n: int = 2000, findings: int = 14, n_bootstrap: int = 2000, repeats: int = 3) -> dict:
    from medlora.config import EvaluateConfig
    from medlora.evaluate.findings import StudyMatrix, evaluate_findings
    from medlora.evaluate.report import evaluate_binary

    pat_v, s_v, y_v = _studies(n, findings, 1)
    pat_t, s_t, y_t = _studies(n, findings, 2)
    keys = np.arange(n).astype(str)
    val, test = StudyMatrix(keys, pat_v.astype(str), s_v, y_v), StudyMatrix(keys, pat_t.astype(str), s_t, y_t)
    cfg = EvaluateConfig(bootstrap=n_bootstrap)
    names = tuple(f"finding{i}" for i in range(findings))
    single = _best_of(lambda: evaluate_binary(y_v[:, 0], s_v[:, 0], y_t[:, 0], s_t[:, 0], clusters_test=pat_t,
                                              n_bootstrap=n_bootstrap), repeats)
    multi = _best_of(lambda: evaluate_findings(val, test, names, cfg), repeats)
    return {"studies": n, "findings": findings, "bootstrap": n_bootstrap, "single_s": single, "multi_s": multi,
            "ratio": multi / single}


def measure_coverage(reps: int = 400, n: int = 400, findings: int = 5, n_bootstrap: int = 1000, ci: float = 0.95) -> dict:
    from medlora.evaluate.findings import cluster_bootstrap_weights
    from medlora.evaluate.intervals import percentile_intervals
    from medlora.evaluate.metrics import weighted_ranking_metrics

    d = np.linspace(0.6, 1.6, findings)
    truth = norm.cdf(d / np.sqrt(2))
    hits = np.zeros(findings + 1)
    for rep in range(reps):
        patients, s, y = _studies(n, findings, 1000 + rep, d)
        w = cluster_bootstrap_weights(patients, (y == 1).any(axis=1), n_bootstrap, seed=rep)
        aucs = [weighted_ranking_metrics(y[:, k], s[:, k], w.T, ("auroc",))["auroc"] for k in range(findings)]
        stacked = np.stack(aucs)
        reps_by_name = {**{f"f{k}": a for k, a in enumerate(aucs)}, "macro": stacked.mean(axis=0)}
        iv = percentile_intervals(reps_by_name, ci)
        for k in range(findings):
            low, high = iv[f"f{k}"]
            hits[k] += low <= truth[k] <= high
        low, high = iv["macro"]
        hits[-1] += low <= truth.mean() <= high
    cover = hits / reps
    return {"reps": reps, "studies": n, "bootstrap": n_bootstrap, "true_auroc": truth.round(3).tolist(),
            "prevalence": list(PREVALENCE[:findings]), "coverage_per_finding": cover[:-1].round(3).tolist(),
            "coverage_macro": float(cover[-1])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--skip-cost", action="store_true")
    ap.add_argument("--skip-coverage", action="store_true")
    args = ap.parse_args(argv)
    if not args.skip_cost:
        c = measure_cost()
        print(f"evaluation, {c['studies']} studies, {c['bootstrap']} resamples: single label {c['single_s']:.2f} s "
              f"(baseline), {c['findings']} findings {c['multi_s']:.2f} s = {c['ratio']:.2f}x "
              f"(target <= 3x: {'met' if c['ratio'] <= 3 else 'missed'})")
    if not args.skip_coverage:
        c = measure_coverage(args.reps)
        print(f"coverage of 95% intervals over {c['reps']} simulated test sets ({c['studies']} studies, "
              f"{c['bootstrap']} shared resamples): per finding {c['coverage_per_finding']} "
              f"(true AUROC {c['true_auroc']}, prevalence {c['prevalence']}), macro {c['coverage_macro']:.3f} "
              f"(target 0.93-0.97)")


if __name__ == "__main__":
    main()
