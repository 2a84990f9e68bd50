"""Probability distributions described as data.

A scenario writes a distribution as a small mapping, e.g.
``{dist: lognormal, median: 50, sigma: 0.6}``.  Each family here validates its
parameters, knows its analytic ``mean`` (tests compare sample means against it)
and samples by **inverse transform**: ``ppf(u)`` of a uniform ``u`` drawn from a
named random stream.  Inverse-transform sampling is deliberate: when two
scenarios differ only in a distribution's parameters, the same uniform gives a
monotonically related value in both, which is what makes common random numbers
effective (see :mod:`iopsim.engine.streams`).
"""

from __future__ import annotations

import math
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import Field, model_validator

from iopsim.schema.base import FieldError, FrozenModel

PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]


class _Dist(FrozenModel):
    """Common interface: ``mean``, ``cdf(x)`` and ``ppf(u)`` (vectorised)."""

    @model_validator(mode="after")
    def _within_limits(self):
        """Parameters at the edge of floating point validate and then overflow in a run: bound them.

        Every number's size is at most ``distribution_value`` (default 1e9) and
        every positive one at least its inverse; a spread may not exceed the
        mean a thousand-fold, nor a log-scale sigma 10.
        """
        from iopsim.schema.limits import limit, over

        big = limit("distribution_value")
        for name, info in type(self).model_fields.items():
            v = getattr(self, name)
            values = v if isinstance(v, list) else [v]
            for x in values:
                if isinstance(x, bool) or not isinstance(x, (int, float)):
                    continue
                key = info.alias or name
                if abs(x) > big:
                    raise FieldError(key, over("distribution_value", abs(x)))
                if 0 < abs(x) < 1.0 / big:
                    raise FieldError(key, f"{x:g} is too small (below {1.0 / big:g}); use a larger unit or 0")
        sd, mean = getattr(self, "sd", None), getattr(self, "mean_", None)
        if sd is not None and mean is not None and sd > 1000 * mean:
            raise FieldError("sd", f"sd {sd:g} is more than 1000 times the mean {mean:g}; the distribution "
                                   "cannot be sampled accurately")
        sigma = getattr(self, "sigma", None)
        if sigma is not None and sigma > 10:
            raise FieldError("sigma", f"sigma {sigma:g} is above 10 (the upper tail overflows); use at most 10")
        try:  # each parameter within bounds can still make a tail that overflows (a Weibull of shape 0.001)
            with np.errstate(all="ignore"):
                tail = float(np.asarray(self.ppf(0.999), dtype=float))
        except Exception:  # noqa: BLE001 - parameters missing or inconsistent: the family's own check, next, says which
            return self
        if not math.isfinite(tail):  # a long tail is fine (relapse times often have one); an overflow is not
            name = next(iter(type(self).model_fields))
            raise FieldError(name, f"its 99.9th percentile overflows ({tail:g}): these parameters give a tail "
                                   "no number can hold; choose a larger shape or a smaller spread")
        return self

    @property
    def mean(self) -> float:  # pragma: no cover - every family overrides
        raise NotImplementedError

    def cdf(self, x):  # pragma: no cover
        raise NotImplementedError

    def ppf(self, u):  # pragma: no cover
        raise NotImplementedError

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """Draw ``size`` values with ``rng`` (inverse transform)."""
        return np.asarray(self.ppf(rng.random(size)), dtype=float)

    def truncated_ppf(self, u: float, upper: float) -> float:
        """Inverse transform of the distribution conditioned on ``X < upper``."""
        p = float(self.cdf(upper))
        if p <= 0.0:  # no mass before `upper`: the exit happens at `upper` (as for `fixed`)
            return float(upper)
        return min(float(self.ppf(u * p)), upper)


class Fixed(_Dist):
    """Always the same value."""

    dist: Literal["fixed"]
    """Family tag: fixed."""
    value: NonNegativeFloat
    """The value, in the unit of the field that uses it (days, or hours for assessment_hours)."""

    @property
    def mean(self) -> float:
        return self.value

    def cdf(self, x):
        return np.where(np.asarray(x) >= self.value, 1.0, 0.0)

    def ppf(self, u):
        return np.full_like(np.asarray(u, dtype=float), self.value)


class Exponential(_Dist):
    """Exponential: memoryless, given its mean."""

    dist: Literal["exponential"]
    """Family tag: exponential."""
    mean_: PositiveFloat = Field(alias="mean")
    """Mean, in the unit of the field that uses it (days, or hours for assessment_hours)."""

    @property
    def mean(self) -> float:
        return self.mean_

    def cdf(self, x):
        return -np.expm1(-np.maximum(np.asarray(x, dtype=float), 0.0) / self.mean_)

    def ppf(self, u):
        return -self.mean_ * np.log1p(-np.asarray(u, dtype=float))


class Gamma(_Dist):
    """Gamma given its mean and standard deviation (shape = (mean/sd)^2, scale = sd^2/mean)."""

    dist: Literal["gamma"]
    """Family tag: gamma."""
    mean_: PositiveFloat = Field(alias="mean")
    """Mean, in the unit of the field that uses it (days, or hours for assessment_hours)."""
    sd: PositiveFloat
    """Standard deviation, in the same unit as the mean."""

    @property
    def mean(self) -> float:
        return self.mean_

    @property
    def shape(self) -> float:
        return (self.mean_ / self.sd) ** 2

    @property
    def scale(self) -> float:
        return self.sd**2 / self.mean_

    def cdf(self, x):
        from scipy import special  # imported on first use: half a second of start-up

        return special.gammainc(self.shape, np.maximum(np.asarray(x, dtype=float), 0.0) / self.scale)

    def ppf(self, u):
        from scipy import special

        return special.gammaincinv(self.shape, np.asarray(u, dtype=float)) * self.scale


class Lognormal(_Dist):
    """Lognormal given either ``mean`` and ``sd`` or ``median`` and ``sigma``.

    Published lengths of stay are medians of right-skewed data, hence the second form.
    """

    dist: Literal["lognormal"]
    """Family tag: lognormal."""
    mean_: PositiveFloat | None = Field(default=None, alias="mean")
    """Mean, in the unit of the field that uses it (days, or hours for assessment_hours); give it with sd."""
    sd: PositiveFloat | None = None
    """Standard deviation, in the same unit as the mean; give it with mean."""
    median: PositiveFloat | None = None
    """Median, in the unit of the field that uses it (days, or hours for assessment_hours); give it with sigma."""
    sigma: PositiveFloat | None = None
    """Standard deviation of the logarithm (no unit); give it with median."""

    @model_validator(mode="after")
    def _one_parameter_set(self):
        by_moments = self.mean_ is not None and self.sd is not None
        by_median = self.median is not None and self.sigma is not None
        given = [k for k in ("mean_", "sd", "median", "sigma") if getattr(self, k) is not None]
        if by_moments == by_median or len(given) != 2:
            raise ValueError("give either mean and sd, or median and sigma")
        return self

    @property
    def mu(self) -> float:
        if self.median is not None:
            return math.log(self.median)
        return math.log(self.mean_) - 0.5 * self.s**2

    @property
    def s(self) -> float:
        if self.sigma is not None:
            return self.sigma
        return math.sqrt(math.log1p((self.sd / self.mean_) ** 2))

    @property
    def mean(self) -> float:
        return math.exp(self.mu + 0.5 * self.s**2)

    def cdf(self, x):
        x = np.asarray(x, dtype=float)
        with np.errstate(divide="ignore"):
            z = (np.log(np.maximum(x, 0.0)) - self.mu) / self.s
        from scipy import special

        return special.ndtr(z)

    def ppf(self, u):
        from scipy import special

        return np.exp(self.mu + self.s * special.ndtri(np.asarray(u, dtype=float)))


class Weibull(_Dist):
    """Weibull: F(x) = 1 - exp(-(x/scale)^shape)."""

    dist: Literal["weibull"]
    """Family tag: weibull."""
    shape: PositiveFloat
    """Shape (no unit)."""
    scale: PositiveFloat
    """Scale, in the unit of the field that uses it (days, or hours for assessment_hours)."""

    @property
    def mean(self) -> float:
        return self.scale * math.gamma(1.0 + 1.0 / self.shape)

    def cdf(self, x):
        x = np.maximum(np.asarray(x, dtype=float), 0.0)
        return -np.expm1(-((x / self.scale) ** self.shape))

    def ppf(self, u):
        return self.scale * (-np.log1p(-np.asarray(u, dtype=float))) ** (1.0 / self.shape)


class LogLogistic(_Dist):
    """Log-logistic with scale ``alpha`` (its median) and shape ``beta``.

    The mean is infinite when ``beta <= 1``; ``mean`` then returns ``inf``.
    """

    dist: Literal["loglogistic"]
    """Family tag: loglogistic."""
    alpha: PositiveFloat
    """Scale and median, in the unit of the field that uses it (days, or hours for assessment_hours)."""
    beta: PositiveFloat
    """Shape (no unit); the mean is infinite when beta is 1 or less."""

    @property
    def mean(self) -> float:
        if self.beta <= 1.0:
            return math.inf
        b = math.pi / self.beta
        return self.alpha * b / math.sin(b)

    def cdf(self, x):
        x = np.maximum(np.asarray(x, dtype=float), 0.0)
        r = (x / self.alpha) ** self.beta
        return r / (1.0 + r)

    def ppf(self, u):
        u = np.asarray(u, dtype=float)
        return self.alpha * (u / (1.0 - u)) ** (1.0 / self.beta)


class Triangular(_Dist):
    """Triangular on [low, high] with its peak at mode."""

    dist: Literal["triangular"]
    """Family tag: triangular."""
    low: NonNegativeFloat
    """Lowest value, in the unit of the field that uses it (days, or hours for assessment_hours)."""
    mode: NonNegativeFloat
    """Most likely value, in the same unit; low <= mode <= high."""
    high: NonNegativeFloat
    """Highest value, in the same unit; above low."""

    @model_validator(mode="after")
    def _ordered(self):
        if not (self.low <= self.mode <= self.high) or self.low == self.high:
            raise ValueError("needs low <= mode <= high and low < high")
        return self

    @property
    def mean(self) -> float:
        return (self.low + self.mode + self.high) / 3.0

    def cdf(self, x):
        a, c, b = self.low, self.mode, self.high
        x = np.clip(np.asarray(x, dtype=float), a, b)
        left = (x - a) ** 2 / ((b - a) * (c - a)) if c > a else np.zeros_like(x)
        right = 1.0 - (b - x) ** 2 / ((b - a) * (b - c)) if b > c else np.ones_like(x)
        return np.where(x <= c, left, right)

    def ppf(self, u):
        a, c, b = self.low, self.mode, self.high
        u = np.asarray(u, dtype=float)
        fc = (c - a) / (b - a)
        # Clip each branch to its side of the mode: rounding would otherwise make
        # ppf step down by a few ulps where the branches meet.
        return np.where(
            u < fc,
            np.minimum(a + np.sqrt(u * (b - a) * (c - a)), c),
            np.maximum(b - np.sqrt((1.0 - u) * (b - a) * (b - c)), c),
        )


class Uniform(_Dist):
    """Uniform on [low, high]."""

    dist: Literal["uniform"]
    """Family tag: uniform."""
    low: NonNegativeFloat
    """Lowest value, in the unit of the field that uses it (days, or hours for assessment_hours)."""
    high: NonNegativeFloat
    """Highest value, in the same unit; above low."""

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError("needs low < high")
        return self

    @property
    def mean(self) -> float:
        return 0.5 * (self.low + self.high)

    def cdf(self, x):
        return np.clip((np.asarray(x, dtype=float) - self.low) / (self.high - self.low), 0.0, 1.0)

    def ppf(self, u):
        return self.low + np.asarray(u, dtype=float) * (self.high - self.low)


class Empirical(_Dist):
    """Discrete distribution over observed ``values`` with optional ``weights``."""

    dist: Literal["empirical"]
    """Family tag: empirical."""
    values: list[NonNegativeFloat] = Field(min_length=1)
    """The observed values, in the unit of the field that uses it (days, or hours for assessment_hours); drawn by weight."""
    weights: list[NonNegativeFloat] | None = None
    """Relative weight of each value (as many as values, not all 0); equal weights when absent."""

    @model_validator(mode="after")
    def _weights_match(self):
        if self.weights is not None:
            if len(self.weights) != len(self.values):
                raise ValueError("weights must have one entry per value")
            if sum(self.weights) <= 0:
                raise ValueError("weights must not all be zero")
        return self

    def _table(self):
        v = np.asarray(self.values, dtype=float)
        w = np.ones_like(v) if self.weights is None else np.asarray(self.weights, dtype=float)
        order = np.argsort(v, kind="stable")
        v, w = v[order], w[order]
        cum = np.cumsum(w) / w.sum()
        cum[-1] = 1.0
        return v, w / w.sum(), cum

    @property
    def mean(self) -> float:
        v, p, _ = self._table()
        return float(np.dot(v, p))

    def cdf(self, x):
        v, _, cum = self._table()
        idx = np.searchsorted(v, np.asarray(x, dtype=float), side="right")
        return np.where(idx == 0, 0.0, cum[np.maximum(idx - 1, 0)])

    def ppf(self, u):
        v, _, cum = self._table()
        idx = np.searchsorted(cum, np.asarray(u, dtype=float), side="right")
        return v[np.minimum(idx, len(v) - 1)]


Distribution = Annotated[
    Union[Fixed, Exponential, Gamma, Lognormal, Weibull, LogLogistic, Triangular, Uniform, Empirical],
    Field(discriminator="dist"),
]

FAMILIES = ("fixed", "exponential", "gamma", "lognormal", "weibull", "loglogistic", "triangular", "uniform", "empirical")
