"""Runs and comparisons: replications of one or more scenarios, and their KPIs.

:func:`run_scenario` and :func:`compare_scenarios` return results in memory
(:class:`RunResult`, :class:`ComparisonResult`); :mod:`iopsim.outputs.runfolder`
writes them as run folders.  Compared scenarios run the same replication
numbers with the same seed, so their random streams are common (CRN).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.checks import Finding, result_findings, scenario_findings
from iopsim.analysis.compare import (
    differing_parameters,
    nelson_matejcik,
    nm_required_replications,
    paired_differences,
    replications_for_precision,
)
from iopsim.analysis.kpis import kpi_label, replication_kpis
from iopsim.analysis.stats import summarise
from iopsim.analysis.warmup import monthly_trajectory, transient_table, warmup_days
from iopsim.engine.records import TABLES, Records, Table
from iopsim.errors import IopsimError
from iopsim.experiments.replications import ReplicationResult, Runner, kpi_names, kpi_table, unknown_kpi
from iopsim.schema.scenario import Scenario

log = logging.getLogger(__name__)



@dataclass
class Plan:
    """How many replications, with which seed, warm-up and stopping rule."""

    replications: int
    seed: int
    jobs: int = 1
    warmup: int | str | None = None  # None: the scenario's; "auto": MSER-5; or days
    precision: float | None = None  # relative CI half-width on `kpi` to reach
    kpi: str = "cost_per_completed_program"
    max_replications: int = 200
    threshold: float = 10.0  # waitlist length whose first crossing is reported
    select: dict | None = None  # {"goal": "min"|"max", "indifference": d, "alpha": a}
    notes: dict = field(default_factory=dict)
    #: Second-order Monte Carlo: each replication's free parameters drawn from a calibration's posterior
    #: (an :class:`iopsim.experiments.calibrate.PosteriorDraws`); None runs every replication with the scenario's values.
    posterior: object | None = None

    def task(self, scenario: Scenario, replication: int) -> tuple[Scenario, int, int]:
        """The (scenario, replication, seed) a worker runs: with a posterior, the replication's own draw."""
        if self.posterior is not None:
            scenario = self.posterior.scenario(scenario, replication, self.seed)
        return scenario, replication, self.seed


@dataclass
class RunResult:
    """The replications of one scenario and their KPIs.

    ``scenario`` is the scenario as run (``warmup_days`` is the warm-up used);
    ``per_replication`` has one row of KPIs per replication and ``summary`` one
    row per KPI with its mean and 95 % confidence interval.
    """

    scenario: Scenario
    plan: Plan
    replications: list[ReplicationResult]
    warmup: int
    per_replication: pd.DataFrame
    summary: pd.DataFrame
    #: Problems with the plan: found in the scenario before the run, then in its KPIs.
    findings: list[Finding] = field(default_factory=list)
    _tables: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)

    def table(self, name: str) -> pd.DataFrame:
        """One record table of every replication stacked, with a ``replication`` column."""
        if name not in TABLES:
            raise IopsimError(f"unknown record table {name!r}; allowed: {', '.join(TABLES)}")
        if name not in self._tables:
            self._tables[name] = stack_records(self.replications, name)
        return self._tables[name]

    def transient(self) -> pd.DataFrame:
        """When each stage's waitlist settles and how soon it first reaches ``plan.threshold``."""
        return transient_table(self.table("levels"), self.plan.threshold)

    def first_year(self) -> pd.DataFrame:
        """Monthly waitlist and census trajectory (mean and CI across replications)."""
        return monthly_trajectory(self.table("levels"))

    @property
    def precision_reached(self) -> bool:
        return bool(self.plan.notes.get("precision_reached", True))


@dataclass
class ComparisonResult:
    """Scenarios run with common random numbers, and their paired differences."""

    runs: dict[str, RunResult]
    plan: Plan
    warmup: int
    differences: pd.DataFrame
    parameters: pd.DataFrame
    selection: dict | None = None
    robustness: pd.DataFrame | None = None
    """With ``compare --robust``: one row per compared scenario and declared assumption."""

    @property
    def names(self) -> list[str]:
        return list(self.runs)


def stack_records(results: list[ReplicationResult], table: str) -> pd.DataFrame:
    """One record table of every replication, stacked, with a leading ``replication`` column.

    The compact tables are concatenated and one DataFrame built from them (not
    one per replication), and the column inserted once.
    """
    if not results:
        return pd.DataFrame()
    if all(isinstance(r.records, Records) for r in results):
        parts = [r.records.table(table) for r in results]
        out = Table.concat(parts).frame()
        sizes = [len(t) for t in parts]
    else:
        frames = [r.records[table] for r in results]
        out = pd.concat(frames, ignore_index=True)
        sizes = [len(df) for df in frames]
    out.insert(0, "replication", np.repeat(np.array([r.replication for r in results], dtype=np.int64), sizes))
    return out


# --------------------------------------------------------------------------- simulate


def simulate(
    scenarios: dict[str, Scenario], plan: Plan, progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> dict[str, list[ReplicationResult]]:
    """Run every scenario for the same replication numbers and seed (CRN).

    With ``plan.precision`` replications are added in batches until every
    scenario's mean of ``plan.kpi`` has a relative 95 % CI half-width at or
    below the target, or ``plan.max_replications`` is reached.  With
    ``plan.select`` the Nelson-Matejcik second stage adds what it needs.
    """
    results: dict[str, list[ReplicationResult]] = {n: [] for n in scenarios}

    def run_more(count: int) -> None:
        start = len(next(iter(results.values())))
        tasks = [plan.task(sc, r) for sc in scenarios.values() for r in range(start, start + count)]
        if total:
            total(len(tasks))
        out = runner.run(tasks, progress)
        for i, name in enumerate(scenarios):
            results[name].extend(out[i * count : (i + 1) * count])

    with Runner(plan.jobs) as runner:
        run_more(plan.replications)
        if plan.precision is not None:
            batch = max(plan.jobs, 2)
            while len(results[next(iter(results))]) < plan.max_replications:
                values = {n: np.array([r.kpis.get(plan.kpi, np.nan) for r in rs]) for n, rs in results.items()}
                if replications_for_precision(values, plan.precision):
                    break
                run_more(min(batch, plan.max_replications - len(results[next(iter(results))])))
            plan.notes["replications_used"] = len(results[next(iter(results))])
            values = {n: np.array([r.kpis.get(plan.kpi, np.nan) for r in rs]) for n, rs in results.items()}
            plan.notes["precision_reached"] = bool(replications_for_precision(values, plan.precision))
        if plan.select is not None and len(scenarios) > 1:
            n0 = len(results[next(iter(results))])
            values = {n: np.array([r.kpis[plan.kpi] for r in rs], dtype=float) for n, rs in results.items()}
            undefined = [n for n, v in values.items() if not np.all(np.isfinite(v))]
            if undefined:
                raise IopsimError(
                    f"--select: {plan.kpi} is undefined in some replications of {', '.join(undefined)} "
                    "(nothing to divide by); choose another --kpi")
            need = nm_required_replications(values, plan.select["indifference"], plan.select["alpha"])
            if need > plan.max_replications:
                raise IopsimError(
                    f"--select needs {need} replications (more than --max-replications {plan.max_replications}); "
                    "raise --indifference or --max-replications"
                )
            if need > n0:
                run_more(need - n0)
            plan.notes["select_first_stage"] = n0
    return results


def resolve_warmup(plan: Plan, scenarios: dict[str, Scenario], results: dict[str, list[ReplicationResult]]) -> int:
    """The warm-up (days) used for every scenario of the run (one value, so paired KPIs share a window)."""
    if plan.warmup == "auto":
        days = max(warmup_days(stack_records(rs, "levels")) for rs in results.values())
        horizon = min(sc.horizon_days for sc in scenarios.values())
        w = min(days, horizon // 2)
        plan.notes["warmup_method"] = "MSER-5 on the mean daily waitlist and census series of every stage"
        return int(w)
    if plan.warmup is None:
        return max(sc.warmup_days for sc in scenarios.values())
    return int(plan.warmup)


def fixed_warmup(scenario: Scenario, plan: Plan) -> Scenario:
    """The scenario with ``--warmup DAYS`` applied, so that workers (and the
    precision rule) judge KPIs over the same window as the final results."""
    if isinstance(plan.warmup, int):
        if plan.warmup >= scenario.horizon_days:
            raise IopsimError(f"--warmup: {plan.warmup} days is not shorter than the {scenario.horizon_days}-day horizon")
        return scenario.model_copy(update={"warmup_days": plan.warmup})
    return scenario


def check_kpi(scenario: Scenario, plan: Plan) -> None:
    """Refuse an unknown --kpi before anything runs (it drives --precision and --select)."""
    if plan.precision is None and plan.select is None:
        return
    known = kpi_names(scenario)
    if plan.kpi not in known:
        raise IopsimError(f"--kpi: {unknown_kpi(plan.kpi, known)}")


def kpis_for(results: list[ReplicationResult], scenario: Scenario, warmup: int) -> pd.DataFrame:
    if warmup == scenario.warmup_days:
        return kpi_table(results)
    if warmup >= scenario.horizon_days:
        raise IopsimError(f"warm-up of {warmup} days is not shorter than the {scenario.horizon_days}-day horizon")
    rows = [{"replication": r.replication, **replication_kpis(r.records, scenario, warmup)} for r in results]
    return pd.DataFrame(rows)


def _run_result(scenario: Scenario, plan: Plan, results: list[ReplicationResult], warmup: int,
                per_rep: pd.DataFrame) -> RunResult:
    # The scenario as run records the warm-up actually used (--warmup included).
    scenario = scenario.model_copy(update={"warmup_days": warmup})
    findings = [*scenario_findings(scenario), *result_findings(per_rep, scenario)]
    return RunResult(scenario, plan, results, warmup, per_rep, summarise(per_rep, kpi_label), findings)


def run_scenario(
    scenario: Scenario,
    plan: Plan,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> RunResult:
    """Run the replications of one scenario (with the plan's stopping rule) and compute its KPIs."""
    scenario = fixed_warmup(scenario, plan)
    check_kpi(scenario, plan)
    results = simulate({scenario.name: scenario}, plan, progress, total)[scenario.name]
    warmup = resolve_warmup(plan, {scenario.name: scenario}, {scenario.name: results})
    return _run_result(scenario, plan, results, warmup, kpis_for(results, scenario, warmup))


def _with_verdicts(diffs: pd.DataFrame) -> pd.DataFrame:
    """The differences with each KPI's desirable ``direction`` and, for the alternatives, the ``judgement``
    (better, worse, higher, lower, no significant difference) and the relative change with its CI."""
    from iopsim.analysis.verdict import direction, judge

    cols = ["kpi", "scenario", "judgement", "rel_change", "rel_ci_low", "rel_ci_high"]
    out = diffs.merge(judge(diffs)[cols], on=["kpi", "scenario"], how="left")
    out.insert(out.columns.get_loc("significant") + 1, "direction", [direction(k) for k in out["kpi"]])
    return out


def compare_scenarios(
    scenarios: dict[str, Scenario],
    plan: Plan,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
) -> ComparisonResult:
    """Run scenarios with common random numbers and pair their KPIs replication by replication.

    The first scenario is the baseline of every difference.  With
    ``plan.select`` the Nelson-Matejcik procedure picks the best on ``plan.kpi``.
    """
    if len(scenarios) < 2:
        raise IopsimError("compare: give at least two scenarios (the first is the baseline)")
    scenarios = {n: fixed_warmup(sc, plan) for n, sc in scenarios.items()}
    check_kpi(next(iter(scenarios.values())), plan)
    results = simulate(scenarios, plan, progress, total)
    warmup = resolve_warmup(plan, scenarios, results)
    per_rep = {n: kpis_for(results[n], sc, warmup) for n, sc in scenarios.items()}
    runs = {n: _run_result(sc, plan, results[n], warmup, per_rep[n]) for n, sc in scenarios.items()}
    diffs = paired_differences(per_rep)
    diffs.insert(1, "label", [kpi_label(k)[0] for k in diffs["kpi"]])
    diffs.insert(2, "unit", [kpi_label(k)[1] for k in diffs["kpi"]])
    diffs = _with_verdicts(diffs)
    resolved = {n: sc.model_dump(mode="json", by_alias=True, exclude_none=True) for n, sc in scenarios.items()}
    selection = None
    if plan.select is not None:
        values = {n: per_rep[n][plan.kpi].to_numpy(dtype=float) for n in scenarios}
        selection = nelson_matejcik(values, plan.notes["select_first_stage"], plan.select["indifference"],
                                    plan.select["alpha"], plan.select["goal"], plan.kpi).__dict__
    return ComparisonResult(runs, plan, warmup, diffs, differing_parameters(resolved), selection)
