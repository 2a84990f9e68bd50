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

HEADLINE = ("referrals", "readmissions", "programs_completed", "cost_total", "cost_per_completed_program")
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


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)


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


def print_summary(summary, title: str) -> None:
    """Two compact tables: program headline KPIs, then stage KPIs with stages as columns."""
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
    stages = [k[: -len("_admissions")] for k in rows.index if k.endswith("_admissions")]
    table = Table(title="By stage (mean ± 95 % CI)", title_justify="left")
    table.add_column("KPI")
    for s in stages:
        table.add_column(STAGE_LABELS.get(s, s).split("/")[0], justify="right")
    for key, label in STAGE_KPIS:
        cells = [_cell(rows.loc[f"{s}_{key}"]) if f"{s}_{key}" in rows.index else "" for s in stages]
        if any(cells):
            table.add_row(label, *cells)
    out.print(table)


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
    out.print(f"{scenario}: valid scenario {sc.name!r} (stages: {stages}; horizon {sc.horizon_days} days)", highlight=False)


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
    from sim.output import default_run_dir
    from sim.run import execute_run
    from sim.scenario import load_scenario

    try:
        sc = load_scenario(scenario, set_)
        n = replications or sc.replications
        s = sc.seed if seed is None else seed
        dest = out_dir or default_run_dir(Path("outputs"), sc.name)
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
