"""Comparing scenarios with common random numbers (CRN).

Every scenario is run with the same seed and the same replication numbers.
Because each random decision draws from its own named stream, keyed by
patient where it concerns a patient (:mod:`iopsim.engine.streams`), replication r of
scenario A and replication r of scenario B see the same referral times,
sources, availability classes, lengths of stay and attendance draws wherever
the scenarios agree.  The replication-by-replication differences therefore
cancel most of the noise the scenarios share, and the paired-t interval on
those differences is far narrower than the difference of two independent
means.

* :func:`paired_differences` -- each KPI: mean of every scenario with a CI,
  and its paired difference from the first (baseline) scenario with a CI.
  With more than two scenarios the intervals are Bonferroni-adjusted
  (family-wise confidence 95 % over the k-1 comparisons).
* :func:`nelson_matejcik` -- a guaranteed pick of the best scenario on one KPI
  (Nelson & Matejcik 1995, the Bonferroni two-stage procedure that is valid
  under CRN): with probability at least 1 - alpha it selects the best system
  whenever the best is at least ``indifference`` better than the rest.
* :func:`replications_for_precision` -- the sequential rule behind
  ``--precision``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.stats import mean_ci, t_quantile, t_sf, undefined_unless_all


def _flatten(d, prefix="") -> dict[str, object]:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(d, list) and any(isinstance(x, (dict, list)) for x in d):
        for i, v in enumerate(d):
            out.update(_flatten(v, f"{prefix}{i}."))
    else:
        out[prefix[:-1]] = d
    return out


def differing_parameters(resolved: dict[str, dict]) -> pd.DataFrame:
    """The resolved scenario values that differ between scenarios (one row per path).

    Names, descriptions and the declared ranges of assumptions (``uncertain``)
    are left out: they describe the scenarios, they do not change a run.
    """
    flat = {name: _flatten(raw) for name, raw in resolved.items()}
    paths = sorted(set().union(*[set(f) for f in flat.values()]))
    rows = []
    for path in paths:
        if path in ("name", "description") or path.startswith("uncertain."):
            continue
        values = [flat[n].get(path, "(absent)") for n in resolved]
        if any(v != values[0] for v in values[1:]):
            rows.append({"parameter": path, **{n: _show(flat[n].get(path, "(absent)")) for n in resolved}})
    return pd.DataFrame(rows, columns=["parameter", *resolved])


def _show(v) -> str:
    return v if isinstance(v, str) else repr(v)


def paired_differences(per_rep: dict[str, pd.DataFrame], kpis: list[str] | None = None, level: float = 0.95) -> pd.DataFrame:
    """Means and paired differences from the first scenario, KPI by KPI.

    ``per_rep`` maps scenario name -> per-replication KPI table (with a
    ``replication`` column); rows are paired on the replication number.
    """
    names = list(per_rep)
    base = names[0]
    k = max(len(names) - 1, 1)
    alpha = (1.0 - level) / k  # Bonferroni over the k-1 comparisons with the baseline
    tables = {n: t.set_index("replication").sort_index() for n, t in per_rep.items()}
    common = sorted(set.intersection(*[set(t.index) for t in tables.values()]))
    if kpis is None:
        kpis = [c for c in tables[base].columns if all(c in t.columns for t in tables.values())]
    rows = []
    for kpi in kpis:
        b = tables[base].loc[common, kpi].to_numpy(dtype=float)
        whole = undefined_unless_all(kpi)
        for n in names:
            x = tables[n].loc[common, kpi].to_numpy(dtype=float)
            m, _, lo, hi, nn = mean_ci(x, level, whole)
            row = {"kpi": kpi, "scenario": n, "mean": m, "ci_low": lo, "ci_high": hi, "n": nn}
            if n == base:
                row.update(diff=0.0, diff_ci_low=math.nan, diff_ci_high=math.nan, p_value=math.nan, significant=False,
                           p_value_adjusted=math.nan)
            else:
                d = x - b
                ok = np.isfinite(d)
                d = d[ok] if ok.all() or not whole else d[:0]  # a quantile not reached: no difference either
                row.update(_paired(d, alpha))
                # Bonferroni-adjusted p-value, consistent with the adjusted interval.
                row["p_value_adjusted"] = min(1.0, row["p_value"] * k) if math.isfinite(row["p_value"]) else math.nan
            rows.append(row)
    return pd.DataFrame(rows)


def _paired(d: np.ndarray, alpha: float) -> dict:
    n = d.size
    if n == 0:
        return dict(diff=math.nan, diff_ci_low=math.nan, diff_ci_high=math.nan, p_value=math.nan, significant=False)
    mean = float(d.mean())
    if n < 2:
        return dict(diff=mean, diff_ci_low=math.nan, diff_ci_high=math.nan, p_value=math.nan, significant=False)
    sd = float(d.std(ddof=1))
    if sd == 0.0:
        # Identical in every replication: the difference is known exactly.
        return dict(diff=mean, diff_ci_low=mean, diff_ci_high=mean, p_value=0.0 if mean != 0 else 1.0,
                    significant=mean != 0.0)
    half = t_quantile(1.0 - alpha / 2.0, n - 1) * sd / math.sqrt(n)
    t = mean / (sd / math.sqrt(n))
    p = float(2.0 * t_sf(abs(t), n - 1))
    return dict(diff=mean, diff_ci_low=mean - half, diff_ci_high=mean + half, p_value=p,
                significant=bool(mean - half > 0 or mean + half < 0))


def relative_half_width(values, level: float = 0.95) -> float:
    m, _sd, lo, hi, n = mean_ci(values, level)
    if n < 2 or not math.isfinite(lo) or m == 0:
        return math.inf
    return (hi - lo) / 2.0 / abs(m)


def replications_for_precision(values_by_scenario: dict[str, np.ndarray], precision: float, level: float = 0.95) -> bool:
    """True when every scenario's mean has a relative CI half-width <= ``precision``."""
    return all(relative_half_width(v, level) <= precision for v in values_by_scenario.values())


@dataclass
class Selection:
    """Outcome of the Nelson-Matejcik procedure."""

    kpi: str
    goal: str
    best: str
    alpha: float
    indifference: float
    first_stage: int
    required: int
    means: dict[str, float]


def nm_required_replications(first_stage: dict[str, np.ndarray], indifference: float, alpha: float) -> int:
    """Stage-1 sample -> total replications N the Bonferroni NM procedure needs.

    N = max(n0, ceil((t * S / delta)^2)), with S^2 the largest sample variance
    of the pairwise differences and t the 1 - alpha/(k-1) quantile of Student's
    t with n0 - 1 degrees of freedom.
    """
    names = list(first_stage)
    k = len(names)
    n0 = min(len(v) for v in first_stage.values())
    if k < 2 or n0 < 2:
        return n0
    t = t_quantile(1.0 - alpha / (k - 1), n0 - 1)
    s2 = max(
        float(np.var(first_stage[a][:n0] - first_stage[b][:n0], ddof=1))
        for i, a in enumerate(names) for b in names[i + 1 :]
    )
    return max(n0, int(math.ceil((t * math.sqrt(s2) / indifference) ** 2)))


def nelson_matejcik(values: dict[str, np.ndarray], first_stage: int, indifference: float, alpha: float,
                    goal: str, kpi: str) -> Selection:
    """Select the best scenario from the full sample (all N replications)."""
    required = nm_required_replications({n: v[:first_stage] for n, v in values.items()}, indifference, alpha)
    means = {n: float(np.mean(v[:required])) for n, v in values.items()}
    best = (min if goal == "min" else max)(means, key=means.get)
    return Selection(kpi, goal, best, alpha, indifference, first_stage, required, means)
