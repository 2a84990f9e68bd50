"""Checks that catch a plan that cannot work (iopsim.analysis.checks), from the API and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import iopsim
from iopsim import cli
from iopsim.analysis.checks import Finding, result_findings, scenario_findings, stage_arrivals

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"
#: The plan of the issue: two day groups, one day counselor, 16 referrals a week.
UNSTAFFABLE = {"stages.iop.tracks.day.groups": 2, "referrals.referrals_per_week": 16}


def fields(findings: list[Finding]) -> list[str]:
    return [f.field for f in findings]


def test_shipped_scenarios_flag_only_the_unserved_availability_class():
    base = iopsim.check(iopsim.load_scenario(BASELINE))
    assert fields(base) == ["stages.iop.availability.weekends_only"], [str(f) for f in base]
    assert "10%" in base[0].message
    assert iopsim.check(REPO_ROOT / "scenarios" / "weekend.yaml") == [], "the weekend track serves every class"


def test_two_day_groups_with_one_day_counselor_warn():
    sc = iopsim.load_scenario(BASELINE, UNSTAFFABLE)
    f = {x.field: x.message for x in iopsim.check(sc)}
    msg = f["stages.iop.tracks.day.sessions.0"]
    assert "need 2 counselor facilitators" in msg and "at most 1" in msg, msg


def test_sessions_two_counselors_can_share_do_not_warn():
    """Day 9-11 and 11:30-13:30 with an evening session 13-14: the day counselor (8:30-17) takes the day
    sessions and the late one (12:30-21) the evening session, so no moment is short (a matching, not a count)."""
    sets = {"stages.iop.tracks.day.sessions": [{"days": ["mon"], "start_hour": 9, "hours": 2},
                                               {"days": ["mon"], "start_hour": 11.5, "hours": 2}],
            "stages.iop.tracks.evening.sessions": [{"days": ["mon"], "start_hour": 13, "hours": 1}]}
    sc = iopsim.load_scenario(BASELINE, sets)
    assert not [f for f in iopsim.check(sc) if f.field.startswith("stages.iop.tracks.")], \
        [str(f) for f in iopsim.check(sc)]
    # Both counselors are needed at 13:00; put the evening session where only the day counselor works
    # and one of the three cannot be led.
    late = dict(sets, **{"staff.roles.counselor.teams.1.shifts.0.start_hour": 13.5})
    f = {x.field: x.message for x in iopsim.check(iopsim.load_scenario(BASELINE, late))}
    assert any("need 2 counselor facilitators but at most 1" in m for m in f.values()), f


def test_session_outside_every_shift_warns():
    sc = iopsim.load_scenario(BASELINE, {"stages.iop.tracks.evening.sessions.0.start_hour": 20.5})
    f = {x.field: x.message for x in iopsim.check(sc)}
    assert "outside every shift of role 'counselor'" in f["stages.iop.tracks.evening.sessions.0"]


def test_overnight_shift_staffs_a_late_session():
    """A session at 20:30-23:30 is covered by a 20:00-02:00 shift (the roster crosses midnight)."""
    sc = iopsim.load_scenario(BASELINE, {
        "stages.iop.tracks.evening.sessions.0.start_hour": 20.5,
        "staff.roles.counselor.teams.1.shifts.0.start_hour": 20, "staff.roles.counselor.teams.1.shifts.0.end_hour": 2})
    assert "stages.iop.tracks.evening.sessions.0" not in fields(iopsim.check(sc))


def test_offered_load_at_or_above_one_warns():
    sc = iopsim.load_scenario(BASELINE, {"stages.residential.capacity": 2})
    f = {x.field: x.message for x in iopsim.check(sc)}
    assert "offered load" in f["stages.residential"] and "grow without bound" in f["stages.residential"]
    ok = iopsim.load_scenario(BASELINE, {"stages.residential.capacity": 4})
    assert "stages.residential" not in fields(iopsim.check(ok))


def test_intake_offered_load_at_or_above_one_warns():
    """40 referrals a week of 1.67-hour assessments on one 40-hour clinician: 67 hours of work for 40."""
    f = {x.field: x.message for x in iopsim.check(iopsim.load_scenario(BASELINE, {"referrals.referrals_per_week": 40}))}
    msg = f["staff.roles.intake_clinician"]
    assert "intake offered load 1.67 >= 1" in msg and "40 rostered hours" in msg, msg
    two = {"referrals.referrals_per_week": 40, "staff.roles.intake_clinician.teams.0.headcount": 2}
    assert "staff.roles.intake_clinician" not in fields(iopsim.check(iopsim.load_scenario(BASELINE, two)))


def test_stage_arrivals_solve_the_traffic_equations():
    """Against a hand-solved network with step-up and a repeat (the Jackson test's routing)."""
    from test_routing import jackson_scenario, jackson_theory

    got = stage_arrivals(jackson_scenario(100, 0, 1))
    want = jackson_theory()
    for n in ("residential", "php", "iop"):
        assert got[n] == pytest.approx(want[n]["lambda"], rel=1e-12)


def test_offered_load_matches_the_run_census_when_nobody_waits():
    """Expected admissions x mean stay (exits racing the planned stay) is the census of unlimited stages."""
    from test_routing import jackson_scenario

    from iopsim.analysis.checks import _mean_stay
    from iopsim.schema.scenario import validate_raw

    raw = jackson_scenario(2_000, 100, 9).model_dump(mode="json", by_alias=True, exclude_none=True)
    for n, st in raw["stages"].items():
        st.pop("capacity")
        st["exits"] = {"dropped_out": {"probability": 0.3, "days": {"dist": "uniform", "low": 0, "high": 2}},
                       "stepped_up": {"probability": 0.1, "days": {"dist": "exponential", "mean": 0.5},
                                      "to": "residential"}}
    sc = validate_raw(raw, "test")
    lam = stage_arrivals(sc)
    res = iopsim.run(sc, replications=4, jobs=2)
    for n, st in sc.stages.enabled().items():
        row = res.kpi(f"{n}_census_mean")
        expected = lam[n] * _mean_stay(st)
        assert row["ci_low"] <= expected <= row["ci_high"], (n, expected, row["ci_low"], row["ci_high"])


def test_after_a_run_cancelled_sessions_and_unbooked_work_warn(tmp_path):
    sc = iopsim.load_scenario(BASELINE, {**UNSTAFFABLE, "horizon_days": 240, "warmup_days": 0})
    res = iopsim.run(sc, replications=2, jobs=1)
    f = {x.field: x.message for x in res.warnings}
    assert "cancelled for want of staff" in f["stages.iop.tracks.day.facilitators"]
    folder = res.save(tmp_path / "run", report=False)
    man = json.loads((folder / "manifest.json").read_text())
    assert any("cancelled for want of staff" in w for w in man["warnings"])
    assert "staff.roles.counselor" not in f, "sessions short of staff are cancellations, not unbooked services"
    nurse = iopsim.load_scenario(BASELINE, {"horizon_days": 120, "warmup_days": 0,
                                            "staff.roles.nurse.teams.0.shifts.0.end_hour": 9.5})
    g = {x.field: x.message for x in iopsim.run(nurse, replications=1, jobs=1).warnings}
    assert "nurse work could not be booked" in g["staff.roles.nurse"], g


def test_groups_below_minimum_warn():
    import pandas as pd

    sc = iopsim.load_scenario(BASELINE)
    per_rep = pd.DataFrame({"replication": [0, 1], "iop_track_day_share_sessions_below_min": [0.3, 0.4],
                            "iop_track_evening_share_sessions_below_min": [0.1, 0.2]})
    f = {x.field: x.message for x in result_findings(per_rep, sc)}
    assert "35%" in f["stages.iop.tracks.day.min_group_size"]
    assert "stages.iop.tracks.evening.min_group_size" not in f


# --------------------------------------------------------------------------- CLI


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


def test_validate_prints_warnings_one_line_each_and_strict_refuses():
    sets = [x for k, v in UNSTAFFABLE.items() for x in ("--set", f"{k}={v}")]
    r = invoke("validate", BASELINE, *sets)
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("warning:")]
    assert any("stages.iop.tracks.day.sessions.0" in ln for ln in lines), r.stderr
    assert "3 warnings" in r.stdout
    strict = invoke("validate", BASELINE, *sets, "--strict")
    assert strict.exit_code == 2 and "Traceback" not in strict.output
    assert "--strict: 3 problems" in strict.stderr


def test_run_strict_refuses_before_running(tmp_path):
    out = tmp_path / "run"
    r = invoke("run", BASELINE, "-n", "1", "--jobs", "1", "--strict", "--out", out,
               "--set", "stages.iop.tracks.day.groups=2")
    assert r.exit_code == 2 and not out.exists(), r.output


def test_api_check_accepts_a_path():
    assert fields(iopsim.check(BASELINE)) == fields(scenario_findings(iopsim.load_scenario(BASELINE)))
    assert np.isfinite(stage_arrivals(iopsim.load_scenario(BASELINE))["iop"])
