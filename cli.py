"""iopsim command line: thin typer commands that parse arguments and call ``sim``."""

from __future__ import annotations

import logging
import math
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from sim.errors import IopsimError

app = typer.Typer(
    name="iopsim",
    help="Capacity simulator for addiction-treatment programs (intake, residential, PHP, IOP, aftercare).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True)

HEADLINE = (
    "referrals",
    "readmissions",
    "admitted_to_treatment",
    "programs_completed",
    "cost_total",
    "cost_per_completed_program",
    "cost_per_admission",
    "cost_per_patient_week",
    "iop_cost_per_client_week",
    "iop_cost_per_episode",
    "labour_share_of_cost",
)
STAGE_KPIS = (
    ("admissions", "Admissions"),
    ("wait_mean_days", "Mean wait (days)"),
    ("wait_p90_days", "90th pct wait (days)"),
    ("waitlist_mean", "Average waitlist"),
    ("waitlist_max", "Longest waitlist"),
    ("census_mean", "Average census"),
    ("occupancy", "Occupancy"),
    ("completed", "Completed stays"),
    ("dropped_out", "Dropped out"),
    ("reneged", "Left waitlist"),
)
TRACK_KPIS = (
    ("admissions", "Admissions"),
    ("wait_to_start_mean_days", "Wait to first session (days)"),
    ("group_census_mean", "Group census, mean"),
    ("group_census_p10", "Group census, 10th pct"),
    ("group_census_p90", "Group census, 90th pct"),
    ("share_sessions_at_cap", "Share of sessions at the cap"),
    ("share_sessions_below_min", "Share below minimum size"),
    ("sessions_held", "Sessions held"),
    ("sessions_cancelled", "Sessions cancelled (no staff)"),
    ("sessions_merged", "Sessions merged"),
    ("attendance_rate", "Attendance rate"),
    ("completion_rate", "Completion rate"),
    ("dropout_rate", "Dropout rate"),
    ("reneged_waiting", "Left waitlist waiting for it"),
)
STAFF_KPIS = (
    ("headcount", "Headcount"),
    ("paid_hours", "Paid hours"),
    ("busy_hours", "Busy hours"),
    ("utilisation", "Utilisation"),
    ("unmet_hours", "Unmet demand (hours)"),
    ("required_fte", "FTE required by demand"),
    ("paid_fte", "FTE paid"),
)


def _fail(message: str) -> None:
    err.print(Text.assemble(("error:", "bold red"), " ", message), highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("matplotlib", "PIL", "fontTools"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fmt(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def _cell(r) -> str:
    if r["n"] >= 2 and math.isfinite(r["half_width"]):
        return f"{_fmt(r['mean'])} ± {_fmt(r['half_width'])}"
    return _fmt(r["mean"])


def _grid(rows, title: str, columns: list[tuple[str, str]], kpis, key) -> Table | None:
    """A table of KPI rows by entity columns; ``key(entity, kpi)`` names the KPI."""
    table = Table(title=title, title_justify="left")
    table.add_column("KPI")
    for _, label in columns:
        table.add_column(label, justify="right")
    for kpi, label in kpis:
        cells = [_cell(rows.loc[key(c, kpi)]) if key(c, kpi) in rows.index else "" for c, _ in columns]
        if any(cells):
            table.add_row(label, *cells)
    return table if table.row_count else None


def print_summary(summary, title: str) -> None:
    """Compact tables: program KPIs, stages, IOP tracks, staff roles, cost breakdown."""
    from sim.metrics import STAGE_LABELS

    rows = summary.set_index("kpi")
    head = Table(title=title, title_justify="left", caption="mean ± half-width of the 95 % confidence interval across replications", caption_justify="left")
    head.add_column("Program")
    head.add_column("mean ± 95 % CI", justify="right")
    head.add_column("unit")
    for name in HEADLINE:
        if name in rows.index:
            r = rows.loc[name]
            head.add_row(r["label"], _cell(r), r["unit"])
    out.print(head)
    stages = [s for s in STAGE_LABELS if f"{s}_admissions" in rows.index]
    tracks = [k[len("iop_track_") : -len("_admissions")] for k in rows.index if k.startswith("iop_track_") and k.endswith("_admissions")]
    roles = [k[len("staff_") : -len("_headcount")] for k in rows.index if k.startswith("staff_") and k.endswith("_headcount")]
    tables = [
        _grid(rows, "By stage (mean ± 95 % CI)", [(s, STAGE_LABELS[s].split("/")[0]) for s in stages], STAGE_KPIS,
              lambda c, k: f"{c}_{k}"),
        _grid(rows, "IOP tracks (mean ± 95 % CI)", [(t, t) for t in tracks], TRACK_KPIS, lambda c, k: f"iop_track_{c}_{k}"),
        _grid(rows, "Staff by role (mean ± 95 % CI)", [(r, r) for r in roles], STAFF_KPIS, lambda c, k: f"staff_{c}_{k}"),
    ]
    cost_rows = [(k, rows.loc[k, "label"]) for k in rows.index if k.startswith("cost_") and k not in HEADLINE
                 and k not in ("cost_per_patient_day",)]
    tables.append(_grid(rows, "Cost breakdown (mean ± 95 % CI)", [("", "amount")], cost_rows, lambda c, k: k))
    for t in tables:
        if t is not None:
            out.print(t)


@app.callback()
def main(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v milestones, -vv event trace.")) -> None:
    _setup_logging(verbose)


@app.command()
def validate(scenario: Path = typer.Argument(..., help="Scenario YAML file."),
             set_: list[str] = typer.Option([], "--set", help="Override a field: dotted.path=value (repeatable).")) -> None:
    """Check a scenario file (and its extends chain); print a one-line verdict."""
    from sim.scenario import load_scenario

    try:
        sc = load_scenario(scenario, set_)
    except IopsimError as exc:
        _fail(str(exc))
    stages = ", ".join(sc.stages.enabled()) or "none"
    out.print(Text(f"{scenario}: valid scenario {sc.name!r} (stages: {stages}; horizon {sc.horizon_days} days)"),
              highlight=False, soft_wrap=True)


@app.command()
def run(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    replications: Optional[int] = typer.Option(None, "-n", "--replications", min=1, help="Replications (default: the scenario's)."),
    seed: Optional[int] = typer.Option(None, "--seed", min=0, help="Base seed (default: the scenario's)."),
    set_: list[str] = typer.Option([], "--set", help="Override a field: dotted.path=value (repeatable)."),
    jobs: int = typer.Option(os.cpu_count() or 1, "--jobs", "-j", min=1, help="Worker processes."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: outputs/<scenario>-<time>)."),
) -> None:
    """Simulate a scenario, print KPIs with 95 % confidence intervals, write a run folder."""
    from sim.output import check_out_dir, default_run_dir
    from sim.run import execute_run
    from sim.scenario import load_scenario

    try:
        sc = load_scenario(scenario, set_)
        n = replications or sc.replications
        s = sc.seed if seed is None else seed
        dest = out_dir or default_run_dir(Path("outputs"), sc.name)
        check_out_dir(dest)  # before the progress bar starts, so an error is the only output
        with Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task(f"{sc.name}: replications", total=n)
            result = execute_run(
                sc,
                dest,
                replications=n,
                seed=s,
                jobs=jobs,
                scenario_path=str(scenario),
                overrides=list(set_),
                progress=lambda k: progress.advance(task, k),
            )
    except IopsimError as exc:
        _fail(str(exc))
    print_summary(result.summary, f"{sc.name}: {n} replications, seed {s}, {sc.horizon_days} days"
                  + (f" (warm-up {sc.warmup_days} days discarded)" if sc.warmup_days else ""))
    out.print(f"run folder: {result.folder}", highlight=False)


@app.command()
def calibrate(
    run_dir: Path = typer.Argument(..., help="A finished run folder (from `iopsim run`)."),
    targets: Path = typer.Option(Path("calibration/targets.yaml"), "--targets", help="Calibration targets file."),
) -> None:
    """Compare a run with published calibration targets; writes calibration.csv into the run folder."""
    from sim.calibration import calibrate as check
    from sim.output import atomic_write_text

    try:
        table = check(run_dir, targets)
    except IopsimError as exc:
        _fail(str(exc))
    t = Table(title=f"Calibration of {run_dir}", title_justify="left")
    for col in ("target id", "model mean (95 % CI)", "target", "met", "source"):
        t.add_column(col)
    for _, r in table.iterrows():
        model = f"{_fmt(r['model_mean'])} ({_fmt(r['ci_low'])}–{_fmt(r['ci_high'])})"
        t.add_row(r["id"], model, r["target"], "yes" if r["met"] else "[red]no[/]", r["source"])
    out.print(t)
    atomic_write_text(Path(run_dir) / "calibration.csv", table.to_csv(index=False))
    out.print(f"{int(table['met'].sum())} of {len(table)} targets met; table written to {Path(run_dir) / 'calibration.csv'}",
              highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
