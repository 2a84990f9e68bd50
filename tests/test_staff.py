"""Staff rosters, bookings and paid hours (iopsim.engine.staff, staff KPIs of iopsim.analysis.kpis).

* No staff member is ever in two places at once: per member, the bookings of
  the bookings table never overlap, and each lies entirely inside one of the
  member's rostered working spans, reconstructed here from the scenario
  (member ids are assigned in ``iopsim.engine.staff.roles_of`` order).
* Paid hours = busy hours + idle hours for every role.
* ``shift_hours`` against a hand computation (weekday day / evening split at
  ``evening_start_hour`` / weekend, over a window starting and ending mid-week).
* The ratio-rule KPI.
* ``StaffPool.fit``'s slot index books what a scan of every member would.

Helpers live in this file on purpose (no dependency on conftest.py).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from conftest import GROUP_VARIANTS, stressed_groups_raw

from iopsim.engine.model import Model
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import WEEKDAYS, Shift, validate_raw
from iopsim.engine.staff import roles_of, shift_hours

EPS = 1e-7
WEEKDAYS5 = ["mon", "tue", "wed", "thu", "fri"]


# --------------------------------------------------------------------------- helpers


def shared_intake_raw() -> dict:
    """Stressed variant whose counselors also do the intake assessments (one role
    shared by intake, groups and individual/family sessions)."""
    raw = stressed_groups_raw()
    raw["name"] = "shared_intake"
    raw["intake"]["role"] = "counselor"
    del raw["staff"]["roles"]["intake_clinician"]
    return raw


VARIANTS = {**GROUP_VARIANTS, "shared_intake": shared_intake_raw}


@functools.lru_cache(maxsize=None)
def scenario_of(variant: str):
    return validate_raw(VARIANTS[variant](), variant)


@functools.lru_cache(maxsize=None)
def result_of(variant: str, rep: int = 0):
    return run_replication(scenario_of(variant), rep)


def merged_week_spans(shifts) -> list[tuple[float, float]]:
    """A member's working spans within a week (days from Monday 00:00), with
    overlapping and back-to-back shifts merged (independent of iopsim.engine.calendar)."""
    spans = sorted(
        (WEEKDAYS.index(d) + s.start_hour / 24.0, WEEKDAYS.index(d) + s.end_hour / 24.0) for s in shifts for d in s.days
    )
    out: list[list[float]] = []
    for a, b in spans:
        if out and a <= out[-1][1] + 1e-12:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def member_table(scenario) -> list[tuple[str, list[tuple[float, float]]]]:
    """(role, weekly spans) per member id, ids in roles_of order."""
    out = []
    for role, people in roles_of(scenario).items():
        for shifts in people:
            out.append((role, merged_week_spans(shifts)))
    return out


def inside_roster(spans, start: float, end: float) -> bool:
    week = math.floor(start / 7.0)
    for w in (week - 1, week, week + 1):
        base = 7.0 * w
        for a, b in spans:
            if base + a <= start + EPS and end <= base + b + EPS:
                return True
    return False


def booking_problems(records, scenario) -> list[str]:
    bookings = records["bookings"]
    members = member_table(scenario)
    problems: list[str] = []
    for mid, g in bookings.groupby("member"):
        mid = int(mid)
        if mid >= len(members):
            problems.append(f"booking for unknown member id {mid}")
            continue
        role, spans = members[mid]
        roles = set(g["role"].astype(str))
        if roles != {role}:
            problems.append(f"member {mid}: bookings say role {roles}, roles_of order says {role!r}")
        g = g.sort_values(["t_start", "t_end"])
        s = g["t_start"].to_numpy(dtype=float)
        e = g["t_end"].to_numpy(dtype=float)
        acts = g["activity"].astype(str).to_numpy()
        if (e < s - EPS).any():
            problems.append(f"member {mid}: booking ending before it starts")
        for i in np.nonzero(s[1:] < e[:-1] - EPS)[0]:
            problems.append(
                f"member {mid} ({role}) double-booked: {acts[i]} [{s[i]:.4f}, {e[i]:.4f}) overlaps "
                f"{acts[i + 1]} [{s[i + 1]:.4f}, {e[i + 1]:.4f})"
            )
        for a, b, act in zip(s, e, acts):
            if not inside_roster(spans, a, b):
                problems.append(f"member {mid} ({role}): {act} booking [{a:.4f}, {b:.4f}) is outside the roster")
    return problems


def fmt(problems: list[str], n: int = 6) -> str:
    return f"{len(problems)} problem(s), e.g.: " + "; ".join(problems[:n])


def small_staffed_raw(**kw) -> dict:
    """A small IOP-only scenario with counselors facilitating groups and doing individual sessions."""
    raw = {
        "name": "small",
        "seed": 99,
        "horizon_days": 140,
        "referrals": {"referrals_per_week": 5.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {
            "iop": {
                "availability": {"any": 1.0},
                "patience_days": {"dist": "exponential", "mean": 20.0},
                "program": {"phases": [{"weeks": 3, "sessions_per_week": 3}], "missed_sessions_dropout": 3},
                "tracks": {
                    "day": {
                        "accepts": ["any"],
                        "groups": 2,
                        "max_group_size": 6,
                        "sessions": [{"days": ["mon", "wed", "fri"], "start_hour": 10, "hours": 3}],
                        "facilitators": [{"role": "counselor", "count": 1}],
                        "attendance": 0.9,
                    }
                },
                "services": {"individual": {"every_weeks": 1, "hours": 1.0, "role": "counselor"}},
            }
        },
        "staff": {
            "roles": {
                "counselor": {
                    "hourly_wage": 20.0,
                    "teams": [{"headcount": 2, "shifts": [{"days": WEEKDAYS5, "start_hour": 8, "end_hour": 16}]}],
                }
            }
        },
    }
    raw.update(kw)
    return raw


# --------------------------------------------------------------------------- no double booking


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_no_member_double_booked_and_bookings_inside_shifts(variant):
    sc = scenario_of(variant)
    res = result_of(variant)
    bookings = res.records["bookings"]
    assert len(bookings) > 100, f"{variant}: only {len(bookings)} bookings; the check would be vacuous"
    problems = booking_problems(res.records, sc)
    assert not problems, f"{variant}: " + fmt(problems)


def test_stressed_variants_really_short_of_staff():
    """The stressed variants must exercise the shortage paths (else the checks above are weak)."""
    for variant in ("stressed", "shared_intake"):
        rec = result_of(variant).records
        status = rec["sessions"]["status"].astype(str)
        assert (status == "cancelled").sum() > 10, f"{variant}: no cancelled sessions: {status.value_counts().to_dict()}"
        assert (status == "merged").sum() > 0, f"{variant}: no merged sessions: {status.value_counts().to_dict()}"
        assert rec["unmet"]["hours"].sum() > 0, f"{variant}: no unmet demand"
    acts = set(result_of("shared_intake").records["bookings"].query("role == 'counselor'")["activity"].astype(str))
    assert {"intake", "group", "individual"} <= acts, f"shared_intake: counselor activities {acts}"


def test_same_role_listed_twice_in_facilitators_is_not_double_booked():
    """Regression: two ``facilitators`` entries of the same role must book two different people
    (StaffPool.team once chose the same free person for both entries)."""
    raw = small_staffed_raw()
    raw["stages"]["iop"]["tracks"]["day"]["facilitators"] = [
        {"role": "counselor", "count": 1},
        {"role": "counselor", "count": 1},
    ]
    sc = validate_raw(raw, "dup")
    records = Model(sc, 0).run()
    problems = booking_problems(records, sc)
    assert not problems, fmt(problems)
    g = records["bookings"].query("activity == 'group'")
    per_session = g.groupby(["t_start", "ref"])["member"].agg(["count", "nunique"])
    assert len(per_session) > 20, "too few staffed sessions"
    assert (per_session["nunique"] == per_session["count"]).all(), per_session[per_session["nunique"] < per_session["count"]].head()


def test_team_of_two_is_two_people():
    """``count: 2`` books two different people for the same session."""
    raw = small_staffed_raw()
    raw["stages"]["iop"]["tracks"]["day"].update(groups=1, facilitators=[{"role": "counselor", "count": 2}])
    sc = validate_raw(raw, "two")
    records = Model(sc, 0).run()
    g = records["bookings"].query("activity == 'group'")
    assert len(g) > 20, "too few group bookings"
    per_session = g.groupby("t_start")["member"].agg(["count", "nunique"])
    assert (per_session["count"] == 2).all() and (per_session["nunique"] == 2).all(), per_session.head()
    held = records["sessions"].query("status == 'held'")
    assert (held["facilitators"] == 2).all(), "held sessions must have 2 facilitators"
    assert not booking_problems(records, sc)


# --------------------------------------------------------------------------- paid = busy + idle


@pytest.mark.parametrize("variant", ["baseline", "stressed", "shared_intake"])
def test_paid_hours_equal_busy_plus_idle(variant):
    sc = scenario_of(variant)
    k = result_of(variant).kpis
    roles = list(roles_of(sc))
    assert roles, "no roles"
    for role in roles:
        p = f"staff_{role}_"
        paid, busy, idle = k[p + "paid_hours"], k[p + "busy_hours"], k[p + "idle_hours"]
        assert paid > 0, f"{variant}/{role}: no paid hours"
        assert busy > 0, f"{variant}/{role}: no busy hours (the identity would be trivial)"
        assert math.isclose(paid, busy + idle, rel_tol=1e-9), (
            f"{variant}/{role}: paid {paid!r} != busy {busy!r} + idle {idle!r} (diff {paid - busy - idle:.3g} h)"
        )
        split = k[p + "paid_hours_day"] + k[p + "paid_hours_evening"] + k[p + "paid_hours_weekend"]
        assert math.isclose(paid, split, rel_tol=1e-12), f"{variant}/{role}: paid {paid} != day+evening+weekend {split}"


def test_paid_equals_busy_plus_idle_with_a_mid_week_warmup():
    """A warm-up that ends mid-week (day 30 is a Wednesday) still balances."""
    raw = small_staffed_raw(warmup_days=30)
    sc = validate_raw(raw, "warm")
    res = run_replication(sc, 0)
    k = res.kpis
    p = "staff_counselor_"
    assert math.isclose(k[p + "paid_hours"], k[p + "busy_hours"] + k[p + "idle_hours"], rel_tol=1e-9), (
        f"paid {k[p + 'paid_hours']} != busy {k[p + 'busy_hours']} + idle {k[p + 'idle_hours']}"
    )
    # 2 counselors x 8 h x weekdays in [30, 140): days 30..139 -> weeks 4 (from Wed) .. 19 (to Sun)
    weekdays = sum(1 for d in range(30, 140) if d % 7 < 5)
    assert math.isclose(k[p + "paid_hours"], 2 * 8 * weekdays, rel_tol=1e-12), (k[p + "paid_hours"], 2 * 8 * weekdays)


# --------------------------------------------------------------------------- shift_hours by hand


def test_shift_hours_hand_computed():
    shifts = [
        Shift(days=["mon", "wed"], start_hour=9, end_hour=21),   # day 9-17 (8 h), evening 17-21 (4 h)
        Shift(days=["mon"], start_hour=20, end_hour=22),          # overlaps Monday's: Mon becomes 9-22
        Shift(days=["tue"], start_hour=16, end_hour=20),          # day 16-17 (1 h), evening 17-20 (3 h)
        Shift(days=["sat"], start_hour=8, end_hour=12),           # weekend 4 h
        Shift(days=["sun"], start_hour=20, end_hour=24),          # weekend 4 h (evening hours too)
    ]
    # Window: Wednesday of week 0, 12:00 (t0 = 2.5) to Tuesday of week 2, 18:00 (t1 = 15.75).
    t0, t1 = 2.5, 15.75
    # week 0: Wed 12-21 -> day 12-17 = 5, evening 4;  Sat 4 weekend; Sun 4 weekend
    # week 1: Mon 9-22 -> day 8, evening 5;  Tue 16-20 -> day 1, evening 3;  Wed -> day 8, evening 4;
    #         Sat 4 weekend; Sun 4 weekend
    # week 2: Mon 9-22 -> day 8, evening 5;  Tue 16-18 (cut at t1) -> day 1, evening 1
    day = 5 + (8 + 1 + 8) + (8 + 1)  # 31
    evening = 4 + (5 + 3 + 4) + (5 + 1)  # 22
    weekend = (4 + 4) + (4 + 4)  # 16
    got = shift_hours(shifts, t0, t1, 17.0)
    assert got == pytest.approx({"day": day, "evening": evening, "weekend": weekend}, rel=1e-12), got

    # Evening from 18:00: one hour of each weekday evening span moves to the day.
    #   Mon(wk1) 9-22 -> day 9, eve 4; Tue(wk1) 16-20 -> day 2, eve 2; Wed(wk0 from 12) -> day 6, eve 3;
    #   Wed(wk1) -> day 9, eve 3; Mon(wk2) -> day 9, eve 4; Tue(wk2) 16-18 -> day 2, eve 0.
    got18 = shift_hours(shifts, t0, t1, 18.0)
    assert got18 == pytest.approx({"day": 6 + 9 + 2 + 9 + 9 + 2, "evening": 3 + 4 + 2 + 3 + 4 + 0, "weekend": 16.0}, rel=1e-12), got18

    # Empty and reversed windows.
    assert shift_hours(shifts, 5.0, 5.0, 17.0) == {"day": 0.0, "evening": 0.0, "weekend": 0.0}
    assert shift_hours(shifts, 6.0, 5.0, 17.0) == {"day": 0.0, "evening": 0.0, "weekend": 0.0}


def _brute_force_hours(shifts, t0, t1, evening_start):
    """Minute-by-minute count (independent of iopsim.engine.staff)."""
    minute = 1.0 / (24 * 60)
    spans = merged_week_spans(shifts)
    out = {"day": 0.0, "evening": 0.0, "weekend": 0.0}
    n = int(round((t1 - t0) / minute))
    for i in range(n):
        t = t0 + (i + 0.5) * minute
        pos = t % 7.0
        if not any(a <= pos < b for a, b in spans):
            continue
        d = int(pos)
        hour = (pos - d) * 24
        key = "weekend" if d >= 5 else ("evening" if hour >= evening_start else "day")
        out[key] += 1.0 / 60.0
    return out


@pytest.mark.parametrize("evening_start", [0.0, 17.0, 19.5, 24.0])
def test_shift_hours_matches_brute_force(evening_start):
    shifts = [
        Shift(days=["mon", "tue", "fri"], start_hour=12.5, end_hour=21),
        Shift(days=["fri"], start_hour=6, end_hour=13),
        Shift(days=["sat", "sun"], start_hour=8, end_hour=16.5),
    ]
    t0, t1 = 3.25, 17.5  # Thursday 06:00 -> Thursday 12:00 two weeks on
    got = shift_hours(shifts, t0, t1, evening_start)
    want = _brute_force_hours(shifts, t0, t1, evening_start)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-6), f"{key}: {got} vs brute force {want}"


# --------------------------------------------------------------------------- ratio rule


def _ratio_run(max_clients: float):
    raw = small_staffed_raw()
    raw["staff"]["ratio_rules"] = [{"stage": "iop", "role": "counselor", "max_clients_per_staff": max_clients}]
    sc = validate_raw(raw, "ratio")
    return sc, run_replication(sc, 0)


def test_ratio_rule_share_of_days_within_rule():
    key = "staff_ratio_iop_counselor_share_days_within_rule"
    _, huge = _ratio_run(1e9)
    assert huge.kpis[key] == 1.0, f"huge max_clients_per_staff: share {huge.kpis[key]} (want 1.0)"
    _, tiny = _ratio_run(0.01)
    assert tiny.kpis[key] < 1.0, f"tiny max_clients_per_staff: share {tiny.kpis[key]} (want < 1)"
    # A middling limit: the share matches the daily census recomputed from the levels table.
    sc, mid = _ratio_run(3.0)
    lv = mid.records["levels"]
    daily = lv[(lv["stage"] == "iop") & (lv["day"] >= sc.warmup_days)]["census_mean"].to_numpy(dtype=float)
    want = float(np.mean(daily / 2 <= 3.0 + 1e-9))
    assert 0.0 < want < 1.0, f"the middling limit should bind on some days only (share {want})"
    assert mid.kpis[key] == pytest.approx(want), (mid.kpis[key], want)
    assert mid.kpis["staff_ratio_iop_counselor_clients_per_staff"] == pytest.approx(daily.mean() / 2)


def test_booking_checker_detects_overlaps_and_off_roster_work():
    """The checker used above is not vacuous: it flags a forged overlap and off-roster booking."""
    sc = scenario_of("baseline")
    records = dict(result_of("baseline").records)
    b = records["bookings"]
    counselor = int(b.loc[b["role"] == "counselor", "member"].iloc[0])
    first = b[b["member"] == counselor].iloc[0]
    forged = b.copy()
    extra = first.copy()
    extra["t_start"], extra["t_end"] = first["t_start"], first["t_end"] + 0.01  # overlaps the first
    night = first.copy()
    night["t_start"], night["t_end"] = 7.0 + 2.0 / 24, 7.0 + 3.0 / 24  # Monday 02:00-03:00
    forged.loc[len(forged)] = extra
    forged.loc[len(forged)] = night
    records["bookings"] = forged
    problems = booking_problems(records, sc)
    assert any("double-booked" in p for p in problems), problems[:3]
    assert any("outside the roster" in p for p in problems), problems[:3]


# --------------------------------------------------------------------------- the slot index of StaffPool.fit


class _Rec:
    def __init__(self):
        self.bookings, self.unmet = [], []


def test_fit_books_what_a_scan_of_every_member_would():
    """``StaffPool.fit`` keeps a heap of each member's earliest free slot per window and
    updates only members whose bookings changed.  Against a brute-force scan of the
    whole role (the earliest slot of any member, ties to the member listed first), over
    a random mix of fits in several windows and durations, other bookings and cancellations."""
    from iopsim.engine.staff import StaffPool

    raw = stressed_groups_raw()
    role = raw["staff"]["roles"]["counselor"]
    role["teams"] = [{"headcount": 3, "shifts": [{"days": WEEKDAYS5, "start_hour": 8, "end_hour": 16}]},
                     {"headcount": 2, "shifts": [{"days": ["mon", "wed", "sat"], "start_hour": 12, "end_hour": 22}]},
                     {"headcount": 2, "shifts": [{"days": ["tue", "fri"], "start_hour": 22, "end_hour": 6}]}]
    sc = validate_raw(raw, "slots")
    rng = np.random.default_rng(7)
    pool = StaffPool(sc, _Rec())
    people = pool.by_role["counselor"]
    live = []
    for step in range(3000):
        week = 7.0 * (step // 600)
        if step % 600 == 0:  # a new week: older bookings are forgotten (and never cancelled)
            pool.forget_before(week - 7.0)
            live = []
        kind = rng.random()
        if kind < 0.6:
            earliest = week + (0.0 if rng.random() < 0.7 else float(rng.integers(0, 6)))
            latest = earliest + (7.0 if rng.random() < 0.7 else 2.0)
            hours = float(rng.choice([0.25, 1.0, 1.5, 3.0]))
            scan = None
            for m in people:
                s = m.find_slot(earliest, latest, hours / 24.0)
                if s is not None and (scan is None or s < scan[0]):
                    scan = (s, m)
            b = pool.fit("counselor", "svc", earliest, latest, hours)
            if scan is None:
                assert b is None
            else:
                assert b is not None and (b.start, b.member) == scan
                live.append(b)
        elif kind < 0.8:  # a group session booked directly, as the weekly plan does
            m = people[int(rng.integers(len(people)))]
            start = week + float(rng.integers(0, 7)) + float(rng.choice([9, 13, 18])) / 24.0
            if m.available(start, start + 3 / 24.0):
                live.append(pool.book(m, "group", start, start + 3 / 24.0))
        elif live:  # a cancellation (an unstaffed cohort session) can make an earlier slot free
            pool.cancel(live.pop(int(rng.integers(len(live)))))
