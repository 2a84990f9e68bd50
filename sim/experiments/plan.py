"""``iopsim plan``: the best plan of levers that meets every service target, with its confidence.

The procedure (simulation optimisation under common random numbers):

1. **Candidates.**  Every combination of the decisions' levels (``grid``), or,
   for large spaces, the plans Optuna's TPE sampler proposes from screening
   results (``optuna``).
2. **Order and pruning.**  Plans are visited in layers of equal total lever
   level.  When the objective cannot improve with more resources (total cost),
   layers go upwards and a plan with at least as much of every resource lever
   as a feasible plan is *dominated*: never simulated.  Otherwise layers go
   downwards, and a plan with at most as much of every resource as a plan that
   misses a monotone target is *ruled out*: never simulated.  A monotone target
   met by a smaller plan is met by every larger one without a test.
3. **Sequential feasibility.**  Each plan gets ``replications.first``
   replications, then twice as many, up to ``replications.max``, until every
   target is met or one is missed at the stated confidence
   (:mod:`iopsim.analysis.planning` has the tests and their Bonferroni levels).
4. **Selection.**  Feasible plans are screened on the objective with paired
   differences (same replication numbers), and the survivors get the
   replications the Nelson-Matejcik procedure needs to pick the best within the
   indifference zone.

Every replication ``r`` of every plan uses the same seed and replication
number, so plans are compared on the same patients.  Each finished task is
stored as a Parquet part in ``evaluations/``; the procedure is deterministic
given those results, so re-running the same command replays it from the
stored parts and simulates only what is missing.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.analysis.planning import at_least, looks, replications_to_select, screen, verdict, violation
from iopsim.analysis.stats import mean_ci
from iopsim.errors import IopsimError, ScenarioError
from iopsim.experiments.executor import Executor, Task, read_part, read_parts, write_part
from iopsim.experiments.replications import kpi_names, unknown_kpi
from iopsim.files import atomic_write_text, claim_results_folder, make_folder, manifest, safe_name
from iopsim.schema.plan import PlanFile
from iopsim.schema.scenario import Scenario, has_path, read_with_base, resolve_raw, set_path, validate_raw, with_assumption

log = logging.getLogger(__name__)

#: KPIs kept for every plan besides the targets and the objective (the plan table and the figure).
SHOWN = ("referral_admitted_within_14_days", "referral_lost_before_admission", "cost_total",
         "cost_per_completed_program", "programs_completed")

Progress = Callable[[int, int, str], None]


@dataclass
class Candidate:
    """One plan: a level per decision, and what the procedure learned about it."""

    id: int
    levels: tuple[int, ...]
    index: tuple[int, ...]
    scenario: Scenario | None = None
    values: dict[str, list[float]] = field(default_factory=dict)
    n: int = 0
    status: str = "pending"
    reason: str = ""
    targets: list[str] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        return self.n > 0

    def array(self, kpi: str, n: int | None = None) -> np.ndarray:
        v = np.asarray(self.values.get(kpi, []), dtype=float)
        return v if n is None else v[:n]


@dataclass
class PlanResults:
    """A finished (or resumed) plan search: the recommendation in words and every plan it decided.

    ``plans`` has one row per plan: the decisions' levels, ``status``
    (feasible, infeasible, undecided, dominated, ruled out), ``reason``, the
    replications spent and each target's and the objective's mean with its CI.
    ``recommended`` holds the best feasible plan's levels and estimates (or is
    ``None``, and then ``closest`` is the plan nearest to meeting every target);
    ``scenario_file`` is ``recommended.yaml``, a scenario that extends the base.
    ``sentence`` is filled in once the outputs are written (see ``iopsim.plan``).
    """

    folder: Path
    plans: pd.DataFrame
    recommended: dict | None
    closest: dict | None
    evaluations: int
    replications: int
    grid_replications: int
    elapsed_s: float
    summary: dict = field(repr=False, default_factory=dict)
    sentence: str = ""

    @property
    def scenario_file(self) -> Path | None:
        path = self.folder / "recommended.yaml"
        return path if path.exists() else None


# --------------------------------------------------------------------------- loading


def load_plan(path: Path) -> tuple[PlanFile, dict, dict, Path, str]:
    """Validate a plan file and its base; returns (plan, base with defaults, base as written, base path, hash)."""
    path = Path(path)
    plan, raw, base_path = read_with_base(path, PlanFile)
    written = resolve_raw(base_path)
    for p, v in plan.set.items():
        set_path(written, p.split("."), v, f"{path}: set")
    base = validate_raw(copy.deepcopy(written), f"{path}: set" if plan.set else str(base_path))
    full = base.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped = base.model_dump(mode="json", by_alias=True)
    for name, d in plan.decisions.items():
        for p in d.set:
            if not has_path(dumped, p):
                raise ScenarioError(str(path), f"decisions.{name}.set.{p}", f"no such field in the base scenario {plan.base}")
    known = kpi_names(base)
    money = "" if base.payers else " (revenue and margin KPIs need payers in the base scenario)"
    for i, c in enumerate(plan.constraints):
        if c.kpi not in known:
            raise ScenarioError(str(path), f"constraints.{i}.kpi", unknown_kpi(c.kpi, known)
                                + (money if c.kpi.startswith(("margin_", "revenue_", "break_even_")) else ""))
    if plan.objective.kpi not in known:
        which = "minimize" if plan.objective.minimize is not None else "maximize"
        raise ScenarioError(str(path), f"objective.{which}", unknown_kpi(plan.objective.kpi, known)
                            + "; or total_cost, cost_per_completed_program, completions, margin"
                            + (money if plan.objective.kpi.startswith(("margin_", "revenue_")) else ""))
    digest = hashlib.sha256(json.dumps({"plan": raw, "base": full}, sort_keys=True, default=str).encode()).hexdigest()
    return plan, full, written, base_path, digest[:16]


def plan_fields(plan: PlanFile, levels: tuple[int, ...]) -> dict[str, object]:
    """The scenario fields a plan sets: dotted path -> value."""
    out: dict[str, object] = {}
    for (name, d), level in zip(plan.decisions.items(), levels):
        out.update(d.field_values(level))
    return out


def plan_scenario(plan: PlanFile, full: dict, levels: tuple[int, ...], source: str) -> Scenario:
    raw = copy.deepcopy(full)
    fields = plan_fields(plan, levels)
    try:
        for p, v in fields.items():
            set_path(raw, p.split("."), v, source)
        sc = validate_raw(raw, source)
    except ScenarioError as exc:
        at = ", ".join(f"{n}={lv}" for n, lv in zip(plan.decisions, levels))
        raise ScenarioError(source, exc.field, f"{exc.message} (at plan {at})") from None
    return sc.model_copy(update={"name": f"{sc.name}-plan"})


def override_document(written: dict, full: dict, fields: dict[str, object]) -> dict:
    """The smallest mapping that, merged over the base file by ``extends``, sets ``fields``.

    ``extends`` merges mappings key by key but replaces lists whole, so a field
    inside a list (a staff team's headcount) is written as the whole list.
    """
    doc: dict = {}
    for p, value in fields.items():
        parts = p.split(".")
        source = written if has_path(written, p) else full
        node = source
        prefix: list[str] = []
        for part in parts:
            if isinstance(node, list):
                break
            prefix.append(part)
            node = node[part]
        if len(prefix) == len(parts) and not isinstance(node, list):
            _put(doc, parts, value)
            continue
        whole = copy.deepcopy(_get(doc, prefix) if _has(doc, prefix) else node)
        rest = parts[len(prefix):]
        set_path({"_": whole}, ["_", *rest], value, "plan")
        _put(doc, prefix, whole)
    return doc


def _get(tree, parts):
    for p in parts:
        tree = tree[int(p)] if isinstance(tree, list) else tree[p]
    return tree


def _has(tree, parts) -> bool:
    try:
        _get(tree, parts)
        return True
    except (KeyError, IndexError, TypeError, ValueError):
        return False


def _put(tree: dict, parts: list[str], value) -> None:
    for p in parts[:-1]:
        tree = tree.setdefault(p, {})
    tree[parts[-1]] = value


# --------------------------------------------------------------------------- the procedure


class Planner:
    """Runs the procedure of the module docstring for one plan file, on one executor."""

    def __init__(self, plan: PlanFile, full: dict, source: str, folder: Path, executor: Executor, total: int,
                 progress: Progress | None = None, posterior=None):
        self.plan, self.full, self.source, self.folder = plan, full, source, folder
        self.posterior = posterior  # a calibration's PosteriorDraws: each replication draws its free parameters
        self.executor = executor
        self.progress = progress
        self.kpis = list(dict.fromkeys([*(c.kpi for c in plan.constraints), plan.objective.kpi, *SHOWN]))
        self.names = list(plan.decisions)
        self.levels = [d.levels() for d in plan.decisions.values()]
        self.resource = tuple(d.resource for d in plan.decisions.values())
        self.looks = looks(plan.replications.first, plan.replications.max)
        self.alpha = 1.0 - plan.confidence
        self.candidates: dict[tuple[int, ...], Candidate] = {}
        self.spent = 0
        self.simulated_now = 0
        self.total = total  # plans the progress display counts: the grid, or the search's trials
        self.stored: dict[str, pd.DataFrame] = {}  # read by load_stored() once the folder is claimed

    def decided(self) -> int:
        """Plans whose fate is known (feasible, infeasible, undecided, pruned)."""
        return sum(1 for c in self.candidates.values() if c.status != "pending")

    # ---------------------------------------------------------------- bookkeeping

    def load_stored(self) -> None:
        """Read the parts already in ``evaluations/``, by task key (a resumed plan replays them)."""
        df = read_parts(self.folder / "evaluations", "plan-*.parquet")
        self.stored = {} if not len(df) else {
            self._key(int(pid), int(first)): g for (pid, first), g in df.groupby(["plan_id", "task_first"])}

    @staticmethod
    def _key(plan_id: int, first: int) -> str:
        return f"plan-{plan_id:06d}-r{first:05d}"

    def candidate(self, levels: tuple[int, ...]) -> Candidate:
        if levels not in self.candidates:
            index = tuple(lv.index(x) for lv, x in zip(self.levels, levels))
            pid = int(np.ravel_multi_index(index, [len(lv) for lv in self.levels]))
            self.candidates[levels] = Candidate(pid, levels, index, targets=["open"] * len(self.plan.constraints))
        return self.candidates[levels]

    def _budget_left(self) -> bool:
        total = self.plan.replications.total
        return total is None or self.spent < total

    def simulate(self, wanted: list[tuple[Candidate, int]], phase: str) -> None:
        """Bring each candidate to the given number of replications (stored parts are read, not re-run)."""
        tasks = []
        for c, n in wanted:
            if c.n >= n:
                continue
            key = self._key(c.id, c.n)
            if key in self.stored:  # replayed: it counts against the budget as when it ran
                self.spent += len(self.stored[key])
                self._absorb(c, self.stored[key])
                continue
            if c.scenario is None:
                c.scenario = plan_scenario(self.plan, self.full, c.levels, self.source)
            tags = {"plan_id": c.id, "task_first": c.n}
            tasks.append(Task(key, c.scenario, self.plan.seed, c.n, n - c.n, tags, self.posterior))
            self.spent += n - c.n
        by_id = {c.id: c for c, _ in wanted}
        done = 0

        def handle(task: Task, res: dict) -> None:
            nonlocal done
            c = by_id[task.tags["plan_id"]]
            if res["error"] is not None:
                c.status, c.reason = "error", res["error"]
                log.warning("plan %d failed: %s", c.id, res["error"])
            else:
                df = pd.DataFrame(res["rows"])[["plan_id", "task_first", "replication", *self.kpis]]
                write_part(self.folder / "evaluations" / f"{task.key}.parquet", df)
                self._absorb(c, df)
                self.simulated_now += task.count
            done += 1
            if self.progress:
                self.progress(self.decided(), self.total, f"{phase}, {self.spent} replications")

        # stored parts may come in several pieces for one candidate: keep reading while they exist
        self.executor.map(tasks, handle)
        again = [(c, n) for c, n in wanted if c.status != "error" and c.n < n and self._key(c.id, c.n) in self.stored]
        if again:
            self.simulate(again, phase)

    def _absorb(self, c: Candidate, df: pd.DataFrame) -> None:
        df = df.sort_values("replication")
        assert int(df["replication"].iloc[0]) == c.n, "parts must extend a plan's replications in order"
        for k in self.kpis:
            c.values.setdefault(k, []).extend(df[k].astype(float).tolist())
        c.n += len(df)

    # ---------------------------------------------------------------- tests

    def judge(self, c: Candidate, plans: int) -> None:
        """Update a candidate's target verdicts from its replications (the levels of the module docstring)."""
        a_pass = self.alpha / (plans * len(self.looks))
        a_fail = self.alpha / (len(self.plan.constraints) * len(self.looks))
        for i, con in enumerate(self.plan.constraints):
            if c.targets[i] in ("met", "implied"):
                continue
            c.targets[i] = verdict(c.array(con.kpi), con.sense, con.threshold, con.tolerance, a_pass, a_fail)
        missed = [i for i, t in enumerate(c.targets) if t == "missed"]
        if missed:
            c.status = "infeasible"
            c.reason = "misses " + "; ".join(self._target_text(i) for i in missed)
        elif all(t in ("met", "implied") for t in c.targets):
            c.status = "feasible"
            c.reason = ""

    def _target_text(self, i: int) -> str:
        con = self.plan.constraints[i]
        return f"target {i + 1} ({con.kpi} {con.sense} {con.threshold:g})"

    def evaluate(self, layer: list[Candidate], plans: int) -> None:
        """Sequential feasibility for a set of mutually incomparable plans."""
        for n in self.looks:
            open_ = [c for c in layer if c.status == "pending"]
            if not open_:
                return
            if not self._budget_left() and all(c.n >= self.looks[0] for c in open_):
                for c in open_:
                    c.status, c.reason = "undecided", f"replication budget spent at {c.n} replications"
                return
            self.simulate([(c, n) for c in open_], f"feasibility ({n} replications)")
            for c in open_:
                if c.status == "pending":
                    self.judge(c, plans)
        for c in layer:
            if c.status == "pending":
                open_targets = [self._target_text(i) for i, t in enumerate(c.targets) if t == "open"]
                c.status = "undecided"
                c.reason = f"not decided in {c.n} replications: {'; '.join(open_targets)}"

    def prune(self, c: Candidate, upward: bool) -> None:
        """Decide a plan from the ones already decided, without simulating it, where monotonicity allows."""
        cons = self.plan.constraints
        decided = [o for o in self.candidates.values() if o is not c and o.simulated]
        if upward and self.plan.objective.is_monotone():
            for f in decided:
                if f.status == "feasible" and at_least(c.levels, f.levels, self.resource):
                    c.status, c.reason = "dominated", f"plan {f.id} meets every target with no more of any lever"
                    return
        for o in decided:
            if o.status != "infeasible":
                continue
            for i, con in enumerate(cons):
                if o.targets[i] == "missed" and con.is_monotone() and at_least(o.levels, c.levels, self.resource):
                    c.status = "ruled out"
                    c.reason = f"plan {o.id} misses {self._target_text(i)} with at least as much of every lever"
                    return
        for i, con in enumerate(cons):
            if con.is_monotone() and any(o.targets[i] in ("met", "implied") and at_least(c.levels, o.levels, self.resource)
                                         for o in decided):
                c.targets[i] = "implied"

    def run_grid(self, candidates: list[Candidate]) -> None:
        upward = self.plan.objective.is_monotone()
        layers: dict[int, list[Candidate]] = {}
        for c in candidates:
            layers.setdefault(sum(c.index), []).append(c)
        for s in sorted(layers, reverse=not upward):
            layer = sorted(layers[s], key=lambda c: c.id)
            for c in layer:
                if c.status == "pending":
                    self.prune(c, upward)
            self.evaluate(layer, len(candidates))

    def run_optuna(self) -> list[Candidate]:
        """Let Optuna's TPE propose plans, screened with ``replications.first`` each; returns them."""
        try:
            import optuna
        except ImportError:  # pragma: no cover - optuna is a dependency
            raise IopsimError("search: optuna needs the 'optuna' package: pip install optuna") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        cons = self.plan.constraints

        # Constraint values (<= 0: met) guide TPE towards feasible plans; Optuna 5 takes them on the trial.
        on_trial = hasattr(optuna.trial.Trial, "set_constraint")
        extra = {} if on_trial else {"constraints_func": lambda trial: trial.user_attrs["violations"]}
        sampler = optuna.samplers.TPESampler(seed=self.plan.seed, multivariate=True, **extra)
        study = optuna.create_study(direction="minimize" if self.plan.objective.goal == "min" else "maximize",
                                    sampler=sampler)
        seen: list[Candidate] = []
        batch = max(1, self.executor.jobs)
        trials = self.plan.search.trials
        while len(seen) < trials and self._budget_left():
            asked = []
            for _ in range(min(batch, trials - len(seen))):
                t = study.ask()
                levels = tuple(t.suggest_categorical(n, lv) for n, lv in zip(self.names, self.levels))
                asked.append((t, self.candidate(levels)))
            fresh = list({c.id: c for _, c in asked if c.n == 0 and c.status == "pending"}.values())
            self.simulate([(c, self.looks[0]) for c in fresh], "search")
            for t, c in asked:
                if c.status == "error":
                    study.tell(t, state=optuna.trial.TrialState.FAIL)
                    continue
                obj = float(np.nanmean(c.array(self.plan.objective.kpi))) if c.n else math.nan
                viol = [violation(float(np.nanmean(c.array(con.kpi))), con.sense, con.threshold) for con in cons]
                if on_trial:
                    for i, v in enumerate(viol):
                        t.set_constraint(f"target {i + 1}", v)
                else:
                    t.set_user_attr("violations", viol)
                study.tell(t, obj if math.isfinite(obj) else None,
                           state=optuna.trial.TrialState.COMPLETE if math.isfinite(obj) else optuna.trial.TrialState.FAIL)
                if c not in seen:
                    seen.append(c)
        return seen

    # ---------------------------------------------------------------- selection

    def select(self) -> tuple[Candidate | None, dict]:
        goal = self.plan.objective.goal
        kpi = self.plan.objective.kpi
        feasible = [c for c in self.candidates.values() if c.status == "feasible"]
        info = {"feasible": len(feasible), "screened_out": [], "survivors": [], "required": None, "capped": False,
                "indifference": None}
        if not feasible:
            return None, info
        if len(feasible) == 1:
            info["survivors"] = [feasible[0].id]
            return feasible[0], info
        n0 = min(c.n for c in feasible)
        vals = {c.id: c.array(kpi, n0) for c in feasible}
        keep = screen(vals, goal, self.alpha / 2)
        info["screened_out"] = [c.id for c in feasible if c.id not in keep]
        for c in feasible:
            if c.id not in keep:
                c.reason = "feasible; beaten on the objective by another feasible plan"
        survivors = [c for c in feasible if c.id in keep]

        def score(c: Candidate, n: int) -> float:
            """The objective's mean; undefined (no completed program to divide by, say) ranks last."""
            m = float(np.nanmean(c.array(kpi, n))) if np.isfinite(c.array(kpi, n)).any() else math.nan
            return m if math.isfinite(m) else (math.inf if goal == "min" else -math.inf)

        best_mean = (min if goal == "min" else max)(score(c, n0) for c in survivors)
        delta = self.plan.objective.indifference or (max(abs(best_mean) * 0.01, 1e-9) if math.isfinite(best_mean)
                                                     else 1e-9)
        info["indifference"] = delta
        need = n0
        undefined = any(not np.all(np.isfinite(vals[c.id])) for c in survivors)
        info["objective_undefined"] = undefined  # then no replications are added: the procedure needs numbers
        if len(survivors) > 1 and not undefined:
            need = replications_to_select({c.id: vals[c.id] for c in survivors}, delta, self.alpha / 2)
            cap = self.plan.replications.max
            if need > cap:
                info["capped"] = True
                need = cap
            need = max(need, max(c.n for c in survivors))
            self.simulate([(c, need) for c in survivors], "selection")
            need = min(c.n for c in survivors)
        info["required"] = need
        info["survivors"] = [c.id for c in survivors]
        means = {c.id: score(c, need) for c in survivors}
        best_id = (min if goal == "min" else max)(means, key=lambda i: (means[i], -i) if goal == "max" else (means[i], i))
        best = next(c for c in survivors if c.id == best_id)
        for c in survivors:
            if c is not best:
                c.reason = "feasible; not the best on the objective"
        return best, info

    def closest(self) -> tuple[Candidate | None, int | None]:
        """With no feasible plan: the simulated plan nearest to meeting every target, and its worst target's index."""
        sims = [c for c in self.candidates.values() if c.simulated]
        if not sims:
            return None, None
        cons = self.plan.constraints

        def worst(c):
            v = [violation(float(np.nanmean(c.array(con.kpi))), con.sense, con.threshold) for con in cons]
            return max(v), int(np.argmax(v))

        best = min(sims, key=lambda c: (worst(c)[0], c.id))
        return best, worst(best)[1]


# --------------------------------------------------------------------------- running a plan file


#: The feasible plans, best first, that the robustness check re-runs beside the recommended one.
ROBUST_RIVALS = 4


def recommendation_robustness(planner: Planner, best: Candidate) -> pd.DataFrame:
    """The recommended plan, and its closest feasible rivals, at both ends of each declared assumption.

    For each assumption the base declares (``uncertain:``) and each end of its
    range, the recommended plan and up to ``ROBUST_RIVALS`` other feasible
    plans (the best on the objective first) are simulated on replications
    0..n-1 with the plan's seed -- the same patients as the search -- n being
    the screening replications doubled.  Each plan's targets are judged at the
    plan's confidence, and ``best_here`` marks the plan that meets every target
    with the best objective at that end.  The runs are stored in
    ``evaluations/``, so a re-run reads them back.  One row per (assumption,
    end, plan).
    """
    plan = planner.plan
    sc = best.scenario or plan_scenario(plan, planner.full, best.levels, planner.source)
    if not sc.uncertain:
        return pd.DataFrame()
    sign = 1.0 if plan.objective.goal == "min" else -1.0
    feasible = [c for c in planner.candidates.values() if c.status == "feasible" and c is not best]
    feasible.sort(key=lambda c: sign * float(np.mean(c.array(plan.objective.kpi))))
    plans = [best, *feasible[:ROBUST_RIVALS]]
    n = min(plan.replications.max, 2 * plan.replications.first)
    alpha = 1.0 - plan.confidence
    tasks, got = [], {}
    for i, (path, a) in enumerate(sc.uncertain.items()):
        for end, value in zip(("low", "high"), a.range):
            for c in plans:
                key = f"robust-{i:03d}-{end}-plan-{c.id:06d}"
                part = planner.folder / "evaluations" / f"{key}.parquet"
                if part.exists():
                    got[(path, end, c.id)] = read_part(part)
                    continue
                base_sc = c.scenario or plan_scenario(plan, planner.full, c.levels, planner.source)
                moved = with_assumption(base_sc, path, value, f"{planner.source}: uncertain.{path}")
                tasks.append(Task(key, moved, plan.seed, 0, n, {"path": path, "end": end, "plan_id": c.id},
                                  planner.posterior))

    def handle(task: Task, res: dict) -> None:
        if res["error"] is not None:
            raise IopsimError(f"robustness of the recommended plan: {task.tags['path']} at its {task.tags['end']} "
                              f"end: {res['error']}")
        df = pd.DataFrame(res["rows"])[["replication", *planner.kpis]]
        write_part(planner.folder / "evaluations" / f"{task.key}.parquet", df)
        got[(task.tags["path"], task.tags["end"], task.tags["plan_id"])] = df

    planner.executor.map(tasks, handle)
    rows = []
    for path, a in sc.uncertain.items():
        for end, value in zip(("low", "high"), a.range):
            here = []
            for c in plans:
                df = got[(path, end, c.id)]
                row = {"assumption": path, "note": a.note or "", "source": a.source or "", "end": end, "value": value,
                       "plan_id": c.id, "recommended": c is best, "levels": json.dumps(dict(zip(planner.names, c.levels))),
                       "replications": len(df)}
                ok = True
                for i, con in enumerate(plan.constraints):
                    x = df[con.kpi].to_numpy(dtype=float)
                    m, _sd, lo, hi, _n = mean_ci(x, plan.confidence)
                    v = verdict(x, con.sense, con.threshold, con.tolerance, alpha, alpha)
                    ok = ok and v == "met"
                    row.update({f"target_{i + 1}": m, f"target_{i + 1}:ci_low": lo, f"target_{i + 1}:ci_high": hi,
                                f"target_{i + 1}:verdict": v})
                m, _sd, lo, hi, _n = mean_ci(df[plan.objective.kpi].to_numpy(dtype=float), plan.confidence)
                row.update({"objective": m, "objective:ci_low": lo, "objective:ci_high": hi, "meets_every_target": ok})
                here.append(row)
            winners = [r for r in here if r["meets_every_target"]]
            top = min(winners, key=lambda r: sign * r["objective"])["plan_id"] if winners else None
            for r in here:
                r["best_here"] = r["plan_id"] == top
            rows.extend(here)
    return pd.DataFrame(rows)


def execute_plan(plan_path: Path, out_dir: Path | None = None, jobs: int = 1, scheduler: str | None = None,
                 progress: Progress | None = None, robust: bool = False, posterior=None) -> PlanResults:
    """Run (or resume) a plan file; writes the plan folder and returns what it found.

    With ``robust``, the recommended plan is also simulated at both ends of
    every assumption the base declares (see :func:`recommendation_robustness`).
    With ``posterior`` (a calibration's :class:`~iopsim.experiments.calibrate.PosteriorDraws`)
    every replication of every plan draws the calibration's free parameters from
    its posterior, so the confidence of the answer includes what the published
    figures leave unknown; the same replication draws the same values in every
    plan, so plans are still compared on common random numbers.
    """
    with Executor(jobs, scheduler) as executor:
        return _execute(Path(plan_path), out_dir, executor, progress, robust, posterior)


def _check_plan_posterior(plan: PlanFile, full: dict, posterior, source: str, robust: bool) -> None:
    """The posterior must fit the base, and no lever (or robustness end) may set a path it draws."""
    if posterior is None:
        return
    from iopsim.experiments.robust import check_posterior_paths

    fields = {f"decisions.{n}.set.{p}": p for n, d in plan.decisions.items() for p in d.set}
    fields.update({f"set.{p}": p for p in plan.set})
    if robust:
        fields.update({f"uncertain.{p}": p for p in (full.get("uncertain") or {})})
    check_posterior_paths(posterior, fields, source)
    posterior.scenario(validate_raw(full, source), 0, plan.seed)  # a base without the posterior's fields fails here


def _execute(plan_path: Path, out_dir: Path | None, executor: Executor, progress: Progress | None,
             robust: bool = False, posterior=None) -> PlanResults:
    plan, full, written, base_path, digest = load_plan(plan_path)
    _check_plan_posterior(plan, full, posterior, str(plan_path), robust)
    if posterior is not None:  # stored evaluations made without (or with another) posterior are not reused
        digest = hashlib.sha256(f"{digest}:{posterior.digest()}".encode()).hexdigest()[:16]
    name = plan.name or plan_path.stem
    folder = Path(out_dir) if out_dir is not None else Path("outputs") / f"plan-{safe_name(name, 'plan')}"
    method = plan.search.method
    if method == "auto":
        method = "grid" if plan.space_size() <= plan.search.grid_max else "optuna"
    planner = Planner(plan, full, str(plan_path), folder, executor,
                      plan.space_size() if method == "grid" else plan.search.trials, progress, posterior)
    grid = [planner.candidate(tuple(lv)) for lv in itertools.product(*planner.levels)] if method == "grid" else None
    if grid is not None:
        for c in grid:  # every plan validated before anything runs
            c.scenario = plan_scenario(plan, full, c.levels, str(plan_path))
    mpath = folder / "manifest.json"
    claim_results_folder(folder, "plan", digest, "plan file")
    make_folder(folder)
    atomic_write_text(mpath, json.dumps(manifest(
        kind="plan", plan_file=str(plan_path), base=str(base_path), plan_hash=digest, seed=plan.seed,
        confidence=plan.confidence, method=method, jobs=executor.jobs, scheduler=executor.scheduler,
        references=full.get("references", {}),
        posterior=posterior.describe() if posterior is not None else None,
    ), indent=2, default=str) + "\n")
    planner.load_stored()
    t0 = time.perf_counter()
    if grid is not None:
        planner.run_grid(grid)
        plans_tested = len(grid)
    else:
        seen = planner.run_optuna()
        plans_tested = len(seen)
        # the search's screening replications are the first look: the plans it found carry on from there
        planner.run_grid(seen)
    best, selection = planner.select()
    closest, binding = (None, None) if best is not None else planner.closest()
    elapsed = time.perf_counter() - t0
    table = plan_table(planner)
    grid_reps = plan.space_size() * _grid_replications(planner, selection)
    rec = _describe(planner, best) if best is not None else None
    near = _describe(planner, closest) if closest is not None else None
    if rec is not None:
        write_recommended(folder, plan, full, written, base_path, best.levels, plan_path, digest)
    robustness = recommendation_robustness(planner, best) if robust and best is not None else pd.DataFrame()
    if len(robustness):
        atomic_write_text(folder / "robustness.csv", robustness.to_csv(index=False))
    elif (folder / "robustness.csv").exists():
        (folder / "robustness.csv").unlink()
    evaluations = sum(1 for c in planner.candidates.values() if c.simulated)
    summary = {
        "name": name, "recommended": rec, "closest": near, "binding": binding, "method": method,
        "plans_in_space": plan.space_size(), "plans_considered": plans_tested, "evaluations": evaluations,
        "replications": int(sum(c.n for c in planner.candidates.values())),
        "grid_replications": grid_reps, "simulated_now": planner.simulated_now, "selection": selection,
        "confidence": plan.confidence, "objective": {"kpi": plan.objective.kpi, "goal": plan.objective.goal},
        "constraints": [c.model_dump() for c in plan.constraints], "decisions": list(plan.decisions),
        "labels": {n: plan.label(n) for n in plan.decisions}, "elapsed_s": elapsed,
        "currency": str((full.get("costs") or {}).get("currency") or "USD"),
        "statuses": {str(k): int(v) for k, v in table["status"].value_counts().items()},
        "max_replications": plan.replications.max,
        "posterior": posterior.describe() if posterior is not None else None,
    }
    atomic_write_text(folder / "plans.csv", table.to_csv(index=False))
    atomic_write_text(folder / "summary.json", json.dumps(summary, indent=2, default=_json) + "\n")
    return PlanResults(folder, table, rec, near, evaluations, summary["replications"], grid_reps, elapsed, summary)


def _json(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    return str(x)


def _grid_replications(planner: Planner, selection: dict) -> int:
    """Replications per plan a full grid needs for the same final confidence: the most any plan got."""
    return max([c.n for c in planner.candidates.values()] + [selection.get("required") or 0, planner.looks[0]])


def _describe(planner: Planner, c: Candidate) -> dict:
    level = planner.plan.confidence
    est = {}
    for k in planner.kpis:
        m, _sd, lo, hi, n = mean_ci(c.array(k), level)
        est[k] = {"mean": m, "low": lo, "high": hi, "n": n}
    return {"id": c.id, "levels": dict(zip(planner.names, c.levels)), "replications": c.n, "estimates": est,
            "fields": plan_fields(planner.plan, c.levels)}


def plan_table(planner: Planner) -> pd.DataFrame:
    """Every plan the procedure decided: its levels, status, replications and KPI estimates with CIs."""
    rows = []
    level = planner.plan.confidence
    for c in sorted(planner.candidates.values(), key=lambda c: c.id):
        row = {"plan_id": c.id, **{f"decision:{n}": lv for n, lv in zip(planner.names, c.levels)},
               "status": c.status if c.status != "pending" else "not evaluated", "reason": c.reason,
               "replications": c.n}
        for k in planner.kpis:
            if c.n:
                m, _sd, lo, hi, _n = mean_ci(c.array(k), level)
            else:
                m = lo = hi = math.nan
            row.update({k: m, f"{k}:ci_low": lo, f"{k}:ci_high": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def write_recommended(folder: Path, plan: PlanFile, full: dict, written: dict, base_path: Path,
                      levels: tuple[int, ...], plan_path: Path, digest: str) -> Path:
    """``recommended.yaml``: a scenario that ``extends`` the base with the recommended levers."""
    import yaml

    fields = {**plan.set, **plan_fields(plan, levels)}
    doc = override_document(written, full, fields)
    rel = os.path.relpath(Path(base_path).resolve(), Path(folder).resolve())
    name = f"{full.get('name', 'scenario')}-recommended"
    head = ["# The plan iopsim recommends for " + str(plan_path) + f" (plan file hash {digest}).",
            "# " + ", ".join(f"{plan.label(n)}: {lv}" for n, lv in zip(plan.decisions, levels)) + ".",
            "# Run it with `iopsim run` or compare it with the base using `iopsim compare`.", ""]
    body = yaml.safe_dump({"extends": rel, "name": name, **doc}, sort_keys=False, allow_unicode=True)
    path = folder / "recommended.yaml"
    atomic_write_text(path, "\n".join(head) + body)
    return path
