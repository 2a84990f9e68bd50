"""Payers, revenue, margin and break-even; virtual and hybrid tracks, transport barriers, remote staff.

* Revenue accounting identities: the units add up to the total, and so do the payers;
  zero rates give zero revenue; a denial rate of 1 collects nothing.
* Break-even: on a deterministic scenario (a fixed census that never changes, attendance
  1, fixed rosters) the break-even census equals the value computed by hand.
* Payers draw from a stream of their own: adding them changes no service figure.
* Virtual tracks: a track accepting clients no in-person track accepts loses fewer
  from the waitlist under common random numbers, in every replication; a transport
  barrier share of 0 leaves every result bit-for-bit as without the feature.
* Remote staff run only virtual tracks that allow remote facilitators and never do drug tests.
"""

from __future__ import annotations

import copy
import functools
import math

import pytest

from iopsim.errors import ScenarioError
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import BILLING_UNITS, validate_raw
from tests.conftest import REPO_ROOT as REPO
from tests.conftest import shipped_raw


def _run(raw, rep=0):
    sc = validate_raw(copy.deepcopy(raw), raw.get("name", "test"))
    return sc, run_replication(sc, rep)


def _short(raw, days=365):
    raw = copy.deepcopy(raw)
    raw["horizon_days"] = days
    return raw


@functools.lru_cache(maxsize=None)
def baseline_short():
    return _run(_short(shipped_raw("baseline")))


# --------------------------------------------------------------------------- accounting identities


def test_units_and_payers_add_up_to_the_total():
    sc, r = baseline_short()
    k = r.kpis
    units = sum(k.get(f"revenue_{u}", 0.0) for u in BILLING_UNITS)
    payers = sum(k[f"revenue_payer_{p}"] for p in sc.payers)
    assert k["revenue_total"] > 0
    assert units == pytest.approx(k["revenue_total"], rel=1e-12)
    assert payers == pytest.approx(k["revenue_total"], rel=1e-12)
    assert k["revenue_billed"] - k["revenue_not_collected"] == pytest.approx(k["revenue_total"], rel=1e-12)
    assert k["margin_total"] == pytest.approx(k["revenue_total"] - k["cost_total"], rel=1e-12)
    assert k["margin_per_completed_program"] == pytest.approx(k["margin_total"] / k["programs_completed"])
    mix = [k[f"payer_mix_{p}"] for p in sc.payers]
    assert sum(mix) == pytest.approx(1.0)


def test_revenue_of_each_unit_by_hand_from_the_records():
    """Attended sessions, delivered services and patient-days, each times its payer's rate."""
    sc, r = baseline_short()
    rec, k = r.records, r.kpis
    ep = rec["episodes"]
    payer_of = {(int(p), int(e)): str(x) for p, e, x in zip(ep["patient_id"], ep["episode"], ep["payer"])}
    net = {n: (1 - p.denial_rate) * p.collection_rate for n, p in sc.payers.items()}

    def rate(unit, key):
        n = payer_of[key]
        return sc.payers[n].rates.get(unit, 0.0) * net[n]

    att = rec["attendance"]
    sessions = sum(rate("iop_session", (int(p), int(e))) for p, e in zip(att["patient_id"], att["episode"]))
    assert len(att) == int(rec["sessions"].query("status == 'held'")["attendees"].sum())
    assert k["revenue_iop_session"] == pytest.approx(sessions, rel=1e-9)
    svc = rec["services"][rec["services"]["delivered"]]
    for unit in ("individual", "family", "drug_test"):
        rows = svc[svc["service"] == unit]
        want = sum(rate(unit, (int(p), int(e))) for p, e in zip(rows["patient_id"], rows["episode"]))
        assert k[f"revenue_{unit}"] == pytest.approx(want, rel=1e-9), unit
    v = rec["visits"]
    for unit, stage in (("residential_day", "residential"), ("php_day", "php"), ("aftercare_day", "aftercare")):
        rows = v[(v["stage"] == stage) & v["t_admit"].notna()]
        leave = rows["t_leave"].fillna(sc.horizon_days)
        want = sum(rate(unit, (int(p), int(e))) * (b - a)
                   for p, e, a, b in zip(rows["patient_id"], rows["episode"], rows["t_admit"], leave))
        assert k[f"revenue_{unit}"] == pytest.approx(want, rel=1e-9), unit


def test_zero_rates_give_zero_revenue_and_denial_of_one_collects_nothing():
    raw = _short(shipped_raw("baseline"), 200)
    for p in raw["payers"].values():
        p["rates"] = {u: 0.0 for u in p["rates"]}
    _, r = _run(raw)
    assert r.kpis["revenue_total"] == 0.0 and r.kpis["revenue_billed"] == 0.0
    assert r.kpis["margin_total"] == pytest.approx(-r.kpis["cost_total"])

    raw = _short(shipped_raw("baseline"), 200)
    for p in raw["payers"].values():
        p["denial_rate"] = 1.0
    _, r = _run(raw)
    assert r.kpis["revenue_billed"] > 0
    assert r.kpis["revenue_total"] == 0.0
    assert r.kpis["revenue_not_collected"] == pytest.approx(r.kpis["revenue_billed"])


def test_payers_change_no_service_figure():
    """Payers draw from a stream of their own: without them every other KPI is bit-for-bit the same."""
    raw = _short(shipped_raw("baseline"), 200)
    with_money = _run(raw)[1].kpis
    bare = copy.deepcopy(raw)
    del bare["payers"]
    for src in bare["referrals"]["sources"].values():
        del src["payers"]
    without = _run(bare)[1].kpis
    money = {k for k in with_money if k not in without}
    assert "revenue_total" in money and "break_even_iop_census" in money
    for k, v in without.items():
        assert with_money[k] == v or (math.isnan(v) and math.isnan(with_money[k])), k


# --------------------------------------------------------------------------- break-even


def deterministic_raw(census=6, wage=30.0, overhead=100.0, day_cost=10.0, rate=50.0):
    """A census of ``census`` clients on day 0 that nobody joins or leaves for 10 weeks.

    One counselor works Mon/Wed/Fri 09-12 and runs the one group meeting then; every
    client attends all 30 sessions (attendance 1, a program far longer than the run).
    """
    return {
        "name": "deterministic",
        "seed": 1,
        "horizon_days": 70,
        "referrals": {"referrals_per_week": 0.0,
                      "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}, "payers": {"p": 1.0}}}},
        "stages": {"iop": {
            "availability": {"any": 1.0},
            "program": {"phases": [{"weeks": 1000, "sessions_per_week": 3}]},
            "tracks": {"t": {"accepts": ["any"], "groups": 1, "max_group_size": 12,
                             "sessions": [{"days": ["mon", "wed", "fri"], "start_hour": 9, "hours": 3}],
                             "facilitators": [{"role": "counselor", "count": 1}], "attendance": 1.0}},
            "cost_per_patient_day": day_cost,
        }},
        "staff": {"roles": {"counselor": {"hourly_wage": wage, "charged_to": "iop", "teams": [
            {"headcount": 1, "shifts": [{"days": ["mon", "wed", "fri"], "start_hour": 9, "end_hour": 12}]}]}}},
        "costs": {"fixed_overhead_per_day": overhead},
        "payers": {"p": {"rates": {"iop_session": rate}}},
        "start_state": {"stages": {"iop": {"census": census}}},
    }


def test_break_even_census_equals_the_hand_computed_value():
    # Cost over 70 days: labour 30 sessions x 3 h x $30 = $2,700, overhead $7,000, client-days
    # $10 x census x 70.  Revenue: 30 sessions x census x $50.  Revenue = cost at census c when
    # 1,500 c = 9,700 + 700 c, so c = 9,700 / 800 = 12.125 -- whatever census the run has.
    for census in (3, 6, 10):
        sc, r = _run(deterministic_raw(census=census))
        k = r.kpis
        assert k["iop_census_mean"] == pytest.approx(census)
        assert k["revenue_iop_session"] == pytest.approx(30 * census * 50.0)
        assert k["cost_total"] == pytest.approx(2700 + 7000 + 10 * census * 70)
        assert k["break_even_iop_census"] == pytest.approx(9700 / 800, rel=1e-9)


def test_no_break_even_when_a_client_day_earns_less_than_it_costs():
    _, r = _run(deterministic_raw(rate=20.0))  # $20 x 3 / 7 a client-day < $10 + ... : 60/7 < 10
    assert math.isnan(r.kpis["break_even_iop_census"])
    assert r.kpis["iop_revenue_per_client_day"] < r.kpis["iop_variable_cost_per_client_day"]


def test_iop_day_bills_one_unit_per_day_with_an_attended_session():
    raw = deterministic_raw(census=4)
    raw["stages"]["iop"]["tracks"]["t"]["sessions"] = [{"days": ["mon", "wed", "fri"], "start_hour": 9, "hours": 1},
                                                       {"days": ["mon"], "start_hour": 10, "hours": 1}]
    raw["stages"]["iop"]["program"]["phases"][0]["sessions_per_week"] = 4
    raw["payers"]["p"]["rates"] = {"iop_day": 100.0, "iop_session": 1.0}
    _, r = _run(raw)
    # 4 sessions a week on 3 days, 10 weeks, 4 clients
    assert r.kpis["revenue_iop_session"] == pytest.approx(4 * 10 * 4 * 1.0)
    assert r.kpis["revenue_iop_day"] == pytest.approx(3 * 10 * 4 * 100.0)


def test_track_cost_per_client_day_replaces_the_stage_rate():
    raw = deterministic_raw(census=5)
    raw["stages"]["iop"]["tracks"]["t"]["cost_per_client_day"] = 2.0
    _, r = _run(raw)
    assert r.kpis["cost_patient_days"] == pytest.approx(2.0 * 5 * 70)


# --------------------------------------------------------------------------- virtual tracks and barriers


def test_a_virtual_track_for_clients_no_in_person_track_takes_loses_fewer():
    """Baseline: nobody accepts the weekend-only clients.  A virtual Saturday group does;
    under CRN, fewer people leave the waitlists, in every replication."""
    base = _short(shipped_raw("baseline"), 365)
    virtual = copy.deepcopy(base)
    virtual["stages"]["iop"]["tracks"]["online"] = {
        "mode": "virtual", "accepts": ["weekends_only"], "groups": 1, "min_group_size": 6, "max_group_size": 12,
        "sessions": [{"days": ["sat"], "start_hour": 10, "hours": 3}], "attendance": [0.66, 0.80],
        "facilitators": [{"role": "counselor", "count": 1}], "remote_facilitators": True,
    }
    virtual["staff"]["roles"]["counselor"]["teams"].append(
        {"headcount": 1, "remote": True, "shifts": [{"days": ["sat"], "start_hour": 9, "end_hour": 14}]})
    for rep in range(4):
        a = _run(base, rep)[1].kpis
        b = _run(virtual, rep)[1].kpis
        assert b["iop_reneged"] < a["iop_reneged"], rep
        assert b["iop_reneged_no_feasible_track"] == 0 < a["iop_reneged_no_feasible_track"]
        assert b["iop_track_online_sessions_held"] > 0


def test_a_barrier_share_of_zero_changes_nothing():
    base = _short(shipped_raw("baseline"), 300)
    bare = copy.deepcopy(base)
    del bare["referrals"]["transport_barrier"]
    del bare["stages"]["iop"]["transport_barrier"]
    zero = copy.deepcopy(base)
    zero["stages"]["iop"]["transport_barrier"] = {"effect": "rules_out"}
    for src in zero["referrals"]["sources"].values():
        src["transport_barrier"] = 0.0
    ref = _run(bare)[1]
    for variant in (base, zero):
        got = _run(variant)[1]
        assert got.kpis.keys() == ref.kpis.keys()
        for k, v in ref.kpis.items():
            assert got.kpis[k] == v or (math.isnan(v) and math.isnan(got.kpis[k])), k
        for table in ("visits", "sessions", "episodes"):
            assert got.records[table].equals(ref.records[table]), table


def _barrier(raw, share, effect, factor=None):
    raw = copy.deepcopy(raw)
    raw["referrals"]["transport_barrier"] = share
    raw["stages"]["iop"]["transport_barrier"] = {"effect": effect}
    if factor is not None:
        raw["stages"]["iop"]["transport_barrier"]["attendance_factor"] = factor
    return raw


def test_a_barrier_that_lowers_attendance_lowers_it_only_in_person():
    base = _short(shipped_raw("evening"), 365)
    inperson = _run(_barrier(base, 0.5, "attendance", 0.4))[1].kpis
    none = _run(base)[1].kpis
    virtual_raw = copy.deepcopy(base)
    for t in virtual_raw["stages"]["iop"]["tracks"].values():
        t["mode"] = "virtual"
    virtual = _run(_barrier(virtual_raw, 0.5, "attendance", 0.4))[1].kpis
    virtual_none = _run(virtual_raw)[1].kpis
    for track in ("day", "evening"):
        rate = f"iop_track_{track}_attendance_rate"
        assert inperson[rate] < none[rate] - 0.05
        assert virtual[rate] == virtual_none[rate]


def test_a_barrier_that_rules_in_person_out_needs_a_virtual_or_hybrid_track():
    base = _short(shipped_raw("evening"), 365)
    ruled = _run(_barrier(base, 0.3, "rules_out"))[1]
    assert ruled.kpis["iop_reneged"] > _run(base)[1].kpis["iop_reneged"]
    hybrid = copy.deepcopy(base)
    hybrid["stages"]["iop"]["tracks"]["evening"]["mode"] = "hybrid"
    helped = _run(_barrier(hybrid, 0.3, "rules_out"))[1]
    assert helped.kpis["iop_reneged"] < ruled.kpis["iop_reneged"]
    # nobody with the barrier ever sits in an in-person group
    v = ruled.records["visits"]
    assert set(v[(v["stage"] == "iop") & v["t_admit"].notna()]["track"].astype(str)) <= {"day", "evening"}


# --------------------------------------------------------------------------- remote staff


def test_remote_staff_run_only_virtual_tracks_with_remote_facilitators_and_no_drug_tests():
    base = _short(shipped_raw("baseline"), 200)
    for team in base["staff"]["roles"]["counselor"]["teams"]:
        team["remote"] = True
    for team in base["staff"]["roles"]["nurse"]["teams"]:
        team["remote"] = True
    _, r = _run(base)
    b = r.records["bookings"]
    assert not (b["activity"] == "group").any()
    assert not (b["activity"] == "drug_test").any()
    assert r.kpis["iop_track_day_sessions_held"] == 0

    virtual = copy.deepcopy(base)
    for t in virtual["stages"]["iop"]["tracks"].values():
        t.update(mode="virtual", remote_facilitators=True)
    _, r = _run(virtual)
    assert r.kpis["iop_track_day_sessions_held"] > 0
    b = r.records["bookings"]
    assert (b["activity"] == "individual").any()  # counseling by telehealth
    assert not (b["activity"] == "drug_test").any()


def test_on_site_drug_tests_go_to_the_on_site_nurse_when_a_remote_one_exists():
    raw = _short(shipped_raw("baseline"), 200)
    teams = raw["staff"]["roles"]["nurse"]["teams"]
    teams.insert(0, {"headcount": 1, "remote": True, "shifts": teams[0]["shifts"]})
    _, r = _run(raw)
    b = r.records["bookings"]
    # Members are numbered role by role, team by team: intake clinician 0, counselors 1-2,
    # then the nurses -- the remote one (3) listed before the one on site (4).
    assert set(b[b["role"] == "nurse"]["member"]) == {4}
    assert (b["activity"] == "drug_test").sum() > 0


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize("change, field, words", [
    (lambda r: r["referrals"]["sources"]["self"]["payers"].update(medicaid=0.9), "referrals.sources.self.payers",
     "payer shares must sum to 1"),
    (lambda r: r["referrals"]["sources"]["self"].update(payers={"charity": 1.0}), "referrals.sources.self.payers.charity",
     "unknown payer; payers: medicaid, commercial, medicare, self_pay"),
    (lambda r: r["referrals"]["sources"]["self"].pop("payers"), "referrals.sources.self.payers",
     "required once the scenario has payers"),
    (lambda r: r["payers"]["medicaid"]["rates"].update(iop_week=1.0), "payers.medicaid.rates.iop_week",
     "allowed: 'assessment'"),
    (lambda r: r["payers"]["medicaid"].update(denial_rate=1.5), "payers.medicaid.denial_rate", "less than or equal to 1"),
    (lambda r: r["referrals"].update(transport_barrier=0.2) or r["stages"]["iop"].pop("transport_barrier"),
     "referrals.transport_barrier", "needs stages.iop.transport_barrier"),
    (lambda r: r["stages"]["iop"]["tracks"]["day"].update(remote_facilitators=True),
     "stages.iop.tracks.day.remote_facilitators", "only for mode: virtual"),
    (lambda r: r["stages"]["iop"]["tracks"]["day"].update(mode="online"), "stages.iop.tracks.day.mode",
     "allowed: 'in_person', 'virtual' or 'hybrid'"),
])
def test_bad_money_and_virtual_input_is_one_line_naming_the_field(change, field, words):
    raw = shipped_raw("baseline")
    change(raw)
    with pytest.raises(ScenarioError) as e:
        validate_raw(raw, "scenarios/baseline.yaml")
    msg = str(e.value)
    assert "\n" not in msg
    assert f"scenarios/baseline.yaml: {field}:" in msg, msg
    assert words in msg, msg


# --------------------------------------------------------------------------- the planner and margin


def test_the_planner_maximises_margin_and_holds_a_minimum_margin(tmp_path):
    """M/M/c, 4 referrals a day staying a day each, every place costing $100 a day and every
    patient-day earning $150: by Little's law the census is 4 whatever the places (c >= 5),
    so the margin is (600 - 100 c) a day and falls with c.  With a wait target that c = 5
    misses, the best margin is at c = 6; a minimum margin above what c = 6 earns leaves no plan."""
    import yaml

    from tests.test_planner import capacity_plan, invoke, mean_wait, mmc_base, target_between

    lam = 4.0
    base = mmc_base(tmp_path, lam, 1.0, horizon=900, warmup=100)
    raw = yaml.safe_load(base.read_text())
    raw["payers"] = {"all": {"rates": {"iop_day": 150.0}}}
    raw["referrals"]["sources"]["all"]["payers"] = {"all": 1.0}
    base.write_text(yaml.safe_dump(raw, sort_keys=False))
    wait = target_between(lambda c: mean_wait(c, lam, 1.0), 6)
    plan = capacity_plan(tmp_path, base, 5, 8, {"kpi": "iop_admitted_wait_mean_days", "max": wait},
                         objective={"maximize": "margin"})
    r = invoke("plan", plan, "--out", tmp_path / "out")
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.startswith("Recommended: 6 places;"), r.stdout
    summary = __import__("json").loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["recommended"]["levels"] == {"places": 6}

    doc = yaml.safe_load(plan.read_text())
    doc["constraints"].append({"kpi": "margin_total", "min": 100.0 * 800})  # c = 6 earns about 0
    plan.write_text(yaml.safe_dump(doc, sort_keys=False))
    r = invoke("plan", plan, "--out", tmp_path / "out2")
    text = " ".join((r.stdout + r.stderr).split())
    assert r.exit_code == 1 and text.startswith("No plan in the ranges meets every target"), text
    assert "Recommended" not in text


# --------------------------------------------------------------------------- plans that cannot work


def test_checks_warn_when_only_remote_staff_could_run_an_in_person_group():
    from iopsim.analysis.checks import scenario_findings

    raw = shipped_raw("evening-virtual")
    assert not [f for f in scenario_findings(validate_raw(copy.deepcopy(raw), "x")) if "facilitator" in str(f)
                or "shift" in str(f)]
    raw["stages"]["iop"]["tracks"]["evening"]["mode"] = "hybrid"  # someone must be in the room now
    raw["stages"]["iop"]["tracks"]["evening"]["remote_facilitators"] = False
    found = [str(f) for f in scenario_findings(validate_raw(raw, "x"))]
    assert any("stages.iop.tracks.evening.sessions.0" in f and "on-site role 'counselor'" in f for f in found), found


def test_checks_warn_when_a_barrier_rules_out_every_track():
    from iopsim.analysis.checks import scenario_findings

    raw = _barrier(shipped_raw("baseline"), 0.2, "rules_out")
    found = [str(f) for f in scenario_findings(validate_raw(raw, "x"))]
    assert any(f.startswith("stages.iop.transport_barrier.effect") and "can join no track" in f for f in found), found
    raw["stages"]["iop"]["tracks"]["evening"]["mode"] = "virtual"
    found = [str(f) for f in scenario_findings(validate_raw(raw, "x"))]
    assert not any(f.startswith("stages.iop.transport_barrier.effect") for f in found), found
    raw["stages"]["iop"]["tracks"]["day"]["mode"] = "hybrid"  # now every class has a track they can join
    found = [str(f) for f in scenario_findings(validate_raw(raw, "x"))]
    assert not any("can join no track" in f for f in found), found


# --------------------------------------------------------------------------- what the user sees


def test_the_run_answer_report_and_figure_show_the_money(tmp_path):
    import iopsim

    sc = iopsim.load_scenario(REPO / "scenarios" / "baseline.yaml", {"horizon_days": 200})
    folder = iopsim.run(sc, replications=2).save(tmp_path / "run")
    assert (folder / "figures" / "money.png").is_file()
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "Revenue, margin and break-even" in html and "breaks even at a mean IOP census" in html
    assert "Revenue covers" in html or "more than it costs" in html

    bare = iopsim.load_scenario(REPO / "scenarios" / "baseline.yaml", {"horizon_days": 200, "payers": {},
                                **{f"referrals.sources.{s}.payers": {} for s in sc.referrals.sources}})
    folder = iopsim.run(bare, replications=2).save(tmp_path / "bare")
    assert not (folder / "figures" / "money.png").exists()
    assert "Revenue, margin" not in (folder / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", ["payers.medicaid.rates.iop_session", "staff.roles.counselor.hourly_wage",
                                  "stages.iop.cost_per_patient_day", "costs.fixed_overhead_per_day"])
def test_money_beyond_the_amount_limit_is_refused_before_anything_runs(path):
    from iopsim.schema.scenario import set_path

    raw = shipped_raw("baseline")
    set_path(raw, path.split("."), 1e300, "x")
    with pytest.raises(ScenarioError) as e:
        validate_raw(raw, "scenarios/baseline.yaml")
    msg = str(e.value)
    assert msg.startswith(f"scenarios/baseline.yaml: {path}: ") and "IOPSIM_LIMIT_AMOUNT" in msg, msg


# --------------------------------------------------------------------------- found in review


def _same_time_tracks(name="a_online"):
    """An in-person day track and a virtual track that remote staff may run, meeting at the same
    time; one on-site and one remote counselor on the same shift."""
    raw = _short(shipped_raw("baseline"), 200)
    tracks = raw["stages"]["iop"]["tracks"]
    online = tracks.pop("evening")
    online.update(mode="virtual", remote_facilitators=True,
                  sessions=[{"days": ["mon", "wed", "thu"], "start_hour": 9, "hours": 3}])
    tracks[name] = online
    shift = [{"days": ["mon", "tue", "wed", "thu", "fri"], "start_hour": 8.5, "end_hour": 17}]
    raw["staff"]["roles"]["counselor"]["teams"] = [{"headcount": 1, "shifts": shift},
                                                   {"headcount": 1, "remote": True, "shifts": shift}]
    return raw


@pytest.mark.parametrize("name", ["a_online", "online"])
def test_a_virtual_track_leaves_the_on_site_counselor_to_the_in_person_group(name):
    """Remote staff are booked first for a track they may run, whatever the tracks are called."""
    from iopsim.analysis.checks import scenario_findings

    sc, r = _run(_same_time_tracks(name))
    assert r.kpis["iop_track_day_sessions_cancelled"] == 0 and r.kpis["iop_track_day_sessions_held"] > 0
    assert r.kpis[f"iop_track_{name}_sessions_cancelled"] == 0
    b = r.records["bookings"]
    by = b[b["activity"] == "group"].groupby("member").size()
    assert len(by) == 2, "each counselor runs one of the two groups"
    assert not [str(f) for f in scenario_findings(sc) if "facilitator" in str(f)], "no false warning of cancellations"


def test_negative_margins_and_revenue_above_cost_keep_their_intervals():
    from iopsim.outputs.answer import clip_ci

    assert clip_ci(100.0, -50.0, 250.0, "currency", "margin_total") == (100.0, -50.0, 250.0)
    assert clip_ci(0.97, 0.90, 1.04, "fraction", "cost_recovery") == (0.97, 0.90, 1.04)
    assert clip_ci(0.97, 0.90, 1.04, "fraction", "attendance_rate") == (0.97, 0.90, 1.0)


def _facts(rows: dict, reps: int = 4):
    import pandas as pd

    from iopsim.outputs.answer import Facts

    summary = pd.DataFrame([{"kpi": k, "mean": m, "ci_low": lo, "ci_high": hi, "unit": u, "n": n}
                            for k, (m, lo, hi, u, n) in rows.items()])
    return Facts("s", summary, pd.DataFrame({"replication": range(reps)}), {"horizon_days": 365})


def test_the_money_sentences_say_what_the_interval_allows():
    from iopsim.outputs.answer import money_sentences

    base = {"revenue_total": (500_000, 480_000, 520_000, "currency", 4),
            "cost_recovery": (1.0, 0.96, 1.04, "fraction", 4),
            "iop_census_mean": (13.0, 12.0, 14.0, "patients", 4)}
    unsure = money_sentences(_facts({**base, "margin_total": (10_000, -20_000, 40_000, "currency", 4)}))
    assert "between a loss of $20,000 and a margin of $40,000" in unsure[0], unsure
    rich_site = money_sentences(_facts({**base, "margin_total": (300_000, 250_000, 350_000, "currency", 4),
                                        "iop_revenue_per_client_day": (1.0, 0.9, 1.1, "currency", 4),
                                        "iop_variable_cost_per_client_day": (18.0, 17.0, 19.0, "currency", 4),
                                        "break_even_iop_census": (math.nan, math.nan, math.nan, "patients", 0)}))
    assert "more than it costs" in rich_site[0] and "No IOP census breaks even" not in " ".join(rich_site)
    assert "More IOP clients would not add to the margin" in rich_site[1], rich_site
    some = money_sentences(_facts({**base, "margin_total": (-9_000, -12_000, -6_000, "currency", 4),
                                   "iop_revenue_per_client_day": (20.0, 15.0, 25.0, "currency", 4),
                                   "iop_variable_cost_per_client_day": (18.0, 17.0, 19.0, "currency", 4),
                                   "break_even_iop_census": (40.0, 30.0, 50.0, "patients", 3)}))
    assert "loses $9,000" in some[0] and "in the 3 of 4 replications" in some[1], some


def test_break_even_is_zero_when_revenue_covers_cost_without_iop_clients():
    raw = deterministic_raw(census=6, rate=50.0)
    raw["payers"]["p"]["rates"]["iop_day"] = 0.0
    raw["costs"]["fixed_overhead_per_day"] = 0.0
    raw["staff"]["roles"]["counselor"]["hourly_wage"] = 0.0
    _, r = _run(raw)
    assert r.kpis["margin_total"] > 0 and r.kpis["break_even_iop_census"] == 0.0


def test_warnings_for_barrier_classes_remote_drug_testers_and_rates_that_earn_nothing():
    from iopsim.analysis.checks import scenario_findings

    raw = _barrier(shipped_raw("baseline"), 0.2, "rules_out")
    raw["stages"]["iop"]["tracks"]["evening"]["mode"] = "virtual"
    found = [str(f) for f in scenario_findings(validate_raw(raw, "x"))]
    assert any(f.startswith("stages.iop.availability.daytime: only in-person tracks accept") for f in found), found

    raw = shipped_raw("baseline")
    for team in raw["staff"]["roles"]["nurse"]["teams"]:
        team["remote"] = True
    del raw["stages"]["php"]
    for src in raw["referrals"]["sources"].values():
        src["placement"]["residential"] += src["placement"].pop("php")
    raw["stages"]["residential"]["step_down"]["iop"] += raw["stages"]["residential"]["step_down"].pop("php")
    found = [str(f) for f in scenario_findings(validate_raw(raw, "x"))]
    assert any(f.startswith("stages.iop.services.drug_test.role: every nurse works remotely") for f in found), found
    assert any(f.startswith("payers.medicaid.rates.php_day: stage 'php' is switched off") for f in found), found


def test_rules_out_with_an_attendance_factor_and_margin_without_payers_are_one_line_errors(tmp_path):
    raw = _barrier(shipped_raw("baseline"), 0.1, "rules_out", factor=0.5)
    with pytest.raises(ScenarioError) as e:
        validate_raw(raw, "s.yaml")
    assert "stages.iop.transport_barrier.attendance_factor: only used with effect: attendance" in str(e.value)

    import yaml

    from tests.test_planner import capacity_plan, invoke, mmc_base

    base = mmc_base(tmp_path, 2.0, 1.0, horizon=200, warmup=10)
    plan = capacity_plan(tmp_path, base, 3, 4, {"kpi": "iop_admitted_wait_mean_days", "max": 1.0},
                         objective={"maximize": "margin"})
    r = invoke("plan", plan, "--out", tmp_path / "out")
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.exit_code == 2 and len(lines) == 1, (r.exit_code, r.stdout, r.stderr)
    assert "objective.maximize" in lines[0] and "need payers in the base scenario" in lines[0], lines[0]
    assert yaml.safe_load(plan.read_text())["objective"] == {"maximize": "margin"}
