"""Extreme and degenerate inputs, and hand-computed deterministic traces.

Helpers live in this file on purpose (no dependency on conftest.py).  Most
tests build their own scenario (``pathway_raw``: all four levels of care as
plain slot stages, intake with a roster, relapse and returns) so that they do
not depend on how the shipped baseline is tuned.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from iopsim.engine.model import Model, Patient
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import EXITS, WEEKDAYS, resolve_raw, validate_raw

BASELINE = Path(__file__).resolve().parent.parent / "scenarios" / "baseline.yaml"
IN_SYSTEM = "in_system"
NON_INTAKE = ("residential", "php", "iop", "aftercare")


def lognormal(median, sigma):
    return {"dist": "lognormal", "median": median, "sigma": sigma}


def fixed(value):
    return {"dist": "fixed", "value": value}


def pathway_raw(**overrides) -> dict:
    """A complete, busy pathway with plain (slot) stages at all four levels of care."""
    raw = {
        "name": "pathway",
        "seed": 4242,
        "horizon_days": 730,
        "referrals": {
            "referrals_per_week": 8.0,
            "weekday_profile": [1.2, 1.2, 1.2, 1.2, 1.1, 0.6, 0.5],
            "sources": {
                "self": {
                    "share": 0.6,
                    "placement": {"residential": 0.2, "php": 0.2, "iop": 0.4, "outpatient": 0.1, "not_eligible": 0.1},
                },
                "hospital": {"share": 0.4, "placement": {"residential": 0.4, "php": 0.2, "iop": 0.4}},
            },
        },
        "intake": {
            "clinicians": 1,
            "roster": {"shifts": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start_hour": 9, "end_hour": 17}]},
            "assessment_hours": {"dist": "triangular", "low": 1.0, "mode": 1.5, "high": 2.5},
            "patience_days": {
                "dist": "empirical", "values": [0.5, 2.0, 5.0, 3650], "weights": [0.28, 0.31, 0.03, 0.38],
            },
        },
        "stages": {
            "residential": {
                "capacity": 4,
                "los_days": lognormal(20, 0.5),
                "patience_days": {"dist": "exponential", "mean": 20},
                "exits": {
                    "dropped_out": {"probability": 0.15, "days": lognormal(7, 0.8)},
                    "transferred": {"probability": 0.10, "days": {"dist": "uniform", "low": 0, "high": 20}},
                },
                "step_down": {"php": 0.3, "iop": 0.4, "aftercare": 0.1, "discharge": 0.2},
            },
            "php": {
                "capacity": 3,
                "los_days": lognormal(15, 0.5),
                "patience_days": {"dist": "exponential", "mean": 20},
                "exits": {"dropped_out": {"probability": 0.2, "days": lognormal(5, 0.8)}},
                "step_down": {"iop": 0.7, "discharge": 0.3},
                "overflow_to": "iop",
            },
            "iop": {
                "capacity": 8,
                "los_days": lognormal(45, 0.5),
                "patience_days": {"dist": "exponential", "mean": 30},
                "exits": {
                    "dropped_out": {"probability": 0.25, "days": lognormal(25, 0.7)},
                    "terminated": {"probability": 0.10, "days": lognormal(30, 0.6)},
                },
                "step_down": {"aftercare": 0.6, "discharge": 0.4},
            },
            "aftercare": {
                "capacity": 10,
                "los_days": lognormal(90, 0.4),
                "patience_days": {"dist": "exponential", "mean": 14},
                "exits": {"dropped_out": {"probability": 0.3, "days": {"dist": "exponential", "mean": 30}}},
            },
        },
        "relapse": {
            "days": {"dist": "loglogistic", "alpha": 200, "beta": 0.8},
            "return_probability": 0.5,
            "days_to_return": {"dist": "exponential", "mean": 14},
        },
    }
    raw.update(overrides)
    return copy.deepcopy(raw)


def visit_tuples(visits) -> list[tuple]:
    """(patient_id, episode, stage, t_join, t_admit, t_leave, outcome) rounded to 1e-9 (NaN -> None)."""

    def r(x):
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else round(float(x), 9)

    out = []
    for row in visits.itertuples(index=False):
        out.append((int(row.patient_id), int(row.episode), str(row.stage), r(row.t_join), r(row.t_admit),
                    r(row.t_leave), str(row.outcome)))
    return sorted(out, key=lambda t: (t[3], t[0], t[1]))


# --------------------------------------------------------------------------- no referrals


@pytest.mark.parametrize("source", ["pathway", "baseline"])
@pytest.mark.parametrize("how", ["rate_zero", "months_zero"])
def test_zero_referrals_zero_admissions(source, how):
    raw = pathway_raw() if source == "pathway" else copy.deepcopy(resolve_raw(BASELINE))
    raw["start_state"] = {}
    if how == "rate_zero":
        raw["referrals"]["referrals_per_week"] = 0.0
    else:
        raw["referrals"]["month_multipliers"] = [0.0] * 12
    scenario = validate_raw(raw, "test")
    res = run_replication(scenario, 0)
    rec, k = res.records, res.kpis
    assert len(rec["episodes"]) == 0, f"{len(rec['episodes'])} episodes without referrals"
    assert len(rec["visits"]) == 0, f"{len(rec['visits'])} visits without referrals"
    stages = (["intake"] if scenario.intake else []) + list(scenario.stages.enabled())
    for stage in stages:
        assert k[f"{stage}_admissions"] == 0, f"{stage} admissions {k[f'{stage}_admissions']}"
        assert k[f"{stage}_census_mean"] == 0 and k[f"{stage}_waitlist_max"] == 0, f"{stage}: non-zero levels"
        assert math.isnan(k[f"{stage}_admitted_wait_mean_days"]), f"{stage}: a mean wait of nobody must be NaN"
    assert k["referrals"] == 0 and k["programs_completed"] == 0, "referrals/programs must be 0"
    lv = rec["levels"]
    assert len(lv) == len(stages) * scenario.horizon_days, "level series must still cover every day"
    assert (lv[["census_mean", "census_max", "waitlist_mean", "waitlist_max"]] == 0).all().all(), "levels not 0"


# --------------------------------------------------------------------------- unlimited capacity


def test_unlimited_capacity_zero_waits_everywhere():
    raw = pathway_raw()
    for stage in NON_INTAKE:
        raw["stages"][stage].pop("capacity", None)
    raw["referrals"]["referrals_per_week"] = 15.0
    scenario = validate_raw(raw, "test")
    for rep in range(3):
        res = run_replication(scenario, rep)
        v, k = res.records["visits"], res.kpis
        s = v[v["stage"] != "intake"]
        assert len(s) > 500, f"rep {rep}: only {len(s)} stage visits"
        assert set(s["stage"]) == set(NON_INTAKE), f"rep {rep}: stages visited {set(s['stage'])}"
        waits = s["t_admit"].to_numpy(float) - s["t_join"].to_numpy(float)
        assert not np.isnan(waits).any(), f"rep {rep}: someone never admitted: {s[s['t_admit'].isna()].head()}"
        assert (waits == 0).all(), f"rep {rep}: non-zero waits {waits[waits != 0][:5]}"
        assert (s["stage"] == s["intended_stage"]).all(), "no overflow can happen with unlimited places"
        assert not ((s["outcome"] == "reneged").any()), "nobody can renege without a queue"
        for stage in NON_INTAKE:
            assert k[f"{stage}_admitted_wait_mean_days"] == 0.0, f"{stage}: mean wait {k[f'{stage}_admitted_wait_mean_days']}"
            assert k[f"{stage}_waitlist_max"] == 0.0, f"{stage}: waitlist max {k[f'{stage}_waitlist_max']}"


# --------------------------------------------------------------------------- exits


def test_dropout_probability_one_no_completions():
    raw = pathway_raw()
    raw["stages"]["iop"]["exits"] = {"dropped_out": {"probability": 1.0, "days": lognormal(25, 0.7)}}
    raw["stages"]["iop"]["capacity"] = 30
    scenario = validate_raw(raw, "test")
    res = run_replication(scenario, 0)
    v = res.records["visits"]
    iop = v[(v["stage"] == "iop") & v["t_admit"].notna()]
    assert len(iop) > 100, f"only {len(iop)} IOP admissions"
    outcomes = set(iop["outcome"])
    assert "completed" not in outcomes, f"IOP completions despite dropout probability 1: {outcomes}"
    assert outcomes <= {"dropped_out", IN_SYSTEM}, f"unexpected IOP outcomes {outcomes}"
    assert res.kpis["iop_completed"] == 0, "KPI iop_completed must be 0"
    assert res.kpis["iop_dropped_out"] == (iop["outcome"] == "dropped_out").sum() > 0, "KPI iop_dropped_out"
    assert iop["next"].isna().all(), "a dropout must not step down"


def _exit_population(n: int, exits: dict, los=None, horizon: int = 400, seed: int = 11):
    """n patients waiting for an unlimited IOP on day 0, nothing else: all admitted at t = 0."""
    raw = {
        "name": "exits",
        "seed": seed,
        "horizon_days": horizon,
        "referrals": {"referrals_per_week": 0.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {"iop": {"los_days": los or lognormal(30, 0.5), "exits": exits}},
        "start_state": {"stages": {"iop": {"waitlist": n}}},
    }
    return validate_raw(raw, "test")


def test_realised_exit_shares_match_probabilities():
    n = 20_000
    probs = {"dropped_out": 0.3, "transferred": 0.1}
    scenario = _exit_population(
        n,
        {
            "dropped_out": {"probability": probs["dropped_out"], "days": lognormal(20, 0.8)},
            # Exit-time distribution mostly *later* than the stay: still must happen before it.
            "transferred": {"probability": probs["transferred"], "days": lognormal(200, 0.5)},
        },
    )
    v = run_replication(scenario, 0).records["visits"]
    assert len(v) == n and v["t_admit"].eq(0).all(), "all patients must be admitted on day 0"
    assert (v["outcome"] != IN_SYSTEM).all(), "the horizon must be long enough for every stay to end"
    counts = v["outcome"].value_counts().to_dict()
    for exit_name, p in {**probs, "completed": 1 - sum(probs.values())}.items():
        lo, hi = stats.binom.ppf([0.0005, 0.9995], n, p)
        k = counts.get(exit_name, 0)
        assert lo <= k <= hi, f"{exit_name}: {k} of {n} outside the 99.9 % binomial band [{lo:.0f}, {hi:.0f}] for p={p}"
    assert set(counts) <= {"completed", *probs}, f"unexpected outcomes {counts}"


def test_exit_stays_never_longer_than_planned():
    n = 5_000
    scenario = _exit_population(
        n,
        {
            "dropped_out": {"probability": 0.3, "days": lognormal(20, 0.8)},
            "terminated": {"probability": 0.2, "days": fixed(40.0)},  # often later than the planned stay
            "other": {"probability": 0.1, "days": {"dist": "uniform", "low": 0, "high": 100}},
        },
    )
    model = Model(scenario, 0)
    v = model.run()["visits"]
    iop = model.stages["iop"]
    planned = np.array([iop.los.get(p.ns, p.index) for p in (Patient(int(pid), int(ep), "initial")
                                                            for pid, ep in zip(v["patient_id"], v["episode"]))])
    realised = v["t_leave"].to_numpy(float) - v["t_admit"].to_numpy(float)
    out = v["outcome"].astype(object).to_numpy()
    assert not np.isnan(realised).any(), "every stay must have ended"
    done = out == "completed"
    assert done.sum() > 1000, "too few completions to check"
    np.testing.assert_allclose(realised[done], planned[done], rtol=0, atol=1e-9,
                               err_msg="a completed stay must last exactly the planned stay")
    early = np.isin(out, list(EXITS))
    assert early.sum() > 2000, "too few early exits to check"
    too_long = early & (realised > planned + 1e-9)
    assert not too_long.any(), (
        f"{too_long.sum()} early exits longer than the planned stay, e.g. "
        f"{list(zip(out[too_long][:3], realised[too_long][:3], planned[too_long][:3]))}"
    )
    # Fixed exit time 40: exactly 40 when the plan is longer, else the planned stay itself.
    term = out == "terminated"
    np.testing.assert_allclose(realised[term], np.minimum(40.0, planned[term]), rtol=0, atol=1e-9,
                               err_msg="fixed exit time must be clipped to the planned stay")


def test_exit_time_beyond_planned_stay_same_for_equivalent_distributions():
    """An exit whose time cannot fall before the planned stay S: equivalent distributions must agree.

    ``fixed 60`` and ``empirical [60]`` are the same distribution; with S = 50 (fixed) the
    exit cannot happen before S.  Fixed clips the exit to S (realised stay 50); the generic
    path returns 0, i.e. a zero-length stay on the day of admission.
    """
    stays = {}
    for name, dist in {
        "fixed": fixed(60.0),
        "empirical": {"dist": "empirical", "values": [60.0]},
        "uniform": {"dist": "uniform", "low": 60.0, "high": 70.0},
    }.items():
        scenario = _exit_population(50, {"dropped_out": {"probability": 1.0, "days": dist}}, los=fixed(50.0))
        v = run_replication(scenario, 0).records["visits"]
        realised = v["t_leave"].to_numpy(float) - v["t_admit"].to_numpy(float)
        assert (v["outcome"] == "dropped_out").all(), f"{name}: outcomes {set(v['outcome'])}"
        stays[name] = sorted(set(np.round(realised, 9)))
    assert stays["empirical"] == stays["fixed"] and stays["uniform"] == stays["fixed"], (
        f"realised stays by exit-time family (planned stay 50, exit time >= 60): {stays}"
    )


# --------------------------------------------------------------------------- hand-computed traces


def test_deterministic_trace_intake_roster_and_patience():
    """Hand-computed trace through a rostered intake and a one-place IOP.

    Scenario: no referrals; 4 patients (ids -1..-4) waiting for intake on day 0
    (a Monday 00:00).  One clinician, Mon-Fri 09:00-17:00, assessment fixed at
    3 h = 0.125 d; every patient is placed in IOP (1 place, fixed stay 1.25 d,
    patience fixed 1.4 d).  All times below are in days:

    * intake opens at 09:00 = 0.375.  -1 is assessed 0.375-0.5, -2 0.5-0.625.
      At 0.625 the next assessment would end at 0.75 > 17:00 = 0.70833, so the
      clinician stops for the day; -3 is assessed Tuesday 09:00 = 1.375-1.5 and
      -4 1.5-1.625.
    * IOP: -1 joins at 0.5 and is admitted at once (stay to 1.75).  -2 joins at
      0.625, waits, and takes -1's place at 1.75 (wait 1.125 < 1.4; stays to
      3.0).  -3 joins at 1.5; the place would only free at 3.0, a wait of
      1.5 > 1.4, so -3 reneges at 1.5 + 1.4 = 2.9.  -4 joins at 1.625 and is
      admitted at 3.0 (wait 1.375 < 1.4), leaving at 4.25.
    No two independent events coincide, so the trace does not depend on
    tie-breaking.
    """
    raw = {
        "name": "trace-intake",
        "seed": 1,
        "horizon_days": 5,
        "referrals": {"referrals_per_week": 0.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "intake": {
            "clinicians": 1,
            "roster": {"shifts": [{"days": ["mon", "tue", "wed", "thu", "fri"], "start_hour": 9, "end_hour": 17}]},
            "assessment_hours": fixed(3.0),
        },
        "stages": {"iop": {"capacity": 1, "los_days": fixed(1.25), "patience_days": fixed(1.4)}},
        "start_state": {"intake_waitlist": 4},
    }
    rec = run_replication(validate_raw(raw, "test"), 0).records
    expected = [
        (-1, 1, "intake", 0.0, 0.375, 0.5, "assessed"),
        (-2, 1, "intake", 0.0, 0.5, 0.625, "assessed"),
        (-3, 1, "intake", 0.0, 1.375, 1.5, "assessed"),
        (-4, 1, "intake", 0.0, 1.5, 1.625, "assessed"),
        (-1, 1, "iop", 0.5, 0.5, 1.75, "completed"),
        (-2, 1, "iop", 0.625, 1.75, 3.0, "completed"),
        (-3, 1, "iop", 1.5, None, 2.9, "reneged"),
        (-4, 1, "iop", 1.625, 3.0, 4.25, "completed"),
    ]
    expected = sorted(expected, key=lambda t: (t[3], t[0], t[1]))
    got = visit_tuples(rec["visits"])
    assert got == expected, "trace differs:\n" + "\n".join(f"{g}  vs expected {e}" for g, e in zip(got, expected))
    e = rec["episodes"].set_index("patient_id")
    assert list(e.loc[[-1, -2, -3, -4], "exit_outcome"]) == ["completed", "completed", "reneged", "completed"]
    assert list(e.loc[[-1, -2, -4], "t_program_completed"]) == pytest.approx([1.75, 3.0, 4.25]), (
        "an IOP completion followed by discharge completes a program at the discharge time"
    )
    assert math.isnan(e.loc[-3, "t_program_completed"]), "a reneged patient completed no program"


def test_deterministic_trace_step_down_dropout_relapse_return():
    """Hand-computed trace: residential -> IOP step-down, dropout, relapse and return.

    Scenario: no referrals, no intake; 3 patients (-1, -2, -3) waiting for
    residential on day 0.  Residential: 1 bed, fixed stay 2, everyone steps
    down to IOP.  IOP: 1 place, planned stay fixed 3 but dropout with
    probability 1 at fixed day 2.25 (so every IOP stay is 2.25 and ends
    ``dropped_out``).  After a dropout the relapse clock is fixed at 5 days;
    every relapsed patient returns (probability 1) 0.5 days later, and the
    return is placed in IOP.  Horizon 11.

    * Residential: -1 0-2, -2 2-4, -3 4-6 (all joined at 0).
    * IOP: -1 2-4.25; -2 joins 4, admitted 4.25 when -1 leaves, out 6.5;
      -3 joins 6, admitted 6.5, out 8.75.
    * -1 relapses at 4.25 + 5 = 9.25 and returns at 9.75 as episode 2, goes
      straight into the (free) IOP place, and is still there at the horizon
      (the dropout would be at 12).  -2 and -3 would relapse at 11.5 and
      13.75, after the horizon, so no relapse is recorded for them.
    No two independent events coincide.
    """
    raw = {
        "name": "trace-pathway",
        "seed": 1,
        "horizon_days": 11,
        "referrals": {"referrals_per_week": 0.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {
            "residential": {"capacity": 1, "los_days": fixed(2.0), "step_down": {"iop": 1.0}},
            "iop": {
                "capacity": 1,
                "los_days": fixed(3.0),
                "exits": {"dropped_out": {"probability": 1.0, "days": fixed(2.25)}},
            },
        },
        "relapse": {
            "days": fixed(5.0),
            "return_probability": 1.0,
            "days_to_return": fixed(0.5),
            "after": ["dropped_out"],
        },
        "start_state": {"stages": {"residential": {"waitlist": 3}}},
    }
    rec = run_replication(validate_raw(raw, "test"), 0).records
    expected = sorted(
        [
            (-1, 1, "residential", 0.0, 0.0, 2.0, "completed"),
            (-2, 1, "residential", 0.0, 2.0, 4.0, "completed"),
            (-3, 1, "residential", 0.0, 4.0, 6.0, "completed"),
            (-1, 1, "iop", 2.0, 2.0, 4.25, "dropped_out"),
            (-2, 1, "iop", 4.0, 4.25, 6.5, "dropped_out"),
            (-3, 1, "iop", 6.0, 6.5, 8.75, "dropped_out"),
            (-1, 2, "iop", 9.75, 9.75, None, IN_SYSTEM),
        ],
        key=lambda t: (t[3], t[0], t[1]),
    )
    got = visit_tuples(rec["visits"])
    assert got == expected, "trace differs:\n" + "\n".join(f"{g}  vs expected {e}" for g, e in zip(got, expected))
    e = rec["episodes"]
    rows = {
        (int(r.patient_id), int(r.episode)): (
            None if math.isnan(r.t_referral) else r.t_referral,
            r.placement,
            None if math.isnan(r.t_exit) else r.t_exit,
            None if r.exit_stage is None or r.exit_stage is pd.NA else r.exit_stage,
            r.exit_outcome,
            None if math.isnan(r.t_relapse) else r.t_relapse,
            bool(r.readmitted),
        )
        for r in e.itertuples(index=False)
    }
    assert rows == {
        (-1, 1): (None, "residential", 4.25, "iop", "dropped_out", 9.25, True),
        (-1, 2): (9.75, "iop", None, None, IN_SYSTEM, None, False),
        (-2, 1): (None, "residential", 6.5, "iop", "dropped_out", None, False),
        (-3, 1): (None, "residential", 8.75, "iop", "dropped_out", None, False),
    }, f"episode records differ: {rows}"
    assert e["t_program_completed"].isna().all(), "dropouts complete no program"


def test_deterministic_trace_relapse_after_leaving_step_down_waitlist():
    """Hand-computed: completed residential, reneged from the IOP waitlist, relapse and return.

    Start state: -1 waits for residential, -2 for IOP (both admitted at 0; IOP has 1
    place and -2 stays 100 days).  -1: residential 0-2 (fixed), steps down to IOP,
    waits from 2 and reneges at 12 (patience fixed 10).  Relapse clock fixed 3 days
    after ``completed``; every relapse returns after fixed 0.5 days.

    Whatever the clock's start, the documented behaviour requires (a) no relapse
    while the patient is still waiting for IOP in this episode (a relapse ends waits,
    as in aftercare), i.e. t_relapse >= t_exit = 12, and (b) the return exactly
    ``days_to_return`` = 0.5 days after the recorded relapse.
    """
    raw = {
        "name": "relapse-after-renege",
        "seed": 1,
        "horizon_days": 20,
        "referrals": {"referrals_per_week": 0.0, "sources": {"s": {"share": 1.0, "placement": {"residential": 1.0}}}},
        "stages": {
            "residential": {"capacity": 1, "los_days": fixed(2.0), "step_down": {"iop": 1.0}},
            "iop": {"capacity": 1, "los_days": fixed(100.0), "patience_days": fixed(10.0)},
        },
        "relapse": {
            "days": fixed(3.0), "return_probability": 1.0, "days_to_return": fixed(0.5), "after": ["completed"],
        },
        "start_state": {"stages": {"residential": {"waitlist": 1}, "iop": {"waitlist": 1}}},
    }
    rec = run_replication(validate_raw(raw, "test"), 0).records
    v = visit_tuples(rec["visits"])
    assert (-1, 1, "residential", 0.0, 0.0, 2.0, "completed") in v, f"trace: {v}"
    assert (-1, 1, "iop", 2.0, None, 12.0, "reneged") in v, f"trace: {v}"
    e = rec["episodes"].set_index(["patient_id", "episode"])
    first = e.loc[(-1, 1)]
    assert first["exit_outcome"] == "reneged" and first["t_exit"] == 12.0, f"episode 1: {first.to_dict()}"
    assert bool(first["readmitted"]) and (-1, 2) in e.index, "the relapse must lead to a return"
    t_relapse, t_return = first["t_relapse"], e.loc[(-1, 2), "t_referral"]
    assert t_relapse >= first["t_exit"], f"relapse recorded at {t_relapse} while still waiting for IOP until 12"
    assert t_return - t_relapse == pytest.approx(0.5), (
        f"return at {t_return} is {t_return - t_relapse} days after the relapse at {t_relapse}; days_to_return is 0.5"
    )


# --------------------------------------------------------------------------- intake roster


def _intake_shifts(scenario) -> list:
    """The shifts during which intake clinicians work (roster shorthand or staff role teams)."""
    intake = scenario.intake
    if getattr(intake, "roster", None) is not None:
        return list(intake.roster.shifts)
    role = scenario.staff.roles[intake.role]
    return [s for team in role.teams for s in team.shifts]


def _shift_containing(shifts, t: float, eps_h: float = 1e-6):
    day = int(math.floor(t + 1e-12))
    hour = (t - day) * 24.0
    weekday = WEEKDAYS[day % 7]
    for s in shifts:
        if weekday in s.days and s.start_hour - eps_h <= hour < s.end_hour - eps_h:
            return day + s.start_hour / 24.0, day + s.end_hour / 24.0
    return None


@pytest.mark.parametrize("source", ["pathway-2-clinicians", "baseline"])
def test_intake_assessments_start_only_on_shift(source):
    if source == "baseline":
        raw = copy.deepcopy(resolve_raw(BASELINE))
    else:
        raw = pathway_raw()
        raw["referrals"]["referrals_per_week"] = 25.0
        raw["intake"]["clinicians"] = 2
        raw["intake"]["roster"] = {
            "shifts": [
                {"days": ["mon", "tue", "wed", "thu", "fri"], "start_hour": 8, "end_hour": 12},
                {"days": ["mon", "wed"], "start_hour": 13, "end_hour": 18.5},
                {"days": ["sat"], "start_hour": 10, "end_hour": 14},
            ]
        }
    scenario = validate_raw(raw, "test")
    shifts = _intake_shifts(scenario)
    v = run_replication(scenario, 0).records["visits"]
    intake = v[(v["stage"] == "intake") & v["t_admit"].notna()]
    assert len(intake) > 200, f"only {len(intake)} assessments"
    off_shift, overrun = [], []
    for t_admit, t_leave in zip(intake["t_admit"].to_numpy(float), intake["t_leave"].to_numpy(float)):
        shift = _shift_containing(shifts, t_admit)
        if shift is None:
            off_shift.append(t_admit)
        elif not math.isnan(t_leave) and t_leave > shift[1] + 1e-9:
            overrun.append((t_admit, t_leave, shift))
    assert not off_shift, (
        f"{len(off_shift)} assessments started off shift, e.g. at "
        + ", ".join(f"day {t:.4f} ({WEEKDAYS[int(t) % 7]} {(t % 1) * 24:.2f} h)" for t in off_shift[:5])
    )
    assert not overrun, f"{len(overrun)} assessments ran past the end of their shift, e.g. {overrun[:3]}"
    if source != "baseline":
        sat = [t for t in intake["t_admit"] if WEEKDAYS[int(t) % 7] == "sat"]
        assert sat, "the Saturday shift was never used"


# --------------------------------------------------------------------------- blocked pathway


def test_huge_los_blocks_the_pathway():
    raw = {
        "name": "blocked",
        "seed": 3,
        "horizon_days": 365,
        "referrals": {"referrals_per_week": 3.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {"iop": {"capacity": 2, "los_days": fixed(1e6)}},
    }
    res = run_replication(validate_raw(raw, "test"), 0)
    v, e, k = res.records["visits"], res.records["episodes"], res.kpis
    assert len(v) > 100, f"only {len(v)} referrals"
    v = v.sort_values("t_join", kind="mergesort")
    first, rest = v.iloc[:2], v.iloc[2:]
    assert (first["t_admit"] == first["t_join"]).all(), "the first two must be admitted on arrival"
    assert rest["t_admit"].isna().all(), "nobody else can ever be admitted"
    assert (v["outcome"] == IN_SYSTEM).all() and v["t_leave"].isna().all(), "everyone must still be in the system"
    assert (e["exit_outcome"] == IN_SYSTEM).all() and e["t_exit"].isna().all(), "every episode still open"
    assert k["iop_admissions"] == 2, f"admissions {k['iop_admissions']}"
    assert k["iop_census_max"] == 2 and k["iop_waitlist_max"] == len(v) - 2, (
        f"census max {k['iop_census_max']}, waitlist max {k['iop_waitlist_max']} (expected {len(v) - 2})"
    )
