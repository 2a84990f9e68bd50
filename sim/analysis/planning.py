"""Statistics of the planner: feasibility at a stated confidence, dominance, selection under CRN.

The guarantee the planner states is *"the recommended plan meets every target,
with confidence 1 - alpha"*.  A plan is declared feasible only when every
target passes a one-sided test; a plan that truly misses a target is declared
feasible only if that one test errs.  The planner tests up to ``plans`` plans
at up to ``looks`` replication counts each, so each "meets the target" test
runs at ``alpha / (plans * looks)`` (Bonferroni over plans and looks): then the
chance that *any* infeasible plan is declared feasible, the recommended one
included, is at most alpha.  "Misses the target" errs only against
optimality, not the guarantee; those tests run at ``alpha / (targets * looks)``
so the best plan is ruled out wrongly with probability at most alpha.

Every plan is simulated on the same replication numbers with the same seed
(common random numbers), so differences between plans are paired
replication by replication.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from iopsim.analysis.compare import nm_required_replications
from iopsim.analysis.stats import t_quantile


def looks(first: int, most: int) -> list[int]:
    """Replication counts at which a plan is tested: ``first``, doubling, ending at ``most``."""
    out = [first]
    while out[-1] < most:
        out.append(min(most, out[-1] * 2))
    return out


@dataclass(frozen=True)
class Bound:
    """A KPI mean with its one-sided bounds at level ``1 - alpha`` each."""

    mean: float
    low: float
    high: float
    n: int


def one_sided(values: np.ndarray, alpha: float) -> Bound:
    """Mean with a lower and an upper one-sided ``1 - alpha`` confidence bound (Student's t)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return Bound(math.nan, math.nan, math.nan, 0)
    m = float(x.mean())
    if n < 2:
        return Bound(m, -math.inf, math.inf, n)
    sd = float(x.std(ddof=1))
    half = t_quantile(1.0 - alpha, n - 1) * sd / math.sqrt(n)
    return Bound(m, m - half, m + half, n)


def verdict(values: np.ndarray, sense: str, threshold: float, tolerance: float, alpha_pass: float,
            alpha_fail: float) -> str:
    """``"met"``, ``"missed"`` or ``"open"`` for one target, from one plan's replications.

    ``values`` are tested twice: "met" at ``alpha_pass`` (the guarantee), "missed" at
    ``alpha_fail``.  A KPI that is undefined in some replication (NaN: nobody
    admitted, say) counts as missing the target in that replication.
    """
    x = np.asarray(values, dtype=float)
    if x.size and not np.all(np.isfinite(x)):
        return "missed" if np.isnan(x).mean() > 0.5 else "open"
    strict = one_sided(x, alpha_pass)
    loose = one_sided(x, alpha_fail)
    if sense == ">=":
        if strict.low >= threshold - tolerance:
            return "met"
        if loose.high < threshold:
            return "missed"
    else:
        if strict.high <= threshold + tolerance:
            return "met"
        if loose.low > threshold:
            return "missed"
    return "open"


def violation(mean: float, sense: str, threshold: float) -> float:
    """How far a mean is on the wrong side of its target, relative to the target (0 when met)."""
    if not math.isfinite(mean):
        return math.inf
    gap = threshold - mean if sense == ">=" else mean - threshold
    return max(0.0, gap) / (abs(threshold) if threshold else 1.0)


def at_least(a: tuple[int, ...], b: tuple[int, ...], resource: tuple[bool, ...]) -> bool:
    """True if plan ``a`` has at least as much of every resource lever as ``b`` and equals it elsewhere."""
    return all((x >= y) if r else (x == y) for x, y, r in zip(a, b, resource))


def screen(values: dict[int, np.ndarray], goal: str, alpha: float) -> list[int]:
    """Subset selection under CRN (Nelson et al. 2001): the plans that could be best.

    Plan i survives unless some plan j beats it by more than the paired
    difference's ``1 - alpha / (k - 1)`` one-sided half-width.  ``values`` must
    hold the same replication numbers for every plan, in the same order.
    """
    ids = list(values)
    k = len(ids)
    if k < 2:
        return ids
    sign = 1.0 if goal == "min" else -1.0
    keep = []
    for i in ids:
        ok = True
        for j in ids:
            if i == j:
                continue
            d = sign * (values[i] - values[j])  # > 0: i is worse than j
            n = d.size
            sd = float(d.std(ddof=1)) if n > 1 else math.inf
            half = t_quantile(1.0 - alpha / (k - 1), n - 1) * sd / math.sqrt(n) if n > 1 else math.inf
            if float(d.mean()) > half:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def replications_to_select(values: dict[int, np.ndarray], indifference: float, alpha: float) -> int:
    """Total replications the Nelson-Matejcik procedure needs to pick the best within ``indifference``."""
    return nm_required_replications({str(k): v for k, v in values.items()}, indifference, alpha)
