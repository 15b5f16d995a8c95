"""Statistics over seeds: mean, std, n, a 95% Student-t interval, and a verdict against a reference.

The rules (README "Verdicts with confidence" says the same for users):

- ``n`` values x_1..x_n give the mean m, the sample std s (n - 1 in the denominator) and, for n >= 2,
  the two-sided 95% interval m +- h with h = t(0.975, n - 1) * s / sqrt(n) (scipy.stats.t).
  One value gives no spread estimate, so no interval.
- The band is reference +- tolerance. With the interval [L, U]:
    reproduced    the whole interval lies inside the band: L >= ref - tol and U <= ref + tol
                  (two one-sided tests at 2.5% each: the mean is within the tolerance);
    below         the whole interval lies under the band: U < ref - tol;
    above         the whole interval lies over the band: L > ref + tol;
    inconclusive  the interval reaches across an edge of the band (or there is no interval, n = 1).
- Seeds that would decide: assuming the mean and the std stay what they are (the observed std, or an
  assumed one when n = 1), the smallest total N whose half-width h(N) is at most tol - |m - ref|
  (reproduced) or under |m - ref| - tol (below/above). A mean exactly on an edge is never decided.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

CONFIDENCE = 0.95
# The seed-to-seed spread of mIoU that users reported (five R-50 Cityscapes 40k runs: 76.4-77.6).
SEED_STD_MIOU = 0.5
DEFAULT_TOLERANCE = 0.5  # mIoU points, `nlbench compare`'s default
MAX_SEEDS = 1000  # beyond this, "more than 1000" is the honest answer
_EPS = 1e-9  # figures are printed to 2 decimals; float noise must not flip a verdict at an edge
CI_VERDICTS = ("reproduced", "below", "above", "inconclusive")


@dataclass(frozen=True)
class SeedStats:
    mean: float
    std: float  # NaN for n < 2
    n: int
    half_width: float  # NaN for n < 2

    @property
    def low(self) -> float:
        return self.mean - self.half_width

    @property
    def high(self) -> float:
        return self.mean + self.half_width


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """t(1 - alpha/2, n - 1): the two-sided critical value for n values."""
    from scipy.stats import t

    return float(t.ppf(1.0 - (1.0 - confidence) / 2.0, n - 1))


def half_width(std: float, n: int, confidence: float = CONFIDENCE) -> float:
    """Half-width of the Student-t interval of the mean of n values with sample std ``std``; NaN for n < 2."""
    if n < 2 or std != std:
        return math.nan
    return t_quantile(n, confidence) * std / math.sqrt(n)


def seed_stats(values: Iterable[float]) -> SeedStats:
    """Mean, sample std, n and the 95% half-width of the finite values."""
    xs = [float(v) for v in values if v == v]
    n = len(xs)
    if n == 0:
        return SeedStats(math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else math.nan
    return SeedStats(mean, std, n, half_width(std, n))


def from_summary(mean: float, std: float, n: int) -> SeedStats:
    """SeedStats of figures already summarized (collect's ``<metric>_mean/_std/_n``)."""
    return SeedStats(mean, std, n, half_width(std, n))


def decide(low: float, high: float, reference: float, tolerance: float) -> str:
    """reproduced | below | above | inconclusive for the interval [low, high] (see the module docstring)."""
    if low != low or high != high:
        return "inconclusive"
    lower, upper = reference - tolerance, reference + tolerance
    if high < lower - _EPS:
        return "below"
    if low > upper + _EPS:
        return "above"
    if low >= lower - _EPS and high <= upper + _EPS:
        return "reproduced"
    return "inconclusive"


def seeds_to_decide(mean: float, std: float, n: int, reference: float, tolerance: float,
                    max_seeds: int = MAX_SEEDS) -> Optional[int]:
    """The smallest total number of seeds N > n whose interval, at this mean and std, is decisive.

    None when no number of seeds decides (the mean sits on an edge of the band) or more than
    ``max_seeds`` would be needed (``seeds_beyond_reach`` tells the two apart).
    """
    import numpy as np
    from scipy.stats import t

    gap = abs(mean - reference)
    inside = gap <= tolerance + _EPS
    target = tolerance - gap if inside else gap - tolerance
    if target <= _EPS or std != std:
        return None
    start = max(n + 1, 2)
    if start > max_seeds:
        return None
    counts = np.arange(start, max_seeds + 1)
    widths = t.ppf(1.0 - (1.0 - CONFIDENCE) / 2.0, counts - 1) * std / np.sqrt(counts)
    ok = widths <= target + _EPS if inside else widths < target - _EPS
    hits = np.nonzero(ok)[0]
    return int(counts[hits[0]]) if hits.size else None


def seeds_for_half_width(std: float, target: float, max_seeds: int = MAX_SEEDS) -> Optional[int]:
    """The fewest seeds whose 95% half-width at ``std`` is at most ``target`` (None beyond max_seeds)."""
    for count in range(2, max_seeds + 1):
        if half_width(std, count) <= target + _EPS:
            return count
    return None


@dataclass(frozen=True)
class CIVerdict:
    verdict: str  # one of CI_VERDICTS
    low: float  # the interval (NaN when there is none: one seed)
    high: float
    seeds_needed: Optional[int]  # total seeds that would decide (inconclusive only; None: out of reach)
    std_used: float  # the std behind seeds_needed: observed, or assumed for one seed
    std_assumed: bool


def ci_verdict(values: SeedStats, reference: float, tolerance: float, assumed_std: float = SEED_STD_MIOU,
               fixed_weights: bool = False) -> CIVerdict:
    """The verdict of the figures of n seeds against reference +- tolerance (module docstring).

    ``fixed_weights``: every value comes from the same weights (a released checkpoint), so there is no
    seed spread: one evaluation is taken as exact (an interval of width 0) and repeated ones give
    their own, observed spread.
    """
    m, n = values.mean, values.n
    if n >= 2:
        low, high, std, assumed = values.low, values.high, values.std, False
    elif fixed_weights:
        low, high, std, assumed = m, m, 0.0, True
    else:
        low, high, std, assumed = math.nan, math.nan, assumed_std, True
    verdict = decide(low, high, reference, tolerance)
    needed = seeds_to_decide(m, std, n, reference, tolerance) if verdict == "inconclusive" else None
    return CIVerdict(verdict, low, high, needed, std, assumed)


# ----------------------------------------------------------------------------- a baseline's own noise

# The smoke baseline's band (README "The smoke baseline's band"): a row measured R times (seeds, CPU
# threads, instruction sets) has the mean m of its runs as its baseline and the band
#     max(floor, SPREAD_MARGIN * max_i |x_i - m|)
# around it. The largest deviation seen in R runs understates the next run's, and a demo makes 28
# smoke mIoU checks at once, so the margin is chosen for the whole family. By Monte Carlo for normal
# noise (tests/test_stats.py), one new run falls beyond 2x the largest deviation of R = 9 runs in about
# 1.3% of cases: 30% of demos would then fail somewhere with nothing wrong (an AVX2-capped demo did, at
# 2x). Beyond 4x it is about 0.02% a check, under 1% of demos; heavier tails cost more (t(3) noise:
# about 0.5% a check). The price is a band that cannot see a regression smaller than itself: the
# table states each row's. The floor (compare's default tolerance) keeps a row whose runs all agree
# from a band of zero.
SPREAD_MARGIN = 4.0


@dataclass(frozen=True)
class NoiseBand:
    mean: float  # the baseline: the mean of the runs (NaN when there are none)
    band: float  # half-width of the band around it (NaN when there are no runs)
    n: int  # runs
    max_deviation: float  # the largest |run - mean| observed


def noise_band(values: Iterable[float], floor: float = DEFAULT_TOLERANCE,
               margin: float = SPREAD_MARGIN) -> NoiseBand:
    """The baseline and band of repeated runs of one quantity (rule above); NaN values are left out."""
    xs = [float(v) for v in values if v == v]
    if not xs:
        return NoiseBand(math.nan, math.nan, 0, math.nan)
    mean = sum(xs) / len(xs)
    deviation = max(abs(x - mean) for x in xs)
    return NoiseBand(mean, max(floor, margin * deviation), len(xs), deviation)
