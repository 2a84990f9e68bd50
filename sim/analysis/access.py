"""Waits that count everyone: from referral to treatment, with those who left counted as lost.

A wait measured only on the people who were admitted flatters a site where many
give up: the longer the wait, the more leave, and the fewer long waits are
left in the sample.  These KPIs follow **every episode referred in the
observation window** that intake did not send elsewhere (outpatient care, not
eligible), from referral to its first admission to a treatment stage
(residential, PHP or IOP):

* it is **admitted** at the time of that admission;
* it is **lost** when it leaves before any admission -- reneging from the
  intake or a stage waitlist, or relapsing while waiting -- at the stage whose
  waitlist it left;
* it is **censored** at the end of the run if it is still waiting then.

Shares are competing-risks (Aalen-Johansen) cumulative incidences, so a
referral made a week before the end counts for the first week only, never as
"not admitted within 30 days".  The median and 90th percentile of
referral-to-admission are Kaplan-Meier quantiles that treat the lost as
censored: the time by which half (90 %) would be admitted if nobody gave up.
When too few are admitted for a quantile to be reached it is NaN, never a
flattering number.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from iopsim.schema.scenario import TREATMENT_STAGES, Scenario

#: Days after referral at which the share admitted is reported.
WITHIN_DAYS = (7, 14, 30)
#: Where an episode can be lost before admission.
LOSS_STAGES = ("intake", *TREATMENT_STAGES)


def kaplan_meier(durations: np.ndarray, events: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier survival: (distinct event times, S(t) just after each).

    ``events`` is True where the duration ends in the event, False where it is
    censored.  Events before censorings at tied times (the usual convention).
    """
    durations = np.asarray(durations, dtype=float)
    events = np.asarray(events, dtype=bool)
    if not durations.size:
        return np.array([]), np.array([])
    times, inverse = np.unique(durations, return_inverse=True)
    deaths = np.bincount(inverse, weights=events.astype(float), minlength=times.size)
    leaving = np.bincount(inverse, minlength=times.size).astype(float)
    at_risk = durations.size - np.concatenate([[0.0], np.cumsum(leaving)[:-1]])
    surv = np.cumprod(1.0 - deaths / at_risk)
    keep = deaths > 0
    return times[keep], surv[keep]


def km_quantile(times: np.ndarray, surv: np.ndarray, q: float) -> float:
    """The smallest time by which a share ``q`` has had the event (NaN if never reached)."""
    hit = np.nonzero(1.0 - surv >= q - 1e-12)[0]
    return float(times[hit[0]]) if hit.size else math.nan


def cumulative_incidence(durations: np.ndarray, kinds: np.ndarray, kind: int, at: float) -> float:
    """Aalen-Johansen cumulative incidence of ``kind`` by time ``at``.

    ``kinds`` holds 0 for a censored duration and a positive code for the event
    that ended it; with no censoring this is the plain share of ``kind`` by ``at``.
    """
    durations = np.asarray(durations, dtype=float)
    kinds = np.asarray(kinds)
    if not durations.size:
        return math.nan
    times, inverse = np.unique(durations, return_inverse=True)
    any_event = np.bincount(inverse, weights=(kinds > 0).astype(float), minlength=times.size)
    this = np.bincount(inverse, weights=(kinds == kind).astype(float), minlength=times.size)
    leaving = np.bincount(inverse, minlength=times.size).astype(float)
    at_risk = durations.size - np.concatenate([[0.0], np.cumsum(leaving)[:-1]])
    surv_before = np.concatenate([[1.0], np.cumprod(1.0 - any_event / at_risk)[:-1]])
    increments = surv_before * this / at_risk
    return float(increments[times <= at].sum())


def referral_outcomes(records: dict[str, pd.DataFrame], scenario: Scenario, w0: float) -> pd.DataFrame:
    """One row per episode referred in ``[w0, horizon)`` and placed in a level of care (or lost at intake).

    Columns: ``patient_id``, ``episode``, ``t_referral``, ``placement``,
    ``t_admit`` (first treatment admission, NaN if none), ``outcome``
    (``admitted``, ``lost`` or ``waiting``), ``lost_at`` (stage whose waitlist
    they left, else ``""``) and ``days`` (referral to admission, to loss, or to
    the end of the run).
    """
    horizon = float(scenario.horizon_days)
    ep = records["episodes"]
    ep = ep[ep["t_referral"].to_numpy(dtype=float) >= w0]
    placement = ep["placement"].fillna("").astype(str)
    # Sent elsewhere at assessment (outpatient care, not eligible): never waiting for this program.
    elsewhere = (placement != "") & ~placement.isin(TREATMENT_STAGES)
    ep = ep[~elsewhere.to_numpy()]
    v = records["visits"]
    tv = v[v["stage"].isin(TREATMENT_STAGES) & v["t_admit"].notna()]
    first = tv.groupby(["patient_id", "episode"], as_index=False)["t_admit"].min()
    out = ep[["patient_id", "episode", "t_referral", "placement", "t_exit", "exit_stage", "exit_outcome"]].merge(
        first, on=["patient_id", "episode"], how="left")
    t_ref = out["t_referral"].to_numpy(dtype=float)
    t_admit = out["t_admit"].to_numpy(dtype=float)
    t_exit = out["t_exit"].to_numpy(dtype=float)
    admitted = ~np.isnan(t_admit)
    lost = ~admitted & ~np.isnan(t_exit)
    outcome = np.where(admitted, "admitted", np.where(lost, "lost", "waiting"))
    days = np.where(admitted, t_admit - t_ref, np.where(lost, t_exit - t_ref, horizon - t_ref))
    lost_at = np.where(lost, out["exit_stage"].fillna("").astype(str).to_numpy(), "")
    return pd.DataFrame({
        "patient_id": out["patient_id"].to_numpy(), "episode": out["episode"].to_numpy(),
        "t_referral": t_ref, "placement": out["placement"].to_numpy(), "t_admit": t_admit,
        "outcome": outcome, "lost_at": lost_at, "days": np.maximum(days, 0.0),
    })


def access_kpis(records: dict[str, pd.DataFrame], scenario: Scenario, w0: float) -> dict[str, float]:
    """Referral-to-admission KPIs of one replication (see the module docstring for definitions)."""
    r = referral_outcomes(records, scenario, w0)
    days = r["days"].to_numpy(dtype=float)
    outcome = r["outcome"].to_numpy()
    k: dict[str, float] = {"referral_cohort": float(len(r))}
    kinds = np.where(outcome == "admitted", 1, np.where(outcome == "lost", 2, 0))
    for d in WITHIN_DAYS:
        k[f"referral_admitted_within_{d}_days"] = cumulative_incidence(days, kinds, 1, d)
    k["referral_lost_before_admission"] = cumulative_incidence(days, kinds, 2, math.inf)
    lost_at = r["lost_at"].to_numpy()
    stages = [s for s in LOSS_STAGES if s == "intake" and scenario.intake is not None or s in scenario.stages.enabled()]
    for stage in stages:
        code = np.where(kinds == 2, np.where(lost_at == stage, 2, 3), kinds)
        k[f"referral_lost_at_{stage}"] = cumulative_incidence(days, code, 2, math.inf)
    times, surv = kaplan_meier(days, outcome == "admitted")
    k["referral_to_admission_median_days"] = km_quantile(times, surv, 0.5) if len(r) else math.nan
    k["referral_to_admission_p90_days"] = km_quantile(times, surv, 0.9) if len(r) else math.nan
    waits = admitted_waits(records, scenario, w0)
    k["referral_to_admission_mean_days_admitted"] = float(waits.mean()) if waits.size else math.nan
    k["referral_share_admitted_waiting_over_30_days"] = float((waits > 30).mean()) if waits.size else math.nan
    k.update(_first_session_kpis(records, scenario, w0))
    return k


def admitted_waits(records: dict[str, pd.DataFrame], scenario: Scenario, w0: float) -> np.ndarray:
    """Referral-to-admission days of the first treatment admission of each episode admitted in the window.

    Admitted patients only: the definition of the published waits
    (``calibration/targets.yaml``: ``wait-to-treatment``, ``wait-over-30-days``).
    """
    v = records["visits"]
    tv = v[v["stage"].isin(TREATMENT_STAGES) & v["t_admit"].notna()]
    first = tv.groupby(["patient_id", "episode"], as_index=False)["t_admit"].min()
    ep = records["episodes"]
    ep = ep[ep["t_referral"].notna()][["patient_id", "episode", "t_referral"]]
    out = first.merge(ep, on=["patient_id", "episode"])
    out = out[out["t_admit"] >= w0]
    return (out["t_admit"] - out["t_referral"]).to_numpy(dtype=float)


def _first_session_kpis(records: dict[str, pd.DataFrame], scenario: Scenario, w0: float) -> dict[str, float]:
    """Per IOP track: referral to first attended session, of episodes referred straight to IOP.

    A visit waiting for (or lost while waiting for) several tracks counts for each
    of them; one seated in a group counts for its track.  Leaving before the
    first session, or the end of the run, censors the time.
    """
    iop = scenario.stages.iop
    if iop is None or iop.tracks is None:
        return {}
    horizon = float(scenario.horizon_days)
    ep = records["episodes"]
    ep = ep[(ep["t_referral"].to_numpy(dtype=float) >= w0) & (ep["placement"].fillna("") == "iop").to_numpy(dtype=bool)]
    v = records["visits"]
    v = v[v["stage"] == "iop"].sort_values("t_join", kind="stable").drop_duplicates(["patient_id", "episode"])
    j = v.merge(ep[["patient_id", "episode", "t_referral"]], on=["patient_id", "episode"])
    first = j["t_first_session"].to_numpy(dtype=float)
    leave = j["t_leave"].to_numpy(dtype=float)
    t_ref = j["t_referral"].to_numpy(dtype=float)
    started = ~np.isnan(first)
    days = np.where(started, first - t_ref, np.where(np.isnan(leave), horizon, leave) - t_ref)
    tracks = j["track"].fillna("").astype(str).str.split("|").to_numpy()
    k: dict[str, float] = {}
    for name in iop.tracks:
        m = np.fromiter((name in ts for ts in tracks), dtype=bool, count=len(tracks))
        times, surv = kaplan_meier(np.maximum(days[m], 0.0), started[m])
        p = f"iop_track_{name}_"
        k[p + "referral_to_first_session_median_days"] = km_quantile(times, surv, 0.5) if m.any() else math.nan
        k[p + "referral_to_first_session_p90_days"] = km_quantile(times, surv, 0.9) if m.any() else math.nan
    return k
