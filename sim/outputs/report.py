"""One self-contained HTML report of a run, comparison or sweep folder.

Everything is read from the files in the folder (never from a live model), the
figures are embedded as base64 PNG, and nothing is fetched from the network,
so the report can be e-mailed or archived on its own.  A run or comparison
report opens with the answer in words (:mod:`iopsim.outputs.answer`), then the
warnings about the plan; the methods section follows the STRESS-DES reporting
checklist (Monks et al. 2019) and is filled in from the manifest and the
resolved scenarios.  Figures a ``--no-report`` run skipped are drawn first.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from iopsim.lazy import pandas as pd

from iopsim.analysis.kpis import STAGE_LABELS, kpi_label
from iopsim.analysis.verdict import judge, verdict
from iopsim.errors import IopsimError
from iopsim.files import atomic_write_text, read_manifest
from iopsim.outputs.html import embedded_png, environment
from iopsim.outputs.plan_report import write_plan_report
from iopsim.outputs.robustness import robustness_rows, robustness_sentences
from iopsim.outputs.answer import (
    Facts,
    calibration_rows,
    clip_ci,
    comparison_answer,
    decap,
    difference_rows,
    factor_label,
    fmt,
    group_rows,
    people_label,
    plus_minus,
    red_flags,
    run_answer,
    staffing_rows,
    symbol,
)

__all__ = ["HEADLINE", "fmt", "write_report"]

#: KPIs of the headline table, everyone-referred figures first (those present are shown).
HEADLINE = (
    "referral_admitted_within_7_days",
    "referral_admitted_within_14_days",
    "referral_admitted_within_30_days",
    "referral_lost_before_admission",
    "referral_to_admission_median_days",
    "referral_to_admission_p90_days",
    "referral_to_admission_mean_days_admitted",
    "programs_completed",
    "admitted_to_treatment",
    "referrals",
    "cost_per_completed_program",
    "cost_total",
    "cost_per_admission",
    "iop_cost_per_client_week",
    "labour_share_of_cost",
    "iop_admitted_wait_mean_days",
    "iop_admitted_wait_p90_days",
    "iop_waitlist_mean",
    "iop_waitlist_max",
    "iop_waitlist_max_first_year",
    "iop_census_mean",
    "iop_reneged",
)

STAGE_ROWS = (
    ("admissions", "Admissions"), ("share_lost_waiting", "Share of those joining the waitlist who left it"),
    ("admitted_wait_mean_days", "Mean wait of those admitted"),
    ("admitted_wait_p90_days", "90th percentile wait of those admitted"),
    ("waitlist_mean", "Average waitlist"), ("waitlist_max", "Longest waitlist"),
    ("waitlist_max_first_year", "Longest waitlist in the first year"),
    ("census_mean", "Average census"), ("occupancy", "Occupancy"),
    ("planned_stay_mean_days", "Planned stay, mean"), ("stay_mean_days_completed", "Length of completed stays, mean"),
    ("share_extended", "Share of stays extended"),
    ("completed", "Completed stays"), ("dropped_out", "Dropped out"), ("reneged", "Left the waitlist"),
)


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def _draw_missing(folder: Path, kind: str, names: list[str]) -> None:
    """Draw the figures a ``--no-report`` run (or an older version) did not leave."""
    from iopsim.outputs.drawing import Drawer, missing_comparison_figures, missing_run_figures

    scenario_dirs = [folder] if kind == "run" else [folder / "scenarios" / n for n in names]
    with Drawer(1) as drawer:
        for d in scenario_dirs:
            if missing_run_figures(d):
                drawer.run(d)
        if kind == "compare" and missing_comparison_figures(folder):
            drawer.comparison(folder)
        drawer.wait()


def _scenario_block(folder: Path, name: str, warnings: list[str]) -> dict:
    facts = Facts.from_folder(folder, name, warnings)
    summary = facts.summary
    scenario = facts.scenario
    currency = facts.currency

    def row(k):
        r = summary.loc[k]
        _m, lo, hi = clip_ci(float(r["mean"]), float(r["ci_low"]), float(r["ci_high"]), r["unit"], k)
        if r["n"] < 2 or not math.isfinite(lo):
            ci = "–"
        elif lo == hi:
            ci = "the same in every replication"
        else:
            ci = f"{fmt(lo, r['unit'], currency)} to {fmt(hi, r['unit'], currency)}"
        return {"label": people_label(r["label"]), "mean": fmt(r["mean"], r["unit"], currency), "ci": ci, "kpi": k}

    headline = [row(k) for k in HEADLINE if k in summary.index]
    stages = [s for s in STAGE_LABELS if f"{s}_admissions" in summary.index]
    stage_rows = []
    for key, label in STAGE_ROWS:
        cells = []
        for s in stages:
            k = f"{s}_{key}"
            cells.append(fmt(summary.loc[k, "mean"], summary.loc[k, "unit"], currency) if k in summary.index else "")
        if any(c not in ("", "–") for c in cells):
            stage_rows.append({"label": label, "cells": cells})
    cost_rows = [row(k) for k in summary.index if k.startswith("cost_labour_")] + [
        row(k) for k in ("cost_labour", "cost_services", "cost_patient_days", "cost_assessments", "cost_overhead", "cost_total")
        if k in summary.index
    ]
    money_rows = [row(k) for k in _money_kpis(summary.index)]
    figs = folder / "figures"
    transient = _read_csv(folder / "transient.csv")
    first_year = _read_csv(folder / "first_year.csv")
    calibration = _read_csv(folder / "calibration.csv")
    return {
        "name": name,
        "description": scenario.get("description", ""),
        "answer": run_answer(facts),
        "flags": red_flags(facts),
        "staffing": staffing_rows(facts),
        "groups": group_rows(facts),
        "calibration": calibration_rows(calibration) if len(calibration) else [],
        "calibration_met": int(calibration["met"].astype(bool).sum()) if len(calibration) else 0,
        "headline": headline,
        "stages": [STAGE_LABELS[s] for s in stages],
        "stage_rows": stage_rows,
        "cost_rows": cost_rows,
        "money_rows": money_rows,
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
            "waitlist": embedded_png(figs / "waitlist.png"),
            "census": embedded_png(figs / "census.png"),
            "funnel": embedded_png(figs / "funnel.png"),
            "cost": embedded_png(figs / "cost_breakdown.png"),
            "money": embedded_png(figs / "money.png"),
            "group_census": embedded_png(figs / "group_census.png"),
            "calendar": embedded_png(figs / "session_calendar.png"),
            "utilisation": embedded_png(figs / "staff_utilisation.png"),
        },
        "horizon": scenario.get("horizon_days"),
        "window": facts.horizon - facts.warmup,
        "currency": currency,
        "symbol": symbol(currency).strip(),
    }


#: The money table: revenue by unit and payer, then the totals, margin and break-even (those present).
MONEY_TOTALS = ("revenue_billed", "revenue_not_collected", "revenue_total", "cost_total", "margin_total",
                "cost_recovery", "margin_share_of_revenue", "revenue_per_completed_program",
                "margin_per_completed_program", "iop_revenue_per_client_day", "iop_variable_cost_per_client_day",
                "break_even_iop_census", "iop_census_mean")


def _money_kpis(index) -> list[str]:
    if "revenue_total" not in index:
        return []
    units = [k for k in index if k.startswith("revenue_") and k not in MONEY_TOTALS
             and not k.startswith(("revenue_payer_", "revenue_per_"))]
    payers = [k for k in index if k.startswith("revenue_payer_")]
    mix = [k for k in index if k.startswith("payer_mix_")]
    return units + payers + [k for k in MONEY_TOTALS if k in index] + mix


def _first_year(df: pd.DataFrame) -> dict:
    if not len(df):
        return {"stages": [], "rows": []}
    order = list(STAGE_LABELS)
    stages = sorted(dict.fromkeys(df["stage"].unique()), key=lambda x: order.index(x) if x in order else len(order))
    rows = []
    for month, g in df.groupby("month"):
        g = g.set_index("stage")
        rows.append({"month": int(month), "cells": [fmt(g.loc[s, "waitlist_mean"], "") if s in g.index else "" for s in stages]})
    return {"stages": [STAGE_LABELS.get(s, s) for s in stages], "rows": rows}


def _differences(folder: Path, names: list[str], currency: str) -> tuple[list[dict], pd.DataFrame]:
    diffs = _read_csv(folder / "differences.csv")
    if not len(diffs):
        return [], pd.DataFrame()
    judged = judge(diffs)
    kpis = [k for k in HEADLINE if k in set(diffs["kpi"])]
    return difference_rows(judged, kpis, names[0], currency), judged


def _run_length(man: dict) -> str:
    horizon = man.get("horizon_days")
    if isinstance(horizon, dict):
        lengths = set(horizon.values())
        return f"{lengths.pop()} days" if len(lengths) == 1 else "; ".join(f"{n}: {d} days" for n, d in horizon.items())
    return f"{horizon} days"


def write_report(folder: Path) -> Path:
    """Render ``report.html`` in a finished (or staging) run, comparison or sweep folder."""
    folder = Path(folder)
    man = read_manifest(folder)
    kind = man.get("kind", "run")
    if kind == "sweep":
        return write_sweep_report(folder, man)
    if kind == "plan":
        return write_plan_report(folder, man)
    if kind == "calibration":
        from iopsim.outputs.calibration import write_calibration_report

        return write_calibration_report(folder, man)
    if kind not in ("run", "compare"):
        raise IopsimError(f"{folder}: a {kind} folder has no report; reports are for run, compare, sweep, plan and calibration folders")
    warnings = man.get("warnings") or ([] if kind == "run" else {})
    if kind == "compare":
        names = man["scenarios"]
        _draw_missing(folder, kind, names)
        blocks = [_scenario_block(folder / "scenarios" / n, n, list(warnings.get(n, []))) for n in names]
    else:
        names = [man["scenario"]]
        _draw_missing(folder, kind, names)
        blocks = [_scenario_block(folder, names[0], list(warnings))]
    params = _read_csv(folder / "parameters_differ.csv")
    selection = json.loads((folder / "selection.json").read_text()) if (folder / "selection.json").exists() else None
    figs = folder / "figures"
    selection_label = selection_indifference = None
    if selection:
        label, unit = kpi_label(selection["kpi"])
        selection_label = people_label(label)
        selection_indifference = fmt(selection["indifference"], unit, blocks[0]["currency"])
    currency = blocks[0]["currency"]
    differences, judged = _differences(folder, names, currency) if kind == "compare" else ([], pd.DataFrame())
    verdict_text = []
    if kind == "compare" and len(judged):
        facts = {n: Facts.from_folder(folder / "scenarios" / n, n, list(warnings.get(n, []))) for n in names}
        verdict_text = comparison_answer(verdict(judged, names[0]), facts)
    side = []  # a compare's headline table: one row per KPI, one column per scenario
    if kind == "compare":
        for k in HEADLINE:
            cells = [next((r for r in b["headline"] if r["kpi"] == k), None) for b in blocks]
            first = next((c for c in cells if c), None)
            if first:
                side.append({"label": first["label"], "cells": [c or {"mean": "–", "ci": ""} for c in cells]})
    robust = _read_csv(folder / "robustness.csv") if kind == "compare" else pd.DataFrame()
    ctx = {
        "robust_rows": robustness_rows(robust, currency) if len(robust) else [],
        "robust_sentences": robustness_sentences(robust, currency) if len(robust) else [],
        "robust_kpi": people_label(kpi_label(robust["kpi"].iloc[0])[0]).lower() if len(robust) else "",
        "tornado": embedded_png(figs / "tornado.png"),
        "side_by_side": side,
        "run_length": _run_length(man),
        "selection_label": selection_label,
        "selection_indifference": selection_indifference,
        "kind": kind,
        "names": names,
        "blocks": blocks,
        "manifest": man,
        "params": [{**r, "setting": factor_label(str(r["parameter"]))} for r in params.to_dict(orient="records")]
        if len(params) else [],
        "param_cols": list(params.columns) if len(params) else [],
        "differences": differences,
        "verdict": verdict_text,
        "currencies": sorted({b["currency"] for b in blocks}),
        "selection": selection,
        "forest": embedded_png(figs / "forest.png"),
        "waitlist_overlay": embedded_png(figs / "waitlist_overlay.png"),
        "census_overlay": embedded_png(figs / "census_overlay.png"),
        "references": man.get("references", {}),
        "versions": man.get("versions", {}),
    }
    html = environment().get_template("report.html.j2").render(**ctx)
    out = folder / "report.html"
    atomic_write_text(out, html)
    return out


# --------------------------------------------------------------------------- sweeps


def _factor_values(spec: dict) -> str:
    if spec.get("values") is not None:
        return ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in spec["values"])
    lo, hi = spec.get("range") or (None, None)
    steps = f" in {spec['steps']} steps" if spec.get("steps") else ""
    return f"{lo:g} to {hi:g}{steps}" if lo is not None else ""


def write_sweep_report(folder: Path, man: dict | None = None) -> Path:
    """Render ``report.html`` of a sweep folder: the design, the per-point table, the figures and,
    for a sensitivity sweep, the indices."""
    from iopsim.outputs.answer import sweep_currency

    folder = Path(folder)
    man = man or json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    currency = sweep_currency(folder)
    points = _read_csv(folder / "points.csv")
    kpis = list(man.get("kpis") or [])
    factors = man.get("factors") or {}
    columns = [{"label": factor_label(f), "unit": ""} for f in factors]
    columns += [{"label": people_label(kpi_label(k)[0]), "unit": kpi_label(k)[1]} for k in kpis]
    rows = []
    for _, r in points.iterrows():
        cells = []
        for f in factors:
            v = r.get(f"factor:{f}")
            cells.append(f"{v:g}" if isinstance(v, float) else str(v))
        for k in kpis:
            unit = kpi_label(k)[1]
            m, lo, hi = clip_ci(float(r.get(k)), float(r.get(f"{k}:ci_low")), float(r.get(f"{k}:ci_high")), unit, k)
            ci = f"{fmt(lo, unit, currency)} to {fmt(hi, unit, currency)}" if lo == lo and hi == hi and lo != hi else ""
            cells.append({"mean": fmt(m, unit, currency), "ci": ci})
        rows.append({"point": int(r["point_id"]), "cells": cells, "replications": int(r.get("replications", 0))})
    sens = _read_csv(folder / "sensitivity.csv")
    sensitivity = []
    if len(sens):
        cols = [c for c in ("S1", "ST", "mu_star", "sigma") if c in sens.columns]
        for _, r in sens.iterrows():
            cells = []
            unit = kpi_label(r["kpi"])[1]
            for c in cols:
                conf = r.get(f"{c}_conf")
                conf = conf if conf is not None and conf == conf else math.nan
                if c in ("mu_star", "sigma"):  # Morris effects are in the result's own unit
                    cells.append(plus_minus(r[c], conf, unit if unit in ("fraction", "currency") else "", currency))
                else:
                    cells.append(f"{r[c]:.3f}" + (f" ± {conf:.3f}" if math.isfinite(conf) else ""))
            sensitivity.append({"kpi": people_label(kpi_label(r["kpi"])[0]), "factor": factor_label(r["factor"]),
                                "cells": cells})
        sens_cols = {"S1": "first-order index S1", "ST": "total index ST", "mu_star": "Morris μ* (result's unit)",
                     "sigma": "Morris σ (result's unit)"}
        sens_header = [sens_cols[c] for c in cols]
    else:
        sens_header = []
    figures = []
    for k in kpis:
        img = embedded_png(folder / "figures" / f"{k}.png")
        if img:
            figures.append({"caption": people_label(kpi_label(k)[0]), "src": img})
        s_img = embedded_png(folder / "figures" / f"sensitivity_{k}.png")
        if s_img:
            figures.append({"caption": f"What drives {decap(people_label(kpi_label(k)[0]))}", "src": s_img})
    failures = json.loads((folder / "failures.json").read_text()) if (folder / "failures.json").exists() else []
    design = man.get("design") or {}
    ctx = {
        "manifest": man,
        "name": man.get("sweep", folder.name),
        "design": design,
        "factors": [{"label": factor_label(f), "path": f, "levels": _factor_values(spec)} for f, spec in factors.items()],
        "columns": columns,
        "rows": rows,
        "done": len(points),
        "sensitivity": sensitivity,
        "sensitivity_header": sens_header,
        "figures": figures,
        "failures": failures,
        "references": man.get("references", {}),
        "versions": man.get("versions", {}),
        "currency": currency,
    }
    html = environment().get_template("sweep.html.j2").render(**ctx)
    out = folder / "report.html"
    atomic_write_text(out, html)
    return out
