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

from iopsim.engine.records import Table, table
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


def _keys(patient_id: np.ndarray, episode: np.ndarray) -> np.ndarray:
    """One int64 per (patient, episode): patients may be negative (in care on day 0), episodes are small."""
    return patient_id.astype(np.int64) * (1 << 20) + episode.astype(np.int64)


def episode_rows(records) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(order, sorted keys, first admissions) of the episodes table.

    ``order`` and the sorted keys look visits up with ``_lookup``; the first
    admission of every episode is computed once here for all access KPIs.
    """
    order, sorted_keys = episode_index(records)
    return order, sorted_keys, _first_admissions(records, order, sorted_keys)


def episode_index(records) -> tuple[np.ndarray, np.ndarray]:
    """(order, sorted keys) of the episodes table, for ``_lookup``."""
    ep = table(records, "episodes")
    keys = _keys(ep["patient_id"], ep["episode"])
    order = np.argsort(keys, kind="stable")
    return order, keys[order]


def _lookup(order: np.ndarray, sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Row in the episodes table of each key (every visit belongs to an episode)."""
    return order[np.searchsorted(sorted_keys, keys)]


def _first_admissions(records, order, sorted_keys) -> np.ndarray:
    """Per episode row: the time of its first admission to a treatment stage (inf if none)."""
    v = table(records, "visits")
    n = len(table(records, "episodes"))
    first = np.full(n, np.inf)
    t_admit = v["t_admit"]
    m = v.isin("stage", TREATMENT_STAGES) & ~np.isnan(t_admit)
    if m.any():
        rows = _lookup(order, sorted_keys, _keys(v["patient_id"][m], v["episode"][m]))
        np.minimum.at(first, rows, t_admit[m])
    return first


def referral_outcomes(records, scenario: Scenario, w0: float, _index=None):
    """One row per episode referred in ``[w0, horizon)`` and placed in a level of care (or lost at intake).

    A DataFrame with the columns ``patient_id``, ``episode``, ``t_referral``, ``placement``,
    ``t_admit`` (first treatment admission, NaN if none), ``outcome``
    (``admitted``, ``lost`` or ``waiting``), ``lost_at`` (stage whose waitlist
    they left, else ``""``) and ``days`` (referral to admission, to loss, or to
    the end of the run).
    """
    return referral_outcome_table(records, scenario, w0, _index).frame()


def referral_outcome_table(records, scenario: Scenario, w0: float, _index=None) -> Table:
    """:func:`referral_outcomes` as a :class:`Table` (what the KPIs read)."""
    horizon = float(scenario.horizon_days)
    ep = table(records, "episodes")
    order, sorted_keys, first = _index if _index is not None else episode_rows(records)
    t_ref = ep["t_referral"]
    placement = ep["placement"]
    # Sent elsewhere at assessment (outpatient care, not eligible): never waiting for this program.
    elsewhere = (placement != "") & ~np.isin(placement, TREATMENT_STAGES)
    keep = (t_ref >= w0) & ~elsewhere
    t_ref, placement, first = t_ref[keep], placement[keep], first[keep]
    t_exit = ep["t_exit"][keep]
    admitted = np.isfinite(first)
    t_admit = np.where(admitted, first, np.nan)
    lost = ~admitted & ~np.isnan(t_exit)
    outcome = np.where(admitted, "admitted", np.where(lost, "lost", "waiting")).astype(object)
    days = np.where(admitted, t_admit - t_ref, np.where(lost, t_exit - t_ref, horizon - t_ref))
    lost_at = np.where(lost, ep["exit_stage"][keep], "").astype(object)
    return Table(len(t_ref), {
        "patient_id": ep["patient_id"][keep], "episode": ep["episode"][keep],
        "t_referral": t_ref, "placement": placement, "t_admit": t_admit,
        "outcome": outcome, "lost_at": lost_at, "days": np.maximum(days, 0.0),
    })


def access_kpis(records, scenario: Scenario, w0: float) -> dict[str, float]:
    """Referral-to-admission KPIs of one replication (see the module docstring for definitions)."""
    index = episode_rows(records)
    r = referral_outcome_table(records, scenario, w0, index)
    days = r["days"]
    outcome = r["outcome"]
    k: dict[str, float] = {"referral_cohort": float(len(r))}
    kinds = np.where(outcome == "admitted", 1, np.where(outcome == "lost", 2, 0))
    for d in WITHIN_DAYS:
        k[f"referral_admitted_within_{d}_days"] = cumulative_incidence(days, kinds, 1, d)
    k["referral_lost_before_admission"] = cumulative_incidence(days, kinds, 2, math.inf)
    k["referral_lost_after_assessment"] = lost_after_assessment(r)
    lost_at = r["lost_at"]
    stages = [s for s in LOSS_STAGES if s == "intake" and scenario.intake is not None or s in scenario.stages.enabled()]
    for stage in stages:
        code = np.where(kinds == 2, np.where(lost_at == stage, 2, 3), kinds)
        k[f"referral_lost_at_{stage}"] = cumulative_incidence(days, code, 2, math.inf)
    times, surv = kaplan_meier(days, outcome == "admitted")
    k["referral_to_admission_median_days"] = km_quantile(times, surv, 0.5) if len(r) else math.nan
    k["referral_to_admission_p90_days"] = km_quantile(times, surv, 0.9) if len(r) else math.nan
    waits = admitted_waits(records, scenario, w0, index)
    k["referral_to_admission_mean_days_admitted"] = float(waits.mean()) if waits.size else math.nan
    k["referral_share_admitted_waiting_over_30_days"] = float((waits > 30).mean()) if waits.size else math.nan
    k.update(_first_session_kpis(records, scenario, w0, index))
    return k


def lost_after_assessment(outcomes) -> float:
    """Of the referrals assessed and placed in residential, PHP or IOP, the share lost before admission.

    The published "never start after intake" figure (``calibration/targets.yaml``:
    ``never-start-after-intake``): those lost at intake are not in it, those
    still waiting at the end of the run are censored (a cumulative incidence).
    ``outcomes`` is :func:`referral_outcomes` (a DataFrame, or the same columns as a Table).
    """
    placed = np.isin(np.asarray(outcomes["placement"], dtype=object), TREATMENT_STAGES)
    outcome = np.asarray(outcomes["outcome"], dtype=object)[placed]
    kinds = np.where(outcome == "admitted", 1, np.where(outcome == "lost", 2, 0))
    return cumulative_incidence(np.asarray(outcomes["days"], dtype=float)[placed], kinds, 2, math.inf)


def admitted_waits(records, scenario: Scenario, w0: float, _index=None) -> np.ndarray:
    """Referral-to-admission days of the first treatment admission of each episode admitted in the window.

    Admitted patients only: the definition of the published waits
    (``calibration/targets.yaml``: ``wait-to-treatment``, ``wait-over-30-days``).
    """
    order, sorted_keys, first = _index if _index is not None else episode_rows(records)
    t_ref = table(records, "episodes")["t_referral"]
    m = np.isfinite(first) & ~np.isnan(t_ref) & (first >= w0)
    m_sorted = order[m[order]]  # in (patient, episode) order, so sums are the same to the last bit
    return first[m_sorted] - t_ref[m_sorted]


def _first_session_kpis(records, scenario: Scenario, w0: float,
                        _index=None) -> dict[str, float]:
    """Per IOP track: referral to first attended session, of episodes referred straight to IOP.

    A visit waiting for (or lost while waiting for) several tracks counts for each
    of them; one seated in a group counts for its track.  The first session the
    client *attended* (``t_first_attended``), not the first their group held:
    leaving before attending one, or the end of the run, censors the time.
    """
    iop = scenario.stages.iop
    if iop is None or iop.tracks is None:
        return {}
    horizon = float(scenario.horizon_days)
    order, sorted_keys, _first = _index if _index is not None else episode_rows(records)
    ep = table(records, "episodes")
    t_ref_ep = ep["t_referral"]
    direct = (t_ref_ep >= w0) & ep.eq("placement", "iop")
    v = table(records, "visits")
    m = v.eq("stage", "iop")
    t_join = v["t_join"][m]
    rows = _lookup(order, sorted_keys, _keys(v["patient_id"][m], v["episode"][m]))
    by_join = np.argsort(t_join, kind="stable")
    _, firsts = np.unique(rows[by_join], return_index=True)
    pick = by_join[firsts]  # the first IOP visit of each episode
    pick = pick[direct[rows[pick]]]
    first = v["t_first_attended"][m][pick]
    leave = v["t_leave"][m][pick]
    t_ref = t_ref_ep[rows[pick]]
    started = ~np.isnan(first)
    days = np.where(started, first - t_ref, np.where(np.isnan(leave), horizon, leave) - t_ref)
    tracks = [str(x).split("|") for x in v["track"][m][pick]]
    k: dict[str, float] = {}
    for name in iop.tracks:
        sel = np.fromiter((name in ts for ts in tracks), dtype=bool, count=len(tracks))
        times, surv = kaplan_meier(np.maximum(days[sel], 0.0), started[sel])
        p = f"iop_track_{name}_"
        k[p + "referral_to_first_session_median_days"] = km_quantile(times, surv, 0.5) if sel.any() else math.nan
        k[p + "referral_to_first_session_p90_days"] = km_quantile(times, surv, 0.9) if sel.any() else math.nan
    return k
