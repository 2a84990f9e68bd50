"""Individual treatment plans in the tracked IOP (stages.iop.program.plan).

* A ``fixed`` plan equal to the phases' weeks gives bit-for-bit today's records.
* With attendance 1 and no exits, completers' stays (first session to
  completion) follow the planned-length distribution (Kolmogorov-Smirnov).
* A review that extends with probability p extends a binomial share of
  completers, whose stays are longer by exactly the extension; shortening
  likewise.
* Lengths by prior stage and by source, severity classes, and the two phase
  rules.
* Plan streams leave every other stream's draws unchanged.
"""

from __future__ import annotations

import copy
import functools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from conftest import shipped_raw
from iopsim.errors import ScenarioError
from iopsim.experiments.replications import run_replication
from iopsim.schema.scenario import validate_raw


def baseline_with(plan: dict | None = None, **updates) -> dict:
    """The shipped baseline with ``plan`` as its IOP plan (None: no plan, the phases' weeks for everyone)."""
    raw = copy.deepcopy(shipped_raw("baseline"))
    raw["stages"]["iop"]["program"].pop("plan", None)
    if plan is not None:
        raw["stages"]["iop"]["program"]["plan"] = plan
    for dotted, value in updates.items():
        node = raw
        *head, last = dotted.split("__")
        for part in head:
            node = node[part]
        node[last] = value
    return raw


def test_a_fixed_plan_of_the_phases_weeks_is_bit_for_bit_todays_program():
    a = run_replication(validate_raw(baseline_with(), "a"), 0)
    b = run_replication(validate_raw(baseline_with({"weeks": {"dist": "fixed", "value": 7}}), "b"), 0)
    for table in a.records:
        pd.testing.assert_frame_equal(a.records[table], b.records[table], check_exact=True)
    assert a.kpis.keys() == b.kpis.keys()
    assert all(a.kpis[k] == b.kpis[k] or (a.kpis[k] != a.kpis[k] and b.kpis[k] != b.kpis[k]) for k in a.kpis)


def clean_iop(plan: dict, referrals_per_week: float = 6.0, horizon: int = 1500) -> dict:
    """Only the tracked IOP, attendance 1, no exits, no patience, plenty of seats: nothing else interferes."""
    raw = baseline_with(plan)
    iop = raw["stages"]["iop"]
    iop.pop("exits", None)
    iop.pop("patience_days", None)
    iop["services"] = {}
    iop["availability"] = {"any": 1.0}
    for track in iop["tracks"].values():
        track["attendance"] = 1.0
        track["accepts"] = ["any"]
        track["groups"] = 4
        track["min_group_size"] = 1
        track["facilitators"] = []
    iop["step_down"] = {"discharge": 1.0}
    raw["stages"] = {"iop": iop}
    raw["intake"] = None
    raw["relapse"] = None
    raw["staff"] = None
    raw["start_state"] = {}
    raw.pop("payers", None)
    raw["horizon_days"] = horizon
    raw["warmup_days"] = 0
    raw["referrals"] = {"referrals_per_week": referrals_per_week,
                        "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}}}
    return raw


PLAN_WEEKS = {"dist": "lognormal", "median": 8, "sigma": 0.35}


def completed(records: dict, horizon: float, longest: float) -> pd.DataFrame:
    v = records["visits"]
    v = v[(v["stage"] == "iop") & v["t_first_session"].notna() & (v["t_first_session"] < horizon - longest)]
    assert (v["outcome"] == "completed").all(), f"nothing should end otherwise: {v['outcome'].value_counts()}"
    return v.assign(stay=v["t_leave"] - v["t_first_session"])


def test_completers_stays_follow_the_planned_length_distribution():
    sc = validate_raw(clean_iop({"weeks": PLAN_WEEKS}), "ks")
    res = run_replication(sc, 0)
    longest = 7 * float(stats.lognorm(0.35, scale=8).ppf(0.9999))
    v = completed(res.records, sc.horizon_days, longest)
    assert len(v) > 300
    assert np.allclose(v["stay"], v["planned_days"], atol=1e-6), "a completer's stay is their plan"
    ks = stats.kstest(v["stay"] / 7.0, stats.lognorm(0.35, scale=8).cdf)
    assert ks.pvalue > 0.01, f"completers' stays do not follow the planned lengths: {ks}"
    # and they spread: no bunching at one length
    assert v["stay"].std() > 10


@functools.lru_cache(maxsize=None)
def _review_run(p_extend: float, p_shorten: float):
    plan = {"weeks": PLAN_WEEKS, "reviews": [
        {"week": 3, "extend_weeks": 2, "extend_probability": p_extend},
        {"week": 4, "shorten_weeks": 1, "shorten_probability": p_shorten}]}
    sc = validate_raw(clean_iop(plan), "reviews")
    return sc, run_replication(sc, 0)


def test_extensions_at_a_review_match_their_probability_and_length():
    sc, res = _review_run(0.3, 0.0)
    longest = 7 * float(stats.lognorm(0.35, scale=8).ppf(0.9999)) + 14
    v = completed(res.records, sc.horizon_days, longest)
    reviewed = v[v["planned_days"] > 21]  # plans ending before week 3 complete before the review
    n, x = len(reviewed), int((reviewed["extensions"] > 0).sum())
    lo, hi = stats.binom.ppf([0.0005, 0.9995], n, 0.3)
    assert n > 300 and lo <= x <= hi, f"{x} of {n} extended; expected about {0.3 * n:.0f}"
    ext = reviewed[reviewed["extensions"] > 0]
    assert np.allclose(ext["stay"] - ext["planned_days"], 14.0, atol=1e-6), "extended stays are longer by 2 weeks"
    rest = v[v["extensions"] == 0]
    assert np.allclose(rest["stay"], rest["planned_days"], atol=1e-6)
    assert (v.loc[v["planned_days"] <= 21, "extensions"] == 0).all()


def test_shortening_at_a_review_takes_off_exactly_its_weeks():
    sc, res = _review_run(0.0, 0.5)
    longest = 7 * float(stats.lognorm(0.35, scale=8).ppf(0.9999))
    v = completed(res.records, sc.horizon_days, longest)
    long_plans = v[v["planned_days"] > 35]  # a week can come off without ending before the review
    cut = np.isclose(long_plans["planned_days"] - long_plans["stay"], 7.0, atol=1e-6)
    same = np.isclose(long_plans["planned_days"], long_plans["stay"], atol=1e-6)
    assert (cut | same).all(), "a stay is its plan, or its plan less one week"
    lo, hi = stats.binom.ppf([0.0005, 0.9995], len(long_plans), 0.5)
    assert lo <= cut.sum() <= hi
    assert (long_plans["shortenings"][cut] == 1).all() and (long_plans["shortenings"][same] == 0).all(), \
        "the records say which plans a review shortened"
    assert (v["extensions"] == 0).all()


def test_planned_and_actual_stays_by_outcome_and_their_medians():
    """KPIs by every way a stay ends: completers' medians equal their plans' (no extension, no exit)."""
    from iopsim.analysis.kpis import STAY_OUTCOMES, replication_kpis

    sc, res = _review_run(0.0, 0.5)
    k = replication_kpis(res.records, sc)
    v = res.records["visits"]
    ended = v[(v["stage"] == "iop") & v["t_admit"].notna() & v["t_leave"].notna() & (v["t_admit"] >= sc.warmup_days)]
    done = ended[ended["outcome"] == "completed"]
    stays = done["t_leave"] - done["t_admit"]
    assert k["iop_stay_median_days_completed"] == pytest.approx(float(np.median(stays)), rel=1e-12)
    assert k["iop_planned_stay_median_days_completed"] == pytest.approx(float(np.median(done["planned_days"])))
    assert k["iop_share_shortened"] == pytest.approx(float((ended["shortenings"] > 0).mean()))
    assert 0.2 < k["iop_share_shortened"] < 0.6 and k["iop_share_extended"] == 0.0
    for o in STAY_OUTCOMES:
        if not (ended["outcome"] == o).any():  # no such exit in this scenario: undefined, not zero
            assert math.isnan(k[f"iop_stay_mean_days_{o}"]) and math.isnan(k[f"iop_planned_stay_median_days_{o}"])


def test_missed_sessions_extend_the_plan():
    raw = clean_iop({"weeks": {"dist": "fixed", "value": 8},
                     "reviews": [{"week": 4, "extend_weeks": 3, "extend_if_missed": 2}]})
    for track in raw["stages"]["iop"]["tracks"].values():
        track["attendance"] = 0.8
    raw["stages"]["iop"]["program"]["missed_sessions_dropout"] = 50
    res = run_replication(validate_raw(raw, "missed"), 0)
    v = res.records["visits"]
    v = v[(v["stage"] == "iop") & (v["outcome"] == "completed")]
    assert (v["extensions"] > 0).mean() > 0.5, "at 80 % attendance most miss two sessions in four weeks"
    assert (v["extensions"] == 0).any(), "some attend enough to keep their plan"


def test_plan_lengths_by_prior_stage_and_source():
    plan = {"weeks": {"dist": "fixed", "value": 9}, "after": {"residential": {"dist": "fixed", "value": 4}},
            "by_source": {"criminal_justice": {"dist": "fixed", "value": 12}}}
    raw = baseline_with(plan)
    sc = validate_raw(raw, "by")
    res = run_replication(sc, 0)
    v = res.records["visits"]
    v = v[v["stage"] != "intake"].sort_values(["patient_id", "episode", "t_join"], kind="stable")
    prev = v.groupby(["patient_id", "episode"])["stage"].shift(1)
    ep = res.records["episodes"][["patient_id", "episode", "source"]]
    iop = v[(v["stage"] == "iop") & v["planned_days"].notna()].assign(prev=prev).merge(ep, on=["patient_id", "episode"])
    after_res = iop[iop["prev"] == "residential"]
    assert len(after_res) > 3 and (after_res["planned_days"] == 28).all()
    direct = iop[iop["prev"].isna()]
    assert (direct.loc[direct["source"] == "criminal_justice", "planned_days"] == 84).all()
    assert (direct.loc[direct["source"] != "criminal_justice", "planned_days"] == 63).all()
    assert (direct["source"] == "criminal_justice").sum() > 3


def test_severity_stretches_the_plan():
    plan = {"weeks": {"dist": "fixed", "value": 6},
            "severity": {"mild": {"share": 0.5}, "severe": {"share": 0.5, "length_factor": 2.0}}}
    res = run_replication(validate_raw(clean_iop(plan), "sev"), 0)
    v = res.records["visits"]
    planned = v.loc[v["stage"] == "iop", "planned_days"].dropna()
    assert set(np.round(planned.unique(), 9)) == {42.0, 84.0}
    share = (planned == 84).mean()
    lo, hi = stats.binom.ppf([0.0005, 0.9995], len(planned), 0.5) / len(planned)
    assert lo <= share <= hi


def test_phase_rules():
    from iopsim.engine.model import Model

    for rule, want in (("share", [24.0, 42.0]), ("intensive_first", [28.0, 42.0])):
        plan = {"weeks": {"dist": "fixed", "value": 6}, "phase_rule": rule}
        model = Model(validate_raw(baseline_with(plan), "rule"), 0)
        assert model.stages["iop"]._scaled_phases(42.0) == pytest.approx(want), rule
    plan = {"weeks": {"dist": "fixed", "value": 6}, "phase_rule": "intensive_first"}
    model = Model(validate_raw(baseline_with(plan), "rule"), 0)
    assert model.stages["iop"]._scaled_phases(21.0) == pytest.approx([21.0, 21.0]), "shorter than phase 1"
    assert model.stages["iop"]._scaled_phases(70.0) == pytest.approx([28.0, 70.0])


def test_plan_streams_leave_other_draws_unchanged():
    """Referral times, sources and placements, and intake, are the same with or without plans."""
    a = run_replication(validate_raw(baseline_with(), "a"), 1).records
    plan = {"weeks": PLAN_WEEKS, "severity": {"a": {"share": 0.5}, "b": {"share": 0.5, "length_factor": 1.3}},
            "reviews": [{"week": 2, "extend_weeks": 1, "extend_probability": 0.5}]}
    b = run_replication(validate_raw(baseline_with(plan), "b"), 1).records
    cols = ["patient_id", "episode", "source", "placement"]
    first = a["episodes"]["episode"] == 1
    pd.testing.assert_frame_equal(a["episodes"].loc[first, cols + ["t_referral"]].reset_index(drop=True),
                                  b["episodes"].loc[b["episodes"]["episode"] == 1, cols + ["t_referral"]]
                                  .reset_index(drop=True))
    ia, ib = (r["visits"][r["visits"]["stage"] == "intake"] for r in (a, b))
    ka = ia[ia["episode"] == 1].set_index("patient_id")
    kb = ib[ib["episode"] == 1].set_index("patient_id")
    common = ka.index.intersection(kb.index)
    early = ka.loc[common, "t_join"] < 60  # before plans change who is where
    assert np.allclose((ka.loc[common, "t_leave"] - ka.loc[common, "t_admit"])[early],
                       (kb.loc[common, "t_leave"] - kb.loc[common, "t_admit"])[early], equal_nan=True)


@pytest.mark.parametrize("plan,fragment", [
    ({"weeks": {"dist": "fixed", "value": 6}, "by_source": {"nope": {"dist": "fixed", "value": 3}}},
     "stages.iop.program.plan.by_source.nope: unknown referral source"),
    ({"weeks": {"dist": "fixed", "value": 6}, "after": {"iop": {"dist": "fixed", "value": 3}}},
     "stages.iop.program.plan.after.iop: must be another enabled stage"),
    ({"weeks": {"dist": "fixed", "value": 6}, "severity": {"a": {"share": 0.5}}},
     "severity shares must sum to 1"),
])
def test_bad_plans_are_one_line_errors(plan, fragment):
    with pytest.raises(ScenarioError) as exc:
        validate_raw(baseline_with(plan), "scenario.yaml")
    assert fragment in str(exc.value) and "\n" not in str(exc.value), str(exc.value)


def test_a_plan_and_a_session_count_do_not_mix():
    raw = baseline_with({"weeks": {"dist": "fixed", "value": 6}})
    raw["stages"]["iop"]["program"]["sessions"] = 20
    with pytest.raises(ScenarioError, match="program.plan: a plan sets the program's length"):
        validate_raw(raw, "scenario.yaml")
