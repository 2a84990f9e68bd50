"""Distributions as data: analytic means, cdf/ppf consistency, truncation, monotonicity."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from scipy import stats

from iopsim.schema.distributions import Distribution

ADAPTER = TypeAdapter(Distribution)
N_DRAWS = 200_000


def make(spec: dict):
    return ADAPTER.validate_python(spec)


#: id -> parameters; loglogistic has beta > 2 so its variance is finite.
SPECS: dict[str, dict] = {
    "fixed": {"dist": "fixed", "value": 7.5},
    "exponential": {"dist": "exponential", "mean": 10.0},
    "gamma": {"dist": "gamma", "mean": 10.0, "sd": 4.0},
    "gamma-skewed": {"dist": "gamma", "mean": 2.0, "sd": 5.0},
    "lognormal-mean-sd": {"dist": "lognormal", "mean": 20.0, "sd": 8.0},
    "lognormal-median-sigma": {"dist": "lognormal", "median": 15.0, "sigma": 0.5},
    "weibull": {"dist": "weibull", "shape": 1.5, "scale": 10.0},
    "loglogistic": {"dist": "loglogistic", "alpha": 10.0, "beta": 5.0},
    "triangular": {"dist": "triangular", "low": 1.0, "mode": 3.0, "high": 8.0},
    "triangular-mode-at-low": {"dist": "triangular", "low": 0.0, "mode": 0.0, "high": 4.0},
    "triangular-mode-at-high": {"dist": "triangular", "low": 2.0, "mode": 6.0, "high": 6.0},
    "uniform": {"dist": "uniform", "low": 2.0, "high": 6.0},
    "empirical": {"dist": "empirical", "values": [30.0, 0.5, 5.0, 2.0], "weights": [0.3, 0.3, 0.1, 0.3]},
    "empirical-unweighted": {"dist": "empirical", "values": [4.0, 1.0, 1.0, 9.0]},
}
CONTINUOUS = [k for k in SPECS if not k.startswith(("fixed", "empirical"))]


# --------------------------------------------------------------------------- means


@pytest.mark.parametrize("key", list(SPECS))
def test_sample_mean_matches_analytic_mean(key):
    dist = make(SPECS[key])
    x = dist.sample(np.random.default_rng(20240601), N_DRAWS)
    se = x.std(ddof=1) / math.sqrt(len(x))
    diff = abs(x.mean() - dist.mean)
    assert diff <= 4 * se + 1e-12, (
        f"{key}: sample mean {x.mean():.6g} vs analytic mean {dist.mean:.6g}: "
        f"|diff| = {diff:.3g} > 4 SE = {4 * se:.3g}"
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("fixed", 7.5),
        ("exponential", 10.0),
        ("gamma", 10.0),
        ("lognormal-mean-sd", 20.0),
        ("lognormal-median-sigma", 15.0 * math.exp(0.125)),
        ("weibull", 10.0 * math.gamma(1 + 1 / 1.5)),
        ("loglogistic", 10.0 * (math.pi / 5) / math.sin(math.pi / 5)),
        ("triangular", 4.0),
        ("uniform", 4.0),
        ("empirical", 0.3 * 30 + 0.3 * 0.5 + 0.1 * 5 + 0.3 * 2),
        ("empirical-unweighted", 15.0 / 4),
    ],
)
def test_analytic_mean_has_the_textbook_value(key, expected):
    assert make(SPECS[key]).mean == pytest.approx(expected, rel=1e-12), f"{key}: wrong closed-form mean"


def test_sample_has_the_requested_size_and_is_reproducible():
    dist = make(SPECS["gamma"])
    a = dist.sample(np.random.default_rng(7), 1000)
    b = dist.sample(np.random.default_rng(7), 1000)
    assert a.shape == (1000,) and np.array_equal(a, b), "same seed must give the same 1000 draws"


@pytest.mark.parametrize("beta", [0.5, 0.7, 1.0])
def test_loglogistic_with_beta_at_most_one_has_infinite_mean(beta):
    assert make({"dist": "loglogistic", "alpha": 365.0, "beta": beta}).mean == math.inf, (
        f"loglogistic beta={beta} has no finite mean; `mean` should be inf"
    )


@pytest.mark.parametrize("beta", [0.5, 0.7, 1.0])
def test_loglogistic_median_is_alpha(beta):
    dist = make({"dist": "loglogistic", "alpha": 365.0, "beta": beta})
    assert float(dist.ppf(0.5)) == pytest.approx(365.0, rel=1e-12), f"ppf(0.5) should be alpha for beta={beta}"


@pytest.mark.parametrize("beta", [0.5, 0.7, 1.0])
def test_loglogistic_sample_median_is_alpha(beta):
    dist = make({"dist": "loglogistic", "alpha": 365.0, "beta": beta})
    x = dist.sample(np.random.default_rng(99), N_DRAWS)
    # P(X < alpha) = 1/2 exactly; the share below alpha has SE 1/(2 sqrt(n)).
    share_below = float(np.mean(x < 365.0))
    assert abs(share_below - 0.5) <= 4 * 0.5 / math.sqrt(N_DRAWS), (
        f"beta={beta}: {share_below:.4f} of draws below alpha, expected 0.5"
    )


# --------------------------------------------------------------------------- cdf / ppf


U_GRID = np.concatenate([np.linspace(0.001, 0.999, 999), [1e-6, 0.5, 1 - 1e-6]])


@pytest.mark.parametrize("key", CONTINUOUS)
def test_cdf_inverts_ppf(key):
    dist = make(SPECS[key])
    back = dist.cdf(dist.ppf(U_GRID))
    worst = float(np.max(np.abs(back - U_GRID)))
    assert worst < 1e-9, f"{key}: max |cdf(ppf(u)) - u| = {worst:.3g}"


@pytest.mark.parametrize("key", CONTINUOUS)
def test_cdf_is_zero_below_zero_and_one_far_out(key):
    dist = make(SPECS[key])
    lo, hi = dist.cdf(np.array([-1.0, 1e12]))
    assert (lo, hi) == (0.0, pytest.approx(1.0)), f"{key}: cdf(-1)={lo}, cdf(1e12)={hi}"


@pytest.mark.parametrize("key", ["empirical", "empirical-unweighted"])
def test_empirical_draw_frequencies_match_weights(key):
    dist = make(SPECS[key])
    values = np.asarray(SPECS[key]["values"])
    weights = np.asarray(SPECS[key].get("weights") or np.ones(len(values)))
    x = dist.sample(np.random.default_rng(3), N_DRAWS)
    for v in np.unique(values):
        p = weights[values == v].sum() / weights.sum()
        freq = float(np.mean(x == v))
        se = math.sqrt(p * (1 - p) / N_DRAWS)
        assert abs(freq - p) <= 4 * se, f"{key}: value {v} drawn with frequency {freq:.4f}, expected {p:.4f}"


def test_empirical_zero_weight_value_is_never_drawn():
    dist = make({"dist": "empirical", "values": [1.0, 2.0, 3.0], "weights": [1.0, 0.0, 1.0]})
    x = dist.sample(np.random.default_rng(5), 50_000)
    assert not np.any(x == 2.0), "a value with weight 0 was drawn"


# --------------------------------------------------------------------------- truncation


def _truncated_draws(dist, upper: float, n: int = 4000, seed: int = 11) -> np.ndarray:
    u = np.random.default_rng(seed).random(n)
    return np.array([dist.truncated_ppf(float(ui), upper) for ui in u])


@pytest.mark.parametrize("key", list(SPECS))
@pytest.mark.parametrize("quantile", [0.05, 0.6, 1.0 - 1e-9])
def test_truncated_ppf_never_exceeds_upper(key, quantile):
    dist = make(SPECS[key])
    upper = float(dist.ppf(quantile)) if not key.startswith("fixed") else 7.5 * quantile
    x = _truncated_draws(dist, upper, n=500)
    assert np.all(x <= upper), f"{key}: truncated draw {x.max()!r} above upper={upper!r}"


@pytest.mark.parametrize("key", list(SPECS))
def test_truncated_ppf_below_the_support_stays_at_or_below_upper(key):
    dist = make(SPECS[key])
    upper = 1e-3  # below the support of several families (uniform from 2, triangular from 1, ...)
    x = _truncated_draws(dist, upper, n=200)
    assert np.all(x <= upper), f"{key}: truncated draw {x.max()!r} above upper={upper!r}"


@pytest.mark.parametrize("key", CONTINUOUS)
@pytest.mark.parametrize("quantile", [0.3, 0.8])
def test_truncated_ppf_follows_the_conditional_distribution(key, quantile):
    dist = make(SPECS[key])
    upper = float(dist.ppf(quantile))
    p_upper = float(dist.cdf(upper))
    x = _truncated_draws(dist, upper)

    def conditional_cdf(t):
        return np.minimum(dist.cdf(t) / p_upper, 1.0)

    result = stats.kstest(x, conditional_cdf)
    assert result.pvalue > 1e-3, (
        f"{key}: truncated draws (upper={upper:.4g}) do not follow F(x)/F(upper): "
        f"KS D={result.statistic:.4f}, p={result.pvalue:.2g}"
    )


def test_truncated_ppf_of_empirical_follows_the_conditional_probabilities():
    dist = make(SPECS["empirical"])  # values 0.5, 2, 5, 30 with weights .3 .3 .1 .3
    x = _truncated_draws(dist, 5.0, n=6000)
    for v, p in [(0.5, 0.3 / 0.7), (2.0, 0.3 / 0.7), (5.0, 0.1 / 0.7)]:
        freq = float(np.mean(x == v))
        se = math.sqrt(p * (1 - p) / len(x))
        assert abs(freq - p) <= 4 * se, f"value {v}: conditional frequency {freq:.4f}, expected {p:.4f}"


def test_truncated_ppf_of_fixed_is_clipped_to_upper():
    dist = make(SPECS["fixed"])
    assert (dist.truncated_ppf(0.3, 100.0), dist.truncated_ppf(0.3, 2.0)) == (7.5, 2.0), (
        "fixed: truncated_ppf should be min(value, upper)"
    )


# --------------------------------------------------------------------------- monotone ppf (property-based)

unit = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@pytest.mark.parametrize("key", list(SPECS))
@settings(max_examples=60, deadline=None, database=None)
@given(u1=unit, u2=unit)
def test_ppf_is_monotone_non_decreasing(key, u1, u2):
    dist = make(SPECS[key])
    lo, hi = min(u1, u2), max(u1, u2)
    with np.errstate(divide="ignore"):
        a, b = float(dist.ppf(lo)), float(dist.ppf(hi))
    assert a <= b, f"{key}: ppf({lo!r}) = {a!r} > ppf({hi!r}) = {b!r}"


@pytest.mark.parametrize("key", list(SPECS))
@settings(max_examples=30, deadline=None, database=None)
@given(us=st.lists(unit, min_size=2, max_size=50))
def test_vectorised_ppf_is_monotone_non_decreasing(key, us):
    dist = make(SPECS[key])
    u = np.sort(np.asarray(us))
    with np.errstate(divide="ignore"):
        x = np.asarray(dist.ppf(u), dtype=float)
    assert np.all(x[1:] >= x[:-1]), f"{key}: ppf not monotone on sorted u={u.tolist()}: {x.tolist()}"


def test_triangular_ppf_is_monotone_across_the_mode():
    """Regression: the two branches of ppf used to round differently, stepping down by ulps at the mode."""
    low, mode, high = 5.856803480519435, 23.936944299295217, 87.64842308107038
    dist = make({"dist": "triangular", "low": low, "mode": mode, "high": high})
    fc = (mode - low) / (high - low)
    u = np.array([np.nextafter(fc, 0.0), fc, np.nextafter(fc, 1.0)])
    x = dist.ppf(u)
    assert np.all(x[1:] >= x[:-1]), f"ppf around the mode (u={u.tolist()}) is not monotone: {x.tolist()}"
