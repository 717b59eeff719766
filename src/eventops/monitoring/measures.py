"""The drift measures, computed on profiles: KS, PSI, Wasserstein, chi-square, Jensen-Shannon.

Numeric columns (two `NumericProfile`s): both CDFs are compared at every point of either
profile, which gives the Kolmogorov-Smirnov statistic (the largest gap) and the Wasserstein-1
distance (the area between the CDFs) together; both are exact for exact profiles (equal to
`scipy.stats.ks_2samp` and `scipy.stats.wasserstein_distance`) and within 2/16,384 otherwise
(see `eventops.monitoring.profile`). The KS p-value follows scipy: `ks_2samp` itself (the exact
distribution) when both samples have at most 10,000 values, as its "auto" mode does; else
Smirnov's `kstwo.sf(D, round(n*m/(n+m)))`, which is what `ks_2samp` computes at those sizes;
and once that effective size passes 10,000, Kolmogorov's limit distribution
`kstwobign.sf(D * sqrt(en))`. Measured against `kstwo` wherever p > 1e-10, the limit is within
2.7% (relative) at en = 10,000, 1.1% at 50,000 and 0.3% at 500,000 — far finer than any choice
of alpha — and costs a fixed 0.2 ms, where `kstwo.sf` takes up to 90 ms at en = 50,000 and 0.8 s
at 500,000 (a million rows a side), per column.

PSI uses `PSI_BINS` bins cut at the reference's quantiles (deciles by default; ties merge bins),
with `PSI_EPSILON` in place of an empty bin's share so an unseen region counts heavily instead of
dividing by zero. Wasserstein is normalised by the reference's standard deviation, so 0.1 reads
"values moved by a tenth of a standard deviation on average", whatever the column's unit.

Categorical columns (two `CategoricalProfile`s): the chi-square test of homogeneity on the
2 x k table of counts over the union of categories (categories unseen in the reference count),
without Yates' correction (scipy's `chi2_contingency(correction=False)`); categories with fewer
than `RARE_COUNT` values in both samples together are pooled first, because the chi-square
approximation fails on tiny expected counts: into two cells, those the reference has and those
it never saw, when each pool reaches `RARE_COUNT` (else into one), so that a column whose values
are all rare and new (disjoint from the reference) still shows its drift. Jensen-Shannon distance in base 2 (0 =
same shares, 1 = disjoint) on the unpooled shares.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats  # type: ignore[import-untyped]

from eventops.monitoring.profile import CategoricalProfile, NumericProfile, unit_of

PSI_BINS = 10
PSI_EPSILON = 1e-4
RARE_COUNT = 5
SCIPY_EXACT_KS = 10_000  # scipy's MAX_AUTO_N
SCIPY_FINITE_KS = 10_000  # beyond this effective size, Kolmogorov's limit distribution


@dataclass(frozen=True)
class NumericMeasures:
    ks: float
    p_value: float
    psi: float
    wasserstein: float  # in reference standard deviations


@dataclass(frozen=True)
class CategoricalMeasures:
    chi2: float
    p_value: float
    dof: int
    js: float


def numeric_measures(reference: NumericProfile, current: NumericProfile) -> NumericMeasures:
    """KS statistic and p-value, PSI and normalised Wasserstein of two non-empty profiles.

    Both CDFs are compared at every point of either profile: at its own points a profile's CDF
    is known (`upto / count`), so only the other side's points need a search. Merging the two
    sorted point sets by rank then gives the area between the CDFs without sorting anything.
    """
    unit = unit_of(max(abs(reference.min), abs(reference.max), abs(current.min), abs(current.max)))
    if unit != 1.0:  # every measure is scale-free: rescale rather than overflow
        reference, current = reference.scaled(unit), current.scaled(unit)
    ref, cur = reference, current
    at_ref = ref.upto / ref.count - cur.cdf(ref.values)
    at_cur = ref.cdf(cur.values) - cur.upto / cur.count
    d = float(max(np.abs(at_ref).max(), np.abs(at_cur).max()))
    size = len(ref.values) + len(cur.values)
    slot_ref = np.arange(len(ref.values)) + np.searchsorted(cur.values, ref.values, side="left")
    slot_cur = np.arange(len(cur.values)) + np.searchsorted(ref.values, cur.values, side="right")
    points, gaps = np.empty(size), np.empty(size)
    points[slot_ref], points[slot_cur] = ref.values, cur.values
    gaps[slot_ref], gaps[slot_cur] = at_ref, at_cur
    area = float(np.sum(np.abs(gaps[:-1]) * np.diff(points)))
    return NumericMeasures(
        ks=d,
        p_value=ks_p_value(d, reference, current),
        psi=psi(reference, current),
        wasserstein=area / _scale(reference, current),
    )


def ks_p_value(d: float, reference: NumericProfile, current: NumericProfile) -> float:
    n, m = reference.count, current.count
    if reference.exact and current.exact and max(n, m) <= SCIPY_EXACT_KS:
        return float(stats.ks_2samp(reference.sample(), current.sample()).pvalue)
    en = n * m / (n + m)
    if en <= SCIPY_FINITE_KS:
        return float(np.clip(stats.kstwo.sf(d, np.round(en)), 0.0, 1.0))
    return float(stats.kstwobign.sf(d * np.sqrt(en)))


def _scale(reference: NumericProfile, current: NumericProfile) -> float:
    """The reference's standard deviation; the pooled one for a constant reference; else 1."""
    if reference.std > 0:
        return reference.std
    n, m = reference.count, current.count
    mean = (n * reference.mean + m * current.mean) / (n + m)
    pooled = (
        n * (reference.std**2 + (reference.mean - mean) ** 2)
        + m * (current.std**2 + (current.mean - mean) ** 2)
    ) / (n + m)
    return float(np.sqrt(pooled)) if pooled > 0 else 1.0


def psi_edges(reference: NumericProfile, bins: int = PSI_BINS) -> np.ndarray:
    """Inner bin edges: the reference's 1/bins ... (bins-1)/bins quantiles, duplicates merged."""
    return np.unique(reference.quantiles(np.arange(1, bins) / bins))


def psi(reference: NumericProfile, current: NumericProfile, bins: int = PSI_BINS) -> float:
    """Population stability index over bins (-inf, e1], (e1, e2], ..., (ek, inf)."""
    edges = psi_edges(reference, bins)
    expected = _shares(reference, edges)
    actual = _shares(current, edges)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _shares(profile: NumericProfile, edges: np.ndarray) -> np.ndarray:
    cumulative = np.concatenate(([0.0], profile.cdf(edges), [1.0]))
    shares = np.clip(np.diff(cumulative), 0.0, None)
    return np.where(shares > 0, shares, PSI_EPSILON)


def categorical_measures(
    reference: CategoricalProfile, current: CategoricalProfile
) -> CategoricalMeasures:
    """Chi-square homogeneity test and Jensen-Shannon distance of two non-empty profiles."""
    ref, cur = _aligned(reference, current)
    chi2, p, dof = chi_square(ref, cur)
    return CategoricalMeasures(chi2=chi2, p_value=p, dof=dof, js=jensen_shannon(ref, cur))


def _aligned(
    reference: CategoricalProfile, current: CategoricalProfile
) -> tuple[np.ndarray, np.ndarray]:
    names = sorted(set(reference.counts) | set(current.counts))
    ref = [reference.counts.get(k, 0) for k in names]
    cur = [current.counts.get(k, 0) for k in names]
    if reference.other or current.other:
        ref.append(reference.other)
        cur.append(current.other)
    return np.asarray(ref, dtype=np.float64), np.asarray(cur, dtype=np.float64)


def chi_square(reference: np.ndarray, current: np.ndarray) -> tuple[float, float, int]:
    """(statistic, p-value, degrees of freedom) of the 2 x k table, rare cells pooled."""
    totals = reference + current
    rare = totals < RARE_COUNT
    if rare.any():
        # Rare categories the reference never had pool apart from the others, so that many
        # rare new values (an ID-like column replaced) are not pooled away into one cell.
        new = rare & (reference == 0)
        pools = [rare & ~new, new]
        if min(reference[p].sum() + current[p].sum() for p in pools) < RARE_COUNT:
            pools = [rare]
        reference = np.append(reference[~rare], [reference[p].sum() for p in pools])
        current = np.append(current[~rare], [current[p].sum() for p in pools])
        totals = reference + current
    keep = totals > 0
    reference, current, totals = reference[keep], current[keep], totals[keep]
    if len(totals) < 2:
        return 0.0, 1.0, 0
    table = np.vstack([reference, current])
    expected = np.outer(table.sum(axis=1), totals) / totals.sum()
    statistic = float(np.sum((table - expected) ** 2 / expected))
    dof = len(totals) - 1
    return statistic, float(stats.chi2.sf(statistic, dof)), dof


def jensen_shannon(reference: np.ndarray, current: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two count vectors."""
    p = reference / reference.sum()
    q = current / current.sum()
    m = (p + q) / 2
    divergence = 0.5 * (_kl(p, m) + _kl(q, m))
    return float(np.sqrt(max(divergence, 0.0)))


def _kl(p: np.ndarray, m: np.ndarray) -> float:
    nonzero = p > 0
    return float(np.sum(p[nonzero] * np.log2(p[nonzero] / m[nonzero])))
