"""Rosters across midnight and the week's end, a 24/7 intake against Erlang C, and month multipliers.

* Shifts that touch end to start are one span of work: a 24/7 roster never
  stops, Sunday night runs into Monday morning, and an overnight shift
  (22:00-06:00) is one span.
* A 24/7 intake with c clinicians, Poisson referrals and exponential
  assessments is an M/M/c queue: its mean wait and waitlist match Erlang C.
* ``month_multipliers`` are indexed by calendar month: a run starting in
  March gets March's factor in its first month.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest

from iopsim.analysis.stats import mean_ci
from iopsim.engine.calendar import WeeklyCalendar
from iopsim.engine.staff import shift_hours
from iopsim.experiments.replications import run_replication, run_replications
from iopsim.schema.scenario import Roster, Shift, validate_raw

ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def roster(*shifts) -> Roster:
    return Roster(shifts=[Shift(days=d, start_hour=a, end_hour=b) for d, a, b in shifts])


def test_a_24_7_roster_is_one_endless_span():
    cal = WeeklyCalendar(roster((ALL_DAYS, 0, 24)))
    assert cal.always and cal.hours_per_week == pytest.approx(168)
    for t in (0.0, 6.9999, 7.0, 13.5, 700.25):
        a, b = cal.current_or_next(t)
        assert a <= t < b and b == math.inf, f"t={t}: span ({a}, {b})"


def test_two_half_day_shifts_make_a_24_7_roster():
    cal = WeeklyCalendar(roster((ALL_DAYS, 0, 12), (ALL_DAYS, 12, 24)))
    assert cal.always


def test_sunday_night_runs_into_monday_morning():
    cal = WeeklyCalendar(roster((["sun"], 20, 24), (["mon"], 0, 8)))
    a, b = cal.current_or_next(6.0 + 23 / 24)  # Sunday 23:00
    assert a == pytest.approx(6 + 20 / 24) and b == pytest.approx(7 + 8 / 24), (a, b)
    a2, b2 = cal.current_or_next(7.0 + 2 / 24)  # Monday 02:00 of the next week: the same span
    assert (a2, b2) == pytest.approx((a, b))
    a3, b3 = cal.current_or_next(2 / 24)  # Monday 02:00 of week 0: the span began on the Sunday before
    assert a3 == pytest.approx(-1 + 20 / 24) and b3 == pytest.approx(8 / 24)
    assert cal.hours_per_week == pytest.approx(12)


def test_overnight_shift_is_one_span_and_its_hours_fall_on_each_day():
    r = roster((["fri"], 22, 6))
    cal = WeeklyCalendar(r)
    a, b = cal.current_or_next(5.0 + 3 / 24)  # Saturday 03:00
    assert a == pytest.approx(4 + 22 / 24) and b == pytest.approx(5 + 6 / 24)
    hours = shift_hours(list(r.shifts), 0.0, 7.0, evening_start_hour=17)
    assert hours == pytest.approx({"day": 0.0, "evening": 2.0, "weekend": 6.0}), hours


def test_overnight_sunday_shift_wraps_to_monday():
    r = roster((["sun"], 22, 6))
    hours = shift_hours(list(r.shifts), 0.0, 14.0, evening_start_hour=17)
    # The roster repeats weekly: each week has Monday 00-06 (day rate) and Sunday 22-24 (weekend).
    assert hours["weekend"] == pytest.approx(4.0) and hours["day"] == pytest.approx(12.0), hours


def test_booking_fits_across_midnight_on_an_overnight_shift():
    from iopsim.engine.staff import StaffMember

    m = StaffMember(0, "nurse", [Shift(days=["mon"], start_hour=22, end_hour=6)])
    start = m.find_slot(22 / 24, 2.0, 6 / 24)  # six hours from Monday 22:00
    assert start == pytest.approx(22 / 24)
    assert m.on_shift(22 / 24, 22 / 24 + 6 / 24)


# --------------------------------------------------------------------------- 24/7 intake vs Erlang C


def erlang_c(c: int, a: float) -> float:
    rho = a / c
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) / (1.0 - rho)
    return tail / (head + tail)


C, HOURS, LAM = 2, 8.0, 4.8  # clinicians, mean assessment hours, referrals per day: rho = 0.8


def intake_24_7(shifts, seed: int = 77, horizon: int = 3_000):
    raw = {
        "name": "intake-24-7", "seed": seed, "horizon_days": horizon, "warmup_days": 100,
        "referrals": {"referrals_per_week": LAM * 7, "sources": {"all": {"share": 1.0, "placement": {"outpatient": 1.0}}}},
        "intake": {"clinicians": C, "roster": {"shifts": shifts},
                   "assessment_hours": {"dist": "exponential", "mean": HOURS}},
        "stages": {"iop": {"los_days": {"dist": "fixed", "value": 1}}},
    }
    return validate_raw(raw, "test")


@functools.lru_cache(maxsize=None)
def _intake_runs():
    return run_replications(intake_24_7([{"days": ALL_DAYS, "start_hour": 0, "end_hour": 24}]), 8, jobs=2)


@pytest.mark.parametrize("kpi,which", [("intake_admitted_wait_mean_days", "wq"), ("intake_waitlist_mean", "lq")])
def test_24_7_intake_matches_erlang_c(kpi, which):
    mu = 24.0 / HOURS
    wq = erlang_c(C, LAM / mu) / (C * mu - LAM)
    theory = {"wq": wq, "lq": LAM * wq}[which]
    values = [r.kpis[kpi] for r in _intake_runs()]
    mean, _sd, lo, hi, _ = mean_ci(values, 0.975)  # two comparisons: Bonferroni
    assert (hi - lo) / 2 < 0.15 * theory, f"{kpi}: CI [{lo:.4g}, {hi:.4g}] too wide to test {theory:.4g}"
    assert lo <= theory <= hi, f"{kpi}: Erlang C {theory:.4g} outside CI [{lo:.4g}, {hi:.4g}] (mean {mean:.4g})"


def test_24_7_intake_written_as_daily_shifts_is_the_same_queue():
    """Seven separate midnight-to-midnight shifts are the same continuous roster: identical records."""
    daily = [{"days": [d], "start_hour": 0, "end_hour": 24} for d in ALL_DAYS]
    a = run_replication(intake_24_7(daily, horizon=200), 0).records["visits"]
    b = run_replication(intake_24_7([{"days": ALL_DAYS, "start_hour": 0, "end_hour": 24}], horizon=200), 0)
    assert a.equals(b.records["visits"])


def test_assessments_start_across_sunday_midnight():
    """An assessment that would run past Monday 00:00 is started on a 24/7 roster (it used to wait)."""
    res = run_replication(intake_24_7([{"days": ALL_DAYS, "start_hour": 0, "end_hour": 24}], horizon=400), 0)
    v = res.records["visits"]
    v = v[v["stage"] == "intake"]
    start = v["t_admit"].to_numpy(float)
    end = v["t_leave"].to_numpy(float)
    ok = ~np.isnan(end)
    crosses = np.floor(start[ok] / 7) != np.floor(end[ok] / 7)
    assert crosses.sum() > 5, "assessments should run across the week boundary"


# --------------------------------------------------------------------------- month multipliers


def month_scenario(start_month: int):
    mult = [0.0] * 12
    mult[2] = 1.0  # March only
    raw = {
        "name": "months", "seed": 3, "horizon_days": 365, "start_month": start_month,
        "referrals": {"referrals_per_week": 70.0, "month_multipliers": mult,
                      "sources": {"all": {"share": 1.0, "placement": {"outpatient": 1.0}}}},
        "stages": {"iop": {"los_days": {"dist": "fixed", "value": 1}}},
    }
    return validate_raw(raw, "test")


def test_a_run_starting_in_march_gets_march_volume_in_its_first_month():
    t = run_replication(month_scenario(3), 0).records["episodes"]["t_referral"].to_numpy(float)
    month = 365.0 / 12
    assert len(t) > 200, f"March at 10 a day should bring ~300 referrals, got {len(t)}"
    assert (t < month).all(), f"referrals outside the first month: {t[t >= month][:5]}"


def test_a_run_starting_in_january_gets_march_volume_in_its_third_month():
    t = run_replication(month_scenario(1), 0).records["episodes"]["t_referral"].to_numpy(float)
    month = 365.0 / 12
    assert len(t) > 200
    assert ((t >= 2 * month) & (t < 3 * month)).all(), "March is the third month of a run starting in January"
