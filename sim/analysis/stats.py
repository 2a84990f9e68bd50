"""Confidence intervals across independent replications."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def t_quantile(q: float, df: int) -> float:
    """Student-t quantile, as ``scipy.stats.t.ppf(q, df)`` computes it (``special.stdtrit``),
    without importing scipy.stats (over a second of start-up)."""
    from scipy import special

    return float(special.stdtrit(df, q))


def t_sf(x: float, df: int) -> float:
    """Student-t survival function, as ``scipy.stats.t.sf(x, df)`` (``special.stdtr(df, -x)``)."""
    from scipy import special

    return float(special.stdtr(df, -x))


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, float, int]:
    """Mean, standard deviation, CI low, CI high and n of the finite values.

    Student-t interval: replications are independent and identically
    distributed, and their KPIs are means of many patients, so the t interval
    is the textbook choice.  With fewer than two values the interval is NaN.
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return math.nan, math.nan, math.nan, math.nan, 0
    mean = float(x.mean())
    if n < 2:
        return mean, math.nan, math.nan, math.nan, n
    sd = float(x.std(ddof=1))
    half = t_quantile(0.5 + level / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half, n


def summarise(per_replication: pd.DataFrame, labeler=None, level: float = 0.95) -> pd.DataFrame:
    """One row per KPI column: mean with its confidence interval."""
    rows = []
    for col in per_replication.columns:
        if col == "replication":
            continue
        mean, sd, lo, hi, n = mean_ci(per_replication[col].to_numpy(dtype=float), level)
        label, unit = labeler(col) if labeler else (col, "")
        rows.append(
            {
                "kpi": col,
                "label": label,
                "unit": unit,
                "mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "half_width": (hi - lo) / 2.0 if n >= 2 else math.nan,
                "sd": sd,
                "n": n,
            }
        )
    return pd.DataFrame(rows)
