"""The public Python API of iopsim: what the command line and notebooks call.

Everything a user needs is exported from `iopsim` itself::

    import iopsim

    scenario = iopsim.load_scenario("scenarios/baseline.yaml", overrides={"horizon_days": 365})
    results = iopsim.run(scenario, replications=10, jobs=2)
    results.summary                 # one row per KPI: mean, 95 % CI, unit
    results.records("visits")       # every stage visit of every replication
    results.save("outputs/my-run")  # the same run folder as `iopsim run`

A replication's result depends only on (scenario, replication number, seed),
so ``jobs`` changes how fast results come, never what they are.  ``jobs > 1``
works in a notebook and in a plain script, with or without an
``if __name__ == "__main__":`` guard (see
`worker_context()`).
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Mapping, Sequence

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.checks import Finding, scenario_findings
from iopsim.errors import IopsimError
from iopsim.experiments.run import ComparisonResult, Plan, RunResult, compare_scenarios, run_scenario
from iopsim.files import check_out_dir, default_run_dir, read_manifest
from iopsim.schema.limits import limit, over
from iopsim.schema.scenario import Scenario
from iopsim.schema.scenario import load_scenario as _load

if TYPE_CHECKING:  # pragma: no cover - the planner is imported when a plan runs
    from iopsim.experiments.plan import PlanResults

Overrides = Mapping[str, Any] | Sequence[str]
#: ``progress(done, total)`` after every replication.
Progress = Callable[[int, int], None]

__all__ = [
    "Comparison",
    "Results",
    "SweepResults",
    "CalibrationResults",
    "calibrate",
    "check",
    "compare",
    "fit",
    "load_scenario",
    "plan",
    "report",
    "run",
    "scenario_schema",
    "sensitivity",
    "sweep",
]


def check(scenario: Scenario | str | Path) -> list[Finding]:
    """Problems that make a valid scenario's plan unworkable, found without running it.

    Each `Finding` names a field and says what
    is wrong in one sentence: a group session outside every shift of the role
    it needs (or needing more facilitators than are rostered then), an
    availability class no track accepts, a stage whose offered load (expected
    admissions x mean stay / places) is 1 or more.  ``iopsim validate --strict``
    refuses a scenario with any.
    """
    return scenario_findings(_scenario(scenario))


def load_scenario(path: str | Path, overrides: Overrides | None = None) -> Scenario:
    """Load a scenario file, with its ``extends`` chain, and validate it.

    Args:
        path: a scenario YAML file.
        overrides: field values to change, as a mapping of dotted paths to values
            (``{"stages.residential.capacity": 12, "staff.roles.counselor.teams.0.headcount": 3}``)
            or as ``"dotted.path=value"`` strings, exactly like the CLI's ``--set``.

    Returns:
        The validated, immutable `Scenario`.

    Raises:
        ScenarioError: one line naming the file, the field and what is allowed.
    """
    if isinstance(overrides, str):  # one `--set` string, not a sequence of characters
        overrides = [overrides]
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = list(overrides)
    return _load(path, dict(overrides) if isinstance(overrides, Mapping) else overrides)


def _scenario(scenario: Scenario | str | Path) -> Scenario:
    return scenario if isinstance(scenario, Scenario) else load_scenario(scenario)


def _warmup(value: int | str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise IopsimError(f"warmup: expected a whole number of days (0 or more) or 'auto' (got {value!r})")
    return value


class _Counter:
    """Adapts the runner's ``progress(k)`` / ``total(k)`` calls to ``progress(done, total)``."""

    def __init__(self, callback: Progress | None):
        self.callback, self.done, self.total = callback, 0, 0

    def advance(self, k: int) -> None:
        self.done += k
        if self.callback:
            self.callback(self.done, self.total)

    def grow(self, k: int) -> None:
        self.total += k
        if self.callback:
            self.callback(self.done, self.total)


@dataclass
class Results:
    """The replications of one scenario: KPIs with confidence intervals, and every record.

    Attributes:
        scenario: the scenario as run (its ``warmup_days`` is the warm-up used).
        summary: one row per KPI: ``kpi``, ``label``, ``unit``, ``mean``, ``sd``,
            ``ci_low``, ``ci_high``, ``half_width`` (95 %), ``n``.
        per_replication: one row of KPIs per replication.
        folder: the run folder once `save()` has written it, else ``None``.
    """

    _run: RunResult = field(repr=False)
    scenario_path: str | None = field(default=None, repr=False)
    overrides: list[str] = field(default_factory=list, repr=False)
    folder: Path | None = None

    @property
    def scenario(self) -> Scenario:
        """The scenario as run (its ``warmup_days`` is the warm-up used)."""
        return self._run.scenario

    @property
    def summary(self) -> pd.DataFrame:
        """One row per KPI: ``kpi``, ``label``, ``unit``, ``mean``, ``sd``, ``ci_low``, ``ci_high``, ``half_width`` (95 %), ``n``."""
        return self._run.summary

    @property
    def per_replication(self) -> pd.DataFrame:
        """One row of KPIs per replication (column ``replication``, then every KPI)."""
        return self._run.per_replication

    @property
    def seed(self) -> int:
        """The base seed the replications were run with."""
        return self._run.plan.seed

    @property
    def replications(self) -> int:
        """How many replications were run (more than asked for if ``precision`` added some)."""
        return len(self._run.replications)

    @property
    def warmup(self) -> int:
        """Days discarded before the KPIs were measured."""
        return self._run.warmup

    @property
    def precision_reached(self) -> bool:
        """False if ``precision`` was asked for and not reached within ``max_replications``."""
        return self._run.precision_reached

    @property
    def warnings(self) -> list[Finding]:
        """Problems with the plan: from the scenario (as `check()`), then from the run's KPIs
        (groups below their minimum size, sessions cancelled for want of staff, work not booked)."""
        return list(self._run.findings)

    def kpi(self, name: str) -> pd.Series:
        """The summary row of one KPI (mean, CI, unit, ...)."""
        rows = self.summary.set_index("kpi")
        if name not in rows.index:
            from iopsim.experiments.replications import unknown_kpi

            raise IopsimError(unknown_kpi(name, set(rows.index)))
        return rows.loc[name]

    def records(self, table: str = "visits") -> pd.DataFrame:
        """A record table of every replication, with a ``replication`` column.

        Tables: ``visits`` (one row per stage visit), ``episodes``, ``levels``
        (daily waitlist and census), ``sessions`` (IOP group sessions),
        ``bookings`` (staff time), ``unmet`` (staff demand not met), ``services``, and ``attendance``
        (attended IOP sessions; rows only with ``payers``).
        """
        return self._run.table(table)

    def transient(self) -> pd.DataFrame:
        """When each waitlist settles, and how soon it reaches the threshold."""
        return self._run.transient()

    def first_year(self) -> pd.DataFrame:
        """Monthly waitlist and census, mean and CI across replications."""
        return self._run.first_year()

    def save(self, folder: str | Path | None = None, report: bool = True) -> Path:
        """Write the run folder (the same files as ``iopsim run``) and return its path.

        Args:
            folder: where; it must not exist or be empty. Default
                ``outputs/<scenario>-<time>``.
            report: also draw the figures and write ``report.html`` (``False``:
                the data files only; ``iopsim report`` can add both later).
        """
        from iopsim.outputs.runfolder import save_run

        return _save(self, folder, self.scenario.name, lambda dest: save_run(
            self._run, dest, scenario_path=self.scenario_path, overrides=self.overrides, report=report))

    def report(self, folder: str | Path | None = None) -> Path:
        """The path of ``report.html``, saving the run folder first if it was not saved."""
        return _report(self, folder)

    def _repr_html_(self) -> str:  # pragma: no cover - notebook display
        cols = ["label", "mean", "ci_low", "ci_high", "unit"]
        return (f"<p>{self.scenario.name}: {self.replications} replications, seed {self.seed}</p>"
                + self.summary.set_index("kpi")[cols].to_html(float_format=lambda x: f"{x:,.3g}"))


@dataclass
class Comparison:
    """Scenarios run with common random numbers, and the paired differences from the first.

    Attributes:
        differences: one row per KPI and scenario: both means, the paired
            difference with its (Bonferroni-adjusted for more than two
            scenarios) 95 % CI, p-values and whether it is significant.
        runs: the `Results` of each scenario, by name.
        selection: the Nelson-Matejcik pick when ``select`` was asked for.
    """

    _cmp: ComparisonResult = field(repr=False)
    runs: dict[str, Results] = field(default_factory=dict)
    scenario_paths: dict[str, str] = field(default_factory=dict, repr=False)
    overrides: list[str] = field(default_factory=list, repr=False)
    folder: Path | None = None

    @property
    def names(self) -> list[str]:
        """The scenarios' names, the first being the one the others are compared with."""
        return self._cmp.names

    @property
    def differences(self) -> pd.DataFrame:
        """One row per KPI and scenario: both means, the paired difference with its 95 % CI, p-values, significance and the verdict (better, worse or no significant difference)."""
        return self._cmp.differences

    summary = differences

    @property
    def parameters(self) -> pd.DataFrame:
        """The settings that differ between the scenarios."""
        return self._cmp.parameters

    @property
    def selection(self) -> dict | None:
        """The Nelson-Matejcik pick when ``select`` was asked for, else ``None``."""
        return self._cmp.selection

    @property
    def robustness(self) -> pd.DataFrame | None:
        """With ``robust=True``: per compared scenario and declared assumption, the difference in ``kpi``
        at both ends of the assumption's range, whether its sign changes, and the threshold where it does."""
        return self._cmp.robustness

    @property
    def replications(self) -> int:
        """How many replications each scenario ran (the same replication numbers in every one)."""
        return len(next(iter(self._cmp.runs.values())).replications)

    @property
    def warmup(self) -> int:
        """Days discarded before the KPIs were measured, the same for every scenario."""
        return self._cmp.warmup

    def save(self, folder: str | Path | None = None, report: bool = True) -> Path:
        """Write the comparison folder (as ``iopsim compare`` does) and return its path."""
        from iopsim.outputs.runfolder import save_comparison

        return _save(self, folder, "compare", lambda dest: save_comparison(
            self._cmp, dest, scenario_paths=self.scenario_paths, overrides=self.overrides, report=report))

    def report(self, folder: str | Path | None = None) -> Path:
        """The path of ``report.html``, saving the comparison folder first if needed."""
        return _report(self, folder)


def _save(result, folder, default_name: str, write: Callable[[Path], Path]) -> Path:
    """Write ``result``'s folder at ``folder`` (default ``outputs/<name>-<time>``) and remember where."""
    dest = Path(folder) if folder is not None else default_run_dir(Path("outputs"), default_name)
    result.folder = write(dest)
    return result.folder


def _report(result, folder) -> Path:
    if result.folder is None:
        return result.save(folder) / "report.html"
    return report(result.folder)


def _posterior(plan: Plan, posterior: str | Path | None, scenarios) -> Plan:
    """Attach a calibration's posterior to the plan (second-order Monte Carlo); check the first draw fits every scenario."""
    if posterior is None:
        return plan
    from iopsim.experiments.calibrate import PosteriorDraws

    draws = PosteriorDraws(posterior)
    for sc in scenarios:
        draws.scenario(sc, 0, plan.seed)  # a scenario without the posterior's fields fails here, before any run
    plan.posterior = draws
    plan.notes["posterior"] = draws.describe()
    return plan


def _jobs(jobs) -> int:
    """``jobs`` as a whole number from 1 to the ``jobs`` limit (each is a process)."""
    jobs = _whole("jobs", jobs, 1)
    if jobs > limit("jobs"):
        raise IopsimError("jobs: " + over("jobs", jobs))
    return jobs


def _whole(name: str, value, low: int) -> int:
    """``value`` as a whole number of at least ``low``, or a one-line error naming the argument."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if ok and isinstance(value, (float, np.floating)):
        ok = math.isfinite(value) and float(value).is_integer()
    if not ok or value < low:
        raise IopsimError(f"{name}: must be a whole number, {low} or more (got {value!r})")
    return int(value)


def _plan(first: Scenario, replications, seed, jobs, warmup, precision, kpi, max_replications, threshold,
          select=None) -> Plan:
    replications = None if replications is None else _whole("replications", replications, 1)
    jobs = _jobs(jobs)
    seed = first.seed if seed is None else _whole("seed", seed, 0)
    max_replications = _whole("max_replications", max_replications, 1)
    for name, value in (("replications", replications), ("max_replications", max_replications)):
        if value is not None and value > limit("replications"):
            raise IopsimError(f"{name}: " + over("replications", value))
    for name, value in (("precision", precision), ("threshold", threshold)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))
                                  or not math.isfinite(value) or value <= 0):
            raise IopsimError(f"{name}: must be a number above 0 (got {value!r})")
    return Plan(replications=replications or first.replications, seed=seed, jobs=jobs, warmup=_warmup(warmup),
                precision=precision, kpi=kpi, max_replications=max_replications, threshold=float(threshold),
                select=select)


def run(
    scenario: Scenario | str | Path,
    replications: int | None = None,
    seed: int | None = None,
    jobs: int = 1,
    warmup: int | Literal["auto"] | None = None,
    *,
    precision: float | None = None,
    kpi: str = "cost_per_completed_program",
    max_replications: int = 200,
    threshold: float = 10.0,
    progress: Progress | None = None,
    posterior: str | Path | None = None,
) -> Results:
    """Simulate a scenario and return its KPIs with 95 % confidence intervals.

    Args:
        scenario: a `Scenario` (from `load_scenario()`) or a path to one.
        replications: how many (default: the scenario's ``replications``).
        seed: base seed (default: the scenario's). The same seed gives the same
            numbers, bit for bit, whatever ``jobs`` is.
        jobs: worker processes.
        warmup: days to discard before KPIs are measured, ``"auto"`` (MSER-5 on
            the output) or ``None`` (the scenario's ``warmup_days``).
        precision: if given, add replications until the 95 % CI half-width of
            ``kpi`` is at most this share of its mean (or ``max_replications``).
        kpi: the KPI ``precision`` is judged on.
        max_replications: upper bound for ``precision``.
        threshold: waitlist length whose first crossing the transient table reports.
        progress: ``progress(done, total)`` after every replication.
        posterior: a calibration folder (from `fit()` or ``iopsim calibrate``): each replication
            draws its free parameters from that calibration's posterior (second-order Monte
            Carlo), so the confidence intervals include what the calibration targets leave
            unknown. The same replication draws the same parameters on every run.
    """
    sc = _scenario(scenario)
    plan = _plan(sc, replications, seed, jobs, warmup, precision, kpi, max_replications, threshold)
    plan = _posterior(plan, posterior, [sc])
    counter = _Counter(progress)
    result = run_scenario(sc, plan, counter.advance, counter.grow)
    path = str(scenario) if not isinstance(scenario, Scenario) else None
    return Results(result, scenario_path=path)


def compare(
    scenarios: Sequence[Scenario | str | Path] | Mapping[str, Scenario],
    replications: int | None = None,
    seed: int | None = None,
    jobs: int = 1,
    warmup: int | Literal["auto"] | None = None,
    *,
    select: Literal["min", "max"] | None = None,
    indifference: float | None = None,
    precision: float | None = None,
    kpi: str = "cost_per_completed_program",
    max_replications: int = 200,
    threshold: float = 10.0,
    robust: bool = False,
    progress: Progress | None = None,
    posterior: str | Path | None = None,
) -> Comparison:
    """Compare two or more scenarios under common random numbers; the first is the baseline.

    Every scenario runs the same replication numbers with the same seed, so the
    differences are paired replication by replication (much narrower CIs than
    independent runs).  With ``select="min"`` or ``"max"`` and an
    ``indifference`` (the smallest difference in ``kpi`` worth detecting), the
    Nelson-Matejcik procedure adds replications until it can name the best
    scenario with 95 % confidence.  With ``posterior`` (a calibration folder) each
    replication draws its free parameters from the calibration's posterior, the same
    draw in every scenario, so the pairing holds.  Other arguments are as in `run()`.
    """
    if isinstance(scenarios, Mapping):
        loaded = {str(n): _scenario(s) for n, s in scenarios.items()}
        paths = {}
    else:
        loaded, paths = {}, {}
        for item in scenarios:
            sc = _scenario(item)
            name, i = sc.name, 2
            while name in loaded:
                name, i = f"{sc.name}-{i}", i + 1
            loaded[name] = sc
            if not isinstance(item, Scenario):
                paths[name] = str(item)
    if len(loaded) < 2:
        raise IopsimError("compare: give at least two scenarios (the first is the baseline)")
    if select is not None and select not in ("min", "max"):
        raise IopsimError(f"select: allowed values are min, max (got {select!r})")
    if select is not None and indifference is None:
        raise IopsimError("select needs indifference (the smallest difference in kpi worth detecting)")
    first = next(iter(loaded.values()))
    sel = {"goal": select, "indifference": indifference, "alpha": 0.05} if select else None
    plan = _plan(first, replications, seed, jobs, warmup, precision, kpi, max_replications, threshold, sel)
    plan = _posterior(plan, posterior, list(loaded.values()))
    counter = _Counter(progress)
    result = compare_scenarios(loaded, plan, counter.advance, counter.grow)
    if robust:
        from iopsim.experiments.robust import robustness

        base_values = {n: r.per_replication.sort_values("replication")[kpi].to_numpy(dtype=float)
                       for n, r in result.runs.items()}
        result.robustness = robustness({n: r.scenario for n, r in result.runs.items()}, base_values, kpi,
                                       plan.seed, jobs, progress=counter.advance, total=counter.grow,
                                       posterior=plan.posterior)
    runs = {n: Results(r, scenario_path=paths.get(n)) for n, r in result.runs.items()}
    return Comparison(result, runs, scenario_paths=paths)


@dataclass
class SweepResults:
    """A finished (or resumed) sweep: its folder, per-point means with CIs, failures, sensitivity."""

    folder: Path
    points: pd.DataFrame
    n_points: int
    ran: int
    skipped: int
    failures: list[dict]
    elapsed_s: float
    sensitivity: pd.DataFrame | None = None


def sweep(
    sweep_file: str | Path,
    out: str | Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int, int], None] | None = None,
) -> SweepResults:
    """Run, or resume, the parameter sweep a sweep file describes.

    Every finished point is stored at once in ``out`` (default
    ``outputs/sweep-<name>``); calling again with the same folder runs only the
    points still missing.  ``scheduler="tcp://HOST:PORT"`` runs the points on a
    Dask cluster (``pip install 'iopsim[cluster]'``) with the same results.
    ``progress(done, total, failed)`` is called as points finish.  If the file
    asks for ``method: sobol`` or ``morris``, sensitivity indices are computed.
    """
    from iopsim.experiments.sweep import execute_sweep
    from iopsim.outputs.figures import sensitivity_figures, sweep_figures

    res = execute_sweep(Path(sweep_file), Path(out) if out is not None else None, jobs=_jobs(jobs), scheduler=scheduler,
                        progress=progress)
    sweep_figures(res["folder"], res["sweep"], res["summary"])
    indices = res.get("sensitivity")
    if indices is not None:
        sensitivity_figures(res["folder"], res["sweep"].method, indices)
    return SweepResults(res["folder"], res["summary"], res["points"], res["ran"], res["skipped"], res["failures"],
                        res["elapsed_s"], indices)


def plan(
    plan_file: str | Path,
    out: str | Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    robust: bool = False,
    posterior: str | Path | None = None,
    report: bool = True,
) -> PlanResults:
    """Find the best plan of levers that meets every target of a plan file, with its confidence.

    The plan file names a base scenario, integer ``decisions`` (each moving
    one or more scenario fields), ``constraints`` on KPIs, an ``objective``
    and a replication budget; see the planning guide.  Results go to ``out``
    (default ``outputs/plan-<name>``): ``plans.csv``, ``recommended.yaml``,
    ``figures/pareto.png`` and ``report.html``.  Calling again with the same
    folder reuses every stored evaluation.  ``progress(done, total, phase)``
    is called as evaluations finish.  With ``robust=True`` the recommended plan
    is also simulated at both ends of every assumption the base declares
    (``uncertain:``), and the answer says whether it still meets every target.
    With ``posterior`` (a calibration folder) every replication of every plan draws
    the calibration's free parameters from its posterior (second-order Monte
    Carlo): the confidence then covers what the published figures leave unknown.
    With ``report=False`` the figure and ``report.html`` are not written (and
    ``sentence`` stays empty); :func:`report` writes them from the folder later.
    """
    from iopsim.experiments.calibrate import PosteriorDraws
    from iopsim.experiments.plan import execute_plan
    from iopsim.outputs.plan_report import write_plan_outputs

    draws = PosteriorDraws(posterior) if posterior is not None else None
    res = execute_plan(Path(plan_file), Path(out) if out is not None else None, jobs=_jobs(jobs), scheduler=scheduler,
                       progress=progress, robust=robust, posterior=draws)
    if report:
        res.sentence = write_plan_outputs(res.folder)
    return res


def sensitivity(sweep_dir: str | Path) -> pd.DataFrame:
    """Sobol' indices or Morris effects (with CIs) of a finished sensitivity sweep; writes the table and figures."""
    from iopsim.experiments.sweep import analyse_sweep
    from iopsim.outputs.figures import sensitivity_figures

    indices = analyse_sweep(Path(sweep_dir))
    method = read_manifest(Path(sweep_dir), "sweep")["method"]
    sensitivity_figures(Path(sweep_dir), method, indices)
    return indices


def report(folder: str | Path) -> Path:
    """(Re)write ``report.html`` of a finished run, comparison, sweep or plan folder; returns its path."""
    from iopsim.outputs.report import write_report

    try:
        return write_report(Path(folder))
    except IopsimError:
        raise
    except (KeyError, TypeError, ValueError, OSError) as exc:  # JSON, CSV and Parquet errors are ValueErrors
        raise IopsimError(f"{folder}: a file in this folder is damaged or incomplete ({type(exc).__name__}: "
                          f"{reprlib.repr(str(exc))}); re-run into a new folder") from None


def calibrate(run_dir: str | Path, targets: str | Path = "calibration/targets.yaml") -> pd.DataFrame:
    """Compare a finished run with published targets: one row per target, model mean with CI, met or not."""
    from iopsim.analysis.calibration import calibrate as check

    return check(Path(run_dir), Path(targets))


@dataclass
class CalibrationResults:
    """A finished (or resumed) calibration: its folder and tables.

    Attributes:
        folder: the calibration folder (``calibrated.yaml``, ``fit.csv``, ``report.html``, ...).
        fit: one row per target: the posterior predictive median and 90 % interval, the point
            estimate's mean and 95 % CI over fresh replications, ``met``.
        posterior: the last population's parameter sets, one column per free parameter (its
            dotted path), with ``weight``.
        identifiability: one row per parameter: prior and posterior 90 % intervals, their
            width ratio and a sentence saying whether the targets pin it down.
        populations: one row per ABC-SMC population: threshold, evaluations, effective sample size.
        summary: evaluations, wall time, effective sample size, point estimate, targets met.
        scenario_file: the calibrated scenario (extends the base with the fitted values).
    """

    folder: Path
    fit: pd.DataFrame
    posterior: pd.DataFrame
    identifiability: pd.DataFrame
    populations: pd.DataFrame
    summary: dict
    scenario_file: Path


def fit(
    calibration_file: str | Path,
    out: str | Path | None = None,
    jobs: int = 1,
    scheduler: str | None = None,
    report: bool = True,
) -> CalibrationResults:
    """Calibrate a scenario to targets (ABC-SMC with pyabc), or resume a calibration.

    The calibration file names the base scenario, the free parameters (dotted
    paths with bounds and priors), the targets and a budget (see the
    calibration guide).  Results go to ``out`` (default
    ``outputs/calibration-<name>``); calling again with the same folder resumes
    from the last finished population.  ``jobs > 1`` evaluates parameter sets in
    worker processes, ``scheduler="tcp://HOST:PORT"`` on a Dask cluster.
    """
    from iopsim.experiments.calibrate import run_calibration
    from iopsim.files import atomic_write_text
    from iopsim.outputs.calibration import calibrated_scenario_text, calibration_figures, write_calibration_report

    res = run_calibration(calibration_file, out, jobs=_jobs(jobs), scheduler=scheduler)
    folder, spec = res["folder"], res["spec"]
    command = f"iopsim calibrate {spec.path}"
    text = calibrated_scenario_text(folder, spec.base_path, spec.base_raw, spec.base.name, spec.path,
                                    res["summary"]["values"], res["identifiability"], [t.id for t in spec.targets],
                                    command, {q: p for p, par in spec.file.parameters.items() for q in par.also})
    atomic_write_text(folder / "calibrated.yaml", text)
    if report:
        calibration_figures(folder)
        write_calibration_report(folder)
    return CalibrationResults(folder, res["fit"], res["posterior"], res["identifiability"], res["populations"],
                              res["summary"], folder / "calibrated.yaml")


def scenario_schema() -> dict:
    """The JSON Schema of scenario files (for editors: completion and inline errors)."""
    from iopsim.schema.reference import json_schema

    return json_schema()


def check_destination(folder: str | Path) -> None:
    """Refuse an output folder that exists and is not empty (before anything runs)."""
    check_out_dir(Path(folder))
