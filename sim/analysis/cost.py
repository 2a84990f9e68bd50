"""Costs: records x unit costs -> cost totals, the breakdown, and cost per outcome.

Components (all over the observation window):

* **labour** -- every rostered hour is paid (busy or idle): weekday day hours
  at the role's wage, weekday evening hours with the evening differential,
  weekend hours with the weekend differential;
* **services** -- the per-occurrence cost of delivered IOP services (drug
  tests, ...);
* **patient-days** -- patient-days at each stage x its ``cost_per_patient_day``
  (non-labour costs where staff are modelled, all costs where they are not);
* **assessments** -- intake assessments x ``cost_per_assessment``;
* **overhead** -- ``fixed_overhead_per_day`` x days.

Costs attributed to the IOP (to compare with published cost per client-week)
are its own labour (roles ``charged_to: iop``), services and patient-day
costs, plus a share of shared labour and overhead in proportion to the IOP's
share of treatment patient-days.
"""

from __future__ import annotations

import math

import numpy as np

from iopsim.engine.records import table
from iopsim.schema.scenario import TREATMENT_STAGES, Scenario


def labour_cost(scenario: Scenario, k: dict) -> dict[str, float]:
    """Labour cost per role from the paid-hours KPIs (``staff_<role>_paid_hours_*``)."""
    out: dict[str, float] = {}
    roles = scenario.staff.roles if scenario.staff else {}
    for role, cfg in roles.items():
        p = f"staff_{role}_paid_hours_"
        out[role] = cfg.hourly_wage * (
            k.get(p + "day", 0.0)
            + k.get(p + "evening", 0.0) * (1.0 + cfg.evening_differential)
            + k.get(p + "weekend", 0.0) * (1.0 + cfg.weekend_differential)
        )
    return out


def days_in_window(t_admit: np.ndarray, t_leave: np.ndarray, w0: float, horizon: float) -> np.ndarray:
    """Days of each stay (admission to leaving, still in care at the end: to the horizon) within the window."""
    return np.clip(np.minimum(np.where(np.isnan(t_leave), horizon, t_leave), horizon) - np.maximum(t_admit, w0), 0, None)


def track_client_days(records, w0: float, horizon: float) -> dict[str, float]:
    """Client-days in each IOP track within the window, from the visits (admission to leaving)."""
    v = table(records, "visits")
    iop = v.eq("stage", "iop")
    t_admit = v["t_admit"][iop]
    track = v["track"][iop]
    ok = ~np.isnan(t_admit)
    days = days_in_window(t_admit, v["t_leave"][iop], w0, horizon)
    out: dict[str, float] = {}
    for name in np.unique(track[ok]):
        out[str(name)] = float(days[ok & (track == name)].sum())
    return out


def iop_day_cost(records, scenario: Scenario, w0: float, horizon: float, patient_days: dict) -> float:
    """Non-labour cost of the IOP's client-days: each track's own ``cost_per_client_day``, else the stage's."""
    cfg = scenario.stages.iop
    if not cfg.tracks or all(t.cost_per_client_day is None for t in cfg.tracks.values()):
        return patient_days.get("iop", 0.0) * cfg.cost_per_patient_day
    by_track = track_client_days(records, w0, horizon)
    return sum(days * (cfg.tracks[t].cost_per_client_day if cfg.tracks[t].cost_per_client_day is not None
                       else cfg.cost_per_patient_day) for t, days in by_track.items() if t in cfg.tracks)


def cost_kpis(records, scenario: Scenario, w0: float, horizon: float, k: dict, patient_days: dict) -> dict[str, float]:
    window = horizon - w0
    out: dict[str, float] = {}
    labour = labour_cost(scenario, k)
    for role, v in labour.items():
        out[f"cost_labour_{role}"] = v
    out["cost_labour"] = sum(labour.values())

    services = table(records, "services")
    delivered = (services["t_week"].astype(float, copy=False) >= w0) & services["delivered"].astype(bool, copy=False)
    svc_cfg = scenario.stages.iop.services if scenario.stages.iop is not None else {}
    names, counts = np.unique(services["service"][delivered].astype(str), return_counts=True)
    # Summed most delivered first (ties by name), as pandas' value_counts ordered them: the same
    # total to the last bit on the shipped scenarios.
    order = sorted(range(len(names)), key=lambda i: (-counts[i], names[i]))
    out["cost_services"] = float(sum(svc_cfg[names[i]].cost * int(counts[i]) for i in order if names[i] in svc_cfg))

    stages = scenario.stages.enabled()
    stage_day_cost = {s: patient_days.get(s, 0.0) * cfg.cost_per_patient_day for s, cfg in stages.items()}
    if "iop" in stages:
        stage_day_cost["iop"] = iop_day_cost(records, scenario, w0, horizon, patient_days)
    out["cost_patient_days"] = sum(stage_day_cost.values())
    out["cost_assessments"] = k.get("intake_assessed", 0.0) * (scenario.intake.cost_per_assessment if scenario.intake else 0.0)
    out["cost_overhead"] = scenario.costs.fixed_overhead_per_day * window
    total = out["cost_labour"] + out["cost_services"] + out["cost_patient_days"] + out["cost_assessments"] + out["cost_overhead"]
    out["cost_total"] = total
    out["labour_share_of_cost"] = out["cost_labour"] / total if total else math.nan

    completed = k.get("programs_completed", 0.0)
    out["cost_per_completed_program"] = total / completed if completed else math.nan
    admitted = k.get("admitted_to_treatment", 0.0)
    out["cost_per_admission"] = total / admitted if admitted else math.nan
    treatment_days = sum(patient_days.get(s, 0.0) for s in TREATMENT_STAGES)
    out["cost_per_patient_week"] = total / (treatment_days / 7.0) if treatment_days else math.nan
    all_days = sum(patient_days.get(s, 0.0) for s in stages)
    out["cost_per_patient_day"] = total / all_days if all_days else math.nan

    if "iop" in stages:
        roles = scenario.staff.roles if scenario.staff else {}
        own_labour = sum(v for r, v in labour.items() if roles[r].charged_to == "iop")
        shared = sum(v for r, v in labour.items() if roles[r].charged_to == "shared") + out["cost_overhead"]
        share = patient_days.get("iop", 0.0) / treatment_days if treatment_days else 0.0
        iop_cost = own_labour + out["cost_services"] + stage_day_cost["iop"] + shared * share
        out["iop_cost_attributed"] = iop_cost
        weeks = patient_days.get("iop", 0.0) / 7.0
        out["iop_cost_per_client_week"] = iop_cost / weeks if weeks else math.nan
        adm = k.get("iop_admissions", 0.0)
        out["iop_cost_per_episode"] = iop_cost / adm if adm else math.nan
    return out
