"""Revenue, margin and break-even of one replication: records x payers' rates.

With ``payers`` in the scenario every episode has a payer, drawn at referral
from its source's payer mix.  Each billable unit delivered in the observation
window is billed to the episode's payer at that payer's rate:

* ``assessment`` -- an intake assessment done (the intake visit ended assessed);
* ``iop_session`` -- a client attending a group session;
* ``iop_day`` -- a day on which the client attended at least one group session
  (an IOP run with places instead of tracks has no sessions: every patient-day);
* ``individual``, ``family``, ``drug_test`` -- an IOP service delivered;
* ``residential_day``, ``php_day``, ``aftercare_day`` -- a patient-day in care.

Collected = billed x (1 - ``denial_rate``) x ``collection_rate``.  Margin is
collected revenue minus the total cost of :mod:`iopsim.analysis.cost`.

**Break-even census.**  The run's own cost structure splits into what grows
with the IOP census -- the IOP's client-day costs and its services' costs --
and the rest, which does not: rostered labour is paid busy or idle, overhead
is fixed, the other stages have their own census.  With ``r`` the IOP's
revenue and ``v`` its variable cost per client-day, each extra client-day adds
``r - v`` to the margin, so the mean IOP census at which revenue covers cost is

    census - margin / ((r - v) x window days)

at this run's staffing, groups and payer mix (0 if revenue covers cost even
without IOP clients).  When ``r <= v`` each client-day loses money, more
clients never close a gap, and the KPI is undefined.  A break-even
census above the IOP's places is out of reach without more groups.
"""

from __future__ import annotations

import math

import numpy as np

from iopsim.analysis.access import _keys, _lookup, episode_index
from iopsim.analysis.cost import days_in_window, iop_day_cost
from iopsim.engine.records import table
from iopsim.schema.scenario import BILLING_UNITS, TREATMENT_STAGES, Scenario

#: Units billed per patient-day in a stage.
DAY_UNITS = {"residential_day": "residential", "php_day": "php", "aftercare_day": "aftercare"}
#: Units that belong to the IOP (its revenue per client-day, for the break-even census).
IOP_UNITS = ("iop_session", "iop_day", "individual", "family", "drug_test")


def _payer_of(records, scenario: Scenario):
    """A function: (patient, episode) keys -> the index (in ``scenario.payers``) of each episode's payer."""
    col = table(records, "episodes")["payer"]
    code = {n: i for i, n in enumerate(scenario.payers)}
    payer = np.fromiter((code.get(x, -1) for x in col), dtype=np.int64, count=len(col))
    order, sorted_keys = episode_index(records)

    def payer_of(keys: np.ndarray) -> np.ndarray:  # every visit, service and attendance has its episode
        return payer[_lookup(order, sorted_keys, keys)] if len(keys) else np.zeros(0, dtype=np.int64)

    return payer_of


def unit_quantities(records, scenario: Scenario, w0: float, horizon: float, payer_of) -> dict[str, np.ndarray]:
    """Billable unit -> quantity delivered in the window to each payer's episodes (one number per payer)."""
    n = len(scenario.payers)

    def per_payer(keys, weights=None) -> np.ndarray:
        idx = payer_of(keys)
        ok = idx >= 0
        return np.bincount(idx[ok], weights=None if weights is None else weights[ok], minlength=n).astype(float)

    q: dict[str, np.ndarray] = {}
    v = table(records, "visits")
    stage = v["stage"]
    vkeys = _keys(v["patient_id"], v["episode"])
    t_admit = v["t_admit"]
    t_leave = v["t_leave"]
    outcome = v["outcome"]
    stay = days_in_window(t_admit, t_leave, w0, horizon)
    assessed = (stage == "intake") & (outcome == "assessed") & (t_leave >= w0)
    q["assessment"] = per_payer(vkeys[assessed])

    att = table(records, "attendance")
    t = att["t"].astype(float, copy=False)
    inw = t >= w0
    akeys = _keys(att["patient_id"], att["episode"])[inw]
    q["iop_session"] = per_payer(akeys)
    days = np.unique(np.stack([akeys, np.floor(t[inw]).astype(np.int64)]), axis=1)[0] if akeys.size else akeys
    q["iop_day"] = per_payer(days)
    iop = scenario.stages.iop
    if iop is not None and iop.tracks is None:  # no sessions: every patient-day in the IOP is a day of care
        m = (stage == "iop") & ~np.isnan(t_admit)
        q["iop_day"] = per_payer(vkeys[m], stay[m])

    svc = table(records, "services")
    delivered = svc["delivered"].astype(bool, copy=False) & (svc["t_week"].astype(float, copy=False) >= w0)
    skeys = _keys(svc["patient_id"], svc["episode"])
    sname = svc["service"]
    for unit in ("individual", "family", "drug_test"):
        q[unit] = per_payer(skeys[delivered & (sname == unit)])

    for unit, st in DAY_UNITS.items():
        m = (stage == st) & ~np.isnan(t_admit)
        q[unit] = per_payer(vkeys[m], stay[m])
    return q


def revenue_kpis(records, scenario: Scenario, w0: float, horizon: float, k: dict, patient_days: dict) -> dict[str, float]:
    """Revenue billed and collected (by unit and by payer), margin, payer mix and the break-even IOP census."""
    if not scenario.payers:
        return {}
    names = list(scenario.payers)
    payers = [scenario.payers[n] for n in names]
    net = np.array([(1.0 - p.denial_rate) * p.collection_rate for p in payers])
    payer_of = _payer_of(records, scenario)
    q = unit_quantities(records, scenario, w0, horizon, payer_of)
    out: dict[str, float] = {}
    billed_by_payer = np.zeros(len(names))
    collected_unit: dict[str, float] = {}
    for unit in BILLING_UNITS:
        rate = np.array([p.rates.get(unit, 0.0) for p in payers])
        billed = q[unit] * rate
        billed_by_payer += billed
        collected_unit[unit] = float((billed * net).sum())
        if rate.any():
            out[f"revenue_{unit}"] = collected_unit[unit]
    collected_by_payer = billed_by_payer * net
    out["revenue_billed"] = float(billed_by_payer.sum())
    out["revenue_total"] = float(collected_by_payer.sum())
    out["revenue_not_collected"] = out["revenue_billed"] - out["revenue_total"]
    for name, v in zip(names, collected_by_payer):
        out[f"revenue_payer_{name}"] = float(v)

    cost = k.get("cost_total", math.nan)
    margin = out["revenue_total"] - cost
    out["margin_total"] = margin
    out["margin_share_of_revenue"] = margin / out["revenue_total"] if out["revenue_total"] else math.nan
    out["cost_recovery"] = out["revenue_total"] / cost if cost else math.nan
    completed = k.get("programs_completed", 0.0)
    out["revenue_per_completed_program"] = out["revenue_total"] / completed if completed else math.nan
    out["margin_per_completed_program"] = margin / completed if completed else math.nan

    out.update(_payer_mix(records, names, w0, payer_of))
    if "iop" in scenario.stages.enabled():
        out.update(_break_even(records, scenario, w0, horizon, k, patient_days, collected_unit, margin))
    return out


def _payer_mix(records, names: list[str], w0: float, payer_of) -> dict[str, float]:
    """Share of the episodes admitted to treatment in the window, by payer."""
    v = table(records, "visits")
    admitted = v.isin("stage", TREATMENT_STAGES) & (v["t_admit"] >= w0)
    idx = payer_of(np.unique(_keys(v["patient_id"][admitted], v["episode"][admitted])))
    counts = np.bincount(idx[idx >= 0], minlength=len(names)).astype(float)
    total = counts.sum()
    return {f"payer_mix_{n}": (float(c / total) if total else math.nan) for n, c in zip(names, counts)}


def _break_even(records, scenario, w0, horizon, k, patient_days, collected_unit, margin) -> dict[str, float]:
    days = patient_days.get("iop", 0.0)
    window = horizon - w0
    out = {"iop_revenue": sum(collected_unit[u] for u in IOP_UNITS)}
    if days <= 0 or window <= 0:
        out.update(iop_revenue_per_client_day=math.nan, iop_variable_cost_per_client_day=math.nan,
                   break_even_iop_census=math.nan)
        return out
    r = out["iop_revenue"] / days
    variable = iop_day_cost(records, scenario, w0, horizon, patient_days) + k.get("cost_services", 0.0)
    v = variable / days
    out["iop_revenue_per_client_day"] = r
    out["iop_variable_cost_per_client_day"] = v
    census = days / window
    # Below 0: revenue covers cost even with no IOP client, so the census needed is 0.
    out["break_even_iop_census"] = max(census - margin / ((r - v) * window), 0.0) if r > v else math.nan
    return out
