"""Split sizes and iterative stratification of patients that carry several labels at once.

A multi-label patient belongs to several strata, so drawing each stratum on its own (as the binary
split does) would place a patient twice. Iterative stratification (Sechidis, Tsoumakas & Vlahavas,
"On the stratification of multi-label data", ECML PKDD 2011) instead walks the labels from the
rarest to the most common and sends each patient of the current label to the split that still
wants most of that label; a rare finding is therefore spread over the splits before common
findings fill them. The wanted counts per label and split are the binary split's
(:func:`split_counts`): every split gets at least one positive of a label that has three, and a
last repair step moves (or swaps) a patient where co-occurring labels still left a split without one
(where the co-occurrences allow any such split at all).
"""

from __future__ import annotations

import numpy as np

_PARTNERS = 50  # swap partners tried per gap: those with fewest labels, which a swap disturbs least


def split_counts(n: int, fractions: np.ndarray) -> np.ndarray:
    """Patients per split for ``n`` patients of one stratum: ``fractions * n`` rounded by largest
    remainder, then one patient moved from train to val and to test if they got none and train
    can spare one (so a stratum of >= 3 patients reaches every split)."""
    counts = np.floor(fractions * n).astype(int)
    for i in np.argsort(-(fractions * n - counts))[: n - counts.sum()]:
        counts[i] += 1  # largest remainders first
    for i in (1, 2):  # every split sees each class whenever the class has >= 3 patients
        if counts[i] == 0 and counts[0] > 1:
            counts[i], counts[0] = 1, counts[0] - 1
    return counts


def _pick(wanted: np.ndarray, sizes: np.ndarray, rng: np.random.Generator) -> int:
    """The split that wants the label most; ties go to the split that wants most patients, then by lot."""
    best = np.flatnonzero(wanted == wanted.max())
    if len(best) > 1:
        best = best[sizes[best] == sizes[best].max()]
    return int(best[0] if len(best) == 1 else rng.choice(best))


def iterative_stratification(labels: np.ndarray, fractions: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Split index (0, 1, 2, ... in the order of ``fractions``) of each row of the boolean ``(n, L)``
    matrix ``labels``, drawn with ``rng``; rows without any label fill the splits by their sizes."""
    labels = np.asarray(labels, dtype=bool)
    n = len(labels)
    wanted = np.stack([split_counts(int(c), fractions) for c in labels.sum(axis=0)]).astype(float) \
        if labels.shape[1] else np.zeros((0, len(fractions)))
    sizes = split_counts(n, fractions).astype(float)
    out = np.full(n, -1)
    order = rng.permutation(n)  # the order patients are taken in; seeded
    while (out < 0).any():
        left = labels[out < 0].sum(axis=0)
        if not left.any():
            for i in order[out[order] < 0]:
                out[i] = _pick(sizes, sizes, rng)
                sizes[out[i]] -= 1
            break
        label = int(np.argmin(np.where(left > 0, left, np.iinfo(np.int64).max)))  # the rarest label still open
        for i in order[(out[order] < 0) & labels[order, label]]:
            out[i] = _pick(wanted[label], sizes, rng)
            wanted[labels[i], out[i]] -= 1
            sizes[out[i]] -= 1
    _repair(labels, out, len(fractions))
    return out


def _gaps(labels: np.ndarray, out: np.ndarray, n_splits: int) -> int:
    """How many (label, split) pairs lack a positive, over the labels with >= ``n_splits`` positives."""
    covered = labels[:, labels.sum(axis=0) >= n_splits]
    return sum(int((np.bincount(out[covered[:, m]], minlength=n_splits) == 0).sum()) for m in range(covered.shape[1]))


def _repair(labels: np.ndarray, out: np.ndarray, n_splits: int) -> None:
    """Where co-occurring labels left a split without a positive of a label that has enough, move one
    patient there, or else swap it with one of the target split's patients with fewest labels, whenever
    that lowers the number of such gaps. Some co-occurrences admit no such split at all (three findings
    of three patients each, one patient carrying all three): a gap is then left."""
    gaps = _gaps(labels, out, n_splits)
    while gaps:
        per_split = [np.bincount(out[labels[:, m]], minlength=n_splits) for m in range(labels.shape[1])]
        label, target = next((m, int(np.argmin(c))) for m, c in enumerate(per_split)
                             if c.sum() >= n_splits and c.min() == 0)
        movers = np.flatnonzero(labels[:, label])
        partners = np.flatnonzero((out == target) & ~labels[:, label])
        partners = partners[np.argsort(labels[partners].sum(axis=1), kind="stable")][:_PARTNERS]
        tries = [(i, None) for i in movers] + [(i, j) for i in movers for j in partners]
        for i, j in tries:
            trial = out.copy()
            trial[i] = target
            if j is not None:
                trial[j] = out[i]
            if (now := _gaps(labels, trial, n_splits)) < gaps:
                out[:], gaps = trial, now
                break
        else:
            return  # no single move or swap helps
