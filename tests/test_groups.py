"""IOP group therapy on a weekly calendar (iopsim.engine.iop).

* Group census never exceeds ``max_group_size`` in a held session (merged
  sessions included) on the shipped scenarios and on a stressed variant.
* Exact traces of small deterministic calendars (attendance 1.0 and 0.0).
* Cohort admission, ``cohort_start_every_weeks``.
* Availability classes and tracks; phases' ``sessions_per_week``.
* Monotonicity in the number of groups under common random numbers.
* Cancel versus merge when short of staff.

Helpers live in this file on purpose (no dependency on conftest.py).
"""

from __future__ import annotations

import functools
import json
import math

import numpy as np
import pytest
from conftest import GROUP_VARIANTS

import iopsim.engine.iop
from iopsim.analysis.kpis import track_kpis
from iopsim.engine.model import Model, Patient
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import validate_raw
from iopsim.analysis.stats import mean_ci
from iopsim.engine.streams import BLOCK, generator

WEEKDAYS5 = ["mon", "tue", "wed", "thu", "fri"]
EPS = 1e-9


# --------------------------------------------------------------------------- helpers


VARIANTS = GROUP_VARIANTS


@functools.lru_cache(maxsize=None)
def scenario_of(variant: str):
    return validate_raw(VARIANTS[variant](), variant)


@functools.lru_cache(maxsize=None)
def records_of(variant: str, rep: int = 0):
    return Model(scenario_of(variant), rep).run()


def iop_only_raw(**kw) -> dict:
    """IOP only, no intake; every referral is placed in IOP.  One track ``t`` of
    one group meeting Mon/Wed/Fri 10:00-13:00, two counselors on weekdays 08:00-16:00."""
    raw = {
        "name": "iop_only",
        "seed": 2024,
        "horizon_days": 182,
        "referrals": {"referrals_per_week": 3.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {
            "iop": {
                "availability": {"any": 1.0},
                "patience_days": {"dist": "exponential", "mean": 30.0},
                "program": {"phases": [{"weeks": 3, "sessions_per_week": 3}], "missed_sessions_dropout": 3},
                "tracks": {
                    "t": {
                        "accepts": ["any"],
                        "groups": 1,
                        "min_group_size": 1,
                        "max_group_size": 6,
                        "sessions": [{"days": ["mon", "wed", "fri"], "start_hour": 10, "hours": 3}],
                        "facilitators": [{"role": "counselor", "count": 1}],
                        "attendance": 0.85,
                    }
                },
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


def track_of(raw: dict, name: str = "t") -> dict:
    return raw["stages"]["iop"]["tracks"][name]


def session_time(week: int, day: int, hour: float = 10.0) -> float:
    return 7.0 * week + day + hour / 24.0


class AttendanceSpy:
    """Wraps ``TrackedIOP._attend`` to log, per held session, who was present,
    who was scheduled and who attended (from the members' counters)."""

    def __init__(self):
        self.log: list[tuple[float, list[tuple[int, bool, bool]]]] = []

    def install(self, monkeypatch):
        orig = iopsim.engine.iop.TrackedIOP._attend
        spy = self

        def wrapped(stage, members, ts, week_idx):
            before = {id(m): (m.attended, m.missed_run, m.finished) for m in members}
            out = orig(stage, members, ts, week_idx)
            rows = []
            for m in members:
                att0, miss0, fin0 = before[id(m)]
                if fin0:
                    continue
                attended = m.attended > att0
                scheduled = attended or m.missed_run > miss0
                rows.append((m.patient.id, scheduled, attended))
            spy.log.append((ts, rows))
            return out

        monkeypatch.setattr(iopsim.engine.iop.TrackedIOP, "_attend", wrapped)
        return self

    def per_patient(self):
        """patient id -> (sessions present, sessions scheduled, sessions attended) as lists of times."""
        out: dict[int, tuple[list, list, list]] = {}
        for ts, rows in self.log:
            for pid, scheduled, attended in rows:
                present, sch, att = out.setdefault(pid, ([], [], []))
                present.append(ts)
                if scheduled:
                    sch.append(ts)
                if attended:
                    att.append(ts)
        return out


def rounded(xs, nd=9):
    return [round(float(x), nd) for x in xs]


def iop_visits(records):
    v = records["visits"]
    return v[v["stage"] == "iop"]


# --------------------------------------------------------------------------- group census cap


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_group_census_never_exceeds_max_group_size(variant):
    sc = scenario_of(variant)
    s = records_of(variant)["sessions"]
    caps = {name: t.max_group_size for name, t in sc.stages.iop.tracks.items()}
    assert len(s) > 100, f"{variant}: only {len(s)} sessions"
    cap = s["track"].astype(str).map(caps).to_numpy()
    held = (s["status"] == "held").to_numpy()
    assert held.sum() > 100, f"{variant}: only {held.sum()} held sessions"
    over_members = s[held & (s["members"].to_numpy() > cap)]
    assert over_members.empty, f"{variant}: held sessions over the cap (members):\n{over_members.head()}"
    over_att = s[held & (s["attendees"].to_numpy() > cap)]
    assert over_att.empty, f"{variant}: held sessions over the cap (attendees):\n{over_att.head()}"
    # Attendees <= expected <= members everywhere.
    bad = s[(s["attendees"] > s["expected"]) | (s["expected"] > s["members"])]
    assert bad.empty, f"{variant}: attendees > expected or expected > members:\n{bad.head()}"
    not_held = s[~held]
    assert (not_held["attendees"] == 0).all() and (not_held["expected"] == 0).all(), (
        f"{variant}: attendance recorded at sessions not held"
    )
    # Members per group (non-merged rows) never exceed the cap either.
    assert (s["members"].to_numpy() <= cap).all(), f"{variant}: a group larger than its cap"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_merged_sessions_fit_into_their_host(variant):
    sc = scenario_of(variant)
    s = records_of(variant)["sessions"]
    merged = s[s["status"] == "merged"]
    if variant == "stressed":
        assert len(merged) > 0, "the stressed variant must merge some sessions"
    held = s[s["status"] == "held"].set_index(["track", "t_start", "group"])
    for row in merged.itertuples():
        key = (row.track, row.t_start, row.merged_into)
        assert key in held.index, f"{variant}: merged session {row} points to no held session {key}"
        host = held.loc[key]
        cap = sc.stages.iop.tracks[row.track].max_group_size
        assert host["members"] <= cap, f"{variant}: host census {host['members']} > cap {cap} after merge"
        assert host["members"] >= row.members, f"{variant}: host census {host['members']} < merged-in {row.members}"
        assert row.merged_into != row.group


def test_stressed_variant_is_really_stressed():
    s = records_of("stressed")["sessions"]
    status = s["status"].astype(str).value_counts().to_dict()
    assert status.get("cancelled", 0) > 10 and status.get("merged", 0) > 0, status
    cap = scenario_of("stressed").stages.iop.tracks["day"].max_group_size
    held = s[(s["status"] == "held") & (s["track"] == "day")]
    assert (held["members"] == cap).any(), "the stressed day track should reach its cap"


# --------------------------------------------------------------------------- exact traces


def trace_raw(attendance: float, phases: list[dict], missed: int, horizon: int, waitlist: int = 3) -> dict:
    """No intake, no referrals, ``waitlist`` patients on the IOP waitlist on day 0,
    one track of one group of at most 2 meeting Mon/Wed/Fri 10:00-12:00, one
    counselor on weekdays 8-18, no exits, no patience, fixed phases."""
    return {
        "name": "trace",
        "seed": 5,
        "horizon_days": horizon,
        "referrals": {"referrals_per_week": 0.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {
            "iop": {
                "availability": {"any": 1.0},
                "program": {"phases": phases, "missed_sessions_dropout": missed},
                "tracks": {
                    "t": {
                        "accepts": ["any"],
                        "groups": 1,
                        "min_group_size": 1,
                        "max_group_size": 2,
                        "sessions": [{"days": ["mon", "wed", "fri"], "start_hour": 10, "hours": 2}],
                        "facilitators": [{"role": "counselor", "count": 1}],
                        "attendance": attendance,
                    }
                },
            }
        },
        "staff": {
            "roles": {
                "counselor": {
                    "hourly_wage": 20.0,
                    "teams": [{"headcount": 1, "shifts": [{"days": WEEKDAYS5, "start_hour": 8, "end_hour": 18}]}],
                }
            }
        },
        "start_state": {"stages": {"iop": {"waitlist": waitlist}}},
    }


def S(week: int, day: int) -> float:
    """Session start: Mon (0), Wed (2) or Fri (4) of ``week`` at 10:00."""
    return session_time(week, day, 10.0)


def sessions_rows(records):
    s = records["sessions"].sort_values(["t_start", "group"])
    return [
        (round(float(r.t_start), 9), str(r.status), int(r.members), int(r.expected), int(r.attendees), int(r.facilitators))
        for r in s.itertuples()
    ]


def test_exact_trace_full_attendance(monkeypatch):
    """Phase 1: one week at 3 sessions/week; phase 2: one week at 1 session/week; attendance 1.

    Patients -1, -2, -3 are on the waitlist on day 0 (start-state patients have negative ids,
    made in that order).  The group seats two: -1 and -2 join at t=0, -3 waits.
      -1, -2: first session S(0,Mon); attend Mon/Wed/Fri of week 0 (3 of 3); in week 1 they are in
              phase 2 (elapsed 7 days), so they attend Mon only, and are not scheduled Wed/Fri.
              Complete 14 days after the first session: t = 14 + 10/24, which is S(2,Mon); the
              completion (scheduled at S(0,Mon)) fires before that session starts.
      -3:     takes the freed seat at 14 + 10/24 and starts at that very session S(2,Mon); attends
              Mon/Wed/Fri of week 2 and Mon of week 3; completes at S(4,Mon) = 28 + 10/24.
      week 4: nobody left -> "no_clients" sessions (rolling groups are planned even when empty).
    The horizon is 35 days: weeks 0-4.
    """
    spy = AttendanceSpy().install(monkeypatch)
    sc = validate_raw(
        trace_raw(1.0, [{"weeks": 1, "sessions_per_week": 3}, {"weeks": 1, "sessions_per_week": 1}], 3, 35), "trace"
    )
    rec = Model(sc, 0).run()

    r = lambda x: round(x, 9)  # noqa: E731
    want = [
        # (t_start, status, members, expected, attendees, facilitators)
        (r(S(0, 0)), "held", 2, 2, 2, 1),
        (r(S(0, 2)), "held", 2, 2, 2, 1),
        (r(S(0, 4)), "held", 2, 2, 2, 1),
        (r(S(1, 0)), "held", 2, 2, 2, 1),
        (r(S(1, 2)), "held", 2, 0, 0, 1),
        (r(S(1, 4)), "held", 2, 0, 0, 1),
        (r(S(2, 0)), "held", 1, 1, 1, 1),
        (r(S(2, 2)), "held", 1, 1, 1, 1),
        (r(S(2, 4)), "held", 1, 1, 1, 1),
        (r(S(3, 0)), "held", 1, 1, 1, 1),
        (r(S(3, 2)), "held", 1, 0, 0, 1),
        (r(S(3, 4)), "held", 1, 0, 0, 1),
        (r(S(4, 0)), "no_clients", 0, 0, 0, 0),
        (r(S(4, 2)), "no_clients", 0, 0, 0, 0),
        (r(S(4, 4)), "no_clients", 0, 0, 0, 0),
    ]
    got = sessions_rows(rec)
    assert got == want, "sessions table:\n" + "\n".join(map(str, got))

    # Per patient: sessions present at, scheduled for and attended.
    week01 = [S(0, 0), S(0, 2), S(0, 4), S(1, 0), S(1, 2), S(1, 4)]
    week23 = [S(2, 0), S(2, 2), S(2, 4), S(3, 0), S(3, 2), S(3, 4)]
    attended01 = [S(0, 0), S(0, 2), S(0, 4), S(1, 0)]
    attended23 = [S(2, 0), S(2, 2), S(2, 4), S(3, 0)]
    per = spy.per_patient()
    assert set(per) == {-1, -2, -3}, per.keys()
    for pid, present, att in ((-1, week01, attended01), (-2, week01, attended01), (-3, week23, attended23)):
        p_present, p_sched, p_att = per[pid]
        assert rounded(p_present) == rounded(present), f"patient {pid} present at {p_present}"
        assert rounded(p_sched) == rounded(att), f"patient {pid} scheduled at {p_sched}"
        assert rounded(p_att) == rounded(att), f"patient {pid} attended {p_att}"

    v = iop_visits(rec).set_index("patient_id")
    assert sorted(v.index) == [-3, -2, -1]
    want_v = {
        -1: (0.0, 0.0, S(0, 0), S(2, 0)),
        -2: (0.0, 0.0, S(0, 0), S(2, 0)),
        -3: (0.0, S(2, 0), S(2, 0), S(4, 0)),
    }
    for pid, (t_join, t_admit, t_first, t_leave) in want_v.items():
        row = v.loc[pid]
        got_v = (row["t_join"], row["t_admit"], row["t_first_session"], row["t_leave"])
        assert got_v == pytest.approx((t_join, t_admit, t_first, t_leave), abs=1e-9), f"patient {pid}: {got_v}"
        assert row["outcome"] == "completed" and row["next"] == "discharge" and row["track"] == "t", row.to_dict()

    # One counselor booking per held session, exactly the session's hours.
    b = rec["bookings"].sort_values("t_start")
    held_times = [x[0] for x in want if x[1] == "held"]
    assert rounded(b["t_start"]) == held_times, rounded(b["t_start"])
    assert np.allclose(b["t_end"] - b["t_start"], 2.0 / 24.0), "group bookings must last 2 h"


def test_exact_trace_dropout_after_missed_sessions(monkeypatch):
    """One phase of two weeks at ONE session a week, attendance 0, dropout after 2 misses.

    Only scheduled sessions count as missed: the Wed/Fri sessions a member is not
    scheduled for do not move the count.
      -1, -2: seated at 0; miss S(0,Mon) (1st miss); not scheduled Wed/Fri of week 0;
              miss S(1,Mon) (2nd miss) -> dropped_out at S(1,Mon) = 7 + 10/24.
      -3:     takes a freed seat at S(1,Mon), after that session ran; first session S(1,Wed);
              misses it (1st), not scheduled S(1,Fri), misses S(2,Mon) (2nd) -> dropped_out
              at 14 + 10/24.
      S(2,Wed), S(2,Fri): no clients.  Horizon 21 days: weeks 0-2.
    """
    spy = AttendanceSpy().install(monkeypatch)
    sc = validate_raw(trace_raw(0.0, [{"weeks": 2, "sessions_per_week": 1}], 2, 21), "trace0")
    rec = Model(sc, 0).run()
    r = lambda x: round(x, 9)  # noqa: E731
    want = [
        (r(S(0, 0)), "held", 2, 2, 0, 1),
        (r(S(0, 2)), "held", 2, 0, 0, 1),
        (r(S(0, 4)), "held", 2, 0, 0, 1),
        (r(S(1, 0)), "held", 2, 2, 0, 1),
        (r(S(1, 2)), "held", 1, 1, 0, 1),
        (r(S(1, 4)), "held", 1, 0, 0, 1),
        (r(S(2, 0)), "held", 1, 1, 0, 1),
        (r(S(2, 2)), "no_clients", 0, 0, 0, 0),
        (r(S(2, 4)), "no_clients", 0, 0, 0, 0),
    ]
    got = sessions_rows(rec)
    assert got == want, "sessions table:\n" + "\n".join(map(str, got))

    per = spy.per_patient()
    first = [S(0, 0), S(0, 2), S(0, 4), S(1, 0)]
    for pid in (-1, -2):
        present, sched, att = per[pid]
        assert rounded(present) == rounded(first), f"patient {pid} present at {present}"
        assert rounded(sched) == rounded([S(0, 0), S(1, 0)]), f"patient {pid} scheduled at {sched}"
        assert att == [], f"patient {pid} attended {att}"
    present, sched, att = per[-3]
    assert rounded(present) == rounded([S(1, 2), S(1, 4), S(2, 0)]), present
    assert rounded(sched) == rounded([S(1, 2), S(2, 0)]), sched
    assert att == []

    v = iop_visits(rec).set_index("patient_id")
    want_v = {
        -1: (0.0, S(0, 0), S(1, 0)),
        -2: (0.0, S(0, 0), S(1, 0)),
        -3: (S(1, 0), S(1, 2), S(2, 0)),
    }
    for pid, (t_admit, t_first, t_leave) in want_v.items():
        row = v.loc[pid]
        got_v = (row["t_admit"], row["t_first_session"], row["t_leave"])
        assert got_v == pytest.approx((t_admit, t_first, t_leave), abs=1e-9), f"patient {pid}: {got_v}"
        assert row["outcome"] == "dropped_out", f"patient {pid}: outcome {row['outcome']}"
    ep = rec["episodes"]
    assert ep["t_program_completed"].isna().all(), "dropouts do not complete a program"


def test_trace_program_sessions_completion(monkeypatch):
    """``program.sessions: 4``: completion at the END of the 4th attended session.

    Attendance 1, 3 sessions/week: -1/-2 attend S(0,Mon), S(0,Wed), S(0,Fri), S(1,Mon) and leave
    at S(1,Mon) + 2 h; -3 joins then and starts at S(1,Wed); attends Wed, Fri, S(2,Mon), S(2,Wed);
    leaves at S(2,Wed) + 2 h.
    """
    spy = AttendanceSpy().install(monkeypatch)
    raw = trace_raw(1.0, [{"weeks": 1, "sessions_per_week": 3}], 3, 21)
    raw["stages"]["iop"]["program"]["sessions"] = 4
    rec = Model(validate_raw(raw, "trace_n"), 0).run()
    two_h = 2.0 / 24.0
    v = iop_visits(rec).set_index("patient_id")
    want_v = {
        -1: (0.0, S(0, 0), S(1, 0) + two_h),
        -2: (0.0, S(0, 0), S(1, 0) + two_h),
        -3: (S(1, 0) + two_h, S(1, 2), S(2, 2) + two_h),
    }
    for pid, (t_admit, t_first, t_leave) in want_v.items():
        row = v.loc[pid]
        got_v = (row["t_admit"], row["t_first_session"], row["t_leave"])
        assert got_v == pytest.approx((t_admit, t_first, t_leave), abs=1e-9), f"patient {pid}: {got_v}"
        assert row["outcome"] == "completed"
    per = spy.per_patient()
    assert rounded(per[-3][2]) == rounded([S(1, 2), S(1, 4), S(2, 0), S(2, 2)]), per[-3][2]
    for pid in (-1, -2):
        assert len(per[pid][2]) == 4, per[pid]


# --------------------------------------------------------------------------- cohorts


def cohort_raw(min_size: int, max_size: int, every: int | None, rate: float, seed: int = 11) -> dict:
    raw = iop_only_raw(seed=seed, horizon_days=364)
    raw["referrals"]["referrals_per_week"] = rate
    raw["stages"]["iop"]["patience_days"] = {"dist": "exponential", "mean": 60.0}
    raw["stages"]["iop"]["program"] = {"phases": [{"weeks": 2, "sessions_per_week": 3}], "missed_sessions_dropout": 3}
    t = track_of(raw)
    t.update(admission="cohort", min_group_size=min_size, max_group_size=max_size, groups=1)
    if every is not None:
        t["cohort_start_every_weeks"] = every
    return raw


def cohorts_of(records):
    """Cohorts of a one-group cohort track: (start time, visits) in start order."""
    v = iop_visits(records)
    started = v[v["t_first_session"].notna()]
    return [(t, g) for t, g in started.groupby("t_first_session")]


def test_cohort_starts_full_enough_and_closed(monkeypatch):
    """One cohort group (min 4, max 6).  Who is present at each held session comes from a spy on the
    attendance step, independently of the visits table's ``t_first_session``."""
    spy = AttendanceSpy().install(monkeypatch)
    sc = validate_raw(cohort_raw(4, 6, None, 3.0), "cohort")
    rec = Model(sc, 0).run()
    v = iop_visits(rec).set_index("patient_id")
    held = rec["sessions"][rec["sessions"]["status"] == "held"]
    assert len(spy.log) == len(held), "one attendance step per held session"
    starts: list[tuple[float, set]] = []
    prev: set | None = None
    for ts, rows in spy.log:
        present = {pid for pid, _s, _a in rows}
        assert present, f"a held session at {ts:.3f} with nobody present"
        if prev is None or not present <= prev:
            # A new cohort: entirely new people, at least min_group_size, all starting now.
            assert prev is None or not (present & prev), f"{ts:.3f}: a cohort mixes {present & prev} with newcomers"
            assert 4 <= len(present) <= 6, f"cohort starting at {ts:.3f} has {len(present)} members (min 4, max 6)"
            starts.append((ts, present))
        prev = present
    assert len(starts) >= 5, f"only {len(starts)} cohorts"
    seen: set = set()
    prev_end = -math.inf
    for k, (t0, members) in enumerate(starts):
        assert not (members & seen), f"cohort {k}: {members & seen} were in an earlier cohort"
        seen |= members
        rows = v.loc[sorted(members)]
        # All members share the same first session, the cohort's start, and nobody else has it.
        assert np.allclose(rows["t_first_session"], t0), f"cohort {k} at {t0:.3f}: t_first {rows['t_first_session'].tolist()}"
        sharing = set(v.index[np.isclose(v["t_first_session"].fillna(-1.0), t0)])
        assert sharing == members, f"cohort {k}: t_first_session {t0:.3f} shared by {sharing}, cohort is {members}"
        assert (rows["t_admit"] <= t0 + EPS).all(), f"cohort {k}: someone seated after the start {t0}"
        # No newcomer joins a running cohort: all were seated after the previous cohort's last member left.
        assert (rows["t_admit"] >= prev_end - EPS).all(), (
            f"cohort {k} (start {t0:.3f}): a member seated at {rows['t_admit'].min():.3f}, before the previous "
            f"cohort's last member left at {prev_end:.3f}"
        )
        first = held[np.isclose(held["t_start"], t0)]
        assert len(first) == 1 and int(first["members"].iloc[0]) == len(members), f"cohort {k}: first session {first}"
        ended = rows["t_leave"].to_numpy(dtype=float)
        prev_end = math.inf if np.isnan(ended).any() else float(ended.max())
    # Everyone who started belongs to a cohort; seated patients who never started are still waiting
    # for the group forming at the end of the run.
    started = set(v.index[v["t_first_session"].notna()])
    assert started == seen, f"started outside a detected cohort: {started ^ seen}"
    never = v[v["t_admit"].notna() & v["t_first_session"].isna()]
    assert never["t_leave"].isna().all() and len(never) <= 6, never


def test_cohort_start_every_weeks_starts_smaller_cohorts_on_set_weeks():
    every = 2
    sc = validate_raw(cohort_raw(6, 6, every, 1.5, seed=3), "cohort_every")
    rec = Model(sc, 0).run()
    v = iop_visits(rec)
    cohorts = cohorts_of(rec)
    small = [(t, len(g)) for t, g in cohorts if len(g) < 6]
    assert len(small) >= 3, f"expected several cohorts below min_group_size: {[(t, len(g)) for t, g in cohorts]}"
    for t0, n in small:
        assert math.floor(t0 / 7.0 + EPS) % every == 0, f"a cohort of {n} < min started at {t0:.3f} (week {t0 / 7:.2f})"
    # Nobody seated in the forming group lets a session of a set week pass without starting,
    # and nobody waits for a session at which the group already has min_group_size.
    admit = v["t_admit"].to_numpy(dtype=float)
    first = v["t_first_session"].to_numpy(dtype=float)
    leave = v["t_leave"].to_numpy(dtype=float)
    weeks = int(sc.horizon_days // 7)
    for w in range(weeks):
        for d in (0, 2, 4):
            ts = session_time(w, d)
            waiting = (admit < ts - EPS) & ~(first <= ts + EPS) & ~(leave <= ts + EPS)
            n = int(waiting.sum())
            assert n < 6, f"{n} seated patients did not start at {ts:.3f} although min_group_size is 6"
            if w % every == 0:
                assert n == 0, f"week {w} is a start week but {n} seated patients did not start at {ts:.3f}"


def test_cohort_first_session_is_a_held_session():
    raw = cohort_raw(3, 6, None, 3.0, seed=4)
    # The only counselor works Mon and Wed: every Friday session is cancelled.
    raw["staff"]["roles"]["counselor"]["teams"] = [
        {"headcount": 1, "shifts": [{"days": ["mon", "wed"], "start_hour": 8, "end_hour": 16}]}
    ]
    rec = Model(validate_raw(raw, "cohort_cancel"), 0).run()
    s = rec["sessions"]
    assert (s["status"] == "cancelled").any(), "Friday sessions should be cancelled"
    held = s.loc[s["status"] == "held", "t_start"].to_numpy()
    firsts = iop_visits(rec)["t_first_session"].dropna().unique()
    bad = [t for t in firsts if not np.isclose(held, t).any()]
    assert not bad, f"cohorts 'started' at sessions that were not held: {sorted(bad)[:5]}"


# --------------------------------------------------------------------------- availability


def availability_raw() -> dict:
    raw = iop_only_raw(seed=77, horizon_days=182)
    raw["referrals"]["referrals_per_week"] = 6.0
    raw["stages"]["iop"]["availability"] = {"daytime": 0.3, "evenings": 0.3, "flexible": 0.2, "never": 0.2}
    raw["stages"]["iop"]["patience_days"] = {"dist": "exponential", "mean": 14.0}
    raw["stages"]["iop"]["tracks"] = {
        "day": {
            "accepts": ["daytime", "flexible"],
            "groups": 1,
            "max_group_size": 6,
            "sessions": [{"days": ["mon", "wed", "fri"], "start_hour": 10, "hours": 3}],
            "facilitators": [{"role": "counselor", "count": 1}],
            "attendance": 0.85,
        },
        "evening": {
            "accepts": ["evenings", "flexible"],
            "groups": 1,
            "max_group_size": 6,
            "sessions": [{"days": ["mon", "tue", "thu"], "start_hour": 18, "hours": 3}],
            "facilitators": [{"role": "counselor", "count": 1}],
            "attendance": 0.85,
        },
    }
    raw["staff"]["roles"]["counselor"]["teams"] = [
        {"headcount": 1, "shifts": [{"days": WEEKDAYS5, "start_hour": 8, "end_hour": 16}]},
        {"headcount": 1, "shifts": [{"days": WEEKDAYS5, "start_hour": 13, "end_hour": 21}]},
    ]
    return raw


@pytest.mark.parametrize("which", ["custom", "weekend"])
def test_patients_only_seated_in_tracks_accepting_their_availability(which, monkeypatch):
    seated: list[tuple[int, int, str]] = []
    orig = iopsim.engine.iop.TrackedIOP._join

    def spy(stage, group, p, rec):
        seated.append((p.id, p.episode, group.track.name))
        return orig(stage, group, p, rec)

    monkeypatch.setattr(iopsim.engine.iop.TrackedIOP, "_join", spy)
    sc = validate_raw(availability_raw(), "avail") if which == "custom" else scenario_of("weekend")
    model = Model(sc, 0)
    rec = model.run()
    stage = model.stages["iop"]
    accepts = {n: set(t.accepts) for n, t in sc.stages.iop.tracks.items()}

    def cls(pid, episode):
        # Availability is a pure function of (seed, replication, episode, patient): rebuild the
        # patient and draw it through the stage, exactly as the model did.
        return stage.availability(Patient(int(pid), int(episode), ""))

    # Cross-check the draw independently: the "iop.availability" patient stream, block of 256
    # uniforms per (episode, id // 256), inverted through the cumulative shares in file order.
    shares = list(sc.stages.iop.availability.items())
    ids = iop_visits(rec)[["patient_id", "episode"]].to_numpy(dtype=int)
    assert len(ids) > 20, f"only {len(ids)} IOP visits"
    for pid, ep in ids[:50]:
        ns, index = (int(ep), int(pid)) if pid >= 0 else (10_000 + int(ep), -int(pid) - 1)
        u = generator(sc.seed, 0, "iop.availability", ns, index // BLOCK).random(BLOCK)[index % BLOCK]
        c, acc = shares[-1][0], 0.0
        for name, share in shares:
            acc += share
            if u < acc:
                c = name
                break
        assert cls(pid, ep) == c, f"patient {pid}/{ep}: stage says {cls(pid, ep)!r}, stream says {c!r}"

    assert seated, "nobody was seated"
    for pid, ep, track in seated:
        a = cls(pid, ep)
        assert a in accepts[track], f"patient {pid}/{ep} of class {a!r} seated in track {track!r} ({accepts[track]})"

    v = iop_visits(rec)
    track = v["track"].fillna("").astype(str)
    admitted = v["t_admit"].notna().to_numpy()
    classes = np.array([cls(p, e) for p, e in zip(v["patient_id"], v["episode"])], dtype=object)
    feasible = {c: sorted(n for n, a in accepts.items() if c in a) for c in set(classes)}
    for c, tr, adm, outcome, row in zip(classes, track, admitted, v["outcome"].astype(str), v.itertuples()):
        if adm:
            assert tr in feasible[c], f"admitted visit of class {c!r} in track {tr!r}: {row}"
        elif not feasible[c]:
            assert tr == "" and outcome in ("reneged", "in_system", "relapsed"), (
                f"class {c!r} fits no track but visit ended {outcome!r} with track {tr!r}: {row}"
            )
        else:
            assert tr == "|".join(t for t in accepts if c in accepts[t]), f"waiting visit of {c!r} lists {tr!r}"
    if which == "custom":
        hopeless = classes == "never"
        assert hopeless.sum() > 5, "too few patients of the class no track accepts"
        assert not admitted[hopeless].any(), "a patient whose class no track accepts was admitted"
        ended = hopeless & (v["outcome"].astype(str) != "in_system").to_numpy()
        assert ended.sum() > 5 and (v["outcome"].astype(str).to_numpy()[ended] == "reneged").all(), (
            "patients no track accepts must leave the waitlist as reneged"
        )
        assert (track.to_numpy()[hopeless] == "").all(), "their track column must be empty"
        k = track_kpis(rec, sc, 0.0)
        assert k["iop_reneged_no_feasible_track"] == ended.sum(), (k["iop_reneged_no_feasible_track"], ended.sum())


# --------------------------------------------------------------------------- phases


def test_scheduled_sessions_per_week_never_exceed_the_phase_limit():
    """One seat, four sessions a week, phases 3 -> 1 -> 2 sessions a week; the sessions
    table's ``expected`` (0/1) is attributed to the one member present."""
    raw = iop_only_raw(seed=8, horizon_days=364, referrals={
        "referrals_per_week": 0.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}})
    phases = [{"weeks": 2, "sessions_per_week": 3}, {"weeks": 2, "sessions_per_week": 1}, {"weeks": 1, "sessions_per_week": 2}]
    raw["stages"]["iop"]["program"] = {"phases": phases, "missed_sessions_dropout": 2}
    raw["stages"]["iop"]["patience_days"] = None
    raw["start_state"] = {"stages": {"iop": {"waitlist": 30}}}
    t = track_of(raw)
    t.update(max_group_size=1, attendance=0.8,
             sessions=[{"days": ["mon", "tue", "wed", "thu"], "start_hour": 10, "hours": 2}])
    rec = Model(validate_raw(raw, "phases"), 0).run()
    s = rec["sessions"]
    held = s[s["status"] == "held"].sort_values("t_start")
    assert (held["members"] == 1).all()
    v = iop_visits(rec)
    v = v[v["t_first_session"].notna()]
    assert len(v) >= 8, f"only {len(v)} members started"
    assert len(set(np.round(v["t_first_session"].to_numpy() % 7.0, 6))) >= 2, "members should start on different weekdays"
    ends = np.cumsum([p["weeks"] * 7.0 for p in phases])
    spw = [p["sessions_per_week"] for p in phases]
    # With one seat, the member at a held session is the one who started last at or before it
    # (rolling members start at the first session they are present at).
    firsts = v.sort_values("t_first_session")
    t_firsts = firsts["t_first_session"].to_numpy(dtype=float)
    owners = firsts["patient_id"].to_numpy()
    count: dict[tuple[int, int], int] = {}
    for ts, expected in zip(held["t_start"], held["expected"]):
        i = int(np.searchsorted(t_firsts, ts + EPS, side="right")) - 1
        assert i >= 0, f"held session at {ts:.3f} before anyone started"
        pid, t_first = int(owners[i]), t_firsts[i]
        week = math.floor(ts / 7.0 + EPS)
        phase = min(int(np.searchsorted(ends, ts - t_first + EPS, side="right")), len(phases) - 1)
        used = count.get((pid, week), 0)
        if expected:
            assert used + 1 <= spw[phase], (
                f"patient {pid}: scheduled {used + 1} sessions in week {week} in phase {phase + 1} ({spw[phase]}/week)"
            )
            count[(pid, week)] = used + 1
        else:
            assert used >= spw[phase], (
                f"patient {pid} not scheduled at {ts:.3f} with only {used} of {spw[phase]} used (phase {phase + 1})"
            )
    assert sum(count.values()) == int(held["expected"].sum())
    # Weeks with 3, 2 and 1 scheduled sessions all occur (the limits are exercised).
    assert {1, 2, 3} <= set(count.values()), sorted(set(count.values()))


def test_program_end_tie_with_a_session_is_resolved_consistently(monkeypatch):
    """Five-week program, one seat, attendance 1, 10 patients on the waitlist.  Each completes exactly
    35 days after their first session, i.e. at a Monday 10:00 session time, and the next patient starts
    at that session.  So patient -k starts at 35 (k-1) + 10/24 and attends nothing at or after its end.
    (In floating point 105 + 10/24 + 35 = 140.41666666666669 > 140 + 10/24 = 140.41666666666666,
    so patient -4 attends the session of 140.4167 and -5 starts a day late.)"""
    spy = AttendanceSpy().install(monkeypatch)
    raw = trace_raw(1.0, [{"weeks": 5, "sessions_per_week": 3}], 3, 364, waitlist=10)
    track_of(raw)["max_group_size"] = 1
    rec = Model(validate_raw(raw, "ties"), 0).run()
    v = iop_visits(rec).set_index("patient_id")
    per = spy.per_patient()
    problems = []
    for k in range(1, 11):
        want_first = 35.0 * (k - 1) + 10.0 / 24.0
        t_first = v.loc[-k, "t_first_session"]
        if not math.isclose(t_first, want_first, abs_tol=1e-6):
            problems.append(f"patient {-k} started at {t_first:.4f}, want {want_first:.4f}")
        late = [t for t in per.get(-k, ([], [], []))[0] if t >= t_first + 35.0 - 1e-6]
        if late:
            problems.append(f"patient {-k} present at {late} after the program ended at {t_first + 35.0:.4f}")
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------------------- monotonicity (CRN)


@functools.lru_cache(maxsize=None)
def _kpis(raw_json: str, rep: int) -> dict:
    return run_replication(validate_raw(json.loads(raw_json), "mono"), rep).kpis


def _paired_diff(base_raw: dict, more_raw: dict, reps: int, key: str):
    """Mean paired difference (more - base) of ``key`` over replications 0..reps-1 (same seeds: CRN)."""
    base = np.array([_kpis(json.dumps(base_raw, sort_keys=True), r)[key] for r in range(reps)])
    plus = np.array([_kpis(json.dumps(more_raw, sort_keys=True), r)[key] for r in range(reps)])
    return mean_ci(plus - base), float(np.mean(base)), float(np.mean(plus))


def mono_raw(rate: float, groups: int = 1, counselors: int = 3) -> dict:
    raw = iop_only_raw(seed=606, horizon_days=210, warmup_days=28)
    raw["referrals"]["referrals_per_week"] = rate
    raw["stages"]["iop"]["program"] = {"phases": [{"weeks": 4, "sessions_per_week": 3}], "missed_sessions_dropout": 3}
    track_of(raw).update(groups=groups, max_group_size=8)
    raw["staff"]["roles"]["counselor"]["teams"][0]["headcount"] = counselors
    return raw


@pytest.mark.parametrize("key", ["iop_admitted_wait_mean_days", "iop_track_t_wait_to_start_mean_days"])
def test_more_groups_shorten_waits_when_overloaded(key):
    """8 seats for ~4-week stays serve ~2 a week; 4 referrals a week overload them. A second group
    (with a counselor free to run it) must shorten the wait, paired on the same seeds."""
    (mean, _sd, lo, hi, n), b, p = _paired_diff(mono_raw(4.0, groups=1), mono_raw(4.0, groups=2), 10, key)
    assert n == 10
    assert hi < 0, f"{key}: +1 group changed the mean by {mean:.2f} d (CI {lo:.2f}..{hi:.2f}); base {b:.2f}, +1 {p:.2f}"


@pytest.mark.parametrize("key", ["iop_admitted_wait_mean_days", "iop_track_t_wait_to_start_mean_days"])
def test_more_groups_never_lengthen_waits_when_not_overloaded(key):
    (mean, _sd, lo, hi, n), b, p = _paired_diff(mono_raw(1.0, groups=1), mono_raw(1.0, groups=2), 10, key)
    assert n == 10
    assert lo <= 0, f"{key}: +1 group lengthened the wait by {mean:.3f} d (CI {lo:.3f}..{hi:.3f}); base {b:.3f}, +1 {p:.3f}"


def test_more_counselors_shorten_waits_when_counselors_bind():
    """Two groups but one counselor (one group's sessions are cancelled); a second counselor
    must shorten the IOP wait, paired on the same seeds."""
    key = "iop_admitted_wait_mean_days"
    (mean, _sd, lo, hi, n), b, p = _paired_diff(
        mono_raw(4.0, groups=2, counselors=1), mono_raw(4.0, groups=2, counselors=2), 10, key
    )
    assert n == 10
    assert hi < 0, f"+1 counselor changed the mean wait by {mean:.2f} d (CI {lo:.2f}..{hi:.2f}); base {b:.2f}, +1 {p:.2f}"


# --------------------------------------------------------------------------- cancel vs merge


def short_raw(when_short: str) -> dict:
    raw = iop_only_raw(seed=321, horizon_days=182)
    raw["referrals"]["referrals_per_week"] = 1.5
    raw["stages"]["iop"]["when_short"] = when_short
    track_of(raw).update(groups=2, max_group_size=6)
    raw["staff"]["roles"]["counselor"]["teams"][0]["headcount"] = 1  # one counselor, two groups
    return raw


def test_cancel_when_short_of_staff():
    sc = validate_raw(short_raw("cancel"), "cancel")
    rec = Model(sc, 0).run()
    s = rec["sessions"]
    status = s["status"].astype(str)
    cancelled = s[status == "cancelled"]
    assert len(cancelled) > 5, status.value_counts().to_dict()
    assert (status != "merged").all(), "when_short: cancel must never merge"
    assert (cancelled["members"] > 0).all() and (cancelled["attendees"] == 0).all() and (cancelled["facilitators"] == 0).all()
    assert (cancelled["merged_into"] == -1).all()
    u = rec["unmet"]
    ug = u[(u["activity"] == "group") & (u["role"] == "counselor")]
    assert len(ug) == len(cancelled), f"{len(ug)} unmet rows for {len(cancelled)} cancelled sessions"
    assert ug["hours"].sum() == pytest.approx(3.0 * len(cancelled)), "unmet hours = facilitators x session hours"
    assert sorted(np.round(ug["t"], 9)) == sorted(np.round(cancelled["t_start"], 9))
    # At every cancelled time the one counselor runs another group of the track.
    held_at = set(np.round(s.loc[status == "held", "t_start"], 9))
    assert set(np.round(cancelled["t_start"], 9)) <= held_at


def test_merge_when_short_of_staff():
    sc = validate_raw(short_raw("merge"), "merge")
    rec = Model(sc, 0).run()
    s = rec["sessions"]
    status = s["status"].astype(str)
    merged = s[status == "merged"]
    assert len(merged) > 5, status.value_counts().to_dict()
    held = s[status == "held"].set_index(["track", "t_start", "group"])
    for row in merged.itertuples():
        key = (row.track, row.t_start, row.merged_into)
        assert row.merged_into >= 0 and row.merged_into != row.group, row
        assert key in held.index, f"merged {row} points to {key}, not a held session of the same track and time"
        assert held.loc[key, "members"] <= 6
    # Cancelled only when the merge would not fit.
    for row in s[status == "cancelled"].itertuples():
        hosts = s[(status == "held") & (s["track"] == row.track) & np.isclose(s["t_start"], row.t_start)]
        assert (hosts["members"] + row.members > 6).all(), f"{row} could have been merged into {hosts}"
    u = rec["unmet"]
    ug = u[u["activity"] == "group"]
    assert len(ug) == int(((status == "merged") | (status == "cancelled")).sum()), "unstaffed hours are unmet demand"
    k = run_replication(sc, 0).kpis
    assert k["iop_track_t_sessions_merged"] == len(merged)
    assert k["staff_counselor_unmet_hours"] >= 3.0 * len(merged)


def _idle_on_shift(scenario, bookings, role: str, start: float, end: float) -> list[int]:
    """Ids of members of ``role`` on shift for all of [start, end) and booked for none of it."""
    from iopsim.engine.staff import roles_of

    out, mid = [], 0
    for r, people in roles_of(scenario).items():
        for shifts in people:
            if r == role:
                day, h0, h1 = int(start % 7.0 + EPS), (start % 1.0) * 24.0, (end % 1.0 or 1.0) * 24.0
                on = any(
                    s.start_hour <= h0 + 1e-6 and h1 <= s.end_hour + 1e-6 and day in [
                        ("mon", "tue", "wed", "thu", "fri", "sat", "sun").index(d) for d in s.days]
                    for s in shifts
                )
                mine = bookings[bookings["member"] == mid]
                busy = ((mine["t_start"] < end - EPS) & (mine["t_end"] > start + EPS)).any()
                if on and not busy:
                    out.append(mid)
            mid += 1
    return out


def test_no_session_cancelled_while_a_facilitator_is_idle():
    raw = short_raw("cancel")
    track_of(raw)["groups"] = 3
    sc = validate_raw(raw, "idle_cancel")
    rec = Model(sc, 0).run()
    s = rec["sessions"]
    cancelled = s[s["status"] == "cancelled"]
    assert len(cancelled) > 10, "the scenario must cancel sessions"
    problems = []
    for row in cancelled.itertuples():
        idle = _idle_on_shift(sc, rec["bookings"], "counselor", row.t_start, row.t_start + row.hours / 24.0)
        if idle:
            others = s[np.isclose(s["t_start"], row.t_start)][["group", "status", "members"]].to_dict("records")
            problems.append(f"t={row.t_start:.3f} group {row.group} ({row.members} members) cancelled, "
                            f"counselor(s) {idle} idle; sessions then: {others}")
    assert not problems, f"{len(problems)} cancelled sessions with idle staff, e.g. " + "; ".join(problems[:3])
