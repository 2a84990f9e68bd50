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
from jinja2 import Environment, select_autoescape

from sim.errors import IopsimError
from sim.metrics import STAGE_LABELS, kpi_label
from sim.output import atomic_write_text

HEADLINE = (
    "referrals",
    "admitted_to_treatment",
    "programs_completed",
    "iop_wait_mean_days",
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
    for key, label in (("admissions", "Admissions"), ("wait_mean_days", "Mean wait"), ("wait_p90_days", "90th percentile wait"),
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
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    html = env.from_string(TEMPLATE).render(**ctx)
    out = folder / "report.html"
    atomic_write_text(out, html)
    return out


TEMPLATE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>iopsim report: {{ names|join(' vs ') }}</title>
<style>
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em}h2{border-bottom:2px solid #4C72B0;padding-bottom:.2em;margin-top:2em}h3{margin-top:1.4em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f0f3f8}img{max-width:100%;margin:.5em 0}
.note{color:#555;font-size:.9em}.sig{font-weight:bold;color:#a33}code{background:#f4f4f4;padding:0 .2em}
</style></head><body>
<h1>{% if kind == 'compare' %}Comparing {{ names[1:]|join(', ') }} with {{ names[0] }}{% else %}What to expect at {{ names[0] }}{% endif %}</h1>

<h2>The question</h2>
{% if kind == 'compare' %}
<p>How would waiting lists, census, completed programs and costs change if the program ran
{% for n in names[1:] %}<b>{{ n }}</b>{% if not loop.last %} or {% endif %}{% endfor %} instead of <b>{{ names[0] }}</b>?
All scenarios were simulated with the same random numbers (the same patients arrive at the same times with the same needs),
so the differences below are due to the changes, not to chance.</p>
{% else %}
<p>What will this program's waiting lists, census, outcomes and costs look like over
{{ blocks[0].horizon }} days, given the assumptions in the scenario?</p>
{% endif %}

<h2>The scenarios</h2>
<table><tr><th>Scenario</th><th style="text-align:left">Description</th></tr>
{% for b in blocks %}<tr><td>{{ b.name }}</td><td style="text-align:left">{{ b.description }}</td></tr>{% endfor %}
</table>
{% if params %}
<h3>What differs between them</h3>
<table><tr>{% for c in param_cols %}<th>{{ 'Setting' if c == 'parameter' else c }}</th>{% endfor %}</tr>
{% for r in params %}<tr>{% for c in param_cols %}<td>{% if c == 'parameter' %}<code>{{ r[c] }}</code>{% else %}{{ r[c] }}{% endif %}</td>{% endfor %}</tr>{% endfor %}
</table>
{% endif %}

<h2>Headline results</h2>
<p class="note">Each value is the mean over {{ manifest.replications }} replications with its 95 % confidence interval.</p>
{% for b in blocks %}
<h3>{{ b.name }}</h3>
<table><tr><th>Measure</th><th>Mean</th><th>95 % confidence interval</th></tr>
{% for r in b.headline %}<tr><td>{{ r.label }}</td><td>{{ r.mean }}</td><td>{{ r.ci }}</td></tr>{% endfor %}
</table>
{% endfor %}

{% if differences %}
<h2>Differences from {{ names[0] }}</h2>
<p class="note">Paired differences across replications (common random numbers){% if names|length > 2 %}, with
Bonferroni-adjusted intervals so that all {{ names|length - 1 }} comparisons hold together with 95 % confidence{% endif %}.
"Significant" means the interval excludes zero.</p>
<table><tr><th>Measure</th><th>Scenario</th><th>{{ names[0] }}</th><th>Scenario value</th><th>Difference</th><th>95 % CI of the difference</th><th>Significant</th></tr>
{% for d in differences %}<tr><td>{{ d.label }}</td><td>{{ d.scenario }}</td><td>{{ d.base }}</td><td>{{ d.value }}</td><td>{{ d.diff }}</td><td>{{ d.ci }}</td><td class="{{ 'sig' if d.significant == 'yes' }}">{{ d.significant }}</td></tr>{% endfor %}
</table>
{% if forest %}<img src="{{ forest }}" alt="Forest plot of differences">{% endif %}
{% endif %}

{% if selection %}
<h2>Which scenario is best?</h2>
<p>On <b>{{ selection_label }}</b> ({{ 'lower' if selection.goal == 'min' else 'higher' }} is better), the
Nelson–Matejcik two-stage procedure selects <b>{{ selection.best }}</b>. It guarantees a correct choice with probability
at least {{ '%.0f'|format(100 * (1 - selection.alpha)) }} % whenever the best scenario is better than the others by at least
{{ selection_indifference }} (the indifference zone). First stage: {{ selection.first_stage }} replications; the
procedure required {{ selection.required }}.</p>
{% endif %}

<h2>Waiting lists and census over time</h2>
{% if waitlist_overlay %}<img src="{{ waitlist_overlay }}" alt="Waitlist over time by scenario"><img src="{{ census_overlay }}" alt="Census over time by scenario">
{% else %}{% for b in blocks %}<img src="{{ b.figures.waitlist }}" alt="Waitlist over time"><img src="{{ b.figures.census }}" alt="Census over time">{% endfor %}{% endif %}

<h2>The first year of a new site</h2>
{% for b in blocks %}
<h3>{{ b.name }}</h3>
<table><tr><th>Level of care</th><th>Waitlist settles after</th><th>Waitlist reaches {{ b.transient[0].threshold if b.transient else '' }}: share of replications</th><th>…on average on day</th></tr>
{% for t in b.transient %}<tr><td>{{ t.stage }}</td><td>{{ t.settles }}</td><td>{{ t.share }}</td><td>{{ t.first }}</td></tr>{% endfor %}
</table>
{% if b.first_year.rows %}
<p class="note">Average number waiting, month by month:</p>
<table><tr><th>Month</th>{% for s in b.first_year.stages %}<th>{{ s }}</th>{% endfor %}</tr>
{% for r in b.first_year.rows %}<tr><td>{{ r.month }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>{% endif %}
{% endfor %}

<h2>Levels of care</h2>
{% for b in blocks %}
<h3>{{ b.name }}</h3>
<table><tr><th>Measure (mean)</th>{% for s in b.stages %}<th>{{ s }}</th>{% endfor %}</tr>
{% for r in b.stage_rows %}<tr><td>{{ r.label }}</td>{% for c in r.cells %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
<img src="{{ b.figures.funnel }}" alt="Outcome funnel">
{% endfor %}

<h2>Groups and staff</h2>
{% for b in blocks %}{% if b.staff_figures %}<h3>{{ b.name }}</h3>
{% for cap, img in b.staff_figures %}<p class="note">{{ cap }}</p><img src="{{ img }}" alt="{{ cap }}">{% endfor %}{% endif %}{% endfor %}

<h2>Costs</h2>
{% for b in blocks %}
<h3>{{ b.name }}</h3>
<table><tr><th>Component</th><th>Mean</th><th>95 % confidence interval</th></tr>
{% for r in b.cost_rows %}<tr><td>{{ r.label }}</td><td>{{ r.mean }}</td><td>{{ r.ci }}</td></tr>{% endfor %}
</table>
<img src="{{ b.figures.cost }}" alt="Cost breakdown">
{% endfor %}
<p class="note">Money is in the price years of the sources the scenario cites; it has not been inflated.</p>

<h2>Methods (STRESS-DES)</h2>
<h3>1. Objectives</h3>
<p>{% if kind == 'compare' %}Estimate the differences in waiting, throughput, outcomes, staffing and cost between the scenarios above.{% else %}Estimate waiting, throughput, outcomes, staffing and cost for the scenario above.{% endif %}</p>
<h3>2. Logic</h3>
<p>A discrete-event simulation (SimPy) of referrals through intake assessment by rostered clinicians, residential/inpatient care,
partial hospitalization (PHP), intensive outpatient (IOP) and aftercare. Each level has a waitlist from which patients may leave
(renege); early exits (dropout, transfer, termination) race the planned stay; completers step down or are discharged; after
treatment a relapse clock runs and some patients return as new referrals. Where the IOP is organised as group therapy, groups
meet on a weekly calendar, facilitators and other staff work rostered shifts, attendance is drawn per session and a run of missed
sessions is a dropout. Full definitions: the iopsim README.</p>
<h3>3. Data</h3>
<p>Inputs come from the scenario files; values not taken from a source are labelled as assumptions there. Sources cited:</p>
<ul>{% for k, v in references.items() %}<li><b>{{ k }}</b>: {{ v }}</li>{% endfor %}</ul>
<h3>4. Experimentation</h3>
<ul>
<li>Replications: {{ manifest.replications }}{% if manifest.precision %} (added sequentially until the 95 % CI half-width of <code>{{ manifest.precision_kpi }}</code> was within {{ '%.1f'|format(100 * manifest.precision) }} % of its mean){% endif %}; base seed {{ manifest.seed }}; each random decision has its own stream seeded from (seed, replication, stream name).</li>
<li>Run length: {{ run_length }}; warm-up discarded: {{ manifest.warmup_days }} days{% if manifest.warmup_requested == 'auto' %} (estimated from the output with {{ manifest.notes.warmup_method }}){% endif %}.</li>
{% if kind == 'compare' %}<li>Scenarios compared with common random numbers; differences are paired across replications.</li>{% endif %}
<li>Intervals: Student-t 95 % confidence intervals across independent replications.</li>
</ul>
<h3>5. Implementation</h3>
<ul><li>Command: <code>{{ manifest.command }}</code></li>
<li>Code revision: {{ manifest.git_revision or 'not under version control' }}; created {{ manifest.created }}; platform {{ manifest.platform }}</li>
<li>Software: {% for k, v in versions.items() %}{{ k }} {{ v }}{% if not loop.last %}, {% endif %}{% endfor %}</li></ul>
<h3>6. Code access</h3>
<p>iopsim is open source; the resolved scenario of every run is stored beside its results (<code>scenario.yaml</code>) so the run can be repeated exactly.</p>
</body></html>
"""
