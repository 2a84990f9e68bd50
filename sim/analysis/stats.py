"""Confidence intervals across independent replications."""

from __future__ import annotations

import math
import re

import numpy as np
from iopsim.lazy import pandas as pd


def t_quantile(q: float, df: int) -> float:
    """Student-t quantile, as ``scipy.stats.t.ppf(q, df)`` computes it (``special.stdtrit``),
    without importing scipy.stats (over a second of start-up)."""
    from scipy import special

    return float(special.stdtrit(df, q))


def t_sf(x: float, df: int) -> float:
    """Student-t survival function, as ``scipy.stats.t.sf(x, df)`` (``special.stdtr(df, -x)``)."""
    from scipy import special

    return float(special.stdtr(df, -x))


#: KPIs that are quantiles of a survival curve (Kaplan-Meier): NaN in a replication means the quantile was
#: not reached within the run, i.e. it is beyond anything observed there.
_UNREACHED = re.compile(r"(?:^referral_to_admission_|_referral_to_first_session_)(?:median|p90)_days$")


def undefined_unless_all(kpi: str) -> bool:
    """True for a KPI whose mean over replications is undefined unless every replication has a value.

    A Kaplan-Meier quantile that a replication did not reach is larger than
    anything that replication observed; averaging only the replications that
    reached it would leave out the worst ones and flatter the plan.  Other
    KPIs that can be undefined (a mean stay of an exit no one took) average
    the replications where they are defined.
    """
    return bool(_UNREACHED.search(kpi))


def mean_ci(values, level: float = 0.95, all_or_nothing: bool = False) -> tuple[float, float, float, float, int]:
    """Mean, standard deviation, CI low, CI high and n of the finite values.

    Student-t interval: replications are independent and identically
    distributed, and their KPIs are means of many patients, so the t interval
    is the textbook choice.  With fewer than two values the interval is NaN.
    ``all_or_nothing``: any value that is not finite makes the mean and the
    interval NaN (``n`` still counts the finite ones); see :func:`undefined_unless_all`.
    """
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    x = x[finite]
    n = int(x.size)
    if n == 0 or (all_or_nothing and not finite.all()):
        return math.nan, math.nan, math.nan, math.nan, n
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
        mean, sd, lo, hi, n = mean_ci(per_replication[col].to_numpy(dtype=float), level, undefined_unless_all(col))
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
