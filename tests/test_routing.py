"""General routing (step-up, repeats, cycles) checked against the product-form solution
of an open Jackson network, and exits that move a patient to another stage.

The network: residential, PHP and IOP as M/M/c nodes fed by Poisson referrals;
completed stays route down, up or back to the same stage with fixed
probabilities; no exits, patience, relapse or intake.  Jackson's theorem: each
node behaves as an M/M/c queue with the arrival rate solving the traffic
equations lambda = gamma + lambda P, so its mean wait is Erlang C's, its mean
census (patients in care) is lambda/mu, and its mean waitlist is lambda Wq.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import stats

from iopsim.analysis.stats import mean_ci
from iopsim.experiments.replications import run_replication, run_replications
from iopsim.schema.scenario import validate_raw

NODES = ("residential", "php", "iop")
SERVERS = {"residential": 1, "php": 1, "iop": 2}
MEAN_STAY = {"residential": 1.0, "php": 0.8, "iop": 1.2}  # days
GAMMA = 1.5  # external referrals per day
PLACEMENT = {"residential": 0.3, "php": 0.3, "iop": 0.4}
ROUTING = {  # after a completed stay
    "residential": {"php": 0.5, "discharge": 0.5},
    "php": {"residential": 0.2, "iop": 0.5, "discharge": 0.3},  # 0.2: step-up
    "iop": {"php": 0.15, "iop": 0.1, "discharge": 0.75},  # step-up and a repeat of IOP
}


def erlang_c(c: int, a: float) -> float:
    rho = a / c
    assert rho < 1
    head = sum(a**k / math.factorial(k) for k in range(c))
    tail = a**c / math.factorial(c) / (1.0 - rho)
    return tail / (head + tail)


def jackson_theory() -> dict[str, dict[str, float]]:
    """Per node: arrival rate, Wq, Lq and mean census from the traffic equations."""
    p = np.array([[ROUTING[i].get(j, 0.0) for j in NODES] for i in NODES])
    gamma = np.array([GAMMA * PLACEMENT[n] for n in NODES])
    lam = np.linalg.solve(np.eye(len(NODES)) - p.T, gamma)
    out = {}
    for n, lam_n in zip(NODES, lam):
        mu, c = 1.0 / MEAN_STAY[n], SERVERS[n]
        wq = erlang_c(c, lam_n / mu) / (c * mu - lam_n)
        out[n] = {"lambda": lam_n, "rho": lam_n / (c * mu), "wait": wq, "waitlist": lam_n * wq, "census": lam_n / mu}
    return out


def jackson_scenario(horizon: int, warmup: int, seed: int):
    stages = {n: {"capacity": SERVERS[n], "los_days": {"dist": "exponential", "mean": MEAN_STAY[n]},
                  "step_down": ROUTING[n]} for n in NODES}
    raw = {
        "name": "jackson", "seed": seed, "horizon_days": horizon, "warmup_days": warmup,
        "referrals": {"referrals_per_week": GAMMA * 7.0, "sources": {"all": {"share": 1.0, "placement": PLACEMENT}}},
        "stages": stages,
    }
    return validate_raw(raw, "test")


def test_traffic_equations_give_a_stable_network_with_feedback():
    th = jackson_theory()
    assert all(0.6 < th[n]["rho"] < 0.8 for n in NODES), {n: th[n]["rho"] for n in NODES}
    # Feedback makes internal flows exceed external ones.
    assert sum(th[n]["lambda"] for n in NODES) > 1.5 * GAMMA


@functools.lru_cache(maxsize=None)
def _jackson_runs():
    return run_replications(jackson_scenario(horizon=6_000, warmup=200, seed=2024), 10, jobs=2)


KPI = {"wait": "{n}_admitted_wait_mean_days", "waitlist": "{n}_waitlist_mean", "census": "{n}_census_mean"}


@pytest.mark.parametrize("node", NODES)
@pytest.mark.parametrize("metric", list(KPI))
def test_jackson_network_matches_product_form(node, metric):
    """Every node's wait, waitlist and census within its CI of the product-form value.

    Nine comparisons: each interval is Bonferroni-adjusted to 1 - 0.05/9, so the
    family of checks is a 95 % test.
    """
    theory = jackson_theory()[node][metric]
    values = [r.kpis[KPI[metric].format(n=node)] for r in _jackson_runs()]
    mean, _sd, lo, hi, k = mean_ci(values, 1 - 0.05 / 9)
    assert k == len(values)
    assert (hi - lo) / 2 < 0.2 * theory, f"{node} {metric}: CI [{lo:.4g}, {hi:.4g}] too wide to test {theory:.4g}"
    assert lo <= theory <= hi, f"{node} {metric}: theory {theory:.4g} outside CI [{lo:.4g}, {hi:.4g}] (mean {mean:.4g})"


def test_jackson_routing_frequencies_match_the_routing_matrix():
    """Realised routing after completed stays matches the probabilities (binomial 99.9 % bands)."""
    v = _jackson_runs()[0].records["visits"]
    done = v[v["outcome"] == "completed"]
    for n in NODES:
        nxt = done.loc[done["stage"] == n, "next"].fillna("discharge")
        for target, p in ROUTING[n].items():
            x = int((nxt == target).sum())
            lo, hi = stats.binom.ppf([0.0005, 0.9995], len(nxt), p)
            assert lo <= x <= hi, f"{n} -> {target}: {x} of {len(nxt)}, expected about {p * len(nxt):.0f}"
    # a repeat of IOP is a new visit of the same episode that joins when the last one ends
    reps = done[(done["stage"] == "iop") & (done["next"] == "iop")]
    assert len(reps) > 50
    after = v.merge(reps[["patient_id", "episode", "t_leave"]], left_on=["patient_id", "episode", "t_join"],
                    right_on=["patient_id", "episode", "t_leave"], suffixes=("", "_prev"))
    assert (after["stage"] == "iop").sum() >= len(reps) - 5  # the last few may be cut by the horizon


def test_every_visit_of_a_cycling_episode_is_accounted_for():
    """Conservation with cycles: each routed visit has a successor that joins when it ends."""
    r = _jackson_runs()[1]
    v = r.records["visits"].sort_values(["patient_id", "episode", "t_join"], kind="stable")
    ended = v[v["t_leave"].notna()]
    routed = ended[ended["next"].notna() & (ended["next"] != "discharge")]
    nxt = v.groupby(["patient_id", "episode"]).shift(-1)
    succ = nxt.loc[routed.index]
    assert (succ["stage"].to_numpy() == routed["next"].to_numpy()).all(), "a routed visit's next stage differs"
    assert np.allclose(succ["t_join"].to_numpy(float), routed["t_leave"].to_numpy(float)), "successor joins late"
    ep = r.records["episodes"]
    open_eps = ep["exit_outcome"] == "in_system"
    still = v[v["outcome"] == "in_system"].drop_duplicates(["patient_id", "episode"])
    assert open_eps.sum() == len(still), "episodes open at the end and visits open at the end disagree"


# --------------------------------------------------------------------------- exits to another stage


def stepup_raw(to: str | None) -> dict:
    exit_cfg = {"probability": 0.25, "days": {"dist": "exponential", "mean": 10.0}}
    if to is not None:
        exit_cfg["to"] = to
    return {
        "name": "step-up", "seed": 5, "horizon_days": 400, "warmup_days": 0,
        "referrals": {"referrals_per_week": 10.0, "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}}},
        "stages": {
            "php": {"capacity": 8, "los_days": {"dist": "fixed", "value": 14}, "step_down": {"iop": 1.0}},
            "iop": {"capacity": 60, "los_days": {"dist": "fixed", "value": 40},
                    "exits": {"stepped_up": exit_cfg}},
        },
    }


def test_exit_with_to_moves_the_patient_to_that_stage():
    res = run_replication(validate_raw(stepup_raw("php"), "test"), 0)
    v = res.records["visits"]
    up = v[(v["stage"] == "iop") & (v["outcome"] == "stepped_up")]
    assert len(up) > 20 and (up["next"] == "php").all(), "a stepped-up IOP exit must route to PHP"
    php = v[v["stage"] == "php"]
    joined = up.merge(php, left_on=["patient_id", "episode", "t_leave"], right_on=["patient_id", "episode", "t_join"])
    assert len(joined) == len(up), "every step-up should start a PHP visit at the moment it leaves IOP"
    assert res.kpis["iop_stepped_up"] == len(up) and res.kpis["php_admissions"] > 0
    # back to IOP after PHP: a cycle IOP -> PHP -> IOP inside one episode
    again = php.merge(v[v["stage"] == "iop"], left_on=["patient_id", "episode", "t_leave"],
                      right_on=["patient_id", "episode", "t_join"])
    assert len(again) > 0, "PHP completions should step back down to IOP"


def test_exit_without_to_leaves_and_draws_are_common():
    """Adding `to` changes where the patient goes, not who exits or when (common random numbers)."""
    a = run_replication(validate_raw(stepup_raw("php"), "test"), 0).records["visits"]
    b = run_replication(validate_raw(stepup_raw(None), "test"), 0).records["visits"]
    first = ["patient_id", "episode"]
    fa = a[a["stage"] == "iop"].drop_duplicates(first).set_index(first)
    fb = b[b["stage"] == "iop"].drop_duplicates(first).set_index(first)
    common = fa.index.intersection(fb.index)
    ended = [i for i in common if fa.loc[i, "outcome"] != "in_system" and fb.loc[i, "outcome"] != "in_system"]
    assert len(ended) > 100
    assert (fa.loc[ended, "outcome"] == fb.loc[ended, "outcome"]).all(), "exit decisions changed with `to`"
    assert np.allclose(fa.loc[ended, "t_leave"] - fa.loc[ended, "t_admit"], fb.loc[ended, "t_leave"] - fb.loc[ended, "t_admit"])
    left = b[(b["stage"] == "iop") & (b["outcome"] == "stepped_up")]
    assert left["next"].isna().all(), "an exit without `to` leaves the program"
    assert not (b["stage"] == "php").any(), "nobody should reach PHP when no exit routes there"
