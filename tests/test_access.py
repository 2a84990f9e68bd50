"""Waits that count everyone (iopsim.analysis.access): estimators and the KPIs they give.

* Kaplan-Meier against SciPy's censored ECDF (a peer implementation).
* Aalen-Johansen cumulative incidence: plain shares without censoring, and
  admitted + lost + still waiting = 1.
* An M/M/c queue with exponential patience (Erlang A): the share of referrals
  lost before admission matches the birth-death solution.
* The defect these KPIs fix: a site where many give up shows a small wait of
  those admitted, but a large share lost and a long referral-to-admission p90.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import stats

from conftest import shipped_raw
from iopsim.analysis.access import cumulative_incidence, kaplan_meier, km_quantile, referral_outcomes
from iopsim.analysis.stats import mean_ci
from iopsim.experiments.replications import run_replication, run_replications
from iopsim.schema.scenario import validate_raw


def test_kaplan_meier_matches_scipy():
    rng = np.random.default_rng(1)
    t = np.round(rng.exponential(5.0, 400), 1)  # ties on purpose
    observed = rng.random(400) < 0.7
    times, surv = kaplan_meier(t, observed)
    ref = stats.ecdf(stats.CensoredData(uncensored=t[observed], right=t[~observed])).sf
    assert np.allclose(surv, ref.evaluate(times), atol=1e-12)
    q = km_quantile(times, surv, 0.5)
    assert ref.evaluate(q) <= 0.5 + 1e-12 and (q == times[0] or ref.evaluate(times[times < q][-1]) > 0.5)


def test_km_quantile_is_nan_when_never_reached():
    times, surv = kaplan_meier(np.array([1.0, 2.0, 3.0, 4.0]), np.array([True, False, False, False]))
    assert math.isnan(km_quantile(times, surv, 0.5)) and km_quantile(times, surv, 0.25) == 1.0


def test_cumulative_incidence_without_censoring_is_the_plain_share():
    d = np.array([1.0, 2.0, 2.0, 5.0, 8.0, 9.0])
    k = np.array([1, 2, 1, 1, 2, 1])
    assert cumulative_incidence(d, k, 1, 2.0) == pytest.approx(2 / 6)
    assert cumulative_incidence(d, k, 2, math.inf) == pytest.approx(2 / 6)
    assert cumulative_incidence(d, k, 1, math.inf) == pytest.approx(4 / 6)


def test_cumulative_incidences_and_survival_sum_to_one():
    rng = np.random.default_rng(2)
    d = rng.exponential(3.0, 500)
    k = rng.choice([0, 1, 2], 500, p=[0.3, 0.5, 0.2])
    for at in (1.0, 3.0, 10.0):
        times, surv = kaplan_meier(d, k > 0)
        s = surv[times <= at][-1] if (times <= at).any() else 1.0
        total = cumulative_incidence(d, k, 1, at) + cumulative_incidence(d, k, 2, at) + s
        assert total == pytest.approx(1.0, abs=1e-12)


# --------------------------------------------------------------------------- Erlang A


def erlang_a_abandonment(lam: float, mu: float, theta: float, c: int, n_max: int = 400) -> float:
    """P(abandon) of M/M/c+M: birth-death chain, truncated far in the tail."""
    pi = [1.0]
    for n in range(1, n_max):
        pi.append(pi[-1] * lam / (min(n, c) * mu + max(n - c, 0) * theta))
    pi = np.array(pi) / sum(pi)
    n = np.arange(n_max)
    return float((pi * np.maximum(n - c, 0) * theta).sum() / lam)


LAM, MEAN_STAY, PATIENCE, C = 1.2, 3.0, 2.0, 3  # offered load 3.6 > c: many give up


def reneging_scenario(horizon=3_000, seed=11):
    raw = {
        "name": "erlang-a", "seed": seed, "horizon_days": horizon, "warmup_days": 100,
        "referrals": {"referrals_per_week": LAM * 7, "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {"iop": {"capacity": C, "los_days": {"dist": "exponential", "mean": MEAN_STAY},
                           "patience_days": {"dist": "exponential", "mean": PATIENCE}}},
    }
    return validate_raw(raw, "test")


@functools.lru_cache(maxsize=None)
def _reneging_runs():
    return run_replications(reneging_scenario(), 8, jobs=2)


@pytest.mark.parametrize("kpi", ["referral_lost_before_admission", "referral_lost_at_iop", "iop_share_lost_waiting",
                                 "referral_lost_after_assessment"])
def test_share_lost_matches_erlang_a(kpi):
    theory = erlang_a_abandonment(LAM, 1 / MEAN_STAY, 1 / PATIENCE, C)
    values = [r.kpis[kpi] for r in _reneging_runs()]
    mean, _sd, lo, hi, _ = mean_ci(values, 1 - 0.05 / 3)
    assert 0.2 < theory < 0.5 and (hi - lo) / 2 < 0.1 * theory, (theory, lo, hi)
    assert lo <= theory <= hi, f"{kpi}: Erlang A {theory:.4f} outside CI [{lo:.4f}, {hi:.4f}]"


def test_waits_of_the_admitted_flatter_a_site_where_many_give_up():
    k = _reneging_runs()[0].kpis
    assert k["referral_lost_before_admission"] > 0.2
    # Of those admitted, nine in ten waited less than this ...
    assert k["iop_admitted_wait_p90_days"] < 4.0
    # ... but counting everyone referred, fewer than 80 % are admitted within 30 days.
    assert k["referral_admitted_within_30_days"] <= 1 - k["referral_lost_before_admission"] + 1e-9
    assert k["referral_to_admission_p90_days"] > k["iop_admitted_wait_p90_days"]


def test_referral_outcomes_follow_every_episode():
    sc = reneging_scenario(horizon=300)
    res = run_replication(sc, 0)
    r = referral_outcomes(res.records, sc, 0.0)
    ep = res.records["episodes"]
    assert len(r) == int((ep["t_referral"] >= 0).sum()), "every referred episode must be followed"
    assert set(r["outcome"]) <= {"admitted", "lost", "waiting"}
    v = res.records["visits"]
    lost = r[r["outcome"] == "lost"]
    reneged = v[(v["outcome"] == "reneged")]
    assert len(lost) == len(reneged) and (lost["lost_at"] == "iop").all()
    assert (r["days"] >= 0).all()
    waiting = r[r["outcome"] == "waiting"]
    assert np.allclose(waiting["days"], sc.horizon_days - waiting["t_referral"])


def test_lost_after_assessment_leaves_out_those_lost_at_intake(repo_root):
    """"Never start after intake": of those assessed and placed, the share lost before admission."""
    from iopsim.api import load_scenario

    sc = load_scenario(repo_root / "scenarios" / "established.yaml", {"horizon_days": 400})
    res = run_replication(sc, 0)
    k = res.kpis
    r = referral_outcomes(res.records, sc, float(sc.warmup_days))
    placed = r[r["placement"].isin(["residential", "php", "iop"])]
    lost, waiting = (placed["outcome"] == "lost").sum(), (placed["outcome"] == "waiting").sum()
    assert lost > 0 and waiting > 0 and k["referral_lost_at_intake"] > 0.05
    # A cumulative incidence: between "the censored are never lost" and "the censored are all lost".
    assert lost / len(placed) <= k["referral_lost_after_assessment"] <= (lost + waiting) / len(placed)
    assert k["referral_lost_after_assessment"] < k["referral_lost_before_admission"]
    # In a scenario without intake everyone is placed at referral: the two are the same.
    k0 = _reneging_runs()[0].kpis
    assert k0["referral_lost_after_assessment"] == k0["referral_lost_before_admission"]


def test_no_patience_means_nobody_is_lost():
    raw = reneging_scenario(horizon=200).model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["stages"]["iop"].pop("patience_days")
    raw["referrals"]["referrals_per_week"] = 2.0 * 7  # overloaded: the waitlist grows without bound
    k = run_replication(validate_raw(raw, "test"), 0).kpis
    assert k["referral_lost_before_admission"] == 0.0 and k["iop_share_lost_waiting"] == 0.0
    assert k["referral_admitted_within_7_days"] < 0.6


def test_sent_elsewhere_at_intake_is_not_in_the_cohort():
    raw = reneging_scenario(horizon=200).model_dump(mode="json", by_alias=True, exclude_none=True)
    raw["referrals"]["sources"]["all"]["placement"] = {"iop": 0.5, "outpatient": 0.5}
    sc = validate_raw(raw, "test")
    res = run_replication(sc, 0)
    k = res.kpis
    ep = res.records["episodes"]
    placed = int(((ep["placement"] == "iop") & (ep["t_referral"] >= sc.warmup_days)).sum())
    assert 0 < placed < int((ep["t_referral"] >= sc.warmup_days).sum())
    assert k["referral_cohort"] == placed


def test_first_attended_session_is_the_first_attendance_and_the_kpi_uses_it():
    """`t_first_attended` is the client's first attendance record; the KPI counts it, not the group's first session."""
    from iopsim.analysis.access import access_kpis

    sc = validate_raw(shipped_raw("baseline"), "baseline")
    res = run_replication(sc, 0)
    v, att = res.records["visits"], res.records["attendance"]
    assert len(att), "the baseline bills sessions, so attendance is recorded"
    iop = v[(v["stage"] == "iop") & v["t_first_session"].notna()]
    once = iop[~iop.duplicated(["patient_id", "episode"], keep=False)]  # episodes with one IOP stay
    first = att.groupby(["patient_id", "episode"])["t"].min()
    expected = np.array([first.get((p, e), np.nan) for p, e in zip(once["patient_id"], once["episode"])])
    got = once["t_first_attended"].to_numpy(dtype=float)
    seen = once["t_first_session"].to_numpy(dtype=float) >= 0  # not in care on day 0
    assert np.array_equal(np.isnan(got[seen]), np.isnan(expected[seen]))
    assert np.allclose(got[seen][~np.isnan(got[seen])], expected[seen][~np.isnan(expected[seen])], rtol=0, atol=0)
    started = iop["t_first_attended"].notna()
    assert (iop.loc[started, "t_first_attended"] >= iop.loc[started, "t_first_session"]).all()
    assert (iop.loc[started, "t_first_attended"] > iop.loc[started, "t_first_session"]).any(), \
        "at this attendance some clients miss their group's first session"
    k = access_kpis(res.records, sc, float(sc.warmup_days))
    as_held = dict(res.records, visits=v.assign(t_first_attended=v["t_first_session"]))
    k_held = access_kpis(as_held, sc, float(sc.warmup_days))
    for track in sc.stages.iop.tracks:
        for q in ("median", "p90"):
            name = f"iop_track_{track}_referral_to_first_session_{q}_days"
            assert k[name] >= k_held[name], (name, k[name], k_held[name])
    assert any(k[n] > k_held[n] for n in k if n.startswith("iop_track_")), "first attended is later than first held"


def test_tracked_iop_reports_referral_to_first_session_per_track():
    sc = validate_raw(shipped_raw("baseline"), "baseline")
    k = run_replication(sc, 0).kpis
    for track in sc.stages.iop.tracks:
        med = k[f"iop_track_{track}_referral_to_first_session_median_days"]
        p90 = k[f"iop_track_{track}_referral_to_first_session_p90_days"]
        assert 0 <= med <= p90 < 60, (track, med, p90)


def test_a_quantile_not_reached_in_some_replication_has_no_mean():
    """A Kaplan-Meier quantile missing from a replication is beyond what it observed: no mean over the others."""
    import pandas as pd

    from iopsim.analysis.compare import paired_differences
    from iopsim.analysis.stats import summarise
    from iopsim.outputs.answer import Facts

    nan = math.nan
    per = pd.DataFrame({"replication": [0, 1, 2], "referral_to_admission_p90_days": [2.6, nan, 3.0],
                        "referral_to_admission_median_days": [1.0, 1.2, 1.1],
                        "iop_track_day_referral_to_first_session_p90_days": [4.0, 5.0, nan],
                        "iop_stay_mean_days_transferred": [3.0, nan, 5.0]})
    s = summarise(per).set_index("kpi")
    for kpi in ("referral_to_admission_p90_days", "iop_track_day_referral_to_first_session_p90_days"):
        assert math.isnan(s.loc[kpi, "mean"]) and math.isnan(s.loc[kpi, "ci_low"]) and s.loc[kpi, "n"] == 2
    assert s.loc["referral_to_admission_median_days", "mean"] == pytest.approx(1.1)
    assert s.loc["iop_stay_mean_days_transferred", "mean"] == 4.0, "other undefined KPIs average where defined"
    d = paired_differences({"a": per, "b": per.assign(referral_to_admission_p90_days=[2.0, 2.0, 2.0])})
    row = d[(d["kpi"] == "referral_to_admission_p90_days") & (d["scenario"] == "b")].iloc[0]
    assert row["mean"] == 2.0 and math.isnan(row["diff"]) and not row["significant"]
    f = Facts("a", s.reset_index(), per, {})
    assert f.unreached("referral_to_admission_p90_days", "90 %").startswith(
        "in 1 of 3 replications the time by which 90 % would be admitted is not reached")
