"""Output analysis of a run's time series: warm-up (MSER-5) and the transient.

MSER-5 (White 1997; Hoad, Robinson & Davies 2010) picks the truncation point
that minimises the marginal standard error of the mean of what remains.  It is
applied to the across-replication mean of each daily series, batched in fives;
the search is limited to the first half of the series, as the method requires.
"""

from __future__ import annotations

import math

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.stats import mean_ci

BATCH = 5


def mser5(series) -> int:
    """Truncation point (in observations) minimising MSER on batch means of 5."""
    x = np.asarray(series, dtype=float)
    x = x[np.isfinite(x)]
    nb = x.size // BATCH
    if nb < 4:
        return 0
    y = x[: nb * BATCH].reshape(nb, BATCH).mean(axis=1)
    # Suffix sums give every candidate's mean and sum of squares in one pass.
    rev = y[::-1]
    csum = np.cumsum(rev)[::-1]
    csq = np.cumsum(rev**2)[::-1]
    counts = np.arange(nb, 0, -1, dtype=float)
    mean = csum / counts
    sse = csq - counts * mean**2
    mser = np.maximum(sse, 0.0) / counts**2
    d = int(np.argmin(mser[: nb // 2 + 1]))
    return d * BATCH


def warmup_days(levels: pd.DataFrame) -> int:
    """MSER-5 warm-up for a run: the longest truncation over every stage's
    waitlist and census series (mean across replications)."""
    if not len(levels):
        return 0
    mean = levels.groupby(["stage", "day"], observed=True)[["waitlist_mean", "census_mean"]].mean()
    best = 0
    for _stage, df in mean.groupby(level="stage", observed=True):
        for col in ("waitlist_mean", "census_mean"):
            values = df[col].to_numpy()
            if np.ptp(values) > 0:
                best = max(best, mser5(values))
    return best


def transient_table(levels: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per stage: when the waitlist settles, and when it first reaches ``threshold``.

    * ``settles_day`` -- MSER-5 truncation point of the stage's mean waitlist
      series: from then on the waitlist fluctuates around a stable level.
    * ``first_day_over_threshold`` -- per replication, the first day on which
      the waitlist reached ``threshold`` (mean and 95 % CI over the replications
      that reached it) and the share of replications that ever did.
    """
    rows = []
    if not len(levels):
        return pd.DataFrame(rows)
    for stage, df in levels.groupby("stage", observed=True, sort=False):
        mean = df.groupby("day")["waitlist_mean"].mean().to_numpy()
        reps = df["replication"].unique()
        rep_col = df["replication"].to_numpy()
        over = df["waitlist_max"].to_numpy() >= threshold
        day, rep_over = df["day"].to_numpy()[over], rep_col[over]
        firsts = []
        for rep in np.unique(rep_col):  # in replication order, as a groupby would
            days = day[rep_over == rep]
            firsts.append(float(days.min()) if len(days) else math.nan)
        m, _sd, lo, hi, n = mean_ci(firsts)
        rows.append(
            {
                "stage": stage,
                "settles_day": mser5(mean) if np.ptp(mean) > 0 else 0,
                "threshold": threshold,
                "share_replications_over_threshold": n / len(reps) if len(reps) else math.nan,
                "first_day_over_threshold_mean": m,
                "first_day_over_threshold_ci_low": lo,
                "first_day_over_threshold_ci_high": hi,
            }
        )
    return pd.DataFrame(rows)


def monthly_trajectory(levels: pd.DataFrame, months: int = 12) -> pd.DataFrame:
    """Mean waitlist and census per stage for each month (30.42 days) of the
    first ``months`` months, with 95 % CIs across replications."""
    rows = []
    if not len(levels):
        return pd.DataFrame(rows)
    month_len = 365.0 / 12.0
    df = levels.assign(month=(levels["day"] // month_len).astype(int) + 1)
    df = df[df["month"] <= months]
    per_rep = df.groupby(["stage", "month", "replication"], observed=True)[["waitlist_mean", "census_mean"]].mean()
    for (stage, month), g in per_rep.groupby(level=["stage", "month"], observed=True):
        row = {"stage": stage, "month": int(month)}
        for col in ("waitlist_mean", "census_mean"):
            m, _sd, lo, hi, _n = mean_ci(g[col].to_numpy())
            row[col] = m
            row[f"{col}_ci_low"] = lo
            row[f"{col}_ci_high"] = hi
        rows.append(row)
    return pd.DataFrame(rows)
