"""Conservation of patients: nobody appears, vanishes or is double-counted.

Checked in every replication of the baseline and of a *stressed* variant (a
start state with census and waitlists everywhere, tiny capacities, more
referrals) that exercises heavy queueing, reneging, relapse while waiting,
overflow from PHP to IOP and readmissions.

Helpers live in this file on purpose (no dependency on conftest.py).
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iopsim.analysis.kpis import replication_kpis
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import EXITS, TREATMENT_STAGES, resolve_raw, validate_raw

BASELINE = Path(__file__).resolve().parent.parent / "scenarios" / "baseline.yaml"
IN_SYSTEM = "in_system"
STAY_OUTCOMES = {"completed", *EXITS, "relapsed"}
WAIT_OUTCOMES = {"reneged", "relapsed"}  # ways of leaving a waitlist without admission
PLACEMENT_EXITS = {"outpatient", "not_eligible"}
REPLICATIONS = (0, 1, 2)


def baseline_raw() -> dict:
    return resolve_raw(BASELINE)


def stressed_raw() -> dict:
    raw = copy.deepcopy(baseline_raw())
    raw["name"] = "stressed"
    for stage, cap in {"residential": 2, "php": 1, "iop": 2, "aftercare": 2}.items():
        cfg = raw["stages"][stage]
        if cfg.get("tracks"):  # a group-therapy IOP: capacity = groups x max_group_size
            for track in cfg["tracks"].values():
                track["groups"] = 1
                track["max_group_size"] = 1
                track["min_group_size"] = 1
        else:
            cfg["capacity"] = cap
    raw["stages"]["php"]["overflow_to"] = "iop"
    raw["referrals"]["referrals_per_week"] = 15.0
    # Relapse fast enough to hit patients waiting for aftercare.
    raw["relapse"]["days"] = {"dist": "loglogistic", "alpha": 20, "beta": 1.0}
    raw["relapse"]["return_probability"] = 0.8
    raw["start_state"] = {
        "intake_waitlist": 6,
        "stages": {
            "residential": {"census": 2, "waitlist": 3},
            "php": {"census": 1, "waitlist": 2},
            "iop": {"census": 2, "waitlist": 4},
            "aftercare": {"census": 2, "waitlist": 2},
        },
    }
    return raw


def plans_raw() -> dict:
    """The stressed site with individual IOP plans: lengths by prior stage, severity, reviews."""
    raw = stressed_raw()
    raw["name"] = "plans"
    raw["stages"]["iop"]["program"]["plan"] = {
        "weeks": {"dist": "lognormal", "median": 7, "sigma": 0.5},
        "after": {"residential": {"dist": "uniform", "low": 3, "high": 6}},
        "severity": {"mild": {"share": 0.6}, "severe": {"share": 0.4, "length_factor": 1.5, "attendance_factor": 0.9}},
        "reviews": [{"week": 3, "extend_weeks": 2, "extend_if_missed": 2, "extend_probability": 0.2},
                    {"week": 5, "shorten_weeks": 1, "shorten_probability": 0.3}],
    }
    return raw


def step_up_raw() -> dict:
    """The stressed site where IOP steps up to PHP and aftercare back to IOP: cycles within episodes."""
    raw = stressed_raw()
    raw["name"] = "step-up"
    raw["stages"]["iop"]["exits"]["stepped_up"] = {"probability": 0.1, "days": {"dist": "exponential", "mean": 10},
                                                   "to": "php"}
    raw["stages"]["aftercare"]["exits"]["stepped_up"] = {"probability": 0.15, "days": {"dist": "exponential", "mean": 20},
                                                         "to": "iop"}
    raw["stages"]["php"]["step_down"] = {"iop": 0.8, "php": 0.05, "discharge": 0.15}
    return raw


VARIANTS = {"baseline": baseline_raw, "stressed": stressed_raw, "plans": plans_raw, "step_up": step_up_raw}


@functools.lru_cache(maxsize=None)
def scenario_of(variant: str):
    return validate_raw(VARIANTS[variant](), f"test:{variant}")


@functools.lru_cache(maxsize=None)
def run(variant: str, rep: int):
    return run_replication(scenario_of(variant), rep)


def _fmt(problems: list, n: int = 5) -> str:
    return f"{len(problems)} violation(s), first {min(n, len(problems))}: " + "; ".join(map(str, problems[:n]))


def stage_capacity(scenario, stage: str) -> int | None:
    if stage == "intake":
        if getattr(scenario.intake, "clinicians", None) is not None:
            return scenario.intake.clinicians
        # Intake staffed by a role of the staff roster: its total headcount.
        return sum(t.headcount for t in scenario.staff.roles[scenario.intake.role].teams)
    cfg = getattr(scenario.stages, stage)
    if getattr(cfg, "tracks", None):
        return sum(t.groups * t.max_group_size for t in cfg.tracks.values())
    return cfg.capacity


def _stages(scenario) -> list[str]:
    return (["intake"] if scenario.intake is not None else []) + list(scenario.stages.enabled())


CASES = [(v, r) for v in VARIANTS for r in REPLICATIONS]
IDS = [f"{v}-rep{r}" for v, r in CASES]


# --------------------------------------------------------------------------- episodes


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_every_episode_in_system_or_left_with_outcome(variant, rep):
    scenario = scenario_of(variant)
    rec = run(variant, rep).records
    e, v = rec["episodes"], rec["visits"]
    assert len(e) > 50, f"too few episodes ({len(e)}) for a meaningful check"
    assert not e.duplicated(["patient_id", "episode"]).any(), "duplicate (patient_id, episode) rows"
    allowed = STAY_OUTCOMES | {"reneged"} | PLACEMENT_EXITS
    problems = []
    open_visits = v[v["outcome"] == IN_SYSTEM].groupby(["patient_id", "episode"]).size().to_dict()
    for row in e.itertuples(index=False):
        key = (row.patient_id, row.episode)
        n_open = open_visits.get(key, 0)
        if row.exit_outcome == IN_SYSTEM:
            if not math.isnan(row.t_exit):
                problems.append(("in_system but t_exit set", key, row.t_exit))
            if n_open != 1:
                problems.append(("in_system episode without exactly one open visit", key, n_open))
        else:
            if row.exit_outcome not in allowed:
                problems.append(("unknown exit outcome", key, row.exit_outcome))
            if not (0 <= row.t_exit <= scenario.horizon_days):
                problems.append(("t_exit outside the run", key, row.t_exit))
            if n_open:
                problems.append(("episode closed but a visit is still open", key, n_open))
            if row.exit_outcome in PLACEMENT_EXITS and row.placement != row.exit_outcome:
                problems.append(("placement exit differs from placement", key, row.placement, row.exit_outcome))
    assert not problems, _fmt(problems)
    # Something must actually have happened in both directions.
    outcomes = set(e["exit_outcome"])
    assert IN_SYSTEM in outcomes and len(outcomes - {IN_SYSTEM}) >= 4, f"exit outcomes too narrow: {outcomes}"


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_episode_exit_matches_last_visit(variant, rep):
    rec = run(variant, rep).records
    e, v = rec["episodes"], rec["visits"]
    last = v.groupby(["patient_id", "episode"], sort=False).tail(1).set_index(["patient_id", "episode"])
    problems = []
    for row in e.itertuples(index=False):
        key = (row.patient_id, row.episode)
        if row.exit_outcome == IN_SYSTEM:
            continue
        if row.exit_outcome in PLACEMENT_EXITS:
            if key in last.index and last.loc[key, "stage"] != "intake":
                problems.append(("placement exit after a stage visit", key))
            continue
        if key not in last.index:
            problems.append(("closed episode without visits", key, row.exit_outcome))
            continue
        lv = last.loc[key]
        if (lv["stage"], lv["outcome"]) != (row.exit_stage, row.exit_outcome) or lv["t_leave"] != row.t_exit:
            problems.append(("episode exit != last visit", key, (row.exit_stage, row.exit_outcome, row.t_exit),
                             (lv["stage"], lv["outcome"], lv["t_leave"])))
    assert not problems, _fmt(problems)


# --------------------------------------------------------------------------- stage flows


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_stage_flow_balance(variant, rep):
    """joined = admitted + left the waitlist + still waiting;  admitted = stay outcomes + still in care."""
    scenario = scenario_of(variant)
    res = run(variant, rep)
    v = res.records["visits"]
    k = replication_kpis(res.records, scenario, warmup_days=0)  # window = the whole run
    for stage in _stages(scenario):
        s = v[v["stage"] == stage]
        admitted_mask = s["t_admit"].notna()
        out = s["outcome"].astype(object)
        never = s[~admitted_mask]
        adm = s[admitted_mask]
        wait_outcomes = WAIT_OUTCOMES if stage != "intake" else {"reneged"}
        stay_outcomes = STAY_OUTCOMES if stage != "intake" else {"assessed"}
        left_waiting = int(never["outcome"].isin(list(wait_outcomes)).sum())
        still_waiting = int((never["outcome"] == IN_SYSTEM).sum())
        joined = len(s)
        admitted = len(adm)
        assert joined == admitted + left_waiting + still_waiting, (
            f"{variant} rep {rep} {stage}: joined {joined} != admitted {admitted} + left waitlist "
            f"{left_waiting} + still waiting {still_waiting}; outcomes of never-admitted: "
            f"{dict(never['outcome'].value_counts())}"
        )
        stays_ended = int(adm["outcome"].isin(list(stay_outcomes)).sum())
        in_care = int((adm["outcome"] == IN_SYSTEM).sum())
        assert admitted == stays_ended + in_care, (
            f"{variant} rep {rep} {stage}: admitted {admitted} != ended stays {stays_ended} + in care {in_care}; "
            f"outcomes of admitted: {dict(adm['outcome'].value_counts())}"
        )
        # Open visits have no t_leave, closed ones do.
        assert (s["t_leave"].isna() == (out == IN_SYSTEM)).all(), f"{stage}: t_leave NaN must mean in_system"
        # The same balance through the KPIs (window = whole run).
        assert k[f"{stage}_joined"] == joined, f"{stage}: KPI joined {k[f'{stage}_joined']} vs records {joined}"
        assert k[f"{stage}_admissions"] == admitted, f"{stage}: KPI admissions vs records"
        kpi_left = sum(k[f"{stage}_{o}"] for o in (("assessed", "reneged") if stage == "intake" else
                                                   ("completed", *EXITS, "relapsed", "reneged")))
        assert kpi_left == len(s) - int((out == IN_SYSTEM).sum()), (
            f"{stage}: KPI outcome counts {kpi_left} != visits that ended {len(s) - int((out == IN_SYSTEM).sum())}"
        )


def test_stressed_variant_is_really_stressed():
    """Guard against a vacuous stress test: queueing, reneging, overflow, relapse and returns all happen."""
    v = [run("stressed", r).records["visits"] for r in REPLICATIONS]
    e = [run("stressed", r).records["episodes"] for r in REPLICATIONS]
    v, e = pd.concat(v), pd.concat(e)
    assert ((v["outcome"] == "reneged") & (v["stage"] != "intake")).sum() > 50, "too little reneging at stages"
    assert ((v["outcome"] == "relapsed") & v["t_admit"].isna()).sum() > 0, "nobody relapsed while waiting"
    assert ((v["outcome"] == IN_SYSTEM) & v["t_admit"].isna()).sum() > 0, "nobody still waiting at the end"
    assert (v["stage"] != v["intended_stage"]).sum() > 0, "no overflow happened"
    assert (e["episode"] > 1).sum() > 0, "no readmissions"
    assert (e["patient_id"] < 0).sum() > 0, "start state not used (its patients have negative ids)"


# --------------------------------------------------------------------------- capacity


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_census_never_exceeds_capacity(variant, rep):
    scenario = scenario_of(variant)
    levels = run(variant, rep).records["levels"]
    for stage in _stages(scenario):
        lv = levels[levels["stage"] == stage]
        assert len(lv) == scenario.horizon_days, f"{stage}: {len(lv)} days of levels"
        cap = stage_capacity(scenario, stage)
        peak = float(lv["census_max"].max())
        assert peak <= cap, f"{variant} rep {rep} {stage}: census {peak} exceeds capacity {cap}"
        assert (lv["census_mean"] <= lv["census_max"] + 1e-9).all(), f"{stage}: daily mean above daily max"
        assert (lv[["census_mean", "census_max", "waitlist_mean", "waitlist_max"]] >= 0).all().all(), (
            f"{stage}: negative level"
        )
        if variant == "stressed" and stage != "intake":
            assert peak == cap, f"stressed {stage}: capacity {cap} never reached (peak {peak})"


# --------------------------------------------------------------------------- order in time


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_visits_chronological_and_contiguous(variant, rep):
    """Within an episode: visits in record order are chronological, each begins exactly when
    the previous ended, goes where the previous one sent the patient, and only the last is open."""
    rec = run(variant, rep).records
    v, e = rec["visits"], rec["episodes"]
    horizon = float(scenario_of(variant).horizon_days)
    # Stable sort: keeps the order in which the model opened the visits within an episode.
    v = v.sort_values(["patient_id", "episode"], kind="mergesort").reset_index(drop=True)
    pid, ep = v["patient_id"].to_numpy(), v["episode"].to_numpy()
    t_join = v["t_join"].to_numpy(float)
    t_admit = v["t_admit"].to_numpy(float)
    t_leave = v["t_leave"].to_numpy(float)
    outcome = v["outcome"].astype(object).to_numpy()
    stage = v["stage"].astype(object).to_numpy()
    intended = v["intended_stage"].astype(object).to_numpy()
    placement = e.set_index(["patient_id", "episode"])["placement"].astype(object)
    placed = placement.reindex(list(zip(pid, ep))).to_numpy()
    nxt = np.where(stage == "intake", placed, v["next"].astype(object).to_numpy())
    problems = []

    end = np.where(np.isnan(t_leave), horizon, t_leave)
    admit = np.where(np.isnan(t_admit), t_join, t_admit)
    bad = ~((0 <= t_join) & (t_join <= admit) & (admit <= end) & (end <= horizon))
    for i in np.flatnonzero(bad)[:5]:
        problems.append(("times out of order", pid[i], ep[i], t_join[i], t_admit[i], t_leave[i]))

    same = (pid[1:] == pid[:-1]) & (ep[1:] == ep[:-1])  # visit i+1 continues visit i's episode
    idx = np.flatnonzero(same)
    for i in idx[outcome[idx] == IN_SYSTEM][:5]:
        problems.append(("open visit followed by another", pid[i], ep[i], stage[i], stage[i + 1]))
    gap = idx[t_join[idx + 1] != t_leave[idx]]
    for i in gap[:5]:
        problems.append(("gap or overlap between visits", pid[i], ep[i], t_leave[i], t_join[i + 1]))
    wrong = idx[intended[idx + 1] != nxt[idx]]
    for i in wrong[:5]:
        problems.append(("next visit is not where the previous one sent them", pid[i], ep[i], nxt[i], intended[i + 1]))
    late_intake = idx[stage[idx + 1] == "intake"]
    for i in late_intake[:5]:
        problems.append(("intake visit after a stage visit", pid[i], ep[i]))
    n_chains = len(idx)
    assert not problems, _fmt(problems)
    assert n_chains > 100, f"only {n_chains} visit-to-visit transitions; nothing to check"


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_readmission_after_relapse(variant, rep):
    e = run(variant, rep).records["episodes"]
    by_key = {(r.patient_id, r.episode): r for r in e.itertuples(index=False)}
    problems = []
    n_readmitted = 0
    for (pid, ep), r in by_key.items():
        if ep > 1:
            prev = by_key.get((pid, ep - 1))
            if prev is None:
                problems.append(("episode without its predecessor", pid, ep))
                continue
            if not prev.readmitted:
                problems.append(("predecessor not flagged readmitted", pid, ep))
            if not (prev.t_relapse <= r.t_referral):  # also fails if t_relapse is NaN
                problems.append(("readmitted before the relapse", pid, ep, prev.t_relapse, r.t_referral))
            if not (prev.t_exit <= r.t_referral):  # one person is never in two episodes at once
                problems.append(("episodes overlap", pid, ep, prev.t_exit, r.t_referral))
            if r.source != prev.source:
                problems.append(("source changed on readmission", pid, ep, prev.source, r.source))
            n_readmitted += 1
        if r.readmitted and (pid, ep + 1) not in by_key:
            problems.append(("flagged readmitted but no next episode", pid, ep))
    assert not problems, _fmt(problems)
    assert n_readmitted > 0, f"{variant} rep {rep}: no readmission to check"


def test_relapse_never_before_the_episode_ended():
    """A recorded relapse happens after the patient left the episode's pathway.

    A relapse ends an aftercare stay or wait (outcome ``relapsed`` at the relapse time),
    so while a patient is still in a stay or on a waitlist of this episode no relapse can
    have happened: ``t_exit <= t_relapse`` for every episode with a relapse.  Checked over
    all replications of both variants together (one verdict).
    """
    problems = []
    for variant, rep in CASES:
        e = run(variant, rep).records["episodes"]
        bad = e[e["t_relapse"].notna() & ~(e["t_exit"] <= e["t_relapse"])]
        for r in bad.itertuples(index=False):
            problems.append((variant, rep, r.patient_id, r.episode, r.exit_stage, r.exit_outcome,
                             round(r.t_exit, 3), round(r.t_relapse, 3)))
    assert not problems, "relapse recorded before the episode ended: " + _fmt(problems)


@pytest.mark.parametrize("variant,rep", CASES, ids=IDS)
def test_relapse_in_aftercare_ends_the_stay_at_the_relapse_time(variant, rep):
    rec = run(variant, rep).records
    v, e = rec["visits"], rec["episodes"]
    rel = v[(v["outcome"] == "relapsed")].merge(e, on=["patient_id", "episode"])
    assert (rel["stage"].isin(["aftercare"]) | ~rel["stage"].isin(TREATMENT_STAGES)).all(), (
        "a relapse can only end aftercare (treatment stages are before the relapse clock starts): "
        f"{rel.loc[rel['stage'].isin(TREATMENT_STAGES), ['patient_id', 'episode', 'stage']].values.tolist()[:5]}"
    )
    bad = rel[rel["t_leave"] != rel["t_relapse"]]
    assert bad.empty, (
        "relapsed visits must end exactly at the episode's relapse time: "
        f"{bad[['patient_id', 'episode', 'stage', 't_leave', 't_relapse']].values.tolist()[:5]}"
    )
