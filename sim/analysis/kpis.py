"""Records -> key performance indicators (KPIs) of one replication.

Pure functions of the records of :mod:`iopsim.engine.records` and the scenario.  The
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
  number waiting; ``_max_first_year`` -- the maximum over days 0-364 (a new
  site's first year, whatever the warm-up); ``<stage>_census_mean`` likewise for the number in care;
  ``<stage>_occupancy`` -- census mean / capacity.
* ``placed_in_treatment`` -- referrals in the window that intake placed in
  residential, PHP or IOP; ``admitted_to_treatment`` -- of those referrals,
  the ones admitted to a treatment stage in the window.
* ``programs_completed`` -- episodes that completed a treatment stage and then
  left treatment (discharge or aftercare), in the window.
* ``cost_*`` -- see :mod:`iopsim.analysis.cost` (labour from rosters, services,
  patient-day costs, assessments, overhead); ``cost_per_completed_program`` =
  ``cost_total / programs_completed``.
* ``iop_track_<track>_*`` -- group sessions, group census, waits to start and
  outcomes per IOP track; ``staff_<role>_*`` -- paid, busy, idle and unmet
  hours, utilisation and FTE per role (see :func:`track_kpis`, :func:`staff_kpis`).
"""

from __future__ import annotations

import math

import numpy as np

from iopsim.analysis.access import _keys, access_kpis, cumulative_incidence
from iopsim.analysis.cost import cost_kpis
from iopsim.analysis.revenue import revenue_kpis
from iopsim.schema.scenario import EXITS, TREATMENT_STAGES, Scenario
from iopsim.engine.records import table
from iopsim.engine.staff import INTAKE_SHORTHAND_ROLE, idle_hours, roles_of, shift_hours

#: Human-readable label and unit of each KPI family (for tables and reports).
KPI_UNITS = {
    "referrals": ("Referrals", "patients"),
    "readmissions": ("Readmissions (returns after relapse)", "patients"),
    "programs_completed": ("Programs completed", "patients"),
    "placed_in_treatment": ("Placed in a level of care at intake", "patients"),
    "admitted_to_treatment": ("Referrals admitted to treatment", "patients"),
    "cost_total": ("Total cost", "currency"),
    "cost_per_completed_program": ("Cost per completed program", "currency"),
    "cost_per_patient_day": ("Cost per patient-day (all stages, aftercare included)", "currency"),
    "revenue_total": ("Revenue collected", "currency"),
    "margin_total": ("Net margin (revenue minus cost)", "currency"),
    "break_even_iop_census": ("Break-even mean IOP census (clients a day, at this staffing)", "patients"),
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
    "admitted_wait_mean_days": ("Mean wait of those admitted", "days"),
    "admitted_wait_median_days": ("Median wait of those admitted", "days"),
    "admitted_wait_p90_days": ("90th percentile wait of those admitted", "days"),
    "share_lost_waiting": ("Share of those joining the waitlist who left it unadmitted", "fraction"),
    "stay_mean_days": ("Mean length of stay", "days"),
    "waitlist_mean": ("Average waitlist", "patients"),
    "waitlist_max": ("Longest waitlist", "patients"),
    "waitlist_max_first_year": ("Longest waitlist in the first year (from day 0)", "patients"),
    "census_mean": ("Average census", "patients"),
    "census_max": ("Peak census", "patients"),
    "occupancy": ("Occupancy", "fraction"),
    "stepped_up": ("Stepped up (moved to a more intensive level)", "patients"),
    "stay_median_days": ("Median length of stay", "days"),
    "planned_stay_mean_days": ("Mean planned length of stay (ended stays)", "days"),
    "planned_stay_median_days": ("Median planned length of stay (ended stays)", "days"),
    **{f"{what}_{stat}_days_{o}": (f"{stat.capitalize()} {'planned ' if what == 'planned_stay' else ''}length of "
                                   f"stays ended {phrase}", "days")
       for o, phrase in (("completed", "by completing them"), ("dropped_out", "by dropout"),
                         ("transferred", "by a transfer out"), ("terminated", "by termination"),
                         ("other", "by another early exit"), ("stepped_up", "by a step-up"),
                         ("relapsed", "by a relapse"))
       for what in ("stay", "planned_stay") for stat in ("mean", "median")},
    "share_extended": ("Share of ended stays whose plan was extended", "fraction"),
    "share_shortened": ("Share of ended stays whose plan was shortened", "fraction"),
    "referral_cohort": ("Referrals followed for access (placed in a level of care, or lost at intake)", "patients"),
    "referral_admitted_within_7_days": ("Share of referrals admitted to treatment within 7 days", "fraction"),
    "referral_admitted_within_14_days": ("Share of referrals admitted to treatment within 14 days", "fraction"),
    "referral_admitted_within_30_days": ("Share of referrals admitted to treatment within 30 days", "fraction"),
    "referral_lost_before_admission": ("Share of referrals lost before admission", "fraction"),
    "referral_lost_after_assessment": ("Of those assessed and placed in care, the share lost before admission",
                                       "fraction"),
    "referral_to_admission_median_days": ("Median referral to admission, everyone referred (Kaplan-Meier)", "days"),
    "referral_to_admission_p90_days": ("90th percentile referral to admission, everyone referred (Kaplan-Meier)", "days"),
    "referral_to_admission_mean_days_admitted": ("Mean referral to admission of those admitted", "days"),
    "referral_share_admitted_waiting_over_30_days": ("Share of those admitted who waited over 30 days from referral",
                                                     "fraction"),
}

STAGE_LABELS = {
    "intake": "Intake",
    "residential": "Residential/inpatient",
    "php": "PHP",
    "iop": "IOP",
    "aftercare": "Aftercare",
}


TRACK_UNITS = {
    "sessions_held": ("sessions held", "sessions"),
    "sessions_cancelled": ("sessions cancelled for want of staff", "sessions"),
    "sessions_merged": ("sessions merged into another group", "sessions"),
    "sessions_no_clients": ("sessions with no clients", "sessions"),
    "group_census_mean": ("mean group census (attendees per session)", "clients"),
    "group_census_p10": ("10th percentile group census", "clients"),
    "group_census_p90": ("90th percentile group census", "clients"),
    "group_census_max": ("largest group census", "clients"),
    "share_sessions_at_cap": ("share of sessions at the maximum group size", "fraction"),
    "share_sessions_below_min": ("share of sessions below the minimum group size", "fraction"),
    "attendance_rate": ("share of scheduled attendances attended", "fraction"),
    "wait_to_start_mean_days": ("mean wait from joining to first session, of those who started", "days"),
    "referral_to_first_session_median_days": ("median referral to first attended session (Kaplan-Meier)", "days"),
    "referral_to_first_session_p90_days": ("90th percentile referral to first attended session (Kaplan-Meier)",
                                           "days"),
    "admissions": ("admissions", "patients"),
    "completion_rate": ("share of ended stays completed", "fraction"),
    "dropout_rate": ("share of ended stays dropped out", "fraction"),
    "reneged_waiting": ("left the waitlist while waiting for this track", "patients"),
}
STAFF_UNITS = {
    "headcount": ("headcount", "people"),
    "paid_hours": ("paid hours", "hours"),
    "paid_hours_day": ("paid weekday day hours", "hours"),
    "paid_hours_evening": ("paid weekday evening hours", "hours"),
    "paid_hours_weekend": ("paid weekend hours", "hours"),
    "busy_hours": ("busy hours", "hours"),
    "idle_hours": ("idle rostered hours", "hours"),
    "utilisation": ("utilisation (busy / paid)", "fraction"),
    "unmet_hours": ("unmet demand", "hours"),
    "unmet_hours_group": ("unmet demand of group sessions (sessions merged or cancelled)", "hours"),
    "required_fte": ("FTE required to meet demand", "FTE"),
    "paid_fte": ("FTE paid", "FTE"),
}
OTHER_UNITS = {
    "cost_labour": ("Labour cost", "currency"),
    "cost_services": ("Service costs (drug tests, ...)", "currency"),
    "cost_patient_days": ("Patient-day costs", "currency"),
    "cost_assessments": ("Intake assessment costs", "currency"),
    "cost_overhead": ("Fixed overhead", "currency"),
    "cost_per_admission": ("Cost per episode admitted to treatment", "currency"),
    "cost_per_patient_week": ("Cost per patient-week in treatment", "currency"),
    "labour_share_of_cost": ("Labour share of total cost", "fraction"),
    "iop_cost_attributed": ("IOP: cost attributed", "currency"),
    "iop_cost_per_client_week": ("IOP: cost per client-week", "currency"),
    "iop_cost_per_episode": ("IOP: cost per admission", "currency"),
    "iop_reneged_no_feasible_track": ("IOP: left the waitlist, no track fits their availability (or transport barrier)",
                                      "patients"),
    "revenue_billed": ("Revenue billed", "currency"),
    "revenue_not_collected": ("Billed but denied or not collected", "currency"),
    "margin_share_of_revenue": ("Margin as a share of revenue", "fraction"),
    "cost_recovery": ("Revenue as a share of cost", "fraction"),
    "revenue_per_completed_program": ("Revenue per completed program", "currency"),
    "margin_per_completed_program": ("Margin per completed program", "currency"),
    "iop_revenue": ("IOP: revenue collected", "currency"),
    "iop_revenue_per_client_day": ("IOP: revenue per client-day", "currency"),
    "iop_variable_cost_per_client_day": ("IOP: cost per client-day that grows with census", "currency"),
}
BILLING_LABELS = {
    "assessment": "intake assessments",
    "iop_session": "IOP group sessions attended",
    "iop_day": "IOP days attended",
    "individual": "individual sessions",
    "family": "family sessions",
    "drug_test": "drug tests",
    "residential_day": "residential patient-days",
    "php_day": "PHP patient-days",
    "aftercare_day": "aftercare patient-days",
}


def kpi_label(name: str) -> tuple[str, str]:
    """(label, unit) for a KPI name such as ``iop_admitted_wait_mean_days``."""
    if name in KPI_UNITS:
        return KPI_UNITS[name]
    if name.startswith("referral_lost_at_"):
        stage = name[len("referral_lost_at_"):]
        return f"Share of referrals lost at the {STAGE_LABELS.get(stage, stage)} waitlist", "fraction"
    if name in OTHER_UNITS:
        return OTHER_UNITS[name]
    if name.startswith("cost_labour_"):
        return f"Labour cost: {name[len('cost_labour_'):]}", "currency"
    if name.startswith("revenue_payer_"):
        return f"Revenue collected from {name[len('revenue_payer_'):].replace('_', ' ')}", "currency"
    if name.startswith("payer_mix_"):
        return f"Share of admissions paid by {name[len('payer_mix_'):].replace('_', ' ')}", "fraction"
    if name.startswith("revenue_") and name[len("revenue_"):] in BILLING_LABELS:
        return f"Revenue: {BILLING_LABELS[name[len('revenue_'):]]}", "currency"
    if name.startswith("iop_track_"):
        rest = name[len("iop_track_") :]
        for key, (label, unit) in TRACK_UNITS.items():
            if rest.endswith("_" + key):
                return f"IOP {rest[: -len(key) - 1]} track: {label}", unit
    if name.startswith("staff_ratio_"):
        if name.endswith("_clients_per_staff"):
            return f"Clients per staff member ({name[len('staff_ratio_') : -len('_clients_per_staff')]})", "clients"
        if name.endswith("_share_days_within_rule"):
            return f"Share of days within the ratio rule ({name[len('staff_ratio_') : -len('_share_days_within_rule')]})", "fraction"
    if name.startswith("staff_"):
        rest = name[len("staff_") :]
        for key, (label, unit) in sorted(STAFF_UNITS.items(), key=lambda kv: -len(kv[0])):
            if rest.endswith("_" + key):
                return f"Staff {rest[: -len(key) - 1]}: {label}", unit
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


def replication_kpis(records, scenario: Scenario, warmup_days: int | None = None) -> dict[str, float]:
    """KPIs of one replication (a flat name -> value mapping)."""
    w0 = float(scenario.warmup_days if warmup_days is None else warmup_days)
    horizon = float(scenario.horizon_days)
    window = horizon - w0
    visits, episodes, levels = table(records, "visits"), table(records, "episodes"), table(records, "levels")
    k: dict[str, float] = {}

    t_ref = episodes["t_referral"]
    in_window = t_ref >= w0
    k["referrals"] = float(np.count_nonzero(in_window))
    k["readmissions"] = float(np.count_nonzero(in_window & (episodes["episode"] > 1)))
    k["programs_completed"] = float(np.count_nonzero(episodes["t_program_completed"] >= w0))
    placed = episodes.isin("placement", TREATMENT_STAGES)
    k["placed_in_treatment"] = float(np.count_nonzero(in_window & placed))

    stages = ["intake"] if scenario.intake is not None else []
    stages += list(scenario.stages.enabled())
    t_join, t_admit, t_leave = visits["t_join"], visits["t_admit"], visits["t_leave"]
    outcome_col = visits["outcome"]
    planned = visits["planned_days"]
    extensions = visits["extensions"]
    shortenings = visits["shortenings"]
    lv_day = levels["day"]
    lv_wait_mean, lv_wait_max, lv_census_mean, lv_census_max = (
        levels[c] for c in ("waitlist_mean", "waitlist_max", "census_mean", "census_max"))

    patient_days: dict[str, float] = {}
    for stage in stages:
        m = visits.eq("stage", stage)
        k[f"{stage}_joined"] = float(np.count_nonzero(m & (t_join >= w0)))
        k[f"{stage}_admissions"] = float(np.count_nonzero(m & (t_admit >= w0)))
        left = m & (t_leave >= w0)
        for outcome in _stage_outcomes(stage):
            k[f"{stage}_{outcome}"] = float(np.count_nonzero(left & (outcome_col == outcome)))
        admitted = m & (t_admit >= w0)
        waits = t_admit[admitted] - t_join[admitted]
        if waits.size:
            k[f"{stage}_admitted_wait_mean_days"] = float(waits.mean())
            k[f"{stage}_admitted_wait_median_days"] = float(np.median(waits))
            k[f"{stage}_admitted_wait_p90_days"] = float(np.quantile(waits, 0.9))
        else:
            k[f"{stage}_admitted_wait_mean_days"] = k[f"{stage}_admitted_wait_median_days"] = k[f"{stage}_admitted_wait_p90_days"] = math.nan
        ended = admitted & ~np.isnan(t_leave)
        stays = t_leave[ended] - t_admit[ended]
        k[f"{stage}_stay_mean_days"] = float(stays.mean()) if stays.size else math.nan
        if stage != "intake":
            k.update(_plan_kpis(stage, ended, t_admit, t_leave, planned, outcome_col, extensions,
                                     shortenings))
        k[f"{stage}_share_lost_waiting"] = _share_lost_waiting(m & (t_join >= w0), t_join, t_admit, t_leave,
                                                               outcome_col, horizon)
        at_stage = levels.eq("stage", stage)
        sel = at_stage & (lv_day >= w0)
        k[f"{stage}_waitlist_mean"] = float(lv_wait_mean[sel].sum() / window)
        k[f"{stage}_waitlist_max"] = float(lv_wait_max[sel].max()) if sel.any() else 0.0
        first_year = lv_wait_max[at_stage & (lv_day < 365)]
        k[f"{stage}_waitlist_max_first_year"] = float(first_year.max()) if len(first_year) else 0.0
        census_area = float(lv_census_mean[sel].sum())
        patient_days[stage] = census_area
        k[f"{stage}_census_mean"] = census_area / window
        k[f"{stage}_census_max"] = float(lv_census_max[sel].max()) if sel.any() else 0.0
        cap = _capacity(scenario, stage)
        k[f"{stage}_occupancy"] = k[f"{stage}_census_mean"] / cap if cap else math.nan

    # Episodes referred in the window (not those already in care on day 0) admitted to treatment.
    treated = visits.isin("stage", TREATMENT_STAGES) & (t_admit >= w0)
    treated_keys = np.unique(_keys(visits["patient_id"][treated], visits["episode"][treated]))
    referred_keys = _keys(episodes["patient_id"][in_window], episodes["episode"][in_window])
    k["admitted_to_treatment"] = float(np.count_nonzero(np.isin(referred_keys, treated_keys)))

    k.update(access_kpis(records, scenario, w0))
    k.update(track_kpis(records, scenario, w0))
    k.update(staff_kpis(records, scenario, w0, horizon, k))
    k.update(cost_kpis(records, scenario, w0, horizon, k, patient_days))
    k.update(revenue_kpis(records, scenario, w0, horizon, k, patient_days))
    return k


#: How a stay that was admitted can end: the outcomes its planned and actual lengths are reported by.
STAY_OUTCOMES: tuple[str, ...] = ("completed", *EXITS, "relapsed")


def _plan_kpis(stage, ended, t_admit, t_leave, planned, outcome, extensions, shortenings) -> dict[str, float]:
    """Planned and actual length of the stays that ended in the window: mean and median, overall and
    by every way a stay ends (an outcome no stay ended with is NaN: undefined, not zero)."""
    k = {}
    stays = t_leave - t_admit
    nan = math.nan
    k[f"{stage}_stay_median_days"] = float(np.median(stays[ended])) if ended.any() else nan
    k[f"{stage}_planned_stay_mean_days"] = float(planned[ended].mean()) if ended.any() else nan
    k[f"{stage}_planned_stay_median_days"] = float(np.median(planned[ended])) if ended.any() else nan
    for o in STAY_OUTCOMES:
        m = ended & (outcome == o)
        some = m.any()
        k[f"{stage}_stay_mean_days_{o}"] = float(stays[m].mean()) if some else nan
        k[f"{stage}_stay_median_days_{o}"] = float(np.median(stays[m])) if some else nan
        k[f"{stage}_planned_stay_mean_days_{o}"] = float(planned[m].mean()) if some else nan
        k[f"{stage}_planned_stay_median_days_{o}"] = float(np.median(planned[m])) if some else nan
    k[f"{stage}_share_extended"] = float((extensions[ended] > 0).mean()) if ended.any() else nan
    k[f"{stage}_share_shortened"] = float((shortenings[ended] > 0).mean()) if ended.any() else nan
    return k


def _share_lost_waiting(m, t_join, t_admit, t_leave, outcome, horizon: float) -> float:
    """Of the visits that joined a waitlist, the share that left it unadmitted (cumulative incidence:
    those still waiting at the end are censored, not counted as admitted)."""
    admitted = ~np.isnan(t_admit[m])
    left = ~admitted & ~np.isnan(t_leave[m]) & np.isin(outcome[m], ("reneged", "relapsed"))
    end = np.where(admitted, t_admit[m], np.where(np.isnan(t_leave[m]), horizon, t_leave[m]))
    kinds = np.where(admitted, 1, np.where(left, 2, 0))
    return cumulative_incidence(end - t_join[m], kinds, 2, math.inf)


def track_kpis(records, scenario: Scenario, w0: float) -> dict[str, float]:
    """Per IOP track: sessions by status, group census, waits to start, outcomes.

    Computed on the columns as numpy arrays (boolean masks, no DataFrame
    filtering): the same numbers, a fraction of the time.
    """
    iop = scenario.stages.iop
    if iop is None or iop.tracks is None:
        return {}
    k: dict[str, float] = {}
    sessions = table(records, "sessions")
    s_in = sessions["t_start"] >= w0
    s_track = sessions["track"]
    s_status = sessions["status"]
    s_att = sessions["attendees"]
    s_exp = sessions["expected"]
    visits = table(records, "visits")
    v_iop = visits.eq("stage", "iop")
    v_track = visits["track"]
    v_outcome = visits["outcome"]
    t_join, t_admit, t_leave = visits["t_join"], visits["t_admit"], visits["t_leave"]
    t_first = visits["t_first_session"]
    iv = v_iop & (t_join >= w0)
    ended = v_iop & (t_leave >= w0) & ~np.isnan(t_admit)
    reneged = v_iop & (v_outcome == "reneged") & (t_leave >= w0)
    waited_for = [x.split("|") for x in v_track[reneged]]  # the tracks each reneged patient waited for
    k["iop_reneged_no_feasible_track"] = float(np.count_nonzero(v_track[reneged] == ""))
    for name, t in iop.tracks.items():
        p = f"iop_track_{name}_"
        ts = s_in & (s_track == name)
        status = s_status[ts]
        for st in ("held", "cancelled", "merged", "no_clients"):
            k[p + f"sessions_{st}"] = float(np.count_nonzero(status == st))
        held = status == "held"
        att = s_att[ts][held].astype(float)
        if att.size:
            k[p + "group_census_mean"] = float(att.mean())
            k[p + "group_census_p10"] = float(np.quantile(att, 0.1))
            k[p + "group_census_p90"] = float(np.quantile(att, 0.9))
            k[p + "group_census_max"] = float(att.max())
            k[p + "share_sessions_at_cap"] = float((att >= t.max_group_size).mean())
            k[p + "share_sessions_below_min"] = float((att < t.min_group_size).mean())
            k[p + "attendance_rate"] = float(att.sum() / max(s_exp[ts][held].sum(), 1))
        else:
            for q in ("group_census_mean", "group_census_p10", "group_census_p90", "group_census_max",
                      "share_sessions_at_cap", "share_sessions_below_min", "attendance_rate"):
                k[p + q] = math.nan
        in_track = v_track == name
        started = iv & in_track & ~np.isnan(t_first)
        waits = t_first[started] - t_join[started]
        k[p + "wait_to_start_mean_days"] = float(waits.mean()) if waits.size else math.nan
        te = ended & in_track
        n = int(np.count_nonzero(te))
        k[p + "admissions"] = float(np.count_nonzero(v_iop & in_track & (t_admit >= w0)))
        k[p + "completion_rate"] = float(np.count_nonzero(v_outcome[te] == "completed") / n) if n else math.nan
        k[p + "dropout_rate"] = float(np.count_nonzero(v_outcome[te] == "dropped_out") / n) if n else math.nan
        k[p + "reneged_waiting"] = float(sum(name in xs for xs in waited_for))
    return k


#: Paid hours of (roster, window, evening start) already worked out in this process, at most 256.
_PAID: dict[tuple, tuple] = {}


def _paid_hours(key_shifts: tuple, w0: float, horizon: float, evening: float, shifts) -> dict[str, float]:
    """:func:`shift_hours` of the roster ``shifts`` (whose key is ``key_shifts``), worked out once
    per process: every replication of a scenario pays the same rosters over the same window."""
    key = (key_shifts, w0, horizon, evening)
    hours = _PAID.get(key)
    if hours is None:
        if len(_PAID) >= 256:
            _PAID.clear()
        hours = _PAID[key] = tuple(shift_hours(shifts, w0, horizon, evening).items())
    return dict(hours)


def staff_kpis(records, scenario: Scenario, w0: float, horizon: float, k: dict) -> dict[str, float]:
    """Per role: paid, busy (by activity), idle and unmet hours; utilisation; FTE; ratio rules."""
    roles = roles_of(scenario)
    if not roles:
        return {}
    out: dict[str, float] = {}
    bookings = table(records, "bookings")
    unmet = table(records, "unmet")
    fte_week = scenario.staff.fte_hours_per_week if scenario.staff else 40.0
    evening = scenario.staff.evening_start_hour if scenario.staff else 17.0
    weeks = (horizon - w0) / 7.0
    t_start = bookings["t_start"].astype(float, copy=False)
    t_end = bookings["t_end"].astype(float, copy=False)
    b_start = np.maximum(t_start, w0)
    b_end = np.minimum(t_end, horizon)
    b_hours = np.maximum(b_end - b_start, 0.0) * 24.0
    member_col = bookings["member"]
    act_col = bookings["activity"]
    member_id = 0
    by_member = np.argsort(member_col, kind="stable")
    bounds = np.searchsorted(member_col[by_member], np.arange(sum(len(p) for p in roles.values()) + 1))
    pay_of: dict[tuple, dict[str, float]] = {}  # members of a team share their shifts: pay them once
    u_in = unmet["t"].astype(float, copy=False) >= w0
    u_hours = unmet["hours"].astype(float, copy=False)
    u_group = unmet.eq("activity", "group")
    for role, people in roles.items():
        p = f"staff_{role}_"
        paid = {"day": 0.0, "evening": 0.0, "weekend": 0.0}
        idle = 0.0
        for shifts in people:
            key_shifts = tuple((tuple(s.days), s.start_hour, s.end_hour) for s in shifts)
            if key_shifts not in pay_of:
                pay_of[key_shifts] = _paid_hours(key_shifts, w0, horizon, evening, shifts)
            for key, v in pay_of[key_shifts].items():
                paid[key] += v
            mine = by_member[bounds[member_id]:bounds[member_id + 1]]
            idle += float(idle_hours(shifts, np.column_stack([t_start[mine], t_end[mine]]), w0, horizon))
            member_id += 1
        paid_total = sum(paid.values())
        in_role = bookings.eq("role", role)
        busy = float(b_hours[in_role].sum())
        out[p + "headcount"] = float(len(people))
        out[p + "paid_hours"] = paid_total
        for key, v in paid.items():
            out[p + f"paid_hours_{key}"] = v
        out[p + "busy_hours"] = busy
        for act in sorted(set(act_col[in_role])):
            out[p + f"busy_hours_{act}"] = float(b_hours[in_role & (act_col == act)].sum())
        out[p + "idle_hours"] = idle
        out[p + "utilisation"] = busy / paid_total if paid_total else math.nan
        u_role = unmet.eq("role", role) & u_in
        out[p + "unmet_hours"] = float(u_hours[u_role].sum())
        out[p + "unmet_hours_group"] = float(u_hours[u_role & u_group].sum())
        demand = busy + out[p + "unmet_hours"]
        out[p + "required_fte"] = demand / (fte_week * weeks) if weeks > 0 else math.nan
        out[p + "paid_fte"] = paid_total / (fte_week * weeks) if weeks > 0 else math.nan
    levels = table(records, "levels")
    for i, rule in enumerate(scenario.staff.ratio_rules if scenario.staff else []):
        heads = len(roles[rule.role])
        daily = levels["census_mean"][levels.eq("stage", rule.stage) & (levels["day"] >= w0)].astype(float)
        p = f"staff_ratio_{rule.stage}_{rule.role}_"
        out[p + "clients_per_staff"] = float(daily.mean() / heads) if daily.size else math.nan
        out[p + "share_days_within_rule"] = float((daily / heads <= rule.max_clients_per_staff + 1e-9).mean()) if daily.size else math.nan
    return out
def _capacity(scenario: Scenario, stage: str) -> float | None:
    """Places at a stage: intake clinicians, beds/slots, or a tracked IOP's seats."""
    if stage == "intake":
        return float(len(roles_of(scenario)[scenario.intake.role or INTAKE_SHORTHAND_ROLE]))
    cfg = getattr(scenario.stages, stage)
    if cfg.tracks is not None:
        return float(sum(t.groups * t.max_group_size for t in cfg.tracks.values()))
    return float(cfg.capacity) if cfg.capacity is not None else None
