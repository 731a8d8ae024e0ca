"""The A/B test's statistics: a ratio metric per arm, the difference with its 95% interval, a verdict.

The unit is the user (the unit of assignment): a user's lists are not independent of each
other, so intervals resample users, never lists or slots. A metric is a ratio of per-user
sums (click-through = clicks / slots shown), and its interval comes from a seeded bootstrap
over users (each arm resampled on its own), or from the delta method.

Verdict: ``better`` when the challenger-minus-champion interval lies above zero, ``worse``
when below, otherwise ``not yet known``, with the users per arm still needed to detect the
observed difference (or :data:`MIN_RELATIVE_EFFECT` of the champion's value, whichever is
larger) at 80% power, from the delta-method variances.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

Z95 = 1.959963984540054
Z80 = 0.8416212335729143
MIN_RELATIVE_EFFECT = 0.05
"""The smallest difference worth waiting for, relative to the champion's value."""
Verdict = Literal["better", "worse", "not yet known"]


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


@dataclass(frozen=True)
class Comparison:
    """One metric of the two arms, their difference and the verdict."""

    champion: Interval
    challenger: Interval
    difference: Interval
    verdict: Verdict
    users: tuple[int, int]
    """Users in the champion's and the challenger's arm."""
    users_needed: int | None
    """Users per arm still to come before the observed difference could be told apart (None: known)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _arrays(numerator: ArrayLike, denominator: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    x = np.asarray(numerator, dtype=np.float64)
    y = np.asarray(denominator, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError("numerator and denominator must be 1-d arrays of the same length")
    return x, y


def ratio(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    total = float(y.sum())
    return float(x.sum()) / total if total > 0 else math.nan


def linearised_variance(x: NDArray[np.float64], y: NDArray[np.float64]) -> float:
    """Variance of the ratio of sums per user (delta method): var(x - r y) / mean(y)^2."""
    if len(x) < 2 or y.mean() <= 0:
        return math.nan
    r = ratio(x, y)
    return float(np.var(x - r * y, ddof=1) / y.mean() ** 2)


def delta_interval(x: NDArray[np.float64], y: NDArray[np.float64]) -> Interval:
    r = ratio(x, y)
    se = math.sqrt(linearised_variance(x, y) / len(x)) if len(x) > 1 else math.nan
    return Interval(r, r - Z95 * se, r + Z95 * se)


def bootstrap_ratios(x: NDArray[np.float64], y: NDArray[np.float64], rng: np.random.Generator,
                     resamples: int) -> NDArray[np.float64]:
    """The ratio of sums of ``resamples`` resamples of the users."""
    n = len(x)
    if n == 0:
        return np.full(resamples, math.nan)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)  # users drawn per resample
    den = counts @ y
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray((counts @ x) / den, dtype=np.float64)


def _quantiles(values: NDArray[np.float64], point: float) -> Interval:
    finite = values[np.isfinite(values)]
    if len(finite) == 0:
        return Interval(point, math.nan, math.nan)
    low, high = np.quantile(finite, [0.025, 0.975])
    return Interval(point, float(low), float(high))


def compare(champion: tuple[ArrayLike, ArrayLike], challenger: tuple[ArrayLike, ArrayLike], *,
            method: Literal["bootstrap", "delta"] = "bootstrap", resamples: int = 2000, seed: int = 0) -> Comparison:
    """Compare a ratio metric given per user as (numerators, denominators) per arm."""
    xa, ya = _arrays(*champion)
    xb, yb = _arrays(*challenger)
    ra, rb = ratio(xa, ya), ratio(xb, yb)
    if method == "delta":
        a, b = delta_interval(xa, ya), delta_interval(xb, yb)
        se = math.sqrt(linearised_variance(xa, ya) / max(len(xa), 1) + linearised_variance(xb, yb) / max(len(xb), 1))
        diff = Interval(rb - ra, rb - ra - Z95 * se, rb - ra + Z95 * se)
    else:
        rng = np.random.default_rng(seed)
        boot_a = bootstrap_ratios(xa, ya, rng, resamples)
        boot_b = bootstrap_ratios(xb, yb, rng, resamples)
        a, b = _quantiles(boot_a, ra), _quantiles(boot_b, rb)
        diff = _quantiles(boot_b - boot_a, rb - ra)
    verdict = decide(diff)
    needed = None if verdict != "not yet known" else users_needed(xa, ya, xb, yb)
    return Comparison(a, b, diff, verdict, (len(xa), len(xb)), needed)


def decide(difference: Interval) -> Verdict:
    if difference.low > 0:
        return "better"
    if difference.high < 0:
        return "worse"
    return "not yet known"


def users_needed(xa: NDArray[np.float64], ya: NDArray[np.float64], xb: NDArray[np.float64],
                 yb: NDArray[np.float64]) -> int | None:
    """Users per arm still needed to detect the larger of the observed difference and the minimum effect."""
    va, vb = linearised_variance(xa, ya), linearised_variance(xb, yb)
    ra, rb = ratio(xa, ya), ratio(xb, yb)
    if not all(math.isfinite(v) for v in (va, vb, ra, rb)):
        return None
    effect = max(abs(rb - ra), MIN_RELATIVE_EFFECT * abs(ra))
    if effect <= 0:
        return None
    per_arm = math.ceil((Z95 + Z80) ** 2 * (va + vb) / effect**2)
    return max(0, per_arm - min(len(xa), len(xb)))
