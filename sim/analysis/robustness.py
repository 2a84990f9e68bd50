"""Does a verdict rest on an assumption?  One-way and threshold analysis of a paired difference.

For one assumption, the difference between two scenarios in the selection KPI
is estimated (paired, under common random numbers) at several values of the
assumption: its current value, both ends of its declared range, and, where the
sign changes, points in between.  The *threshold* is where the mean
difference crosses zero, by linear interpolation between the two evaluated
values that bracket the change; its interval is where the 95 % confidence
bounds of the difference cross zero, found the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iopsim.analysis.stats import mean_ci


@dataclass(frozen=True)
class Point:
    """The paired difference (scenario minus baseline) at one value of an assumption."""

    value: float
    mean: float
    low: float
    high: float
    n: int


def paired(d: np.ndarray, value: float, level: float = 0.95) -> Point:
    """Mean paired difference with its two-sided ``level`` interval (exact when every pair differs equally).

    One difference bounds nothing: its interval is unbounded (so it is always in doubt).
    """
    m, _sd, lo, hi, n = mean_ci(d, level)
    if n == 1:
        lo, hi = -math.inf, math.inf
    return Point(value, m, lo, hi, n)


def sign(x: float) -> int:
    return 0 if not math.isfinite(x) or x == 0 else (1 if x > 0 else -1)


def _cross(points: list[Point], attr: str) -> float | None:
    """Where ``attr`` of the points (sorted by value) first crosses zero, by linear interpolation."""
    for a, b in zip(points, points[1:]):
        ya, yb = getattr(a, attr), getattr(b, attr)
        if not (math.isfinite(ya) and math.isfinite(yb)):
            continue
        if ya == 0:
            return a.value
        if ya * yb < 0 or yb == 0:
            return a.value + (b.value - a.value) * (0 - ya) / (yb - ya)
    return None


def threshold(points: list[Point]) -> tuple[float | None, float | None, float | None]:
    """(threshold, low, high): where the mean difference crosses zero, and the values around it where
    the difference's confidence interval holds zero.

    Between evaluated values the mean and both bounds are interpolated
    linearly; where the interval holds zero up to the end of the evaluated
    values, that end bounds the threshold's interval.
    """
    pts = [p for p in sorted(points, key=lambda p: p.value) if math.isfinite(p.mean)]
    t = _cross(pts, "mean")
    if t is None:
        return None, None, None
    xs = np.array([p.value for p in pts])
    lo = np.array([p.low for p in pts])
    hi = np.array([p.high for p in pts])
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return t, None, None
    grid = np.unique(np.concatenate([np.linspace(xs[0], xs[-1], 801), [t]]))
    holds = (np.interp(grid, xs, lo) <= 0) & (np.interp(grid, xs, hi) >= 0)
    i = int(np.searchsorted(grid, t))
    if not holds[i]:
        return t, t, t
    j, k = i, i
    while j > 0 and holds[j - 1]:
        j -= 1
    while k < len(grid) - 1 and holds[k + 1]:
        k += 1
    return t, float(grid[j]), float(grid[k])


def flips(points: list[Point], base_mean: float) -> bool:
    """True if the sign of the mean difference somewhere in the range differs from the base's."""
    s0 = sign(base_mean)
    return any(sign(p.mean) != s0 and sign(p.mean) != 0 for p in points) if s0 != 0 else False
