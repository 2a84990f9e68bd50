"""Costs (iopsim.analysis.cost): labour from rosters with shift differentials, services,
patient-days, overhead, the totals and the per-outcome ratios.

Labour of a role = paid weekday-day hours x wage + weekday-evening hours x wage x
(1 + evening_differential) + weekend hours x wage x (1 + weekend_differential);
the hours are hand-computed here for a tiny roster.

Helpers live in this file on purpose (no dependency on conftest.py).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import resolve_raw, validate_raw

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
COMPONENTS = ("cost_labour", "cost_services", "cost_patient_days", "cost_assessments", "cost_overhead")


def tiny_raw() -> dict:
    """IOP only, observed over [3, 17): Thursday of week 0 to Thursday of week 2.

    counselor (2 people, wage 20, evening +50 %, weekend +100 %, charged to the IOP):
        Mon 15-19 (2 h day + 2 h evening), Sat 10-12 (2 h weekend)
    nurse (1 person, wage 30, evening +25 %, weekend +10 %, shared):
        Wed 16-18 (1 h day + 1 h evening), Sun 20-24 (4 h weekend)
    """
    return {
        "name": "tiny",
        "seed": 31337,
        "horizon_days": 17,
        "warmup_days": 3,
        "referrals": {"referrals_per_week": 3.0, "sources": {"s": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {
            "iop": {
                "availability": {"any": 1.0},
                "program": {"phases": [{"weeks": 1, "sessions_per_week": 2}]},
                "tracks": {
                    "t": {
                        "accepts": ["any"],
                        "groups": 2,
                        "max_group_size": 4,
                        "sessions": [
                            {"days": ["mon"], "start_hour": 15, "hours": 2},
                            {"days": ["sat"], "start_hour": 10, "hours": 2},
                        ],
                        "facilitators": [{"role": "counselor", "count": 1}],
                        "attendance": 1.0,
                    }
                },
                "services": {
                    "drug_test": {"every_weeks": 1, "hours": 0.25, "role": "nurse", "cost": 25.0},
                    "individual": {"every_weeks": 1, "hours": 1.0, "role": "counselor", "cost": 40.0},
                },
                "cost_per_patient_day": 10.0,
            }
        },
        "staff": {
            "evening_start_hour": 17,
            "roles": {
                "counselor": {
                    "hourly_wage": 20.0,
                    "evening_differential": 0.5,
                    "weekend_differential": 1.0,
                    "charged_to": "iop",
                    "teams": [
                        {
                            "headcount": 2,
                            "shifts": [
                                {"days": ["mon"], "start_hour": 15, "end_hour": 19},
                                {"days": ["sat"], "start_hour": 10, "end_hour": 12},
                            ],
                        }
                    ],
                },
                "nurse": {
                    "hourly_wage": 30.0,
                    "evening_differential": 0.25,
                    "weekend_differential": 0.1,
                    "charged_to": "shared",
                    "teams": [
                        {
                            "headcount": 1,
                            "shifts": [
                                {"days": ["wed"], "start_hour": 16, "end_hour": 18},
                                {"days": ["sun"], "start_hour": 20, "end_hour": 24},
                            ],
                        }
                    ],
                },
            },
        },
        "costs": {"fixed_overhead_per_day": 100.0},
        "start_state": {"stages": {"iop": {"waitlist": 6}}},
    }


@functools.lru_cache(maxsize=None)
def tiny():
    sc = validate_raw(tiny_raw(), "tiny")
    return sc, run_replication(sc, 0)


@functools.lru_cache(maxsize=None)
def baseline():
    sc = validate_raw(resolve_raw(SCENARIOS / "baseline.yaml"), "baseline")
    return sc, run_replication(sc, 0)


def services_cost_from_records(records, scenario) -> tuple[float, dict]:
    svc = records["services"]
    w0 = scenario.warmup_days
    svc = svc[(svc["t_week"] >= w0) & svc["delivered"]]
    counts = svc["service"].astype(str).value_counts().to_dict()
    unit = {n: s.cost for n, s in scenario.stages.iop.services.items()}
    return float(sum(unit[n] * c for n, c in counts.items())), counts


def iop_patient_days(records, scenario, stage="iop") -> float:
    lv = records["levels"]
    return float(lv[(lv["stage"] == stage) & (lv["day"] >= scenario.warmup_days)]["census_mean"].sum())


# --------------------------------------------------------------------------- labour


def test_paid_hours_of_tiny_roster_by_hand():
    _, res = tiny()
    k = res.kpis
    # Window [3, 17): Mondays 7 and 14, Saturdays 5 and 12, Wednesdays 9 and 16 (16:00-18:00 is
    # before 17.0), Sundays 6 and 13.  Wednesday 2 is before the window.
    # counselor, per person: 2 Mondays x (2 day + 2 evening), 2 Saturdays x 2 weekend; x 2 people
    want = {"counselor": (8.0, 8.0, 8.0), "nurse": (2.0, 2.0, 8.0)}
    for role, (day, evening, weekend) in want.items():
        p = f"staff_{role}_paid_hours_"
        got = (k[p + "day"], k[p + "evening"], k[p + "weekend"])
        assert got == pytest.approx((day, evening, weekend), rel=1e-12), f"{role}: paid day/evening/weekend {got}"


def test_labour_cost_of_tiny_roster_by_hand():
    _, res = tiny()
    k = res.kpis
    counselor = 20.0 * (8.0 + 8.0 * 1.5 + 8.0 * 2.0)  # = 720
    nurse = 30.0 * (2.0 + 2.0 * 1.25 + 8.0 * 1.1)  # = 399
    assert k["cost_labour_counselor"] == pytest.approx(counselor, rel=1e-12), k["cost_labour_counselor"]
    assert k["cost_labour_nurse"] == pytest.approx(nurse, rel=1e-12), k["cost_labour_nurse"]
    assert k["cost_labour"] == pytest.approx(counselor + nurse, rel=1e-12), k["cost_labour"]
    assert counselor == pytest.approx(720.0) and nurse == pytest.approx(399.0)


def test_baseline_labour_by_hand():
    """Baseline rosters over 730 days (104 weeks + Monday and Tuesday): 522 weekdays."""
    sc, res = baseline()
    k = res.kpis
    weekdays = 104 * 5 + 2
    # intake clinician 9-17 (8 h day); day counselor 8.5-17 (8.5 h day), late counselor 12.5-21
    # (4.5 h day + 4 h evening from 17:00, +10 %); nurse 9-13 (4 h day).  No weekend hours.
    want = {
        "intake_clinician": 25.82 * weekdays * 8.0,
        "counselor": 25.82 * (weekdays * (8.5 + 4.5) + weekdays * 4.0 * 1.10),
        "nurse": 35.24 * weekdays * 4.0,
    }
    for role, v in want.items():
        assert k[f"cost_labour_{role}"] == pytest.approx(v, rel=1e-9), (role, k[f"cost_labour_{role}"], v)
    assert k["cost_labour"] == pytest.approx(sum(want.values()), rel=1e-9)


# --------------------------------------------------------------------------- totals and components


@pytest.mark.parametrize("which", ["tiny", "baseline"])
def test_cost_total_is_sum_of_components(which):
    sc, res = tiny() if which == "tiny" else baseline()
    k = res.kpis
    for c in COMPONENTS:
        assert math.isfinite(k[c]) and k[c] >= 0, f"{which}: {c} = {k[c]}"
    total = sum(k[c] for c in COMPONENTS)
    assert k["cost_total"] == pytest.approx(total, rel=1e-12), f"{which}: total {k['cost_total']} != {total}"
    roles = sc.staff.roles
    assert k["cost_labour"] == pytest.approx(sum(k[f"cost_labour_{r}"] for r in roles), rel=1e-12)
    window = sc.horizon_days - sc.warmup_days
    assert k["cost_overhead"] == pytest.approx(sc.costs.fixed_overhead_per_day * window, rel=1e-12)
    pd_cost = sum(iop_patient_days(res.records, sc, s) * cfg.cost_per_patient_day for s, cfg in sc.stages.enabled().items())
    assert k["cost_patient_days"] == pytest.approx(pd_cost, rel=1e-9), (k["cost_patient_days"], pd_cost)
    assert k["labour_share_of_cost"] == pytest.approx(k["cost_labour"] / k["cost_total"], rel=1e-12)


@pytest.mark.parametrize("which", ["tiny", "baseline"])
def test_service_costs_are_delivered_services_times_unit_cost(which):
    sc, res = tiny() if which == "tiny" else baseline()
    want, counts = services_cost_from_records(res.records, sc)
    assert counts.get("drug_test", 0) > 0, f"{which}: no drug tests delivered in the window: {counts}"
    assert res.kpis["cost_services"] == pytest.approx(want, rel=1e-12), (res.kpis["cost_services"], want, counts)
    if which == "tiny":
        # Counselors have 8 h a week between them, 4 of them in groups: some individual
        # sessions cannot be fitted, and those undelivered ones must cost nothing.
        svc = res.records["services"]
        ind = svc[(svc["service"] == "individual") & (svc["t_week"] >= sc.warmup_days)]
        assert (~ind["delivered"]).any() and ind["delivered"].any(), ind["delivered"].value_counts().to_dict()
        all_rows = svc[svc["t_week"] >= sc.warmup_days]
        naive = float(sum(sc.stages.iop.services[s].cost for s in all_rows["service"].astype(str)))
        assert res.kpis["cost_services"] < naive, "undelivered services were charged"


@pytest.mark.parametrize("which", ["tiny", "baseline"])
def test_cost_per_completed_program(which):
    sc, res = tiny() if which == "tiny" else baseline()
    k = res.kpis
    ep = res.records["episodes"]
    completed = int((ep["t_program_completed"].to_numpy(dtype=float) >= sc.warmup_days).sum())
    assert completed > 0, f"{which}: no program completed in the window"
    assert k["programs_completed"] == completed
    assert k["cost_per_completed_program"] == pytest.approx(k["cost_total"] / completed, rel=1e-12)


def test_tiny_iop_cost_attribution():
    """IOP only, no intake: everything is attributed to the IOP (share of treatment days = 1)."""
    sc, res = tiny()
    k = res.kpis
    days = iop_patient_days(res.records, sc)
    assert days > 0
    own = k["cost_labour_counselor"]  # charged_to iop
    shared = k["cost_labour_nurse"] + k["cost_overhead"]  # charged_to shared, plus overhead
    want = own + k["cost_services"] + days * 10.0 + shared * 1.0
    assert k["iop_cost_attributed"] == pytest.approx(want, rel=1e-12), (k["iop_cost_attributed"], want)
    assert k["iop_cost_attributed"] == pytest.approx(k["cost_total"], rel=1e-12)
    assert k["iop_cost_per_client_week"] == pytest.approx(want / (days / 7.0), rel=1e-12)


def test_baseline_iop_cost_per_client_week():
    sc, res = baseline()
    k = res.kpis
    v = k["iop_cost_per_client_week"]
    assert math.isfinite(v) and v > 0, f"iop_cost_per_client_week = {v}"
    rec = res.records
    iop_days = iop_patient_days(rec, sc, "iop")
    treat = sum(iop_patient_days(rec, sc, s) for s in ("residential", "php", "iop"))
    roles = sc.staff.roles
    own = sum(k[f"cost_labour_{r}"] for r in roles if roles[r].charged_to == "iop")
    shared = sum(k[f"cost_labour_{r}"] for r in roles if roles[r].charged_to == "shared") + k["cost_overhead"]
    want = own + k["cost_services"] + iop_days * sc.stages.iop.cost_per_patient_day + shared * iop_days / treat
    assert k["iop_cost_attributed"] == pytest.approx(want, rel=1e-9), (k["iop_cost_attributed"], want)
    assert v == pytest.approx(want / (iop_days / 7.0), rel=1e-9)
    # Order of magnitude: DATCAP's $462 per client-week (2001 $) with mixed-year inputs.
    assert 50 < v < 5000, f"IOP cost per client-week {v:.0f} is implausible"
