"""What a plan folder says to people: the recommendation in one sentence, the figure, the report.

Everything is read from the files ``iopsim plan`` wrote (``summary.json``,
``plans.csv``, ``manifest.json``), so the terminal, the report and a notebook
say the same thing in the same words.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.kpis import kpi_label
from iopsim.errors import IopsimError
from iopsim.files import atomic_write_text, read_manifest
from iopsim.outputs.html import embedded_png, environment
from iopsim.outputs.answer import capital, clip_ci, decap, fmt, people_label, short, span

STATUS_WORDS = {
    "feasible": "meets every target",
    "infeasible": "misses a target",
    "undecided": "not decided",
    "dominated": "not simulated: a smaller plan meets every target",
    "ruled out": "not simulated: a larger plan misses a target",
    "error": "failed",
    "not evaluated": "not evaluated",
}


def read_summary(folder: Path) -> dict:
    path = Path(folder) / "summary.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise IopsimError(f"{folder}: summary.json is missing or damaged; re-run `iopsim plan` into this folder") from None


def lever_text(label: str, level: int) -> str:
    """'2 day counselors', '1 day counselor' (labels are written in the plural)."""
    if level == 1 and label.endswith("s") and not label.endswith("ss"):
        label = label[:-1]
    return f"{level} {label}"


def _levels_text(summary: dict, levels: dict) -> str:
    labels = summary.get("labels", {})
    return ", ".join(lever_text(labels.get(n, n), lv) for n, lv in levels.items())


def _estimate(est: dict, kpi: str, currency: str) -> str:
    e = est.get(kpi) or {}
    label, unit = kpi_label(kpi)
    m, lo, hi = clip_ci(e.get("mean", math.nan), e.get("low", math.nan), e.get("high", math.nan), unit, kpi)
    style = fmt if unit == "days" and abs(m) < 1 else short  # 0.04 days, not 0.0 days
    ci = span(lo, hi, unit, currency, style=style)
    return f"{decap(people_label(label))} {style(m, unit, currency)}" + (f" ({ci})" if ci else "")


def target_text(con: dict) -> str:
    label, unit = kpi_label(con["kpi"])
    word = "at least" if con.get("min") is not None else "at most"
    value = con["min"] if con.get("min") is not None else con["max"]
    style = fmt if unit == "days" and abs(value) < 1 else short
    return f"{decap(people_label(label))} {word} {style(value, unit)}"


def recommendation_sentence(summary: dict) -> str:
    """'Recommended: 2 day counselors, 1 evening group; share ... 92 % (90–94 %); ...; 95 % confident ...'"""
    currency = summary.get("currency", "USD")
    conf = f"{100 * summary['confidence']:.0f} %"
    kpis = list(dict.fromkeys([c["kpi"] for c in summary["constraints"]] + [summary["objective"]["kpi"]]))
    rec = summary.get("recommended")
    if rec is not None:
        parts = [_estimate(rec["estimates"], k, currency) for k in kpis]
        text = f"Recommended: {_levels_text(summary, rec['levels'])}; " + "; ".join(parts)
        tolerant = any(c.get("tolerance") for c in summary["constraints"])
        text += f"; {conf} confident that every target is met" + (" within its tolerance." if tolerant else ".")
        text += posterior_sentence(summary)
        sel = summary.get("selection") or {}
        if sel.get("capped") and len(sel.get("survivors", [])) > 1:
            text += (f" {len(sel['survivors']) - 1} other feasible plan{'s are' if len(sel['survivors']) > 2 else ' is'}"
                     f" as good on {decap(people_label(kpi_label(summary['objective']['kpi'])[0]))} within the noise of"
                     f" {sel['required']} replications.")
        return text + _undecided(summary)
    near = summary.get("closest")
    b = summary.get("binding")
    binding = summary["constraints"][b] if b is not None else None
    if near is None:
        return "No plan was simulated: every plan in the ranges failed or was ruled out."
    what = f"the target that binds is {target_text(binding)}" if binding else "no plan meets every target"
    parts = [_estimate(near["estimates"], k, currency) for k in kpis]
    return (f"No plan in the ranges meets every target at {conf} confidence: {what}. The closest plan, "
            f"{_levels_text(summary, near['levels'])}, reaches " + "; ".join(parts) + "." + _undecided(summary))


def posterior_sentence(summary: dict) -> str:
    """' Each replication drew ... from the posterior of calibration X': what the confidence covers."""
    post = summary.get("posterior")
    if not post:
        return ""
    names = ", ".join(post.get("parameters", []))
    return (f" Each replication drew {names} from the posterior of calibration {post.get('calibration')!r}, so the"
            " confidence includes what the published figures leave unknown.")


def _undecided(summary: dict) -> str:
    n = (summary.get("statuses") or {}).get("undecided", 0)
    if not n:
        return ""
    return (f" {n} plan{'s' if n > 1 else ''} could not be decided in {summary.get('max_replications')} replications"
            " (see the table): raise replications.max, or give the targets a (wider) tolerance.")


def pareto_front(x: np.ndarray, y: np.ndarray, x_goal: str, y_goal: str) -> list[int]:
    """Indices of the points no other point beats on both axes (``min``/``max`` per axis), by x."""
    sx = 1.0 if x_goal == "min" else -1.0
    sy = 1.0 if y_goal == "min" else -1.0
    idx = [i for i in range(len(x)) if math.isfinite(x[i]) and math.isfinite(y[i])]
    front = []
    for i in idx:
        if not any(sx * x[j] <= sx * x[i] and sy * y[j] <= sy * y[i] and (x[j] != x[i] or y[j] != y[i]) for j in idx):
            front.append(i)
    return sorted(front, key=lambda i: x[i])


def plan_figure(folder: Path) -> Path | None:
    """``figures/pareto.png``: the objective against the first target's KPI, every simulated plan, the front."""
    from iopsim.outputs.figures import BAD, BLUE, GOOD, GREY, _save, plt, unit_axis

    folder = Path(folder)
    summary = read_summary(folder)
    table = pd.read_csv(folder / "plans.csv")
    sims = table[table["replications"] > 0].reset_index(drop=True)
    if not len(sims):
        return None
    currency = summary.get("currency", "USD")
    okpi, ogoal = summary["objective"]["kpi"], summary["objective"]["goal"]
    con = summary["constraints"][0]
    ykpi = con["kpi"] if con["kpi"] != okpi else "referral_admitted_within_14_days"
    ygoal = "max" if con.get("min") is not None else "min"
    (xl, xu), (yl, yu) = kpi_label(okpi), kpi_label(ykpi)
    fig, ax = plt.subplots(figsize=(8.4, 5.2))
    x, y = sims[okpi].to_numpy(float), sims[ykpi].to_numpy(float)
    # A plan far on the wrong side of an upper limit (an unstable queue's wait) would squash the
    # rest: the axis stops at three times the target, and such plans sit on its edge as triangles.
    cap = math.inf
    if ygoal == "min" and con["kpi"] == ykpi and con.get("max", 0) > 0 and np.nanmin(y) <= con["max"]:
        ok = y[(sims["status"] == "feasible").to_numpy()]
        cap = max(3 * con["max"], 1.3 * float(ok.max()) if ok.size else 0.0)
    over_cap = y > cap
    y = np.minimum(y, cap)
    front = pareto_front(x, y, ogoal, ygoal)
    if len(front) > 1:
        ax.plot(x[front], y[front], color=GREY, lw=1.2, ls="--", zorder=1, label="best trade-offs (Pareto front)")
    styles = {"feasible": dict(color=GOOD, label="meets every target"),
              "infeasible": dict(color=BAD, label="misses a target"),
              "undecided": dict(color=GREY, label="not decided")}
    for status, st in styles.items():
        m = (sims["status"] == status).to_numpy()
        if not m.any():
            continue
        m = m & ~over_cap
        xe = np.abs(np.vstack([x[m] - sims.loc[m, f"{okpi}:ci_low"], sims.loc[m, f"{okpi}:ci_high"] - x[m]]))
        ye = np.abs(np.vstack([y[m] - sims.loc[m, f"{ykpi}:ci_low"], sims.loc[m, f"{ykpi}:ci_high"] - y[m]]))
        ax.errorbar(x[m], y[m], xerr=np.nan_to_num(xe), yerr=np.nan_to_num(ye), fmt="o", ms=5, color=st["color"],
                    ecolor=st["color"], elinewidth=0.7, alpha=0.85, label=st["label"], zorder=2)
    if over_cap.any():
        ax.plot(x[over_cap], y[over_cap], marker="^", ms=9, color=BAD, ls="none", zorder=3,
                label=f"off the chart (above {short(cap, yu, currency)})")
        ax.set_ylim(top=cap * 1.05)
    rec = summary.get("recommended")
    if rec is not None:
        r = sims[sims["plan_id"] == rec["id"]]
        if len(r):
            ax.plot(r[okpi], r[ykpi], marker="*", ms=18, color=BLUE, mec="white", ls="none", zorder=3,
                    label="recommended")
    if con["kpi"] == ykpi:
        thr = con["min"] if con.get("min") is not None else con["max"]
        ax.axhline(thr, color=BAD, lw=0.9, ls=":", zorder=0)
        ax.annotate("target", (1.0, thr), xycoords=("axes fraction", "data"), ha="right", va="bottom",
                    color=BAD, fontsize=9)
    unit_axis(ax, xu, currency, "x")
    unit_axis(ax, yu, currency, "y")
    ax.set_xlabel(people_label(xl) + (f" ({xu})" if xu not in ("currency", "fraction", "") else ""))
    ax.set_ylabel(people_label(yl) + (f" ({yu})" if yu not in ("currency", "fraction", "") else ""))
    n_not = int((table["replications"] == 0).sum())
    more = f"; {n_not} more not simulated (pruned)" if n_not else ""
    ax.set_title(f"{len(sims)} plan{'s' if len(sims) != 1 else ''} simulated{more}; bars: {100 * summary['confidence']:.0f} % CIs",
                 fontsize=10, loc="left")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="best", frameon=False)
    fig.tight_layout()
    return _save(fig, folder / "figures" / "pareto.png")


def table_rows(summary: dict, table: pd.DataFrame) -> tuple[list[str], list[dict]]:
    """Header and rows of the every-plan table, in words, the recommended plan first."""
    currency = summary.get("currency", "USD")
    labels = summary.get("labels", {})
    kpis = list(dict.fromkeys([c["kpi"] for c in summary["constraints"]] + [summary["objective"]["kpi"]]))
    n_targets = len(summary["constraints"])
    names = [f"Target {i + 1}" for i in range(n_targets)]
    if len(kpis) > n_targets:
        names.append(people_label(kpi_label(kpis[-1])[0]))
    header = ["Plan", *(capital(labels.get(n, n)) for n in summary["decisions"]), *names, "Status", "Replications"]
    rec = (summary.get("recommended") or {}).get("id")
    order = sorted(range(len(table)), key=lambda i: (table["plan_id"].iloc[i] != rec, table["replications"].iloc[i] == 0,
                                                      table["plan_id"].iloc[i]))
    rows = []
    for i in order:
        r = table.iloc[i]
        cells = []
        for k in kpis:
            unit = kpi_label(k)[1]
            if r["replications"] > 0:
                m, lo, hi = clip_ci(r[k], r[f"{k}:ci_low"], r[f"{k}:ci_high"], unit, k)
                cells.append({"mean": fmt(m, unit, currency), "ci": span(lo, hi, unit, currency)})
            else:
                cells.append({"mean": "–", "ci": ""})
        reason = r["reason"] if isinstance(r["reason"], str) else ""
        # the targets are listed, numbered, above the table: a reason names them by number
        reason = re.sub(r"target (\d+) \([^)]*\)", lambda mt: f"target {mt.group(1)}", reason)
        rows.append({"plan": int(r["plan_id"]), "recommended": int(r["plan_id"]) == rec,
                     "levels": [int(r[f"decision:{n}"]) for n in summary["decisions"]], "cells": cells,
                     "status": STATUS_WORDS.get(r["status"], r["status"]), "reason": reason,
                     "replications": int(r["replications"])})
    return header, rows


def robustness_sentences(summary: dict, table: pd.DataFrame) -> list[str]:
    """Does the recommended plan still meet every target, and stay the best of the feasible plans it was
    checked against, at both ends of each declared assumption's range?"""
    from iopsim.outputs.robustness import assumption_value, the_phrase

    if table is None or not len(table):
        return []
    cons = summary["constraints"]
    labels = summary.get("labels", {})
    n_assumptions = table["assumption"].nunique()
    reps = int(table["replications"].min())
    rivals = table["plan_id"].nunique() - 1
    out, unsure, beaten = [], [], []
    for (path, end), g in table.groupby(["assumption", "end"], sort=False):
        rec = g[g["recommended"].astype(bool)].iloc[0]
        note = rec["note"] if isinstance(rec["note"], str) and rec["note"] else path
        at = f"{the_phrase(note)} is {assumption_value(path, rec['value'])} (the {end} end of its range)"
        missed = [target_text(cons[i]) for i in range(len(cons)) if rec[f"target_{i + 1}:verdict"] == "missed"]
        if missed:
            out.append(f"It misses the target {' and '.join(missed)} if {at}.")
        elif any(rec[f"target_{i + 1}:verdict"] == "open" for i in range(len(cons))):
            unsure.append(at)
        winner = g[g["best_here"].astype(bool)]
        if len(winner) and not bool(winner["recommended"].iloc[0]):
            lv = json.loads(winner["levels"].iloc[0])
            beaten.append(f"{_levels_text({'labels': labels}, lv)} if {at}")
    if unsure:
        out.append(f"{reps} replications cannot tell whether it meets every target if " + "; or if ".join(unsure) + ".")
    if beaten:
        out.append("Another plan would then be the better choice: " + "; ".join(beaten) + ".")
    if not out:
        vs = f" and stays the best of the {rivals + 1} best feasible plans" if rivals else ""
        return [f"It still meets every target{vs} at both ends of the ranges of all {n_assumptions} declared "
                f"assumptions ({reps} replications at each end)."]
    return out


def read_plan_robustness(folder: Path) -> pd.DataFrame:
    path = Path(folder) / "robustness.csv"
    return pd.read_csv(path) if path.exists() else pd.DataFrame()


def write_plan_report(folder: Path, man: dict | None = None) -> Path:
    """``report.html`` of a plan folder: the recommendation, the figure, every plan, the method."""
    folder = Path(folder)
    man = man or read_manifest(folder, "plan")
    summary = read_summary(folder)
    table = pd.read_csv(folder / "plans.csv")
    if not (folder / "figures" / "pareto.png").exists():
        plan_figure(folder)
    header, rows = table_rows(summary, table)
    robust = read_plan_robustness(folder)
    unsimulated = [r for r in rows if r["replications"] == 0]
    ctx = {
        "robust": robustness_sentences(summary, robust),
        "unsimulated": len(unsimulated),
        "unsimulated_kinds": sorted({r["status"] for r in unsimulated}),
        "name": summary.get("name") or Path(man.get("plan_file", folder.name)).stem,
        "sentence": recommendation_sentence(summary),
        "summary": summary,
        "targets": [f"target {i + 1}: {target_text(c)}" for i, c in enumerate(summary["constraints"])],
        "objective": ("lowest " if summary["objective"]["goal"] == "min" else "highest ")
        + decap(people_label(kpi_label(summary["objective"]["kpi"])[0])),
        "header": header,
        "rows": [r for r in rows if r["replications"] > 0],
        "figure": embedded_png(folder / "figures" / "pareto.png"),
        "recommended_yaml": (folder / "recommended.yaml").exists(),
        "manifest": man,
        "versions": man.get("versions", {}),
        "saving": 1 - summary["replications"] / summary["grid_replications"] if summary["grid_replications"] else 0.0,
    }
    html = environment().get_template("plan.html.j2").render(**ctx)
    out = folder / "report.html"
    atomic_write_text(out, html)
    return out


def write_plan_outputs(folder: Path) -> str:
    """Figure and report of a finished plan folder; returns the recommendation in words."""
    plan_figure(folder)
    write_plan_report(folder)
    summary = read_summary(folder)
    return " ".join([recommendation_sentence(summary), *robustness_sentences(summary, read_plan_robustness(folder))])
