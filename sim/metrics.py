"""Records -> key performance indicators (KPIs) of one replication.

Pure functions of the records of :mod:`sim.records` and the scenario.  The
observation window is ``[warmup_days, horizon_days)``: an event counts if it
happened in the window, time averages integrate over the window only.

Definitions (also in the README):

* ``referrals`` -- new referrals and returns in the window (patients already
  in care on day 0 are not referrals).
* ``<stage>_admissions`` -- admissions in the window; ``<stage>_<outcome>`` --
  visits that ended in the window with that outcome.
* ``<stage>_wait_*_days`` -- waiting time (join to admission) of patients
  admitted in the window.  Patients who reneged or are still waiting at the end
  are not in it (their waits are censored); ``<stage>_reneged`` counts them.
* ``<stage>_waitlist_mean`` / ``_max`` -- time-average and maximum of the
  number waiting; ``<stage>_census_mean`` likewise for the number in care;
  ``<stage>_occupancy`` -- census mean / capacity.
* ``placed_in_treatment`` -- referrals in the window that intake placed in
  residential, PHP or IOP; ``admitted_to_treatment`` -- episodes with a
  treatment admission in the window.
* ``programs_completed`` -- episodes that completed a treatment stage and then
  left treatment (discharge or aftercare), in the window.
* ``cost_total`` -- patient-days x cost per patient-day by stage, plus
  assessments x cost per assessment, plus fixed overhead per day, over the
  window; ``cost_per_completed_program`` = ``cost_total / programs_completed``.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from sim.scenario import EXITS, TREATMENT_STAGES, Scenario

#: Human-readable label and unit of each KPI family (for tables and reports).
KPI_UNITS = {
    "referrals": ("Referrals", "patients"),
    "readmissions": ("Readmissions (returns after relapse)", "patients"),
    "programs_completed": ("Programs completed", "patients"),
    "placed_in_treatment": ("Placed in a level of care at intake", "patients"),
    "admitted_to_treatment": ("Episodes admitted to treatment", "patients"),
    "cost_total": ("Total cost", "currency"),
    "cost_per_completed_program": ("Cost per completed program", "currency"),
    "cost_per_patient_day": ("Cost per patient-day in treatment", "currency"),
    "joined": ("Joined waitlist", "patients"),
    "admissions": ("Admissions", "patients"),
    "completed": ("Completed stays", "patients"),
    "dropped_out": ("Dropped out", "patients"),
    "transferred": ("Transferred out", "patients"),
    "terminated": ("Terminated", "patients"),
    "other": ("Other early exits", "patients"),
    "relapsed": ("Relapsed while waiting or in care", "patients"),
    "reneged": ("Left the waitlist (reneged)", "patients"),
    "assessed": ("Assessments done", "patients"),
    "wait_mean_days": ("Mean wait", "days"),
    "wait_median_days": ("Median wait", "days"),
    "wait_p90_days": ("90th percentile wait", "days"),
    "stay_mean_days": ("Mean length of stay", "days"),
    "waitlist_mean": ("Average waitlist", "patients"),
    "waitlist_max": ("Longest waitlist", "patients"),
    "census_mean": ("Average census", "patients"),
    "census_max": ("Peak census", "patients"),
    "occupancy": ("Occupancy", "fraction"),
}

STAGE_LABELS = {
    "intake": "Intake",
    "residential": "Residential/inpatient",
    "php": "PHP",
    "iop": "IOP",
    "aftercare": "Aftercare",
}


def kpi_label(name: str) -> tuple[str, str]:
    """(label, unit) for a KPI name such as ``iop_wait_mean_days``."""
    if name in KPI_UNITS:
        return KPI_UNITS[name]
    for stage, stage_label in STAGE_LABELS.items():
        prefix = stage + "_"
        if name.startswith(prefix) and name[len(prefix) :] in KPI_UNITS:
            label, unit = KPI_UNITS[name[len(prefix) :]]
            return f"{stage_label}: {label[0].lower()}{label[1:]}", unit
    return name, ""


def _stage_outcomes(stage: str) -> tuple[str, ...]:
    if stage == "intake":
        return ("assessed", "reneged")
    return ("completed", *EXITS, "relapsed", "reneged")


def replication_kpis(records: dict[str, pd.DataFrame], scenario: Scenario, warmup_days: int | None = None) -> dict[str, float]:
    """KPIs of one replication (a flat name -> value mapping)."""
    w0 = float(scenario.warmup_days if warmup_days is None else warmup_days)
    horizon = float(scenario.horizon_days)
    window = horizon - w0
    visits, episodes, levels = records["visits"], records["episodes"], records["levels"]
    k: dict[str, float] = {}

    t_ref = episodes["t_referral"].to_numpy(dtype=float)
    in_window = t_ref >= w0
    k["referrals"] = float(np.count_nonzero(in_window))
    k["readmissions"] = float(np.count_nonzero(in_window & (episodes["episode"].to_numpy() > 1)))
    k["programs_completed"] = float(np.count_nonzero(episodes["t_program_completed"].to_numpy(dtype=float) >= w0))
    placed = episodes["placement"].isin(TREATMENT_STAGES).to_numpy(dtype=bool)
    k["placed_in_treatment"] = float(np.count_nonzero(in_window & placed))

    stages = ["intake"] if scenario.intake is not None else []
    stages += list(scenario.stages.enabled())
    t_join = visits["t_join"].to_numpy(dtype=float)
    t_admit = visits["t_admit"].to_numpy(dtype=float)
    t_leave = visits["t_leave"].to_numpy(dtype=float)
    stage_col = visits["stage"].to_numpy(dtype=object)
    outcome_col = visits["outcome"].to_numpy(dtype=object)
    lv_stage = levels["stage"].to_numpy(dtype=object) if len(levels) else np.array([], dtype=object)
    lv_day = levels["day"].to_numpy() if len(levels) else np.array([])

    patient_days: dict[str, float] = {}
    for stage in stages:
        m = stage_col == stage
        k[f"{stage}_joined"] = float(np.count_nonzero(m & (t_join >= w0)))
        k[f"{stage}_admissions"] = float(np.count_nonzero(m & (t_admit >= w0)))
        left = m & (t_leave >= w0)
        for outcome in _stage_outcomes(stage):
            k[f"{stage}_{outcome}"] = float(np.count_nonzero(left & (outcome_col == outcome)))
        admitted = m & (t_admit >= w0)
        waits = t_admit[admitted] - t_join[admitted]
        if waits.size:
            k[f"{stage}_wait_mean_days"] = float(waits.mean())
            k[f"{stage}_wait_median_days"] = float(np.median(waits))
            k[f"{stage}_wait_p90_days"] = float(np.quantile(waits, 0.9))
        else:
            k[f"{stage}_wait_mean_days"] = k[f"{stage}_wait_median_days"] = k[f"{stage}_wait_p90_days"] = math.nan
        ended = admitted & ~np.isnan(t_leave)
        stays = t_leave[ended] - t_admit[ended]
        k[f"{stage}_stay_mean_days"] = float(stays.mean()) if stays.size else math.nan
        sel = (lv_stage == stage) & (lv_day >= w0)
        lv = levels.loc[sel]
        k[f"{stage}_waitlist_mean"] = float(lv["waitlist_mean"].sum() / window)
        k[f"{stage}_waitlist_max"] = float(lv["waitlist_max"].max()) if len(lv) else 0.0
        census_area = float(lv["census_mean"].sum())
        patient_days[stage] = census_area
        k[f"{stage}_census_mean"] = census_area / window
        k[f"{stage}_census_max"] = float(lv["census_max"].max()) if len(lv) else 0.0
        cap = _capacity(scenario, stage)
        k[f"{stage}_occupancy"] = k[f"{stage}_census_mean"] / cap if cap else math.nan

    treated = visits.loc[np.isin(stage_col, TREATMENT_STAGES) & (t_admit >= w0), ["patient_id", "episode"]]
    k["admitted_to_treatment"] = float(len(treated.drop_duplicates()))

    cost = scenario.costs.fixed_overhead_per_day * window
    treatment_days = 0.0
    for stage, cfg in scenario.stages.enabled().items():
        cost += patient_days.get(stage, 0.0) * cfg.cost_per_patient_day
        treatment_days += patient_days.get(stage, 0.0)
    if scenario.intake is not None:
        cost += k["intake_assessed"] * scenario.intake.cost_per_assessment
    k["cost_total"] = cost
    k["cost_per_completed_program"] = cost / k["programs_completed"] if k["programs_completed"] else math.nan
    k["cost_per_patient_day"] = cost / treatment_days if treatment_days else math.nan
    return k


def _capacity(scenario: Scenario, stage: str) -> float | None:
    if stage == "intake":
        return float(scenario.intake.clinicians)
    cap = getattr(scenario.stages, stage).capacity
    return float(cap) if cap is not None else None
