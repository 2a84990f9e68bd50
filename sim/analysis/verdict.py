"""Which way is better: the desirable direction of every KPI, and the verdict of a comparison.

Pure functions of KPI names and of the paired-differences table of
:func:`iopsim.analysis.compare.paired_differences` (with its ``label`` and
``unit`` columns), so a report can be rebuilt from ``differences.csv`` alone.

* :func:`direction` -- ``"lower"`` (waits, losses, waitlists, costs, dropouts,
  cancelled sessions, unmet staff hours), ``"higher"`` (completed programs,
  admissions within N days, attendance) or ``"neutral"`` (volumes, census,
  staffing levels, lengths of stay: more is neither better nor worse).
* :func:`judge` -- each difference labelled ``better``, ``worse``, ``higher``
  or ``lower`` (a significant change of a neutral KPI) or ``no significant
  difference``, with the relative change where the baseline mean is not near zero.
* :func:`verdict` -- per alternative scenario: the decisive KPIs on which it is
  better and worse, and whether it is better overall, worse, mixed or no different.
* :func:`growing_waitlists` -- stages whose waitlist is still growing at the
  end of the run (a red flag that the checks before a run cannot see).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.stats import mean_ci

LOWER, HIGHER, NEUTRAL = "lower", "higher", "neutral"
BETTER, WORSE, SAME = "better", "worse", "no significant difference"
#: A KPI without a value in one of the two scenarios (a percentile some replication never
#: reached, a utilisation with no paid hours): nothing to judge, so it is not weighed.
NOT_COMPARABLE = "not comparable"

#: KPI name patterns whose desirable direction is known, first match wins.
_RULES: tuple[tuple[str, str], ...] = (
    # volumes, levels and staffing: more is neither better nor worse
    (r"^(referrals|readmissions|placed_in_treatment|referral_cohort)$", NEUTRAL),
    (r"^staff_ratio_.*_clients_per_staff$", NEUTRAL),
    (r"^staff_ratio_.*_share_days_within_rule$", HIGHER),
    (r"^staff_.*_unmet_hours$", LOWER),
    (r"^staff_", NEUTRAL),
    (r"^labour_share_of_cost$", NEUTRAL),
    # money: revenue and margin (before costs: cost_recovery is revenue over cost)
    (r"^payer_mix_", NEUTRAL),
    (r"^revenue_not_collected$", LOWER),
    (r"^(revenue_|iop_revenue|margin_|cost_recovery$)", HIGHER),
    (r"^break_even_", LOWER),
    # costs
    (r"^(cost_|.*_cost_)", LOWER),
    # access: everyone referred
    (r"^referral_admitted_within_\d+_days$", HIGHER),
    (r"^referral_lost_", LOWER),
    (r"^referral_to_admission_", LOWER),
    (r"^referral_share_admitted_waiting_over_", LOWER),
    (r"^admitted_to_treatment$", HIGHER),
    (r"^programs_completed$", HIGHER),
    # IOP tracks
    (r"^iop_track_.*_(referral_to_first_session_.*|wait_to_start_mean_days)$", LOWER),
    (r"^iop_track_.*_(share_sessions_below_min|sessions_cancelled|sessions_merged|sessions_no_clients)$", LOWER),
    (r"^iop_track_.*_(dropout_rate|reneged_waiting)$", LOWER),
    (r"^iop_track_.*_(attendance_rate|completion_rate)$", HIGHER),
    (r"^iop_track_", NEUTRAL),
    (r"^iop_reneged_no_feasible_track$", LOWER),
    # stages
    (r"_admitted_wait_(mean|median|p90)_days$", LOWER),
    (r"_waitlist_(mean|max|max_first_year)$", LOWER),
    (r"_(reneged|share_lost_waiting|dropped_out|terminated|relapsed)$", LOWER),
    (r"^(residential|php|iop|aftercare)_completed$", HIGHER),
)

#: The KPIs a verdict is built on, in the order a manager weighs them (those present are used).
DECISION_KPIS: tuple[str, ...] = (
    "referral_admitted_within_14_days",
    "referral_lost_before_admission",
    "referral_to_admission_p90_days",
    "programs_completed",
    "admitted_to_treatment",
    "cost_per_completed_program",
    "cost_total",
    "margin_total",
    "iop_admitted_wait_p90_days",
    "iop_reneged",
)

#: Below this absolute baseline mean (in the KPI's unit) a relative change is not shown:
#: a wait going from 0.004 to 0.06 days is not "+1,400 %".
UNIT_FLOOR = {"days": 1.0, "patients": 5.0, "currency": 100.0, "hours": 10.0, "sessions": 5.0, "clients": 1.0,
              "FTE": 0.1, "people": 1.0}


def direction(kpi: str) -> str:
    """``"lower"``, ``"higher"`` or ``"neutral"``: which way a KPI is better."""
    for pattern, way in _RULES:
        if re.search(pattern, kpi):
            return way
    return NEUTRAL


def relative_change(diff: float, base: float, unit: str) -> float:
    """``diff / base``, or NaN where that misleads: shares (they change in percentage
    points), unknown units, baselines near zero (see `UNIT_FLOOR`) and negative baselines (a loss)."""
    floor = UNIT_FLOOR.get(unit or "")
    if floor is None or not (math.isfinite(diff) and math.isfinite(base)) or abs(base) < floor or base < 0:
        return math.nan  # a change "of +9 %" of a negative base (a loss) reads the wrong way round
    return diff / base


def judgement(kpi: str, diff: float, significant: bool) -> str:
    """``better`` / ``worse`` (or ``higher`` / ``lower`` for a neutral KPI), ``no significant difference``,
    or ``not comparable`` when there is no difference to judge (a scenario has no value)."""
    if not math.isfinite(diff):
        return NOT_COMPARABLE
    if not significant or diff == 0:
        return SAME
    way = direction(kpi)
    if way == NEUTRAL:
        return HIGHER if diff > 0 else LOWER
    return BETTER if (diff < 0) == (way == LOWER) else WORSE


def judge(diffs: pd.DataFrame) -> pd.DataFrame:
    """The rows of every scenario but the baseline, with ``base_mean``, ``direction``,
    ``judgement``, ``rel_change`` and its CI (``rel_ci_low``, ``rel_ci_high``; NaN where not meaningful)."""
    if not len(diffs):
        return diffs.assign(base_mean=[], direction=[], judgement=[], rel_change=[], rel_ci_low=[], rel_ci_high=[])
    names = list(dict.fromkeys(diffs["scenario"]))
    base = diffs[diffs["scenario"] == names[0]].set_index("kpi")["mean"]
    rows = diffs[diffs["scenario"] != names[0]].copy()
    rows["base_mean"] = rows["kpi"].map(base).astype(float)
    units = rows["unit"].fillna("").astype(str) if "unit" in rows else pd.Series("", index=rows.index)
    rows["direction"] = [direction(k) for k in rows["kpi"]]
    rows["judgement"] = [judgement(k, d, bool(s)) for k, d, s in zip(rows["kpi"], rows["diff"], rows["significant"])]
    for col, src in (("rel_change", "diff"), ("rel_ci_low", "diff_ci_low"), ("rel_ci_high", "diff_ci_high")):
        rows[col] = [relative_change(d, b, u) for d, b, u in zip(rows[src], rows["base_mean"], units)]
    return rows.reset_index(drop=True)


@dataclass
class Verdict:
    """How one scenario compares with the baseline on the decisive KPIs."""

    scenario: str
    base: str
    better: list[dict] = field(default_factory=list)
    worse: list[dict] = field(default_factory=list)
    same: list[dict] = field(default_factory=list)
    #: Decisive KPIs with no value in one of the two scenarios: neither weighed nor counted.
    not_comparable: list[dict] = field(default_factory=list)

    @property
    def overall(self) -> str:
        """``better``, ``worse``, ``mixed`` (a trade-off) or ``no significant difference``."""
        if self.better and self.worse:
            return "mixed"
        if self.better:
            return BETTER
        if self.worse:
            return WORSE
        return SAME


def verdict(judged: pd.DataFrame, base: str, kpis: tuple[str, ...] = DECISION_KPIS) -> list[Verdict]:
    """One `Verdict` per alternative scenario against ``base``, from the table `judge` returns.

    Rows (dicts of the judged table) keep the order of ``kpis``; other KPIs
    are not weighed.
    """
    if not len(judged):
        return []
    out = []
    for name, rows in judged.groupby("scenario", sort=False):
        by_kpi = rows.set_index("kpi")
        v = Verdict(str(name), base)
        for k in kpis:
            if k not in by_kpi.index:
                continue
            r = {"kpi": k, **by_kpi.loc[k].to_dict()}
            {BETTER: v.better, WORSE: v.worse, NOT_COMPARABLE: v.not_comparable}.get(r["judgement"], v.same).append(r)
        out.append(v)
    return out


def growing_waitlists(levels: pd.DataFrame, warmup_days: float, horizon_days: float, *,
                      min_growth: float = 2.0, min_ratio: float = 0.5) -> pd.DataFrame:
    """Stages whose waitlist is still growing over the second half of the observation window.

    Per replication, a least-squares line through the daily mean waitlist of
    the second half gives the growth over that half; a stage is flagged when
    the 95 % CI of the mean growth lies above zero and the growth is at least
    ``min_growth`` patients and ``min_ratio`` of the average waitlist in that half.
    Returns one row per stage: ``stage``, ``growth`` (patients over the half),
    ``growth_ci_low``, ``growth_ci_high``, ``per_year``, ``mean_waiting``, ``growing``.
    """
    cols = ["stage", "growth", "growth_ci_low", "growth_ci_high", "per_year", "mean_waiting", "growing"]
    if not len(levels):
        return pd.DataFrame(columns=cols)
    start = warmup_days + (horizon_days - warmup_days) / 2.0
    half = levels[levels["day"] >= start]
    rows = []
    for stage, g in half.groupby("stage", sort=False, observed=True):
        growth, level = [], []
        for _, r in g.groupby("replication"):
            x = r["day"].to_numpy(dtype=float)
            y = r["waitlist_mean"].to_numpy(dtype=float)
            if x.size < 3 or np.ptp(x) == 0:
                continue
            slope = np.polyfit(x, y, 1)[0]
            growth.append(slope * (x.max() - x.min()))
            level.append(y.mean())
        if not growth:
            continue
        m, _sd, lo, hi, _n = mean_ci(np.array(growth))
        mean_level = float(np.mean(level))
        span = max(float(g["day"].max() - g["day"].min()), 1.0)
        lo_ok = lo if math.isfinite(lo) else m
        flagged = bool(lo_ok > 0 and m >= min_growth and m >= min_ratio * mean_level)
        rows.append({"stage": str(stage), "growth": m, "growth_ci_low": lo, "growth_ci_high": hi,
                     "per_year": m / span * 365.0, "mean_waiting": mean_level, "growing": flagged})
    return pd.DataFrame(rows, columns=cols)
