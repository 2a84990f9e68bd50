"""Calibration targets, the metrics they name, and the distance a fit minimises.

``calibration/targets.yaml`` lists targets (a value with an absolute tolerance,
or a range), each naming a *metric* computed here from a replication's records.
:func:`calibrate` checks a finished run folder: metrics are computed per
replication and summarised with a 95 % CI; a target is met when the mean lies
within ``target +/- tolerance`` or inside ``range``.
:func:`replication_metrics` and :func:`distance` are what the fit of
:mod:`iopsim.experiments.calibrate` evaluates, from records held in memory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Callable

import numpy as np
from iopsim.lazy import pandas as pd
from pydantic import Field, ValidationError, model_validator

from iopsim.schema.base import FrozenModel
from iopsim.errors import IopsimError, ScenarioError
from iopsim.files import read_manifest
from iopsim.schema.scenario import TREATMENT_STAGES, Scenario, _format_validation_error, read_yaml, validate_raw
from iopsim.analysis.access import admitted_waits, episode_rows, lost_after_assessment, referral_outcomes
from iopsim.analysis.stats import mean_ci
from iopsim.engine.records import Records

STAY_OUTCOMES = ("completed", "dropped_out", "transferred", "terminated", "other", "relapsed")


class Target(FrozenModel):
    id: str
    metric: str
    target: float | None = None
    tolerance: Annotated[float, Field(ge=0)] | None = None
    range: tuple[float, float] | None = None
    description: str = ""
    source: str = ""
    confidence: str = ""

    @model_validator(mode="after")
    def _one_kind(self):
        if (self.target is None) == (self.range is None):
            raise ValueError("give either target (with tolerance) or range")
        if self.target is not None and self.tolerance is None:
            raise ValueError("a target needs a tolerance")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError("range must be [low, high] with low <= high")
        if self.metric not in METRICS:
            raise ValueError(f"unknown metric {self.metric!r}; allowed: {', '.join(sorted(METRICS))}")
        return self

    def met(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if self.range is not None:
            return self.range[0] <= value <= self.range[1]
        return abs(value - self.target) <= self.tolerance

    @property
    def centre(self) -> float:
        """The published value, or the middle of the range."""
        return float(self.target) if self.range is None else (self.range[0] + self.range[1]) / 2.0

    @property
    def scale(self) -> float:
        """The tolerance, or half the range: the distance from the centre at which the target stops being met."""
        half = float(self.tolerance) if self.range is None else (self.range[1] - self.range[0]) / 2.0
        return half if half > 0 else 1e-9

    def z(self, value: float) -> float:
        """Standardised deviation ``(value - centre) / scale``: met exactly when ``|z| <= 1``."""
        if not math.isfinite(value):
            return math.nan
        return (value - self.centre) / self.scale

    def describe(self) -> str:
        if self.range is not None:
            return f"{self.range[0]:g} to {self.range[1]:g}"
        return f"{self.target:g} ± {self.tolerance:g}"


class Targets(FrozenModel):
    targets: list[Target] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self):
        seen: set[str] = set()
        for t in self.targets:
            if t.id in seen:
                raise ValueError(f"target id {t.id!r} appears twice; ids must be unique")
            seen.add(t.id)
        return self


def load_targets(path: Path) -> Targets:
    path = Path(path)
    raw = read_yaml(path)
    try:
        return Targets.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_validation_error(exc, raw)
        raise ScenarioError(str(path), field or None, msg) from None


#: Standardised deviation given to a metric that cannot be computed (NaN) in the distance.
MISSING_Z = 10.0


def distance(values: dict[str, float], targets: list[Target]) -> float:
    """Root mean square of the standardised deviations of ``values`` (by target id) from the targets.

    Each deviation is ``(simulated - centre) / scale`` (:meth:`Target.z`): a
    distance of 1 is as far off as the tolerances on average; a target that
    cannot be computed counts as ``MISSING_Z`` tolerances away.
    """
    zs = []
    for t in targets:
        z = t.z(float(values.get(t.id, math.nan)))
        zs.append(MISSING_Z if not math.isfinite(z) else min(abs(z), MISSING_Z))
    return float(math.sqrt(sum(z * z for z in zs) / len(zs))) if zs else 0.0


# --------------------------------------------------------------------------- metrics


class _Rep:
    """The records of one replication, with the derived tables metrics share.

    Several metrics read the same derived table (the ended IOP stays, the
    admitted waits, the ends of treatment); each is computed once per
    replication and then shared.  The metrics only read them.
    """

    def __init__(self, visits: pd.DataFrame, episodes: pd.DataFrame, levels: pd.DataFrame, sc: Scenario,
                 records: Records | None = None):
        self.sc = sc
        self.w0 = float(sc.warmup_days)
        self.horizon = float(sc.horizon_days)
        self.visits = visits
        self.episodes = episodes
        self.levels = levels
        self._cache: dict = {}
        if records is None:  # read from a run folder: the access functions read these frames as tables, once
            records = Records({})
            records["visits"], records["episodes"] = visits, episodes
        #: What the access functions read: the replication's compact tables when there are any.
        self.records = records

    def _once(self, key, make):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def ended_stays(self, stage: str) -> pd.DataFrame:
        def make():
            v = self.visits
            m = ((v["stage"] == stage) & v["t_admit"].notna() & (v["t_leave"] >= self.w0)
                 & v["outcome"].isin(STAY_OUTCOMES))
            out = v.loc[m]
            return out.assign(stay=out["t_leave"] - out["t_admit"])

        return self._once(("ended_stays", stage), make)

    def _index(self):
        """The episode index and first admissions the access functions share (as the KPIs share them)."""
        return self._once("episode_rows", lambda: episode_rows(self.records))

    def admitted_waits(self) -> np.ndarray:
        """Referral-to-admission days of episodes admitted to treatment in the window (one definition with the KPIs)."""
        return self._once("admitted_waits", lambda: admitted_waits(self.records, self.sc, self.w0,
                                                                   self._index()))

    def referral_outcomes(self) -> pd.DataFrame:
        """Every episode referred in the window, admitted, lost or still waiting (as the access KPIs follow them)."""
        return self._once("referral_outcomes", lambda: referral_outcomes(self.records, self.sc, self.w0,
                                                                         self._index()))

    def treatment_ends(self) -> pd.DataFrame:
        """Episodes that left treatment, with the time treatment ended."""
        def make():
            v = self.visits
            tv = v[v["stage"].isin(TREATMENT_STAGES) & v["t_admit"].notna() & v["t_leave"].notna()]
            last = tv.sort_values("t_leave").groupby(["patient_id", "episode"], as_index=False).last()
            ends = last[["patient_id", "episode", "t_leave", "outcome"]].rename(columns={"t_leave": "t_end"})
            ends = ends.merge(self.episodes[["patient_id", "episode", "t_relapse", "readmitted"]],
                              on=["patient_id", "episode"])
            return ends[ends["t_end"] >= self.w0]

        return self._once("treatment_ends", make)


def _share(stage: str, outcome: str) -> Callable[[_Rep], float]:
    def f(r: _Rep) -> float:
        s = r.ended_stays(stage)
        return float((s["outcome"] == outcome).mean()) if len(s) else math.nan

    return f


def _median_stay(stage: str, outcome: str | None = None) -> Callable[[_Rep], float]:
    def f(r: _Rep) -> float:
        s = r.ended_stays(stage)
        if outcome is not None:
            s = s[s["outcome"] == outcome]
        return float(s["stay"].median()) if len(s) else math.nan

    return f


def _census_mean(r: _Rep) -> float:
    lv = r.levels[(r.levels["stage"] == "iop") & (r.levels["day"] >= r.w0)]
    return float(lv["census_mean"].sum() / (r.horizon - r.w0)) if len(lv) else math.nan


def _iop_mean_weeks(r: _Rep) -> float:
    s = r.ended_stays("iop")
    return float(s["stay"].mean() / 7.0) if len(s) else math.nan


def _iop_admissions_per_year(r: _Rep) -> float:
    v = r.visits
    n = int(((v["stage"] == "iop") & (v["t_admit"] >= r.w0)).sum())
    return n / ((r.horizon - r.w0) / 365.0)


def _wait_mean(r: _Rep) -> float:
    """Referral to first treatment admission, of those admitted: KPI ``referral_to_admission_mean_days_admitted``."""
    w = r.admitted_waits()
    return float(w.mean()) if w.size else math.nan


def _wait_over_30(r: _Rep) -> float:
    """Of those admitted, the share who waited over 30 days: KPI ``referral_share_admitted_waiting_over_30_days``."""
    w = r.admitted_waits()
    return float((w > 30).mean()) if w.size else math.nan


def _never_start(r: _Rep) -> float:
    """Of those assessed and placed in a treatment stage, the share lost before admission:
    KPI ``referral_lost_after_assessment``."""
    return lost_after_assessment(r.referral_outcomes())


def _residential_step_down(r: _Rep) -> float:
    s = r.ended_stays("residential")
    if not len(s):
        return math.nan
    nxt = s["next"].fillna("discharge")
    return float((nxt != "discharge").mean())


def _readmit_90(r: _Rep) -> float:
    """Share of episodes leaving treatment that return as a referral within 90 days.

    Only episodes whose treatment ended at least 90 days before the horizon
    count, so that every one of them had the full 90 days to return.
    """
    ends = r.treatment_ends()
    ends = ends[ends["t_end"] <= r.horizon - 90]
    if not len(ends):
        return math.nan
    nxt = r.episodes[["patient_id", "episode", "t_referral"]].assign(episode=lambda d: d["episode"] - 1)
    j = ends.merge(nxt, on=["patient_id", "episode"], how="left")
    return float(((j["t_referral"] - j["t_end"]) <= 90).mean())


def _relapse_365(r: _Rep) -> float:
    """Share relapsing within a year, of those whose treatment ended with an
    outcome the scenario's relapse applies to, at least a year before the horizon."""
    if r.sc.relapse is None:
        return math.nan
    ends = r.treatment_ends()
    ends = ends[(ends["t_end"] <= r.horizon - 365) & ends["outcome"].isin(r.sc.relapse.after)]
    if not len(ends):
        return math.nan
    return float(((ends["t_relapse"] - ends["t_end"]) <= 365).mean())


METRICS: dict[str, Callable[[_Rep], float]] = {
    **{f"iop_share_{o}": _share("iop", o) for o in ("completed", "transferred", "dropped_out", "terminated", "other")},
    "iop_median_stay_days": _median_stay("iop"),
    "iop_median_stay_days_completed": _median_stay("iop", "completed"),
    "iop_median_stay_days_dropped_out": _median_stay("iop", "dropped_out"),
    "residential_share_completed": _share("residential", "completed"),
    "residential_median_stay_days": _median_stay("residential"),
    "iop_census_mean": _census_mean,
    "iop_mean_stay_weeks": _iop_mean_weeks,
    "iop_admissions_per_year": _iop_admissions_per_year,
    "wait_to_treatment_mean_days": _wait_mean,
    "share_waiting_over_30_days": _wait_over_30,
    "share_never_starting_after_intake": _never_start,
    "residential_share_stepping_down": _residential_step_down,
    "readmission_within_90_days": _readmit_90,
    "relapse_within_365_days": _relapse_365,
}


def replication_metrics(records: dict[str, pd.DataFrame], sc: Scenario, metrics) -> dict[str, float]:
    """The named metrics of one replication, from its record tables (``visits``, ``episodes``, ``levels``)."""
    rep = _Rep(records["visits"], records["episodes"], records["levels"], sc,
               records if isinstance(records, Records) else None)
    return {m: float(METRICS[m](rep)) for m in metrics}


def calibrate(run_dir: Path, targets_path: Path) -> pd.DataFrame:
    """Model value (mean and 95 % CI over replications) against each target."""
    run_dir = Path(run_dir)
    for name in ("scenario.yaml", "records.parquet", "episodes.parquet", "levels.parquet", "manifest.json"):
        if not (run_dir / name).exists():
            raise IopsimError(f"{run_dir}: not a finished run folder ({name} missing)")
    read_manifest(run_dir)
    targets = load_targets(targets_path)
    sc = validate_raw(read_yaml(run_dir / "scenario.yaml"), str(run_dir / "scenario.yaml"))
    try:
        visits = pd.read_parquet(run_dir / "records.parquet")
        episodes = pd.read_parquet(run_dir / "episodes.parquet")
        levels = pd.read_parquet(run_dir / "levels.parquet")
    except Exception as exc:  # pyarrow raises its own types for truncated files
        raise IopsimError(f"{run_dir}: a record table is damaged ({type(exc).__name__}); re-run into a new folder") from None
    reps = []
    for rep, v in visits.groupby("replication"):
        reps.append(_Rep(v, episodes[episodes["replication"] == rep], levels[levels["replication"] == rep], sc))
    needed = {t.metric for t in targets.targets}
    per_rep = {m: np.array([METRICS[m](r) for r in reps]) for m in needed}
    rows = []
    for t in targets.targets:
        mean, _sd, lo, hi, n = mean_ci(per_rep[t.metric])
        rows.append(
            {
                "id": t.id,
                "metric": t.metric,
                "model_mean": mean,
                "ci_low": lo,
                "ci_high": hi,
                "replications": n,
                "target": t.describe(),
                "low": t.centre - t.scale if t.range is None else t.range[0],
                "high": t.centre + t.scale if t.range is None else t.range[1],
                "met": t.met(mean),
                "description": t.description,
                "source": t.source,
                "confidence": t.confidence,
            }
        )
    return pd.DataFrame(rows)
