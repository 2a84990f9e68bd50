"""Which way is better, and the verdict of a comparison (``iopsim.analysis.verdict``) and its words.

Pure functions of KPI names and a differences table, so these tests build small tables by hand.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from iopsim.analysis.verdict import (
    BETTER,
    HIGHER,
    LOWER,
    NEUTRAL,
    NOT_COMPARABLE,
    SAME,
    WORSE,
    direction,
    growing_waitlists,
    judge,
    relative_change,
    verdict,
)
from iopsim.outputs.answer import brief, comparison_answer, plus_minus, signed, span


@pytest.mark.parametrize("kpi, way", [
    ("referral_admitted_within_14_days", HIGHER),
    ("referral_lost_before_admission", LOWER),
    ("referral_lost_at_intake", LOWER),
    ("referral_to_admission_p90_days", LOWER),
    ("programs_completed", HIGHER),
    ("admitted_to_treatment", HIGHER),
    ("cost_total", LOWER),
    ("cost_per_completed_program", LOWER),
    ("iop_cost_per_client_week", LOWER),
    ("iop_admitted_wait_mean_days", LOWER),
    ("intake_waitlist_max_first_year", LOWER),
    ("iop_reneged", LOWER),
    ("iop_share_lost_waiting", LOWER),
    ("iop_track_weekend_share_sessions_below_min", LOWER),
    ("iop_track_day_referral_to_first_session_p90_days", LOWER),
    ("iop_track_day_attendance_rate", HIGHER),
    ("staff_counselor_unmet_hours", LOWER),
    ("iop_census_mean", NEUTRAL),
    ("iop_occupancy", NEUTRAL),
    ("referrals", NEUTRAL),
    ("staff_counselor_utilisation", NEUTRAL),
    ("labour_share_of_cost", NEUTRAL),
    ("iop_track_day_group_census_mean", NEUTRAL),
    ("iop_planned_stay_mean_days", NEUTRAL),
])
def test_every_kind_of_kpi_has_its_direction(kpi, way):
    assert direction(kpi) == way, f"{kpi}: expected {way}, got {direction(kpi)}"


def _diffs(rows: list[tuple]) -> pd.DataFrame:
    """(kpi, unit, base mean, other mean, diff CI low, diff CI high) -> a paired-differences table of two scenarios."""
    out = []
    for kpi, unit, b, o, lo, hi in rows:
        out.append({"kpi": kpi, "label": kpi, "unit": unit, "scenario": "base", "mean": b, "diff": 0.0,
                    "diff_ci_low": math.nan, "diff_ci_high": math.nan, "significant": False})
        sig = lo > 0 or hi < 0
        out.append({"kpi": kpi, "label": kpi, "unit": unit, "scenario": "alt", "mean": o, "diff": o - b,
                    "diff_ci_low": lo, "diff_ci_high": hi, "significant": sig})
    return pd.DataFrame(out)


def test_judgement_follows_the_direction_not_the_sign():
    j = judge(_diffs([
        ("cost_per_completed_program", "currency", 7620, 7151, -530, -408),   # less money: better
        ("programs_completed", "patients", 143, 158, 12.9, 16.4),              # more completions: better
        ("cost_total", "currency", 1.08e6, 1.12e6, 33669, 40298),              # more money: worse
        ("iop_census_mean", "patients", 12.3, 13.9, 1.4, 1.8),                 # neutral: only "higher"
        ("iop_admitted_wait_p90_days", "days", 0.0, 0.0, -0.01, 0.01),         # CI spans 0
    ])).set_index("kpi")
    assert j.loc["cost_per_completed_program", "judgement"] == BETTER
    assert j.loc["programs_completed", "judgement"] == BETTER
    assert j.loc["cost_total", "judgement"] == WORSE
    assert j.loc["iop_census_mean", "judgement"] == "higher"
    assert j.loc["iop_admitted_wait_p90_days", "judgement"] == SAME
    assert j.loc["cost_per_completed_program", "rel_change"] == pytest.approx(-469 / 7620)


def test_relative_change_never_divides_by_a_mean_near_zero():
    """The issue's example: a mean wait going from 0.004 to 0.06 days is not '+1,400 %'."""
    assert math.isnan(relative_change(0.056, 0.004, "days"))
    assert math.isnan(relative_change(0.05, 0.76, "fraction")), "shares change in percentage points, not %"
    assert relative_change(14.6, 143.0, "patients") == pytest.approx(14.6 / 143.0)
    assert math.isnan(relative_change(52_738.0, -579_140.0, "currency")), "a smaller loss is not '+9 %'"
    j = judge(_diffs([("iop_admitted_wait_mean_days", "days", 0.004, 0.06, 0.03, 0.08)]))
    assert math.isnan(j["rel_change"].iloc[0]) and math.isnan(j["rel_ci_low"].iloc[0])


def test_verdict_names_the_trade_off():
    j = judge(_diffs([
        ("referral_lost_before_admission", "fraction", 0.235, 0.186, -0.053, -0.044),
        ("cost_per_completed_program", "currency", 7620, 7151, -530, -408),
        ("cost_total", "currency", 1.08e6, 1.12e6, 33669, 40298),
        ("programs_completed", "patients", 143, 143.5, -1, 2),
    ]))
    (v,) = verdict(j, "base")
    assert v.overall == "mixed"
    assert [r["kpi"] for r in v.better] == ["referral_lost_before_admission", "cost_per_completed_program"]
    assert [r["kpi"] for r in v.worse] == ["cost_total"]
    assert [r["kpi"] for r in v.same] == ["programs_completed"]
    (words,) = comparison_answer([v], {})
    assert "trade-off" in words["lead"] and "alt" in words["lead"] and "base" in words["lead"]
    assert any("Cost per completed program: −$469" in x for x in words["better"]), words["better"]
    assert any("Lost before admission: −4.9 percentage points" in x for x in words["better"]), words["better"]
    assert any(x.startswith("Total cost: +$") and "a year" not in x for x in words["worse"]), \
        "without the scenarios' folders the window is unknown, so totals stay per run"
    assert "programs completed" in words["same"].lower()


def test_verdict_with_nothing_significant_says_so():
    j = judge(_diffs([("programs_completed", "patients", 143, 143.5, -1, 2)]))
    (v,) = verdict(j, "base")
    assert v.overall == SAME
    assert "do not differ significantly" in comparison_answer([v], {})[0]["lead"]


def _levels(growth_per_day: float, days: int = 400, reps: int = 4, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for r in range(reps):
        for d in range(days):
            rows.append({"replication": r, "stage": "iop", "day": d,
                         "waitlist_mean": max(0.0, 3 + growth_per_day * d + rng.normal(0, 0.5))})
    return pd.DataFrame(rows)


def test_a_waitlist_that_keeps_growing_is_flagged_and_a_flat_one_is_not():
    grows = growing_waitlists(_levels(0.05), 0, 400).set_index("stage")
    flat = growing_waitlists(_levels(0.0), 0, 400).set_index("stage")
    assert bool(grows.loc["iop", "growing"]), grows
    assert grows.loc["iop", "per_year"] == pytest.approx(0.05 * 365, rel=0.15)
    assert not bool(flat.loc["iop", "growing"]), flat


def test_numbers_for_people():
    assert plus_minus(639.3, 8.77, "") == "639 ± 9"
    assert plus_minus(0.764, 0.008, "fraction") == "76.4 ± 0.8 %"
    assert plus_minus(6793, 160, "currency") == "$6,793 ± 160"
    assert plus_minus(6793, 160, "currency", "EUR") == "€6,793 ± 160"
    assert plus_minus(-468.9, 61, "currency", "USD", sign=True) == "−$469 ± 61"
    assert plus_minus(8874.0, 1e-12, "") == "8,874", "a CI of rounding noise is no CI"
    assert signed(0.049, "fraction") == "+4.9 percentage points"
    assert span(8.1, 9.9, "days") == "8.10–9.90 days"
    assert span(-530, -408, "currency", "USD", signed) == "−$530 to −$408"
    assert brief(7.32, "patients") == "+7.3 patients"
    assert span(0.757, 0.773, "fraction") == "75.7–77.3 %"


def test_red_flags_add_a_growing_waitlist_and_the_decisive_group_numbers():
    from iopsim.outputs.answer import Facts, red_flags

    summary = pd.DataFrame({"kpi": ["iop_track_weekend_group_census_mean"], "label": ["x"], "unit": ["clients"],
                            "mean": [1.9], "ci_low": [1.8], "ci_high": [2.0], "n": [4], "half_width": [0.1]})
    sessions = pd.DataFrame({"track": ["weekend"] * 10, "t_start": np.arange(10.0), "attendees": [0] + [2] * 9,
                             "status": ["held"] * 9 + ["no_clients"]})
    facts = Facts("weekend", summary, pd.DataFrame(), {"horizon_days": 400, "warmup_days": 0},
                  ["stages.iop.tracks.weekend.min_group_size: 99% of held sessions had fewer than 6 attendees"],
                  sessions=sessions, levels=_levels(0.05))
    flags = red_flags(facts)
    assert flags[0]["where"] == "IOP weekend track: minimum group size", flags
    assert "averages 1.9 clients" in flags[0]["message"] and "nobody attended 20 %" in flags[0]["message"], flags
    assert any(f["where"] == "IOP" and "still growing" in f["message"] for f in flags), flags
    quiet = Facts("flat", summary, pd.DataFrame(), {"horizon_days": 400}, [], levels=_levels(0.0))
    assert red_flags(quiet) == [], "a steady waitlist is no red flag"


def test_watch_out_keeps_a_flag_the_baseline_has_only_in_a_far_smaller_size():
    """A red flag at a place where the baseline has one too is kept when it is materially worse."""
    from iopsim.outputs.answer import _watch

    base = [{"where": "Evening track", "message": "0.3 sessions a year cancelled for want of staff (under 1%)"},
            {"where": "Day track", "message": "96% of held sessions had fewer than 6 attendees"}]
    alt = [{"where": "Evening track", "message": "148 sessions a year cancelled for want of staff (49%)"},
           {"where": "Day track", "message": "97% of held sessions had fewer than 6 attendees"},
           {"where": "IOP", "message": "The waitlist is still growing at the end of the run"}]
    watch = _watch(alt, base, "evening")
    assert any(w.startswith("Evening track: 148 sessions") and "in evening: 0.3 sessions" in w for w in watch), watch
    assert not any(w.startswith("Day track") for w in watch), "about the same as the baseline: not news"
    assert any(w.startswith("IOP: the waitlist is still growing") for w in watch), watch
    tiny = _watch([{"where": "Evening track", "message": "0.4 sessions a year cancelled for want of staff (under 1%)"}],
                  base, "evening")
    assert tiny == [], "less than one a year more than the baseline's 0.3 is noise, not a red flag"


def test_a_kpi_with_no_value_in_one_scenario_is_not_comparable_and_not_weighed():
    """A percentile some replication never reached has no mean: it is neither 'no significant
    difference' nor counted among the measures weighed, and the answer says which scenario lacks it."""
    rows = _diffs([
        ("cost_per_completed_program", "currency", 7620, 7151, -530, -408),
        ("programs_completed", "patients", 143, 143.5, -1, 2),
    ])
    unreached = pd.DataFrame([
        {"kpi": "referral_to_admission_p90_days", "label": "x", "unit": "days", "scenario": "base", "mean": math.nan,
         "diff": 0.0, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "significant": False},
        {"kpi": "referral_to_admission_p90_days", "label": "x", "unit": "days", "scenario": "alt", "mean": 2.21,
         "diff": math.nan, "diff_ci_low": math.nan, "diff_ci_high": math.nan, "significant": False},
    ])
    j = judge(pd.concat([rows, unreached], ignore_index=True))
    assert j.set_index("kpi").loc["referral_to_admission_p90_days", "judgement"] == NOT_COMPARABLE
    (v,) = verdict(j, "base")
    assert [r["kpi"] for r in v.not_comparable] == ["referral_to_admission_p90_days"]
    assert "referral_to_admission_p90_days" not in [r["kpi"] for r in v.same]
    (words,) = comparison_answer([v], {})
    assert "on 1 of the 2 decisive measures" in words["lead"], words["lead"]
    assert "days to admission" not in words["same"].lower()
    assert words["not_comparable"].startswith("Not compared: days to admission, 90th pct has no value in base")
    assert "not every replication reached" in words["not_comparable"]
