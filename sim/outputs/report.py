"""One self-contained HTML report of a run or comparison folder.

Everything is read from the files in the folder (never from a live model), the
figures are embedded as base64 PNG, and nothing is fetched from the network,
so the report can be e-mailed or archived on its own.  The methods section
follows the STRESS-DES reporting checklist (Monks et al. 2019) and is filled
in from the run's manifest and resolved scenarios.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, select_autoescape

from iopsim.errors import IopsimError
from iopsim.analysis.kpis import STAGE_LABELS, kpi_label
from iopsim.files import atomic_write_text

HEADLINE = (
    "referrals",
    "admitted_to_treatment",
    "programs_completed",
    "referral_admitted_within_14_days",
    "referral_lost_before_admission",
    "referral_to_admission_p90_days",
    "iop_admitted_wait_mean_days",
    "iop_waitlist_mean",
    "iop_waitlist_max",
    "iop_waitlist_max_first_year",
    "iop_census_mean",
    "iop_reneged",
    "cost_total",
    "cost_per_completed_program",
    "cost_per_admission",
    "iop_cost_per_client_week",
    "labour_share_of_cost",
)

STAFF_FIGURES = (
    ("group_census.png", "How many clients attend a group session, by track"),
    ("session_calendar.png", "When group sessions are held in the week"),
    ("staff_utilisation.png", "How busy each staff role is (share of paid hours)"),
)


def fmt(value, unit: str = "", currency: str = "USD") -> str:
    """A number with its unit, for people: '$12,345', '4.2 days', '37 %'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    v = float(value)
    if unit == "currency":
        sign = "-" if v < 0 else ""
        sym = "$" if currency == "USD" else f"{currency} "
        return f"{sign}{sym}{abs(v):,.0f}"
    if unit == "fraction":
        return f"{100 * v:.1f} %"
    num = f"{v:,.0f}" if abs(v) >= 100 else f"{v:,.1f}" if abs(v) >= 10 else f"{v:,.2f}"
    return f"{num} {unit}".strip()


def _img(path: Path) -> str | None:
    if not path.exists():
        return None
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _scenario_block(folder: Path, name: str) -> dict:
    summary = _read_csv(folder / "summary.csv").set_index("kpi")
    scenario = yaml.safe_load((folder / "scenario.yaml").read_text(encoding="utf-8"))
    currency = (scenario.get("costs") or {}).get("currency", "USD")

    def row(k):
        r = summary.loc[k]
        return {
            "label": r["label"],
            "mean": fmt(r["mean"], r["unit"], currency),
            "ci": f"{fmt(r['ci_low'], r['unit'], currency)} to {fmt(r['ci_high'], r['unit'], currency)}"
            if r["n"] >= 2 and math.isfinite(r["ci_low"]) else "–",
        }

    headline = [row(k) for k in HEADLINE if k in summary.index]
    stages = [s for s in STAGE_LABELS if f"{s}_admissions" in summary.index]
    stage_rows = []
    for key, label in (("admissions", "Admissions"), ("admitted_wait_mean_days", "Mean wait"), ("admitted_wait_p90_days", "90th percentile wait"),
                       ("waitlist_mean", "Average waitlist"), ("waitlist_max", "Longest waitlist"),
                       ("waitlist_max_first_year", "Longest waitlist in the first year"),
                       ("census_mean", "Average census"), ("occupancy", "Occupancy"),
                       ("completed", "Completed stays"), ("dropped_out", "Dropped out"), ("reneged", "Left the waitlist")):
        cells = []
        for s in stages:
            k = f"{s}_{key}"
            cells.append(fmt(summary.loc[k, "mean"], summary.loc[k, "unit"], currency) if k in summary.index else "")
        stage_rows.append({"label": label, "cells": cells})
    cost_rows = [row(k) for k in summary.index if k.startswith("cost_labour_")] + [
        row(k) for k in ("cost_labour", "cost_services", "cost_patient_days", "cost_assessments", "cost_overhead", "cost_total")
        if k in summary.index
    ]
    figs = folder / "figures"
    transient = _read_csv(folder / "transient.csv")
    first_year = _read_csv(folder / "first_year.csv")
    return {
        "name": name,
        "description": scenario.get("description", ""),
        "headline": headline,
        "stages": [STAGE_LABELS[s] for s in stages],
        "stage_rows": stage_rows,
        "cost_rows": cost_rows,
        "transient": [
            {
                "stage": STAGE_LABELS.get(r["stage"], r["stage"]),
                "settles": fmt(r["settles_day"], "days"),
                "share": fmt(r["share_replications_over_threshold"], "fraction"),
                "first": fmt(r["first_day_over_threshold_mean"], "days"),
                "threshold": fmt(r["threshold"], "waiting"),
            }
            for _, r in transient.iterrows()
        ],
        "first_year": _first_year(first_year),
        "figures": {
            "waitlist": _img(figs / "waitlist.png"),
            "census": _img(figs / "census.png"),
            "funnel": _img(figs / "funnel.png"),
            "cost": _img(figs / "cost_breakdown.png"),
        },
        "staff_figures": [(cap, _img(figs / f)) for f, cap in STAFF_FIGURES if (figs / f).exists()],
        "horizon": scenario.get("horizon_days"),
        "currency": currency,
    }


def _first_year(df: pd.DataFrame) -> dict:
    if not len(df):
        return {"stages": [], "rows": []}
    order = list(STAGE_LABELS)
    stages = sorted(dict.fromkeys(df["stage"]), key=lambda x: order.index(x) if x in order else len(order))
    rows = []
    for month, g in df.groupby("month"):
        g = g.set_index("stage")
        rows.append({"month": int(month), "cells": [fmt(g.loc[s, "waitlist_mean"], "") if s in g.index else "" for s in stages]})
    return {"stages": [STAGE_LABELS.get(s, s) for s in stages], "rows": rows}


def _differences(folder: Path, names: list[str], currency: str) -> list[dict]:
    diffs = _read_csv(folder / "differences.csv")
    if not len(diffs):
        return []
    out = []
    base = names[0]
    for kpi in [k for k in HEADLINE if k in set(diffs["kpi"])]:
        d = diffs[diffs["kpi"] == kpi].set_index("scenario")
        unit = d["unit"].iloc[0] if isinstance(d["unit"].iloc[0], str) else ""
        for n in names[1:]:
            r = d.loc[n]
            out.append({
                "label": d["label"].iloc[0],
                "scenario": n,
                "base": fmt(d.loc[base, "mean"], unit, currency),
                "value": fmt(r["mean"], unit, currency),
                "diff": fmt(r["diff"], unit, currency),
                "ci": f"{fmt(r['diff_ci_low'], unit, currency)} to {fmt(r['diff_ci_high'], unit, currency)}",
                "significant": "yes" if bool(r["significant"]) else "no",
            })
    return out


def write_report(folder: Path) -> Path:
    """Render ``report.html`` in a finished (or staging) run or comparison folder."""
    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.exists():
        raise IopsimError(f"{folder}: not a run folder (manifest.json missing)")
    man = json.loads(mpath.read_text(encoding="utf-8"))
    kind = man.get("kind", "run")
    if kind not in ("run", "compare"):
        raise IopsimError(f"{folder}: a {kind} folder has no report; reports are for run and compare folders")
    if kind == "compare":
        names = man["scenarios"]
        blocks = [_scenario_block(folder / "scenarios" / n, n) for n in names]
    else:
        names = [man["scenario"]]
        blocks = [_scenario_block(folder, names[0])]
    params = _read_csv(folder / "parameters_differ.csv")
    selection = json.loads((folder / "selection.json").read_text()) if (folder / "selection.json").exists() else None
    figs = folder / "figures"
    horizon = man.get("horizon_days")
    if isinstance(horizon, dict):
        lengths = set(horizon.values())
        run_length = f"{lengths.pop()} days" if len(lengths) == 1 else "; ".join(f"{n}: {d} days" for n, d in horizon.items())
    else:
        run_length = f"{horizon} days"
    selection_label = selection_indifference = None
    if selection:
        label, unit = kpi_label(selection["kpi"])
        selection_label = label
        selection_indifference = fmt(selection["indifference"], unit)
    ctx = {
        "run_length": run_length,
        "selection_label": selection_label,
        "selection_indifference": selection_indifference,
        "kind": kind,
        "names": names,
        "blocks": blocks,
        "manifest": man,
        "params": params.to_dict(orient="records") if len(params) else [],
        "param_cols": list(params.columns) if len(params) else [],
        "differences": _differences(folder, names, blocks[0]["currency"]) if kind == "compare" else [],
        "selection": selection,
        "forest": _img(figs / "forest.png"),
        "waitlist_overlay": _img(figs / "waitlist_overlay.png"),
        "census_overlay": _img(figs / "census_overlay.png"),
        "references": man.get("references", {}),
        "versions": man.get("versions", {}),
    }
    env = Environment(loader=PackageLoader("iopsim.outputs", "templates"), autoescape=select_autoescape(default=True))
    html = env.get_template("report.html.j2").render(**ctx)
    out = folder / "report.html"
    atomic_write_text(out, html)
    return out
