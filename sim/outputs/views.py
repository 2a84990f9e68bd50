"""What a finished folder says, for front ends besides the report and the terminal (the web app).

Everything is read from the files of a run, comparison or plan folder with the
helpers the report uses (:mod:`iopsim.outputs.answer`,
:mod:`iopsim.outputs.plan_report`), so the app, the report and the terminal say
the same thing in the same words.  The KPI tables are built from
``summary.csv`` generically: every KPI a run produced lands in exactly one
group, so a KPI the model gains later is shown without a change here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from iopsim.lazy import pandas as pd

from iopsim.analysis.kpis import STAGE_LABELS
from iopsim.analysis.verdict import judge, verdict
from iopsim.files import read_manifest
from iopsim.outputs.answer import (
    Facts,
    clip_ci,
    comparison_answer,
    difference_rows,
    fmt,
    human,
    people_label,
    red_flags,
    run_answer,
    span,
)
from iopsim.outputs.plan_report import read_plan_robustness, read_summary, recommendation_sentence, robustness_sentences
from iopsim.outputs.plan_report import table_rows as plan_table_rows
from iopsim.outputs.report import HEADLINE

__all__ = ["ComparisonView", "PlanView", "RunView", "comparison_view", "kpi_groups", "plan_view", "run_view"]

#: The figures of a run folder, in the order the report shows them, with a caption each.
RUN_FIGURES = (
    ("waitlist.png", "Waitlists by stage"),
    ("census.png", "Census by stage"),
    ("funnel.png", "From referral to completed program"),
    ("group_census.png", "IOP group sizes"),
    ("session_calendar.png", "IOP session calendar"),
    ("staff_utilisation.png", "Staff utilisation"),
    ("cost_breakdown.png", "Where the money goes"),
)
COMPARISON_FIGURES = (
    ("forest.png", "Paired differences with their 95 % CIs (forest plot)"),
    ("waitlist_overlay.png", "Waitlists, scenario by scenario"),
    ("census_overlay.png", "Census, scenario by scenario"),
    ("tornado.png", "What the verdict rests on"),
)
#: Name starts of KPIs about money that are not in a currency (a break-even volume, say).
MONEY_PREFIXES = ("cost_", "revenue", "margin", "break_even", "payer", "labour_share")


def _unit(row) -> str:
    unit = row.get("unit")
    return unit if isinstance(unit, str) else ""


def kpi_row(row, currency: str) -> dict:
    """One KPI for a table: label, mean, 95 % CI and unit, in words (shares in %, money with its symbol)."""
    unit = _unit(row)
    shown = unit if unit in ("fraction", "currency") else ""
    mean = float(row["mean"])
    _m, lo, hi = clip_ci(mean, float(row["ci_low"]), float(row["ci_high"]), unit)
    n = row.get("n", 0)
    if not math.isfinite(mean):
        ci = "–"
    elif n is None or not n == n or n < 2 or not (math.isfinite(lo) and math.isfinite(hi)):
        ci = "–"
    elif abs(hi - lo) <= 1e-9 * max(abs(mean), 1.0):
        ci = "the same in every replication"
    else:
        ci = span(lo, hi, shown, currency, fmt)
    label = row.get("label")
    return {
        "kpi": str(row["kpi"]),
        "label": people_label(label) if isinstance(label, str) and label else human(str(row["kpi"])),
        "mean": fmt(mean, shown, currency),
        "ci": ci,
        "unit": {"fraction": "%", "currency": currency}.get(unit, unit),
    }


def _group_of(kpi: str, unit: str, tracks: list[str], roles: list[str]) -> str:
    if kpi in HEADLINE:
        return "Program"
    if unit == "currency" or kpi.startswith(MONEY_PREFIXES):
        return "Costs and money"
    for t in tracks:
        if kpi.startswith(f"iop_track_{t}_"):
            return f"IOP {human(t)} track"
    if kpi.startswith("staff_ratio_"):
        return "Staffing rules"
    for r in roles:
        if kpi.startswith(f"staff_{r}_"):
            return f"Staff: {human(r)}"
    for s, label in STAGE_LABELS.items():
        if kpi.startswith(f"{s}_"):
            return label
    return "Program"


def kpi_groups(summary: pd.DataFrame, currency: str = "USD", tracks=(), roles=()) -> list[tuple[str, list[dict]]]:
    """Every KPI of a summary table in groups, as the report groups them: the program (the report's
    headline KPIs first), each stage, each IOP track, each staff role, staffing rules, costs and money.

    ``tracks`` and ``roles`` are the scenario's track and role names (so ``iop_track_day_...`` is
    the day track's, not the IOP stage's).  Nothing is left out: a KPI no rule places is the program's.
    """
    rows = summary.reset_index() if "kpi" not in summary.columns else summary
    tracks = sorted(tracks, key=len, reverse=True)  # 'day_2' before 'day'
    roles = sorted(roles, key=len, reverse=True)
    order = {k: i for i, k in enumerate(HEADLINE)}
    groups: dict[str, list[tuple[int, int, dict]]] = {"Program": []}
    for i, (_, r) in enumerate(rows.iterrows()):
        name = _group_of(str(r["kpi"]), _unit(r), list(tracks), list(roles))
        groups.setdefault(name, []).append((order.get(str(r["kpi"]), len(order)), i, kpi_row(r, currency)))
    rank = ["Program", *STAGE_LABELS.values()]
    names = sorted(groups, key=lambda g: (rank.index(g) if g in rank else len(rank) + (
        0 if g.startswith("IOP ") else 1 if g.startswith("Staff") else 2)))
    return [(g, [row for _o, _i, row in sorted(groups[g], key=lambda x: (x[0], x[1]))]) for g in names if groups[g]]


def _figures(folder: Path, names) -> list[tuple[str, Path]]:
    return [(caption, folder / "figures" / f) for f, caption in names if (folder / "figures" / f).is_file()]


@dataclass
class RunView:
    """A finished run folder in words: the answer, the warnings, KPI groups, figures and the report."""

    folder: Path
    name: str
    replications: int
    answer: list[str]
    flags: list[dict]
    groups: list[tuple[str, list[dict]]]
    figures: list[tuple[str, Path]]
    report: Path | None
    currency: str = "USD"
    description: str = ""


def run_view(folder: str | Path) -> RunView:
    """What the report of a run folder says first (the answer, the warnings), then every KPI and figure."""
    folder = Path(folder)
    man = read_manifest(folder)
    facts = Facts.from_folder(folder, man.get("scenario"), list(man.get("warnings") or []))
    report = folder / "report.html"
    return RunView(folder=folder, name=facts.name, replications=int(man.get("replications") or 0),
                   answer=run_answer(facts), flags=red_flags(facts),
                   groups=kpi_groups(facts.summary, facts.currency, list(facts.tracks), facts.roles),
                   figures=_figures(folder, RUN_FIGURES), report=report if report.is_file() else None,
                   currency=facts.currency, description=str(facts.scenario.get("description") or ""))


@dataclass
class ComparisonView:
    """A finished comparison folder in words: the verdict per alternative, the differences, the figures."""

    folder: Path
    names: list[str]
    replications: int
    verdicts: list[dict]
    differences: list[dict]
    figures: list[tuple[str, Path]]
    report: Path | None
    runs: dict[str, RunView] = field(default_factory=dict)


def comparison_view(folder: str | Path) -> ComparisonView:
    """The verdict sentences of the comparison report (``comparison_answer``), its headline differences
    and its figures, with each scenario's own run view."""
    folder = Path(folder)
    man = read_manifest(folder)
    names = list(man["scenarios"])
    warnings = man.get("warnings") or {}
    facts = {n: Facts.from_folder(folder / "scenarios" / n, n, list(warnings.get(n, []))) for n in names}
    diffs = pd.read_csv(folder / "differences.csv") if (folder / "differences.csv").exists() else pd.DataFrame()
    verdicts, rows = [], []
    if len(diffs):
        judged = judge(diffs)
        verdicts = comparison_answer(verdict(judged, names[0]), facts)
        currency = facts[names[0]].currency
        kpis = [k for k in HEADLINE if k in set(diffs["kpi"])]
        rows = difference_rows(judged, kpis, names[0], currency)
    report = folder / "report.html"
    runs = {}
    for n in names:
        f = facts[n]
        runs[n] = RunView(folder=folder / "scenarios" / n, name=n, replications=int(man.get("replications") or 0),
                          answer=run_answer(f), flags=red_flags(f),
                          groups=kpi_groups(f.summary, f.currency, list(f.tracks), f.roles),
                          figures=_figures(folder / "scenarios" / n, RUN_FIGURES), report=None, currency=f.currency)
    return ComparisonView(folder=folder, names=names, replications=int(man.get("replications") or 0),
                          verdicts=verdicts, differences=rows, figures=_figures(folder, COMPARISON_FIGURES),
                          report=report if report.is_file() else None, runs=runs)


@dataclass
class PlanView:
    """A finished plan folder in words: the recommendation, every simulated plan, the Pareto figure."""

    folder: Path
    name: str
    sentences: list[str]
    targets: list[str]
    header: list[str]
    rows: list[dict]
    figure: Path | None
    recommended: Path | None
    report: Path | None
    summary: dict = field(default_factory=dict)


def plan_view(folder: str | Path) -> PlanView:
    """The recommendation sentence of the plan report, the plans simulated (recommended first) and the figure."""
    from iopsim.outputs.plan_report import target_text

    folder = Path(folder)
    summary = read_summary(folder)
    table = pd.read_csv(folder / "plans.csv")
    header, rows = plan_table_rows(summary, table)
    sentences = [recommendation_sentence(summary), *robustness_sentences(summary, read_plan_robustness(folder))]
    figure = folder / "figures" / "pareto.png"
    recommended = folder / "recommended.yaml"
    report = folder / "report.html"
    return PlanView(folder=folder, name=str(summary.get("name") or folder.name), sentences=sentences,
                    targets=[f"Target {i + 1}: {target_text(c)}" for i, c in enumerate(summary["constraints"])],
                    header=header, rows=[r for r in rows if r["replications"] > 0],
                    figure=figure if figure.is_file() else None,
                    recommended=recommended if recommended.is_file() else None,
                    report=report if report.is_file() else None, summary=summary)


def plan_cell(cell: dict) -> str:
    """A plan table cell as one string: 'mean (CI)'."""
    return f"{cell['mean']} ({cell['ci']})" if cell.get("ci") else str(cell.get("mean", "–"))

