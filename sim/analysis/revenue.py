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

from iopsim.analysis.access import _keys
from iopsim.analysis.cost import iop_day_cost
from iopsim.schema.scenario import BILLING_UNITS, TREATMENT_STAGES, Scenario

#: Units billed per patient-day in a stage.
DAY_UNITS = {"residential_day": "residential", "php_day": "php", "aftercare_day": "aftercare"}
#: Units that belong to the IOP (its revenue per client-day, for the break-even census).
IOP_UNITS = ("iop_session", "iop_day", "individual", "family", "drug_test")


def _payer_index(records, scenario: Scenario):
    """(sorted episode keys, payer index of each, payer names) from the episodes table."""
    ep = records["episodes"]
    names = list(scenario.payers)
    keys = _keys(ep["patient_id"].to_numpy(), ep["episode"].to_numpy())
    col = ep["payer"].to_numpy(dtype=object, na_value="")
    code = {n: i for i, n in enumerate(names)}
    payer = np.fromiter((code.get(x, -1) for x in col), dtype=np.int64, count=len(col))
    order = np.argsort(keys, kind="stable")
    return keys[order], payer[order], names


def _lookup(sorted_keys, payer, keys) -> np.ndarray:
    """The payer index of each key (-1 if the episode is unknown)."""
    if not len(sorted_keys) or not len(keys):
        return np.full(len(keys), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(sorted_keys, keys), 0, len(sorted_keys) - 1)
    return np.where(sorted_keys[pos] == keys, payer[pos], -1)


def unit_quantities(records, scenario: Scenario, w0: float, horizon: float) -> dict[str, np.ndarray]:
    """Billable unit -> quantity delivered in the window to each payer's episodes (one number per payer)."""
    sorted_keys, payer, names = _payer_index(records, scenario)
    n = len(names)

    def per_payer(keys, weights=None) -> np.ndarray:
        idx = _lookup(sorted_keys, payer, keys)
        ok = idx >= 0
        return np.bincount(idx[ok], weights=None if weights is None else weights[ok], minlength=n).astype(float)

    q: dict[str, np.ndarray] = {}
    v = records["visits"]
    stage = v["stage"].to_numpy(dtype=object, na_value="")
    vkeys = _keys(v["patient_id"].to_numpy(), v["episode"].to_numpy())
    t_admit = v["t_admit"].to_numpy(dtype=float)
    t_leave = v["t_leave"].to_numpy(dtype=float)
    outcome = v["outcome"].to_numpy(dtype=object, na_value="")
    stay = np.clip(np.minimum(np.where(np.isnan(t_leave), horizon, t_leave), horizon) - np.maximum(t_admit, w0), 0, None)
    assessed = (stage == "intake") & (outcome == "assessed") & (t_leave >= w0)
    q["assessment"] = per_payer(vkeys[assessed])

    att = records["attendance"]
    t = att["t"].to_numpy(dtype=float)
    inw = t >= w0
    akeys = _keys(att["patient_id"].to_numpy(), att["episode"].to_numpy())[inw]
    q["iop_session"] = per_payer(akeys)
    days = np.unique(np.stack([akeys, np.floor(t[inw]).astype(np.int64)]), axis=1)[0] if akeys.size else akeys
    q["iop_day"] = per_payer(days)
    iop = scenario.stages.iop
    if iop is not None and iop.tracks is None:  # no sessions: every patient-day in the IOP is a day of care
        m = (stage == "iop") & ~np.isnan(t_admit)
        q["iop_day"] = per_payer(vkeys[m], stay[m])

    svc = records["services"]
    delivered = svc["delivered"].to_numpy(dtype=bool) & (svc["t_week"].to_numpy(dtype=float) >= w0)
    skeys = _keys(svc["patient_id"].to_numpy(), svc["episode"].to_numpy())
    sname = svc["service"].to_numpy(dtype=object, na_value="")
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
    q = unit_quantities(records, scenario, w0, horizon)
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

    out.update(_payer_mix(records, scenario, w0))
    if "iop" in scenario.stages.enabled():
        out.update(_break_even(records, scenario, w0, horizon, k, patient_days, collected_unit, margin))
    return out


def _payer_mix(records, scenario: Scenario, w0: float) -> dict[str, float]:
    """Share of the episodes admitted to treatment in the window, by payer."""
    sorted_keys, payer, names = _payer_index(records, scenario)
    v = records["visits"]
    stage = v["stage"].to_numpy(dtype=object, na_value="")
    admitted = np.isin(stage, TREATMENT_STAGES) & (v["t_admit"].to_numpy(dtype=float) >= w0)
    keys = np.unique(_keys(v["patient_id"].to_numpy()[admitted], v["episode"].to_numpy()[admitted]))
    idx = _lookup(sorted_keys, payer, keys)
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
