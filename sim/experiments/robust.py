"""Robustness of a comparison: which declared assumptions its verdict rests on, and where it flips.

For every assumption the scenarios declare under ``uncertain:`` (see
:mod:`iopsim.schema.assumptions`), every compared scenario is re-run with the
assumption at the low and at the high end of its range, on the same
replication numbers and seed as the comparison (common random numbers), so
the difference from the baseline moves only because the assumption moved.
An assumption that cannot affect the KPI gives exactly the base difference.

Screening is cheap: ``screen`` replications at each end.  An end whose
difference is in doubt (its interval holds zero, or its sign is not the
base's) gets the comparison's full replications.  Where the sign changes
across the range, bisection between the values that bracket the change
finds the threshold (:mod:`iopsim.analysis.robustness`).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Callable

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.robustness import Point, flips, paired, sign, threshold
from iopsim.errors import ScenarioError
from iopsim.experiments.executor import Executor, Task
from iopsim.schema.assumptions import Assumption
from iopsim.schema.scenario import Scenario, number_at, with_assumption

log = logging.getLogger(__name__)


def declared(scenarios: dict[str, Scenario]) -> dict[str, Assumption]:
    """The assumptions any compared scenario declares (the first declaration of a path wins)."""
    out: dict[str, Assumption] = {}
    for sc in scenarios.values():
        for path, a in sc.uncertain.items():
            out.setdefault(path, a)
    return out


def current_value(scenario: Scenario, path: str) -> float | None:
    """The number at ``path`` in ``scenario``, or None if it has no such number."""
    v = number_at(scenario.model_dump(mode="json", by_alias=True), path)
    return None if v is None else float(v)


class _Evaluator:
    """Runs the compared scenarios at given assumption values and keeps each one's KPI per replication."""

    def __init__(self, scenarios: dict[str, Scenario], kpi: str, seed: int, executor: Executor,
                 progress: Callable[[int], None] | None, total: Callable[[int], None] | None,
                 now: dict[str, dict[str, float | None]], posterior=None):
        self.scenarios, self.kpi, self.seed, self.executor = scenarios, kpi, seed, executor
        self.posterior = posterior
        self.now = now  # path -> scenario -> its current value (None: the scenario has no such value)
        self.progress, self.total = progress, total
        self.values: dict[tuple[str, float], dict[str, list[float]]] = {}
        self.replications = 0

    def run(self, points: list[tuple[str, float]], n: int) -> None:
        """Bring every (path, value) point to ``n`` replications of every scenario."""
        tasks = []
        for path, value in points:
            have = self.values.setdefault((path, value), {name: [] for name in self.scenarios})
            for name, sc in self.scenarios.items():
                done = len(have[name])
                if done >= n:
                    continue
                # an assumption about a part one scenario does not have (its weekend track) leaves it as it is
                moved = with_assumption(sc, path, value, f"uncertain.{path}") if self.now[path][name] is not None else sc
                tasks.append(Task(f"{path}={value}:{name}", moved, self.seed, done, n - done,
                                  {"path": path, "value": value, "name": name}, self.posterior))
        failures = []
        if self.total and tasks:
            self.total(sum(t.count for t in tasks))

        def handle(task: Task, res: dict) -> None:
            if res["error"] is not None:
                failures.append(f"{task.tags['path']} = {task.tags['value']:g}: {res['error']}")
                return
            rows = sorted(res["rows"], key=lambda r: r["replication"])
            self.values[(task.tags["path"], task.tags["value"])][task.tags["name"]].extend(
                float(r.get(self.kpi, math.nan)) for r in rows)
            self.replications += len(rows)
            if self.progress:
                self.progress(len(rows))

        self.executor.map(tasks, handle)
        if failures:
            raise ScenarioError("compare --robust", None, "a scenario failed with an assumption moved: " + failures[0])

    def change(self, path: str, value: float, name: str, base: str, base_values: dict[str, np.ndarray]) -> float:
        """How far the difference moved from the comparison's, over the same replications (0 if it cannot move)."""
        v = self.values[(path, value)]
        m = min(len(v[name]), len(v[base]))
        moved = np.asarray(v[name][:m]) - np.asarray(v[base][:m])
        before = base_values[name][:m] - base_values[base][:m]
        return float(np.mean(moved - before)) if m else math.nan

    def point(self, path: str, value: float, name: str, base: str) -> Point:
        v = self.values[(path, value)]
        n = min(len(v[name]), len(v[base]))
        return paired(np.asarray(v[name][:n]) - np.asarray(v[base][:n]), value)


def robustness(
    scenarios: dict[str, Scenario],
    base_values: dict[str, np.ndarray],
    kpi: str,
    seed: int,
    jobs: int = 1,
    screen: int = 8,
    bisections: int = 3,
    progress: Callable[[int], None] | None = None,
    total: Callable[[int], None] | None = None,
    posterior=None,
) -> pd.DataFrame:
    """One row per (compared scenario, declared assumption): the difference at both ends, flips, threshold.

    ``base_values`` holds each scenario's ``kpi`` per replication from the
    comparison itself (replications 0..R-1 with ``seed``); the ends are
    screened with ``screen`` replications and refined to R where in doubt.
    """
    names = list(scenarios)
    base = names[0]
    full = min(len(v) for v in base_values.values())
    screen = max(2, min(screen, full))
    assumptions = declared(scenarios)
    if not assumptions:
        return pd.DataFrame()
    check_posterior_paths(posterior, {f"uncertain.{p}": p for p in assumptions}, "compare --robust --posterior")
    rows = []
    with Executor(jobs) as executor:
        now = {path: {n: current_value(sc, path) for n, sc in scenarios.items()} for path in assumptions}
        ev = _Evaluator(scenarios, kpi, seed, executor, progress, total, now, posterior)
        ends = [(p, v) for p, a in assumptions.items() for v in dict.fromkeys(a.range)]
        ev.run(ends, screen)
        base_pts = {n: paired(base_values[n][:full] - base_values[base][:full], math.nan) for n in names[1:]}
        doubtful = []
        for p, v in ends:
            for n in names[1:]:
                pt = ev.point(p, v, n, base)
                if pt.low <= 0 <= pt.high or sign(pt.mean) != sign(base_pts[n].mean):
                    doubtful.append((p, v))
                    break
        ev.run(doubtful, full)
        for path, a in assumptions.items():
            here = now[path]
            shared = len(set(here.values())) == 1 and None not in here.values()
            for n in names[1:]:
                pts = [ev.point(path, v, n, base) for v in dict.fromkeys(a.range)]
                bp = base_pts[n]
                if shared:
                    pts.append(Point(here[n], bp.mean, bp.low, bp.high, bp.n))
                pts.sort(key=lambda q: q.value)
                flipped = flips(pts, bp.mean) or (not shared and any(sign(q.mean) != sign(pts[0].mean) for q in pts))
                if flipped:
                    whole = _whole(scenarios, path)
                    pts = _bisect(ev, path, pts, n, base, full, bisections, whole)
                t, t_lo, t_hi = threshold(pts) if flipped else (None, None, None)
                lo_pt = next(q for q in pts if q.value == a.range[0])
                hi_pt = next(q for q in pts if q.value == a.range[1])
                rows.append({
                    "scenario": n, "baseline": base, "kpi": kpi, "assumption": path, "note": a.note or "",
                    "source": a.source or "", "current": here[n] if shared else math.nan,
                    "low": a.range[0], "high": a.range[1],
                    "diff": bp.mean, "diff_ci_low": bp.low, "diff_ci_high": bp.high,
                    "diff_at_low": lo_pt.mean, "diff_at_low_ci_low": lo_pt.low, "diff_at_low_ci_high": lo_pt.high,
                    "diff_at_high": hi_pt.mean, "diff_at_high_ci_low": hi_pt.low, "diff_at_high_ci_high": hi_pt.high,
                    "change_at_low": ev.change(path, a.range[0], n, base, base_values),
                    "change_at_high": ev.change(path, a.range[1], n, base, base_values),
                    "flips": bool(flipped), "threshold": _num(t), "threshold_low": _num(t_lo), "threshold_high": _num(t_hi),
                    "points": json.dumps([[q.value, q.mean, q.low, q.high, q.n] for q in pts]),
                })
        log.info("robustness: %d assumptions, %d replications", len(assumptions), ev.replications)
    out = pd.DataFrame(rows)
    out.attrs["replications"] = ev.replications
    return out


def check_posterior_paths(posterior, fields: dict[str, str], source: str) -> None:
    """Refuse a field (``where -> dotted path``) that the posterior's draws would overwrite: moving it would do nothing."""
    if posterior is None:
        return
    drawn = set(posterior.paths())
    for where, path in fields.items():
        if path in drawn:
            raise ScenarioError(source, where, f"{path} is a free parameter of calibration {posterior.name!r}: each "
                                "replication draws it from the posterior, so it cannot also be moved here; "
                                "drop it, or run without --posterior")


def _num(x: float | None) -> float:
    return math.nan if x is None else float(x)


def _whole(scenarios: dict[str, Scenario], path: str) -> bool:
    """True if the assumption is a whole number (places, a count) in every scenario that has it."""
    nodes = [number_at(sc.model_dump(mode="json", by_alias=True), path) for sc in scenarios.values()]
    return all(isinstance(x, int) for x in nodes if x is not None)


def _bisect(ev: _Evaluator, path: str, pts: list[Point], name: str, base: str, n: int, steps: int,
            whole: bool = False) -> list[Point]:
    """Narrow the first bracket where the mean difference changes sign, ``steps`` times (whole numbers stay whole)."""
    pts = list(pts)
    for _ in range(steps):
        pts.sort(key=lambda q: q.value)
        pair = next(((a, b) for a, b in zip(pts, pts[1:]) if sign(a.mean) * sign(b.mean) < 0), None)
        if pair is None:
            break
        mid = (pair[0].value + pair[1].value) / 2
        if whole:
            mid = float(math.floor(mid))
            if mid <= pair[0].value:  # neighbours: nothing in between
                break
        ev.run([(path, mid)], n)
        pts.append(ev.point(path, mid, name, base))
    return sorted(pts, key=lambda q: q.value)
