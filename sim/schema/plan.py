"""The plan file of ``iopsim plan``: levers, service targets, an objective and a budget.

A plan file names a base scenario and asks for the best setting of a few
integer *decisions* (levers) that meets every *constraint* (a target on a KPI,
met with the stated confidence) and minimises or maximises an *objective*
KPI.  A lever may move several scenario fields together::

    decisions:
      evening_groups:
        range: [1, 3]
        set:
          stages.iop.tracks.evening.groups: value             # the lever's value
          staff.roles.counselor.teams.1.headcount: value       # one late counselor per group
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from iopsim.schema.base import FieldError, FrozenModel, NotBool
from iopsim.schema.limits import limit, over

class Linear(FrozenModel):
    """``times * value + plus``: a field that moves in step with the lever."""

    times: Annotated[float, NotBool] = 1.0
    plus: Annotated[float, NotBool] = 0.0
    integer: bool = True
    """Round the result to a whole number (headcounts, groups, places)."""


class PerLevel(FrozenModel):
    """One value per level of the lever, in the order of its levels (any YAML value: a list of days, a name)."""

    values: list[Any] = Field(min_length=1)


Setter = Literal["value"] | Linear | PerLevel


class Decision(FrozenModel):
    """An integer lever: its levels and the scenario fields it sets."""

    label: str | None = None
    """How sentences name it ("day counselors"); the decision's name with spaces by default."""
    range: tuple[Annotated[int, NotBool], Annotated[int, NotBool]] | None = None
    """Inclusive whole-number range [low, high]."""
    values: list[Annotated[int, NotBool]] | None = Field(default=None, min_length=1)
    """Explicit levels, ascending, instead of a range."""
    set: dict[str, Setter] = Field(min_length=1)
    """Dotted scenario path -> ``value`` (the lever's value), ``{times, plus}``, or ``{values: [...]}``."""
    resource: bool = True
    """More of it never lengthens a wait or loses a patient (headcount, groups, places): used to prune."""

    @model_validator(mode="after")
    def _levels(self):
        if (self.range is None) == (self.values is None):
            raise ValueError("give either range: [low, high] or values: [...]")
        if self.range is not None and self.range[0] > self.range[1]:
            raise FieldError("range", f"low must not exceed high (got {self.range[0]} > {self.range[1]})")
        count = self.range[1] - self.range[0] + 1 if self.range is not None else len(self.values)
        if count > limit("plans"):  # checked before the levels are listed
            raise FieldError("range" if self.range is not None else "values", "levels: " + over("plans", count))
        if self.values is not None and list(self.values) != sorted(set(self.values)):
            raise FieldError("values", "levels must be distinct and ascending")
        n = len(self.levels())
        for path, s in self.set.items():
            if isinstance(s, PerLevel) and len(s.values) != n:
                raise FieldError(f"set.{path}.values", f"needs one value per level ({n}), got {len(s.values)}")
        return self

    def levels(self) -> list[int]:
        if self.values is not None:
            return list(self.values)
        return list(range(self.range[0], self.range[1] + 1))

    def field_values(self, level: int) -> dict[str, Any]:
        """The scenario fields this lever sets at ``level``."""
        out: dict[str, Any] = {}
        for path, s in self.set.items():
            if s == "value":
                out[path] = level
            elif isinstance(s, Linear):
                v = s.times * level + s.plus
                out[path] = int(round(v)) if s.integer else v
            else:
                out[path] = s.values[self.levels().index(level)]
        return out


class Constraint(FrozenModel):
    """A target on a KPI's mean: ``min`` (at least) or ``max`` (at most), met with the plan's confidence."""

    kpi: str
    min: Annotated[float, NotBool] | None = None
    max: Annotated[float, NotBool] | None = None
    tolerance: Annotated[float, Field(ge=0), NotBool] = 0.0
    """Accept a plan whose KPI is shown to be within ``tolerance`` of the target (an indifference zone)."""
    monotone: bool | None = None
    """More of every resource lever never makes this target harder to meet; default: true for
    waits, admissions within N days, losses and waitlists, false for anything else."""
    label: str | None = None

    @model_validator(mode="after")
    def _one(self):
        if (self.min is None) == (self.max is None):
            raise ValueError("give either min: (at least) or max: (at most)")
        return self

    @property
    def threshold(self) -> float:
        return self.min if self.min is not None else self.max

    @property
    def sense(self) -> str:
        return ">=" if self.min is not None else "<="

    def is_monotone(self) -> bool:
        if self.monotone is not None:
            return self.monotone
        return monotone_in_resources(self.kpi, self.sense)


def monotone_in_resources(kpi: str, sense: str) -> bool:
    """KPIs that more staff, groups or places can only improve, in the direction a target asks for.

    Under common random numbers the same patients arrive whatever the plan, and
    more capacity never admits anyone later (tested for the stages); so shares
    admitted within N days only rise and waits, losses and waitlists only fall.
    """
    if sense == ">=":
        return kpi.startswith("referral_admitted_within_")
    falling = ("referral_lost_", "referral_to_admission_", "referral_share_admitted_waiting_over_")
    return (kpi.startswith(falling) or "_admitted_wait_" in kpi or "_waitlist_" in kpi
            or kpi.endswith(("_share_lost_waiting", "_reneged")))


OBJECTIVE_ALIASES = {
    "total_cost": ("cost_total", "min"),
    "cost_per_completed_program": ("cost_per_completed_program", "min"),
    "completions": ("programs_completed", "max"),
    "margin": ("margin_total", "max"),
}


class Objective(FrozenModel):
    """What the recommended plan is best at: ``minimize`` or ``maximize`` a KPI's mean."""

    minimize: str | None = None
    maximize: str | None = None
    indifference: Annotated[float, Field(gt=0), NotBool] | None = None
    """Differences smaller than this (in the KPI's unit) do not matter; default 1 % of the best plan's mean."""
    monotone: bool | None = None
    """The objective never improves with more of every resource lever (default: true for total cost).
    Plans above a feasible plan are then never simulated."""

    @model_validator(mode="after")
    def _one(self):
        if (self.minimize is None) == (self.maximize is None):
            raise ValueError("give either minimize: KPI or maximize: KPI")
        return self

    @property
    def kpi(self) -> str:
        name = self.minimize if self.minimize is not None else self.maximize
        return OBJECTIVE_ALIASES.get(name, (name,))[0]

    @property
    def goal(self) -> str:
        return "min" if self.minimize is not None else "max"

    def is_monotone(self) -> bool:
        if self.monotone is not None:
            return self.monotone
        return self.goal == "min" and self.kpi in ("cost_total", "cost_labour")


class Replications(FrozenModel):
    """The replication budget: ``first`` for every plan, doubling up to ``max`` for plans still undecided."""

    first: Annotated[int, Field(ge=2), NotBool] = 5
    max: Annotated[int, Field(ge=2), NotBool] = 40
    total: Annotated[int, Field(ge=2), NotBool] | None = None
    """Stop adding replications once this many have been spent across all plans."""

    @model_validator(mode="after")
    def _order(self):
        if self.max < self.first:
            raise FieldError("max", f"must be at least first ({self.first}), got {self.max}")
        if self.max > limit("replications"):
            raise FieldError("max", over("replications", self.max))
        return self


class Search(FrozenModel):
    """How candidates are chosen: every plan (``grid``), or Optuna's TPE proposing ``trials`` plans."""

    method: Literal["auto", "grid", "optuna"] = "auto"
    trials: Annotated[int, Field(ge=1), NotBool] = 60
    grid_max: Annotated[int, Field(ge=1), NotBool] = 500
    """``auto`` enumerates spaces up to this many plans and searches larger ones."""


class PlanFile(FrozenModel):
    base: str
    """The scenario to size (path relative to the plan file)."""
    name: str | None = None
    set: dict[str, Any] = Field(default_factory=dict)
    """Changes to the base that hold for every plan (dotted path -> value): the site's expected
    referral volume, say.  They are written into the recommended scenario too."""
    seed: Annotated[int, Field(ge=0), NotBool] = 0
    confidence: Annotated[float, Field(gt=0.5, lt=1.0), NotBool] = 0.95
    decisions: dict[str, Decision] = Field(min_length=1)
    constraints: list[Constraint] = Field(min_length=1)
    objective: Objective
    replications: Replications = Field(default_factory=Replications)
    search: Search = Field(default_factory=Search)

    @model_validator(mode="after")
    def _bounded(self):
        size = self.space_size()
        grid = self.search.method == "grid" or (self.search.method == "auto" and size <= self.search.grid_max)
        if grid and size > limit("plans"):
            raise FieldError("decisions", f"the grid has {size:,} plans: " + over("plans", size))
        if self.search.trials > limit("plans"):
            raise FieldError("search.trials", over("plans", self.search.trials))
        paths: dict[str, str] = {p: "set" for p in self.set}
        for name, d in self.decisions.items():
            for p in d.set:
                if p in paths:
                    by = "the plan's own set:" if paths[p] == "set" else f"decision {paths[p]!r}"
                    raise FieldError(f"decisions.{name}.set.{p}", f"already set by {by}")
                paths[p] = name
        return self

    def space_size(self) -> int:
        size = 1
        for d in self.decisions.values():
            size *= len(d.levels())
        return size

    def label(self, name: str) -> str:
        d = self.decisions[name]
        return d.label or name.replace("_", " ")
