"""iopsim command line: thin typer commands that parse arguments and call :mod:`iopsim.api`."""

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

from iopsim.errors import IopsimError
from iopsim.files import default_run_dir

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
    "referral_admitted_within_14_days",
    "referral_lost_before_admission",
    "referral_to_admission_p90_days",
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
    ("admitted_wait_mean_days", "Mean wait (days)"),
    ("admitted_wait_p90_days", "90th pct wait (days)"),
    ("waitlist_mean", "Average waitlist"),
    ("waitlist_max", "Longest waitlist"),
    ("waitlist_max_first_year", "Longest waitlist, first year"),
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
    from iopsim.analysis.kpis import STAGE_LABELS

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


STRICT = typer.Option(False, "--strict", help="Treat warnings about the plan as errors (exit 2).")


def _warn(source, findings, strict: bool, after_run: bool = False) -> None:
    """Print each finding as one line; with ``strict``, fail (exit 2) if there are any."""
    _warn_all([(source, f) for f in findings], strict, after_run)


def _warn_all(items, strict: bool, after_run: bool = False) -> None:
    """``items``: (file, finding) pairs, printed one line each (errors under ``strict``, which then exits 2)."""
    label = "error" if strict else "warning"
    for source, f in items:
        err.print(Text.assemble((f"{label}:", "bold red" if strict else "bold yellow"), f" {source}: {f}"),
                  highlight=False, soft_wrap=True)
    if strict and items:
        what = "the run found problems with this plan" if after_run else "this plan cannot work as written"
        sources = ", ".join(dict.fromkeys(str(s) for s, _ in items))
        _fail(f"{sources}: --strict: {len(items)} problem{'s' if len(items) > 1 else ''}: {what}")


@app.command()
def validate(scenario: Path = typer.Argument(..., help="Scenario YAML file."),
             set_: list[str] = typer.Option([], "--set", help="Override a field: dotted.path=value (repeatable)."),
             strict: bool = STRICT) -> None:
    """Check a scenario file (and its extends chain); print a verdict and any warnings about the plan."""
    from iopsim import api

    try:
        sc = api.load_scenario(scenario, set_)
        findings = api.check(sc)
    except IopsimError as exc:
        _fail(str(exc))
    _warn(scenario, findings, strict)
    stages = ", ".join(sc.stages.enabled()) or "none"
    more = f"; {len(findings)} warning{'s' if len(findings) != 1 else ''}" if findings else ""
    out.print(Text(f"{scenario}: valid scenario {sc.name!r} (stages: {stages}; horizon {sc.horizon_days} days{more})"),
              highlight=False, soft_wrap=True)


def _warmup_option(value: Optional[str]) -> int | str | None:
    if value is None:
        return None
    if value == "auto":
        return "auto"
    try:
        days = int(value)
    except ValueError:
        raise IopsimError(f"--warmup: expected a whole number of days or 'auto' (got {value!r})") from None
    if days < 0:
        raise IopsimError(f"--warmup: must be 0 or more days (got {days})")
    return days


def _progress():
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,  # a transient bar still leaves a blank line on a pipe
    )


REPLICATIONS = typer.Option(None, "-n", "--replications", min=1, help="Replications (default: the scenario's).")
SEED = typer.Option(None, "--seed", min=0, help="Base seed (default: the scenario's).")
SET = typer.Option([], "--set", help="Override a field: dotted.path=value (repeatable).")
JOBS = typer.Option(os.cpu_count() or 1, "--jobs", "-j", min=1, help="Worker processes.")
WARMUP = typer.Option(None, "--warmup", help="Days to discard, or 'auto' (MSER-5 on the output). Default: the scenario's.")
PRECISION = typer.Option(None, "--precision", min=0.0001, max=1.0,
                         help="Add replications until the 95 % CI half-width of --kpi is within this share of its mean.")
KPI = typer.Option("cost_per_completed_program", "--kpi", help="KPI for --precision and --select.")
MAX_REPS = typer.Option(200, "--max-replications", min=2, help="Upper bound on replications for --precision/--select.")
THRESHOLD = typer.Option(10.0, "--threshold", min=0, help="Waitlist length whose first crossing is reported.")
NO_REPORT = typer.Option(False, "--no-report", help="Do not write report.html.")


@app.command()
def run(
    scenario: Path = typer.Argument(..., help="Scenario YAML file."),
    replications: Optional[int] = REPLICATIONS,
    seed: Optional[int] = SEED,
    set_: list[str] = SET,
    jobs: int = JOBS,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Run folder (default: outputs/<scenario>-<time>)."),
    warmup: Optional[str] = WARMUP,
    precision: Optional[float] = PRECISION,
    kpi: str = KPI,
    max_replications: int = MAX_REPS,
    threshold: float = THRESHOLD,
    no_report: bool = NO_REPORT,
    strict: bool = STRICT,
) -> None:
    """Simulate a scenario, print KPIs with 95 % confidence intervals, write a run folder and report."""
    from iopsim import api

    try:
        sc = api.load_scenario(scenario, set_)
        dest = out_dir or default_run_dir(Path("outputs"), sc.name)
        api.check_destination(dest)  # before the progress bar starts, so an error is the only output
        before = api.check(sc)
        _warn(scenario, before, strict)
        with _progress() as progress:
            task = progress.add_task(f"{sc.name}: replications", total=0)
            result = api.run(sc, replications, seed, jobs, _warmup_option(warmup), precision=precision, kpi=kpi,
                             max_replications=max_replications, threshold=threshold,
                             progress=lambda done, total: progress.update(task, completed=done, total=total))
        result.scenario_path, result.overrides = str(scenario), list(set_)
        folder = result.save(dest, report=not no_report)
    except IopsimError as exc:
        _fail(str(exc))
    n = result.replications
    w = result.warmup
    print_summary(result.summary, f"{sc.name}: {n} replications, seed {result.seed}, {sc.horizon_days} days"
                  + (f" (warm-up {w} days discarded)" if w else ""))
    print_transient(result.transient())
    if precision is not None:
        if result.precision_reached:
            out.print(f"--precision {precision}: {n} replications were needed for {kpi}", highlight=False)
        else:
            out.print(f"--precision {precision}: NOT reached for {kpi} within --max-replications {max_replications}",
                      highlight=False)
    out.print(f"run folder: {folder}", highlight=False)
    _warn(scenario, [f for f in result.warnings if f not in before], strict, after_run=True)


def print_transient(df) -> None:
    """When each waitlist settles and how soon it reaches the threshold (the transient table)."""
    from iopsim.analysis.kpis import STAGE_LABELS

    if not len(df):
        return
    thr = df["threshold"].iloc[0]
    table = Table(title=f"Opening transient: waitlists (threshold {thr:g} waiting)", title_justify="left")
    for col in ("Stage", "settles after (days)", "share of replications reaching threshold", "first day reached (mean)"):
        table.add_column(col, justify="left" if col == "Stage" else "right")
    for _, r in df.iterrows():
        table.add_row(STAGE_LABELS.get(r["stage"], r["stage"]), f"{r['settles_day']:.0f}",
                      f"{r['share_replications_over_threshold']:.0%}", _fmt(r["first_day_over_threshold_mean"]))
    out.print(table)


@app.command()
def compare(
    scenarios: list[Path] = typer.Argument(..., help="Two or more scenario files; the first is the baseline."),
    replications: Optional[int] = REPLICATIONS,
    seed: Optional[int] = SEED,
    set_: list[str] = typer.Option([], "--set", help="Override a field in every scenario: dotted.path=value."),
    jobs: int = JOBS,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Comparison folder (default: outputs/compare-<time>)."),
    warmup: Optional[str] = WARMUP,
    precision: Optional[float] = PRECISION,
    kpi: str = KPI,
    max_replications: int = MAX_REPS,
    threshold: float = THRESHOLD,
    select: bool = typer.Option(False, "--select", help="Guaranteed pick of the best scenario on --kpi (Nelson-Matejcik)."),
    goal: str = typer.Option("min", "--goal", help="For --select: 'min' or 'max' of --kpi is best."),
    indifference: Optional[float] = typer.Option(None, "--indifference", min=0,
                                                 help="For --select: smallest difference in --kpi worth detecting."),
    no_report: bool = NO_REPORT,
    strict: bool = STRICT,
) -> None:
    """Compare scenarios with common random numbers: paired differences with CIs, and a report."""
    from iopsim import api

    try:
        if len(scenarios) < 2:
            raise IopsimError("compare: give at least two scenario files (the first is the baseline)")
        if goal not in ("min", "max"):
            raise IopsimError(f"--goal: allowed values are min, max (got {goal!r})")
        if select and indifference is None:
            raise IopsimError("--select needs --indifference (the smallest difference in --kpi worth detecting)")
        loaded = [api.load_scenario(path, set_) for path in scenarios]
        dest = out_dir or default_run_dir(Path("outputs"), "compare")
        api.check_destination(dest)
        before = {str(path): api.check(sc) for path, sc in zip(scenarios, loaded)}
        _warn_all([(p, f) for p, fs in before.items() for f in fs], strict)
        with _progress() as progress:
            task = progress.add_task("compare: replications", total=0)
            result = api.compare(loaded, replications, seed, jobs, _warmup_option(warmup),
                                 select=goal if select else None, indifference=indifference, precision=precision,
                                 kpi=kpi, max_replications=max_replications, threshold=threshold,
                                 progress=lambda done, total: progress.update(task, completed=done, total=total))
        result.scenario_paths = {n: str(p) for n, p in zip(result.names, scenarios)}
        result.overrides = list(set_)
        folder = result.save(dest, report=not no_report)
    except IopsimError as exc:
        _fail(str(exc))
    print_comparison(result, result.names, kpi)
    out.print(f"comparison folder: {folder}", highlight=False)
    _warn_all([(str(p), f) for p, run in zip(scenarios, result.runs.values()) for f in run.warnings
               if f not in before[str(p)]], strict, after_run=True)


def print_comparison(result, names: list[str], kpi: str) -> None:
    diffs = result.differences
    n = result.replications
    title = f"Paired differences from {names[0]} ({n} replications, common random numbers" + (
        ", Bonferroni-adjusted 95 % CIs)" if len(names) > 2 else ", 95 % CIs)")
    table = Table(title=title, title_justify="left")
    table.add_column("KPI")
    table.add_column(names[0], justify="right")
    for other in names[1:]:
        table.add_column(other, justify="right")
        table.add_column(f"{other} − {names[0]}", justify="right")
    keys = [k for k in dict.fromkeys([kpi, *HEADLINE, "iop_admitted_wait_mean_days", "iop_waitlist_mean", "iop_reneged"])
            if k in set(diffs["kpi"])]
    for k in keys:
        d = diffs[diffs["kpi"] == k].set_index("scenario")
        cells = [_fmt(d.loc[names[0], "mean"])]
        for other in names[1:]:
            r = d.loc[other]
            star = " *" if r["significant"] else ""
            ci = f" ({_fmt(r['diff_ci_low'])} to {_fmt(r['diff_ci_high'])})" if math.isfinite(r["diff_ci_low"]) else ""
            cells += [_fmt(r["mean"]), f"{_fmt(r['diff'])}{ci}{star}"]
        table.add_row(d["label"].iloc[0], *cells)
    out.print(table)
    out.print("* the 95 % confidence interval of the difference excludes zero", highlight=False)
    params = result.parameters
    if params is not None and len(params):
        pt = Table(title="Settings that differ", title_justify="left")
        for c in params.columns:
            pt.add_column(c)
        for _, r in params.head(30).iterrows():
            pt.add_row(*[str(v) for v in r])
        out.print(pt)
    sel = result.selection
    if sel:
        out.print(f"Best on {sel['kpi']} ({sel['goal']}): {sel['best']} — Nelson-Matejcik, P(correct) >= "
                  f"{1 - sel['alpha']:.0%} if the best leads by >= {sel['indifference']} "
                  f"({sel['required']} replications)", highlight=False)


@app.command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file (base scenario, factors, design)."),
    jobs: int = JOBS,
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Run on a Dask cluster: tcp://HOST:PORT."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: outputs/sweep-<name>); "
                                           "re-running with the same folder resumes."),
) -> None:
    """Run (or resume) a parameter sweep locally or on a Dask cluster; sensitivity indices if the file asks."""
    from iopsim import api

    try:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("failures: {task.fields[failures]}"), TimeRemainingColumn(), console=err,
                      transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("sweep: points", total=None, failures=0)
            result = api.sweep(
                sweep_file, out_dir, jobs=jobs, scheduler=scheduler,
                progress=lambda done, total, failed: progress.update(task, completed=done, total=total, failures=failed),
            )
    except IopsimError as exc:
        _fail(str(exc))
    out.print(f"sweep: {result.n_points} points ({result.skipped} already done, {result.ran} run now) "
              f"in {result.elapsed_s:.1f} s; results: {result.folder}", highlight=False)
    for f in result.failures:
        err.print(Text(f"point {f['point_id']} failed at {f['factors']}: {f['error']}"), soft_wrap=True)
    if result.sensitivity is not None:
        _print_sensitivity(result.sensitivity)
    if result.failures:
        raise typer.Exit(code=1)


def _print_sensitivity(df) -> None:
    table = Table(title="Sensitivity (95 % CI half-widths in brackets)", title_justify="left")
    cols = [c for c in ("S1", "ST", "mu_star", "sigma") if c in df.columns]
    table.add_column("KPI")
    table.add_column("factor")
    for c in cols:
        table.add_column(c, justify="right")
    for _, r in df.iterrows():
        cells = []
        for c in cols:
            conf = r.get(f"{c}_conf")
            cells.append(f"{r[c]:.3f}" + (f" (±{conf:.3f})" if conf is not None and conf == conf else ""))
        table.add_row(r["kpi"], r["factor"], *cells)
    out.print(table)


@app.command()
def sensitivity(sweep_dir: Path = typer.Argument(..., help="A finished sweep folder whose file set method: sobol|morris.")) -> None:
    """Sobol' indices or Morris effects of a finished sensitivity sweep (SALib)."""
    from iopsim import api

    try:
        df = api.sensitivity(sweep_dir)
    except IopsimError as exc:
        _fail(str(exc))
    _print_sensitivity(df)
    out.print(f"written: {Path(sweep_dir) / 'sensitivity.csv'}", highlight=False)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A finished run or comparison folder.")) -> None:
    """(Re)write the self-contained report.html of a run or comparison folder."""
    from iopsim import api

    try:
        path = api.report(run_dir)
    except IopsimError as exc:
        _fail(str(exc))
    out.print(f"report: {path}", highlight=False)


@app.command()
def calibrate(
    run_dir: Path = typer.Argument(..., help="A finished run folder (from `iopsim run`)."),
    targets: Path = typer.Option(Path("calibration/targets.yaml"), "--targets", help="Calibration targets file."),
) -> None:
    """Compare a run with published calibration targets; writes calibration.csv into the run folder."""
    from iopsim import api
    from iopsim.files import atomic_write_text

    try:
        table = api.calibrate(run_dir, targets)
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


@app.command()
def schema(out_file: Optional[Path] = typer.Option(None, "--out", help="Write to this file instead of standard output.")) -> None:
    """Write the JSON Schema of scenario files, for editor completion and inline errors."""
    from iopsim.files import atomic_write_text
    from iopsim.schema.reference import json_schema_text

    text = json_schema_text()
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        if out_file.exists() and not out_file.is_file():
            raise IopsimError(f"{out_file}: not a regular file; choose another --out")
        atomic_write_text(out_file, text)
    except OSError as exc:
        _fail(f"{out_file}: cannot write ({exc.strerror or exc})")
    except IopsimError as exc:
        _fail(str(exc))
    out.print(f"schema: {out_file}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    app()
