"""iopsim command line: thin typer commands that parse arguments and call :mod:`iopsim.api`."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
import textwrap
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich import box
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
#: Tables are laid out for 80 columns; on a pipe or in a file the console is 80 wide.
WIDTH = 80
out = Console(width=None if sys.stdout.isatty() else WIDTH)
err = Console(stderr=True)

#: Program KPIs of the terminal summary: everyone referred first, then outcomes and costs.
HEADLINE = (
    "referral_admitted_within_14_days",
    "referral_lost_before_admission",
    "referral_to_admission_median_days",
    "referral_to_admission_p90_days",
    "programs_completed",
    "admitted_to_treatment",
    "referrals",
    "readmissions",
    "cost_per_completed_program",
    "cost_total",
    "cost_per_admission",
    "cost_per_patient_week",
    "iop_cost_per_client_week",
    "iop_cost_per_episode",
    "labour_share_of_cost",
)
#: The rows of the revenue table (labels: ``SHORT_LABELS``), the payers after ``revenue_total``.
MONEY_KPIS = ("revenue_billed", "revenue_not_collected", "revenue_total", "margin_total", "cost_recovery",
              "margin_per_completed_program", "break_even_iop_census")
STAGE_KPIS = (
    ("admissions", "Admissions"),
    ("share_lost_waiting", "Lost while waiting"),
    ("admitted_wait_mean_days", "Wait if admitted, days"),
    ("admitted_wait_p90_days", "  90th pct, days"),
    ("waitlist_mean", "Waitlist, average"),
    ("waitlist_max", "Waitlist, longest"),
    ("waitlist_max_first_year", "Longest, first year"),
    ("census_mean", "Census, average"),
    ("occupancy", "Occupancy"),
    ("completed", "Completed stays"),
    ("dropped_out", "Dropped out"),
    ("reneged", "Left the waitlist"),
)
TRACK_KPIS = (
    ("admissions", "Admissions"),
    ("referral_to_first_session_p90_days", "To 1st session, p90 days"),
    ("wait_to_start_mean_days", "Wait to start, mean days"),
    ("group_census_mean", "Group size, mean"),
    ("group_census_p10", "Group size, 10th pct"),
    ("group_census_p90", "Group size, 90th pct"),
    ("share_sessions_below_min", "Below minimum size"),
    ("share_sessions_at_cap", "At the maximum size"),
    ("sessions_held", "Sessions held"),
    ("sessions_cancelled", "Cancelled (no staff)"),
    ("sessions_merged", "Merged"),
    ("attendance_rate", "Attendance rate"),
    ("completion_rate", "Completion rate"),
    ("dropout_rate", "Dropout rate"),
    ("reneged_waiting", "Left waiting for it"),
)
STAFF_KPIS = (
    ("headcount", "Headcount"),
    ("paid_fte", "FTE paid"),
    ("required_fte", "FTE required"),
    ("utilisation", "Utilisation"),
    ("paid_hours", "Paid hours"),
    ("busy_hours", "Busy hours"),
    ("unmet_hours", "Unmet hours"),
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


def _cell(r, currency: str = "USD", ci: bool = True, units=("fraction", "currency")) -> str:
    """'mean ± half-width' in the KPI's unit (shares in %, money with the currency symbol)."""
    from iopsim.outputs.answer import plus_minus

    unit = r["unit"] if isinstance(r["unit"], str) else ""
    half = r["half_width"] if ci and r["n"] >= 2 and math.isfinite(r["half_width"]) else math.nan
    return plus_minus(r["mean"], half, unit if unit in units else "", currency)


def _table(title: str, caption: str | None = None) -> Table:
    return Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                 padding=(0, 1, 0, 0), pad_edge=False, show_edge=False, title_style="bold")


def _say(text: str, first: str = "", rest: str = "", style: str | None = None) -> None:
    """Print a sentence wrapped to the terminal, never between a number and its unit ('10 %')."""
    width = max(out.width, 40)
    text = re.sub(r"(\d) (%|pp\b|days?\b)", "\\1\u00a0\\2", text)
    for line in textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=rest,
                              break_on_hyphens=False, break_long_words=False) or [""]:
        out.print(Text(line.replace("\u00a0", " "), style=style), highlight=False, soft_wrap=True)


def _fits(table_cells: list[list[str]]) -> bool:
    """Whether rows of cells fit in `WIDTH` columns as a `_table` lays them out (2 spaces between columns)."""
    if not table_cells:
        return True
    widths = [max(len(row[i]) for row in table_cells) for i in range(len(table_cells[0]))]
    return sum(widths) + 2 * (len(widths) - 1) <= WIDTH


def _folded(name: str) -> str:
    """A scenario's name as a column heading over two lines, broken after its middle hyphen or underscore."""
    cuts = [i for i, ch in enumerate(name) if ch in "-_"]
    if not cuts:
        return name
    i = min(cuts, key=lambda j: abs(j - len(name) / 2))
    return f"{name[:i + 1]}\n{name[i + 1:]}"


def _grid(rows, title: str, columns: list[tuple[str, str]], kpis, key, currency: str = "USD") -> Table | None:
    """A table of KPI rows by entity columns; ``key(entity, kpi)`` names the KPI.  Means with their
    95 % CI half-widths where that fits in 80 columns, else means only (the caption says which)."""
    for with_ci in (True, False):
        body = []
        for kpi, label in kpis:
            cells = [_cell(rows.loc[key(c, kpi)], currency, with_ci) if key(c, kpi) in rows.index else ""
                     for c, _ in columns]
            if any(cells):
                body.append([label, *cells])
        header = ["", *[label for _, label in columns]]
        if with_ci and not _fits([header, *body]):
            continue
        break
    if not body:
        return None
    table = _table(title + (" (mean ± 95 % CI)" if with_ci else " (means; 95 % CIs in summary.csv)"))
    table.add_column("", no_wrap=True)
    for _, label in columns:
        table.add_column(label, justify="right", no_wrap=True)
    for row in body:
        table.add_row(*row)
    return table


def print_summary(summary, title: str, currency: str = "USD") -> None:
    """Compact tables for 80 columns: program KPIs, stages, IOP tracks, staff roles, cost breakdown."""
    from iopsim.analysis.kpis import STAGE_LABELS
    from iopsim.outputs.answer import SHORT_LABELS, capital, human, people_label

    rows = summary.set_index("kpi")
    _say(title, style="bold")  # above the table, not its title: the narrow table would wrap it
    head = _table("")
    head.add_column("Program", no_wrap=True)
    head.add_column("mean ± 95 % CI", justify="right", no_wrap=True)
    for name in HEADLINE:
        if name in rows.index:
            r = rows.loc[name]
            head.add_row(SHORT_LABELS.get(name) or people_label(r["label"]),
                         _cell(r, currency, units=("fraction", "currency", "days")))
    out.print(head)
    out.print("± is the half-width of the 95 % confidence interval across replications; counts are over the "
              "observation window.", highlight=False)
    stages = [s for s in STAGE_LABELS if f"{s}_admissions" in rows.index]
    tracks = [k[len("iop_track_"): -len("_admissions")] for k in rows.index if k.startswith("iop_track_") and k.endswith("_admissions")]
    roles = [k[len("staff_"): -len("_headcount")] for k in rows.index if k.startswith("staff_") and k.endswith("_headcount")]
    short = {"residential": "Residential"}
    tables = [
        _grid(rows, "By stage", [(s, short.get(s, STAGE_LABELS[s])) for s in stages], STAGE_KPIS,
              lambda c, k: f"{c}_{k}", currency),
        _grid(rows, "IOP tracks", [(t, capital(human(t))) for t in tracks], TRACK_KPIS,
              lambda c, k: f"iop_track_{c}_{k}", currency),
        _grid(rows, "Staff by role", [(r, capital(human(r))) for r in roles], STAFF_KPIS,
              lambda c, k: f"staff_{c}_{k}", currency),
    ]
    cost_rows = [(k, people_label(rows.loc[k, "label"]).replace("Labour cost: ", "Labour: "))
                 for k in rows.index if k.startswith("cost_") and k not in HEADLINE
                 and k not in ("cost_per_patient_day", "cost_recovery")]
    tables.append(_grid(rows, "Cost breakdown", [("", "amount")], cost_rows, lambda c, k: k, currency))
    money_rows = []
    for k in MONEY_KPIS:
        if k in rows.index:
            money_rows.append((k, SHORT_LABELS[k]))
        if k == "revenue_total":  # then who it came from
            money_rows += [(p, "  from " + human(p[len("revenue_payer_"):])) for p in rows.index
                           if p.startswith("revenue_payer_")]
    tables.append(_grid(rows, "Revenue and margin", [("", "amount")], money_rows, lambda c, k: k, currency))
    for t in tables:
        if t is not None:
            out.print(t)


def print_answer(title: str, sentences: list[str]) -> None:
    """The answer in words, wrapped to the terminal."""
    _say(title, style="bold")
    for s in sentences:
        _say(s)


@app.callback()
def main(verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="-v milestones, -vv event trace.")) -> None:
    _setup_logging(verbose)
    signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum, frame) -> None:
    """SIGTERM (a batch system, `timeout`) is handled like Ctrl-C: unwind, so that staging
    folders are removed and worker pools shut down, then exit 143 (128 + SIGTERM)."""
    raise SystemExit(128 + signum)


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
             strict: bool = STRICT,
             assumptions: bool = typer.Option(False, "--assumptions",
                                              help="List the declared assumptions (uncertain:) with their ranges.")) -> None:
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
    if assumptions:
        from iopsim.analysis.checks import assumption_findings

        _warn(scenario, assumption_findings(sc), strict)
        _print_assumptions(sc)


def _print_assumptions(sc) -> None:
    """The scenario's declared assumptions: value, range, note and source."""
    from iopsim.experiments.robust import current_value
    from iopsim.outputs.answer import factor_label

    if not sc.uncertain:
        _say("No assumptions declared (uncertain:).")
        return
    _say(f"Assumptions ({len(sc.uncertain)} declared under uncertain:)", style="bold")
    for path, a in sc.uncertain.items():
        v = current_value(sc, path)
        now = f"{v:g}" if v is not None else "–"
        src = f"; {a.source}" if a.source else ""
        _say(f"- {a.note or factor_label(path)}: {now}, range {a.range[0]:g} to {a.range[1]:g}{src}", rest="  ")
        out.print(Text(f"  {path}", style="dim"), highlight=False, soft_wrap=True)


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
SCHEDULER = typer.Option(None, "--scheduler", help="Run on a Dask cluster: tcp://HOST:PORT.")
WARMUP = typer.Option(None, "--warmup", help="Days to discard, or 'auto' (MSER-5 on the output). Default: the scenario's.")
PRECISION = typer.Option(None, "--precision", min=0.0001, max=1.0,
                         help="Add replications until the 95 % CI half-width of --kpi is within this share of its mean.")
KPI = typer.Option("cost_per_completed_program", "--kpi", help="KPI for --precision and --select.")
MAX_REPS = typer.Option(200, "--max-replications", min=2, help="Upper bound on replications for --precision/--select.")
THRESHOLD = typer.Option(10.0, "--threshold", min=0, help="Waitlist length whose first crossing is reported.")
NO_REPORT = typer.Option(False, "--no-report", help="Do not draw the figures or write report.html (iopsim report DIR does both later).")
POSTERIOR = typer.Option(None, "--posterior", metavar="CALIBRATION_DIR",
                         help="Draw each replication's free parameters from a calibration's posterior (second-order "
                              "Monte Carlo): CIs then include what the calibration targets leave unknown.")


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
    targets: Optional[Path] = typer.Option(None, "--targets", help="Calibration targets file (e.g. calibration/targets.yaml): "
                                           "compare the run with them, write calibration.csv and show it in the report."),
    posterior: Optional[Path] = POSTERIOR,
) -> None:
    """Simulate a scenario, print KPIs with 95 % confidence intervals, write a run folder and report."""
    _start_workers(jobs)  # first: the fork server imports the simulator while this process imports it too
    from iopsim import api

    try:
        if targets is not None:
            from iopsim.analysis.calibration import load_targets

            load_targets(targets)  # a bad targets file fails before the run, not after it
        sc = api.load_scenario(scenario, set_)
        dest = out_dir or default_run_dir(Path("outputs"), sc.name)
        api.check_destination(dest)  # before the progress bar starts, so an error is the only output
        before = api.check(sc)
        _warn(scenario, before, strict)
        with _progress() as progress:
            task = progress.add_task(f"{sc.name}: replications", total=0)
            result = api.run(sc, replications, seed, jobs, _warmup_option(warmup), precision=precision, kpi=kpi,
                             max_replications=max_replications, threshold=threshold,
                             progress=lambda done, total: progress.update(task, completed=done, total=total),
                             posterior=posterior)
        result.scenario_path, result.overrides = str(scenario), list(set_)
        folder = result.save(dest, report=not no_report)
        calibration = _calibrate(api, folder, targets, report=not no_report) if targets is not None else None
    except IopsimError as exc:
        _fail(str(exc))
    n = result.replications
    w = result.warmup
    currency = sc.costs.currency
    print_summary(result.summary, f"{sc.name}: {n} replications, seed {result.seed}, {sc.horizon_days} days"
                  + (f" (warm-up {w} days discarded)" if w else ""), currency)
    print_transient(result.transient())
    if precision is not None:
        if result.precision_reached:
            out.print(f"--precision {precision}: {n} replications were needed for {kpi}", highlight=False)
        else:
            out.print(f"--precision {precision}: NOT reached for {kpi} within --max-replications {max_replications}",
                      highlight=False, soft_wrap=True)
    from iopsim.outputs.answer import Facts, run_answer

    print_answer(f"{sc.name}: the answer", run_answer(Facts.from_folder(folder, sc.name)))
    if calibration is not None:
        out.print(f"calibration: {int(calibration['met'].sum())} of {len(calibration)} targets met "
                  f"({Path(folder) / 'calibration.csv'})", highlight=False, soft_wrap=True)
    out.print(f"run folder: {folder}", highlight=False, soft_wrap=True)
    _warn(scenario, [f for f in result.warnings if f not in before], strict, after_run=True)


def _start_workers(jobs: int) -> None:
    """With more than one job, start the worker processes' fork server while the scenario is read and checked."""
    if jobs > 1:
        from iopsim.experiments.workers import start_worker_server

        start_worker_server()


def _calibrate(api, folder: Path, targets: Path, report: bool):
    """Compare a finished run with calibration targets: calibration.csv in the folder, and the report again."""
    from iopsim.files import atomic_write_text

    table = api.calibrate(folder, targets)
    atomic_write_text(Path(folder) / "calibration.csv", table.to_csv(index=False))
    if report:
        api.report(folder)
    return table


def print_transient(df) -> None:
    """When each waitlist settles and how soon it reaches the threshold (the transient table)."""
    from iopsim.analysis.kpis import STAGE_LABELS

    if not len(df):
        return
    thr = df["threshold"].iloc[0]
    table = _table(f"Opening transient: waitlists (threshold {thr:g} waiting)")
    for col in ("Stage", "settles (day)", f"runs reaching {thr:g}", "on day (mean)"):
        table.add_column(col, justify="left" if col == "Stage" else "right", no_wrap=True)
    for _, r in df.iterrows():
        table.add_row(STAGE_LABELS.get(r["stage"], r["stage"]).split("/")[0], f"{r['settles_day']:.0f}",
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
    robust: bool = typer.Option(False, "--robust", help="Move every declared assumption (uncertain:) across its "
                                "range; say which ones the verdict on --kpi rests on, and where it flips."),
    no_report: bool = NO_REPORT,
    strict: bool = STRICT,
    posterior: Optional[Path] = POSTERIOR,
) -> None:
    """Compare scenarios with common random numbers: paired differences with CIs, and a report."""
    _start_workers(jobs)  # first, as in `run`
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
                                 kpi=kpi, max_replications=max_replications, threshold=threshold, robust=robust,
                                 progress=lambda done, total: progress.update(task, completed=done, total=total),
                                 posterior=posterior)
        result.scenario_paths = {n: str(p) for n, p in zip(result.names, scenarios)}
        result.overrides = list(set_)
        folder = result.save(dest, report=not no_report)
    except IopsimError as exc:
        _fail(str(exc))
    print_comparison(result, result.names, kpi, folder)
    out.print(f"comparison folder: {folder}", highlight=False, soft_wrap=True)
    _warn_all([(str(p), f) for p, run in zip(scenarios, result.runs.values()) for f in run.warnings
               if f not in before[str(p)]], strict, after_run=True)


def print_comparison(result, names: list[str], kpi: str, folder: Path | None = None) -> None:
    """One 80-column table per alternative scenario (both means, the paired difference ± its 95 % CI
    half-width and better / worse), the settings that differ, the verdict in words and any selection."""
    from iopsim.analysis.verdict import BETTER, NOT_COMPARABLE, WORSE, judge, verdict
    from iopsim.outputs.answer import (SHORT_LABELS, Facts, comparison_answer, decap, fmt, kpi_label, people_label,
                                       plus_minus)

    judged = judge(result.differences)
    n = result.replications
    facts = {}
    if folder is not None and (Path(folder) / "scenarios").is_dir():
        facts = {name: Facts.from_folder(Path(folder) / "scenarios" / name, name, [str(f) for f in run.warnings])
                 for name, run in result.runs.items()}
    currency = next(iter(facts.values())).currency if facts else "USD"
    keys = [k for k in dict.fromkeys([*HEADLINE, "revenue_total", "margin_total", "break_even_iop_census",
                                      "iop_admitted_wait_p90_days", "iop_waitlist_mean", "iop_reneged", kpi])
            if k in set(judged["kpi"])]
    words = {BETTER: ("better", "bold green"), WORSE: ("worse", "bold red"), "higher": ("higher", "dim"),
             "lower": ("lower", "dim"), NOT_COMPARABLE: ("n/a", "dim")}
    adjusted = ", Bonferroni-adjusted" if len(names) > 2 else ""
    for other in names[1:]:
        table = _table(f"{other} − {names[0]} ({n} replications, common random numbers)",
                       f"Paired differences ± half-width of their 95 % CI{adjusted}; – no significant difference "
                       "(or no value); n/a nothing to compare; pp percentage points; days and patients unmarked")
        rows = judged[judged["scenario"] == other].set_index("kpi")
        body = []
        for k in keys:
            r = rows.loc[k]
            unit = r["unit"] if isinstance(r["unit"], str) else ""
            unit = unit if unit in ("fraction", "currency") else ""
            half = (r["diff_ci_high"] - r["diff_ci_low"]) / 2 if math.isfinite(r["diff_ci_low"]) else math.nan
            word, style = words.get(r["judgement"], ("–", "dim"))
            body.append(([SHORT_LABELS.get(k) or people_label(r["label"]), plus_minus(r["base_mean"], math.nan, unit, currency),
                          plus_minus(r["mean"], math.nan, unit, currency), plus_minus(r["diff"], half, unit, currency, True),
                          word], style))
        heads = [names[0], other]
        if not _fits([["", *heads, "difference", "better"], *[cells for cells, _ in body]]):
            heads = [_folded(h) for h in heads]  # long names: over two lines, at a hyphen
        table.add_column("", no_wrap=True)
        table.add_column(heads[0], justify="right", no_wrap=True)
        table.add_column(heads[1], justify="right", no_wrap=True)
        table.add_column("difference", justify="right", no_wrap=True)
        table.add_column("", no_wrap=True, min_width=6)
        for cells, style in body:
            table.add_row(*cells[:-1], Text(cells[-1], style=style))
        out.print(table)
    params = result.parameters
    if params is not None and len(params):
        shown = params.head(30)
        cells = [["setting", *params.columns[1:]], *[[str(v) for v in r] for _, r in shown.iterrows()]]
        if _fits(cells):
            pt = _table("Settings that differ")
            for i, c in enumerate(params.columns):
                pt.add_column("setting" if c == "parameter" else c, no_wrap=i == 0, overflow="fold")
            for row in cells[1:]:
                pt.add_row(*row)
            out.print(pt)
        else:  # too wide for a table: one setting at a time, its value in each scenario
            _say("Settings that differ", style="bold")
            for row in cells[1:]:
                _say(f"{row[0]}: " + "; ".join(f"{n} {v}" for n, v in zip(params.columns[1:], row[1:])), "", "    ")
        if len(params) > 30:
            out.print(f"... and {len(params) - 30} more (parameters_differ.csv)", highlight=False)
    for v in comparison_answer(verdict(judged, names[0]), facts):
        _say(f"The answer: {v['lead']}", style="bold")
        for head, items in (("Better", v["better"]), ("Worse", v["worse"]), (f"Watch out in {v['scenario']}", v["watch"])):
            if items:
                _say(f"{head}:")
                for x in items:
                    _say(x, "  - ", "    ")
        for line in (v["same"], v["not_comparable"], v["summary"]):
            if line:
                _say(line)
    if result.robustness is not None:
        _print_robustness(result.robustness, currency)
    sel = result.selection
    if sel:  # in the report's words (report.html.j2, "Which scenario is best?")
        label, unit = kpi_label(sel["kpi"])
        _say(f"Best on {decap(people_label(label))} ({'lower' if sel['goal'] == 'min' else 'higher'} is better): "
             f"{sel['best']}. The Nelson–Matejcik procedure picks the best with probability at least "
             f"{100 * (1 - sel['alpha']):.0f} % whenever it leads the others by at least "
             f"{fmt(sel['indifference'], unit, currency)} ({sel['required']} replications were needed).")


def _print_robustness(table, currency: str) -> None:
    """What the verdict rests on: one line per declared assumption, then the verdict about them in words."""
    from iopsim.outputs.robustness import robustness_rows, robustness_sentences

    if not len(table):
        _say("No assumptions declared (uncertain:), so there is nothing to vary: the comparison's robustness is unknown.")
        return
    for name, g in table.groupby("scenario", sort=False):
        t = _table(f"{name} − {g['baseline'].iloc[0]}: the difference at the ends of each assumption's range")
        t.add_column("assumption", overflow="fold", ratio=3)
        t.add_column("range", justify="right", no_wrap=True)
        t.add_column("at low", justify="right", no_wrap=True)
        t.add_column("at high", justify="right", no_wrap=True)
        t.add_column("flips at", justify="right", no_wrap=True)
        for r in robustness_rows(g, currency):
            t.add_row(r["assumption"], r["range"], r["at_low"], r["at_high"], r["threshold"] or ("–" if not r["flips"] else "?"))
        out.print(t)
    for s in robustness_sentences(table, currency):
        _say(s, style="bold")


@app.command()
def sweep(
    sweep_file: Path = typer.Argument(..., help="Sweep YAML file (base scenario, factors, design)."),
    jobs: int = JOBS,
    scheduler: Optional[str] = SCHEDULER,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: outputs/sweep-<name>); "
                                           "re-running with the same folder resumes."),
) -> None:
    """Run (or resume) a parameter sweep locally or on a Dask cluster; sensitivity indices if the file asks."""
    _start_workers(jobs if scheduler is None else 1)  # first, as in `run`
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
              f"in {result.elapsed_s:.1f} s; results: {result.folder}", highlight=False, soft_wrap=True)
    for f in result.failures:
        err.print(Text(f"point {f['point_id']} failed at {f['factors']}: {f['error']}"), soft_wrap=True)
    if result.sensitivity is not None:
        from iopsim.outputs.answer import sweep_currency

        _print_sensitivity(result.sensitivity, sweep_currency(result.folder))
    if result.failures:
        raise typer.Exit(code=1)


@app.command()
def plan(
    plan_file: Path = typer.Argument(..., help="Plan YAML file (base scenario, decisions, targets, objective)."),
    jobs: int = JOBS,
    scheduler: Optional[str] = SCHEDULER,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Results folder (default: outputs/plan-<name>); "
                                           "re-running with the same folder resumes."),
    robust: bool = typer.Option(False, "--robust", help="Also check the recommended plan at both ends of every "
                                "declared assumption (uncertain:) of the base."),
    posterior: Optional[Path] = POSTERIOR,
) -> None:
    """Find the cheapest (or best) plan of staff, groups and places that meets every service target."""
    _start_workers(jobs if scheduler is None else 1)  # first, as in `run`
    from iopsim import api

    try:
        with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeRemainingColumn(), console=err, transient=True, disable=not err.is_terminal) as progress:
            task = progress.add_task("plan", total=None)
            result = api.plan(
                plan_file, out_dir, jobs=jobs, scheduler=scheduler, robust=robust, posterior=posterior,
                progress=lambda done, total, phase: progress.update(task, completed=done, total=total,
                                                                    description=f"plan: {phase}"),
            )
    except IopsimError as exc:
        _fail(str(exc))
    _say(result.sentence)
    _print_plans(result)
    s = result.summary
    _say(f"{result.evaluations} of {s['plans_in_space']} plans simulated, {result.replications} "
         f"replications (a full grid with the same confidence: {result.grid_replications}) "
         f"in {result.elapsed_s:.1f} s.")
    out.print(f"results: {result.folder}", highlight=False, soft_wrap=True)
    if result.recommended is None:
        raise typer.Exit(code=1)


def _print_plans(result, most: int = 8) -> None:
    """The plans that met every target, best first, in 80 columns: levels, then each target and the objective."""
    from iopsim.analysis.kpis import kpi_label
    from iopsim.outputs.answer import decap, people_label
    from iopsim.outputs.plan_report import table_rows, target_text

    s = result.summary
    header, rows = table_rows(s, result.plans)
    shown = [r for r in rows if r["status"] == "meets every target"][:most]
    if not shown:
        return
    kpis = list(dict.fromkeys([c["kpi"] for c in s["constraints"]] + [s["objective"]["kpi"]]))
    heads = [f"target {i + 1}" for i in range(len(s["constraints"]))]
    if len(kpis) > len(heads):
        heads.append("objective")
    legend = [f"target {i + 1}: {target_text(c)}" for i, c in enumerate(s["constraints"])]
    legend.append(f"objective: {'lowest' if s['objective']['goal'] == 'min' else 'highest'} "
                  + decap(people_label(kpi_label(s["objective"]["kpi"])[0])))
    labels = s.get("labels", {})
    title = "Plans that meet every target" + (f" (best {most})" if len(shown) == most else "")
    table = _table(title)
    table.add_column("plan", justify="right", no_wrap=True)
    table.add_column("levels", justify="left", no_wrap=True)
    for h in heads:
        table.add_column(h, justify="right", no_wrap=True)
    for r in shown:
        table.add_row(f"{r['plan']}{' *' if r['recommended'] else ''}", " / ".join(map(str, r["levels"])),
                      *(c["mean"] for c in r["cells"]))
    out.print(table)
    for line in ["levels: " + " / ".join(labels.get(n, n) for n in s["decisions"]) + " (* recommended)", *legend]:
        _say(line, rest="  ")


def _print_sensitivity(df, currency: str = "USD") -> None:
    """Sobol' indices (shares of the variance) as numbers; Morris mu* and sigma in the KPI's own unit."""
    from iopsim.analysis.kpis import kpi_label
    from iopsim.outputs.answer import decap, factor_label, plus_minus, short_name

    cols = [c for c in ("S1", "ST", "mu_star", "sigma") if c in df.columns]
    for kpi, g in df.groupby("kpi", sort=False):
        name = short_name(kpi)
        unit = kpi_label(kpi)[1]
        unit = unit if unit in ("fraction", "currency") else ""
        table = _table(f"Sensitivity of {decap(name)} (± 95 % CI half-width)")
        table.add_column("setting", overflow="fold")
        for c in cols:
            table.add_column(c, justify="right", no_wrap=True)
        for _, r in g.iterrows():
            cells = []
            for c in cols:
                conf = r.get(f"{c}_conf")
                conf = float(conf) if conf is not None and conf == conf else math.nan
                if c in ("mu_star", "sigma"):
                    cells.append(plus_minus(float(r[c]), conf, unit, currency))
                else:
                    cells.append(f"{r[c]:.3f}" + (f" ± {conf:.3f}" if conf == conf else ""))
            table.add_row(factor_label(r["factor"]), *cells)
        out.print(table)


@app.command()
def sensitivity(sweep_dir: Path = typer.Argument(..., help="A finished sweep folder whose file set method: sobol|morris.")) -> None:
    """Sobol' indices or Morris effects of a finished sensitivity sweep (SALib)."""
    from iopsim import api

    try:
        df = api.sensitivity(sweep_dir)
    except IopsimError as exc:
        _fail(str(exc))
    from iopsim.outputs.answer import sweep_currency

    _print_sensitivity(df, sweep_currency(sweep_dir))
    out.print(f"written: {Path(sweep_dir) / 'sensitivity.csv'}", highlight=False, soft_wrap=True)


@app.command()
def report(run_dir: Path = typer.Argument(..., help="A finished run, comparison or sweep folder.")) -> None:
    """(Re)write the self-contained report.html of a run, comparison or sweep folder (drawing any figure it lacks)."""
    from iopsim import api

    try:
        path = api.report(run_dir)
    except IopsimError as exc:
        _fail(str(exc))
    out.print(f"report: {path}", highlight=False, soft_wrap=True)


@app.command()
def calibrate(
    calibration_file: Optional[Path] = typer.Argument(
        None, help="Calibration file: base scenario, free parameters with priors, targets, budget."),
    check: Optional[Path] = typer.Option(None, "--check", metavar="RUN_DIR",
                                         help="Instead of fitting: compare a finished run folder with the targets."),
    targets: Path = typer.Option(Path("calibration/targets.yaml"), "--targets", help="Targets file for --check."),
    jobs: int = typer.Option(1, "--jobs", "-j", min=1, help="Worker processes evaluating parameter sets."),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="Evaluate on a Dask cluster: tcp://HOST:PORT."),
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Calibration folder (default: outputs/calibration-<name>); "
                                           "re-running with the same folder resumes."),
    no_report: bool = typer.Option(False, "--no-report", help="Do not draw the figures or write report.html."),
) -> None:
    """Fit a scenario to published targets (ABC-SMC), or with --check RUN_DIR compare a finished run with them."""
    from iopsim import api

    if check is not None:
        if calibration_file is not None:
            _fail("calibrate: give a calibration file, or --check RUN_DIR, not both")
        return _check_run(api, check, targets)
    if calibration_file is None:
        _fail("calibrate: give a calibration file (to fit), or --check RUN_DIR (to compare a finished run with targets)")
    if calibration_file.is_dir():
        _fail(f"{calibration_file}: a folder, not a calibration file; to compare a finished run with the targets "
              f"use: iopsim calibrate --check {calibration_file}")
    try:
        result = api.fit(calibration_file, out_dir, jobs=jobs, scheduler=scheduler, report=not no_report)
    except IopsimError as exc:
        _fail(str(exc))
    print_fit(result)


#: Below this effective sample size the posterior's intervals are called rough.
ESS_ROUGH = 20


def print_fit(result) -> None:
    """The fit table, what the targets pin down, and where the calibrated scenario is."""
    s = result.summary
    t = _table(f"Calibration {s['calibration']}: point estimate, {s['check_replications']} fresh replications")
    for col, just in (("target", "left"), ("published", "right"), ("simulated (95 % CI)", "right"), ("met", "left")):
        t.add_column(col, justify=just, no_wrap=True)
    for _, r in result.fit.iterrows():
        t.add_row(r["id"], r["target"], f"{_fmt(r['point_mean'])} ({_fmt(r['point_ci_low'])}–{_fmt(r['point_ci_high'])})",
                  "yes" if r["met"] else Text("no", style="red"))
    out.print(t)
    for _, r in result.identifiability.iterrows():
        _say(r["sentence"], "- ", "  ")
    out.print(f"{s['targets_met']} of {s['targets']} targets met; {s['evaluations']} evaluations of "
              f"{s['replications_per_evaluation']} replications in {s['populations']} populations "
              f"({s['wall_seconds_this_command']:.0f} s), effective sample size {s['ess']:.1f}",
              highlight=False, soft_wrap=True)
    if s["ess"] < ESS_ROUGH:
        _say(f"note: the last population's effective sample size is {s['ess']:.1f}: the intervals and verdicts "
             "above are rough; raise budget.population_size (and run again with the same --out to continue).")
    out.print(f"calibrated scenario: {result.scenario_file}", highlight=False, soft_wrap=True)
    out.print(f"calibration folder: {result.folder}", highlight=False, soft_wrap=True)


def _check_run(api, run_dir: Path, targets: Path) -> None:
    """``calibrate --check RUN_DIR``: the run against the targets; writes calibration.csv into the run folder."""
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
              highlight=False, soft_wrap=True)


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
    out.print(f"schema: {out_file}", highlight=False, soft_wrap=True)


#: Streamlit settings of ``iopsim app``: local only, nothing sent anywhere, no developer tools.
STREAMLIT_FLAGS = {
    "server.headless": "true",              # no browser opened, no e-mail prompt
    "browser.gatherUsageStats": "false",    # no usage statistics sent
    "global.developmentMode": "false",
    "server.fileWatcherType": "none",       # the installed script does not change while it runs
    "server.runOnSave": "false",
    "client.toolbarMode": "minimal",        # no deploy button or developer menu
    "server.maxUploadSize": "2",            # MB: scenario files are small (IOPSIM_LIMIT_FILE_BYTES is 2 MB)
    "theme.base": "light",
}


def app_command(host: str, port: int) -> list[str]:
    """The command line that serves the web app: ``python -m streamlit run .../iopsim/app/main.py`` with
    `STREAMLIT_FLAGS`, listening on ``host:port``."""
    script = Path(__file__).resolve().parent / "app" / "main.py"
    flags = {"server.address": host, "server.port": str(port), **STREAMLIT_FLAGS}
    return [sys.executable, "-m", "streamlit", "run", str(script), *[a for k, v in flags.items() for a in (f"--{k}", v)]]


def _port_taken(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be listened on (in use, not an address of this machine), or None."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return f"--host {host}: not an address of this machine ({exc.strerror or exc})"
    family, kind, proto, _name, addr = infos[0]
    with socket.socket(family, kind, proto) as s:
        try:
            s.bind(addr)
        except OSError as exc:
            return f"--port {port}: cannot listen on {host}:{port} ({exc.strerror or exc}); choose another --port"
    return None


@app.command("app")
def web_app(
    port: int = typer.Option(8501, "--port", min=1, max=65535, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; the default is this machine only."),
) -> None:
    """Start the web app: describe a site in forms, run it, compare scenarios and plans, in the browser."""
    import importlib.util

    if importlib.util.find_spec("streamlit") is None:
        _fail("iopsim app needs streamlit: pip install -e . (from the repository folder) installs it")
    problem = _port_taken(host, port)
    if problem:
        _fail(problem)
    argv = app_command(host, port)
    where = f"[{host}]" if ":" in host else host
    out.print(f"iopsim app: open http://{where}:{port}/ in a browser (Ctrl-C stops it); run folders go to "
              f"{Path('outputs').resolve()}", highlight=False, soft_wrap=True)
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name == "posix":
        os.execv(argv[0], argv)  # the server replaces this process: Ctrl-C and SIGTERM reach it directly
    import subprocess  # pragma: no cover - Windows

    raise typer.Exit(subprocess.call(argv))  # pragma: no cover


def entry() -> None:
    """The ``iopsim`` program: run the command, then end the process without freeing every object.

    When a command has written its files and its output, Python would still take
    0.15-0.35 s to tear down the interpreter -- freeing each object and module of
    pandas, Arrow, matplotlib and SciPy -- which nobody sees.  So, as other
    command-line tools do, the exit handlers run (logging's flush, multiprocessing's
    clean-up), stdout and stderr are flushed, and the process ends there with the
    command's exit status.  An uncaught exception is left to Python as usual,
    and so is the exit when another thread is still running (Python would wait
    for it).  In-process callers (``typer.testing.CliRunner``, a notebook) use ``app``.
    """
    import atexit
    import threading

    try:
        app()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if threading.active_count() > 1:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):  # as sys.exit("message"): the message on stderr, status 1
        sys.stderr.write(f"{code}\n")
        code = 1
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``) or stream: nothing more to say
            pass
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    entry()
