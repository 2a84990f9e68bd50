"""Sensitivity analysis: SALib plumbing on known functions, and a tiny Morris sweep end to end.

* Sobol' indices of the Ishigami function (a=7, b=0.1) evaluated on the design
  points of a ``saltelli`` sweep design must match the analytic values within
  the confidence half-widths SALib returns.
* Morris effects of a linear function: SALib defines the elementary effect as
  (f(x + delta e_i) - f(x)) / delta with delta the step in the unit cube, so for
  f = sum c_i x_i over ranges R_i every effect is c_i R_i and mu* = |c_i| R_i,
  mu = c_i R_i and sigma = 0 -- the factors rank by |c_i| R_i.
* ``method: morris`` through the CLI writes ``sensitivity.csv`` and a figure per
  KPI; ``iopsim sensitivity`` refuses a folder that is not a sensitivity sweep.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from iopsim import cli
from conftest import minimal_scenario_dict
from iopsim.errors import IopsimError
from iopsim.analysis.sensitivity import morris_effects, sobol_indices
from iopsim.experiments.sweep import analyse_sweep
from iopsim.experiments.sweep import SweepFile, design_points

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

# Ishigami, a=7, b=0.1: V = a^2/8 + b pi^4/5 + b^2 pi^8/18 + 1/2
_A, _B = 7.0, 0.1
_V1 = 0.5 * (1 + _B * math.pi**4 / 5) ** 2
_V2 = _A**2 / 8
_V13 = _B**2 * math.pi**8 * (1 / 18 - 1 / 50)
_V = _V1 + _V2 + _V13
ISHIGAMI_S1 = (_V1 / _V, _V2 / _V, 0.0)
ISHIGAMI_ST = ((_V1 + _V13) / _V, _V2 / _V, _V13 / _V)


def ishigami(x: np.ndarray) -> np.ndarray:
    return np.sin(x[:, 0]) + _A * np.sin(x[:, 1]) ** 2 + _B * x[:, 2] ** 4 * np.sin(x[:, 0])


def in_memory(factors: dict, design: dict, seed: int = 0, method: str | None = None) -> SweepFile:
    return SweepFile.model_validate({"base": "-", "seed": seed, "kpis": ["y"], "design": design, "factors": factors,
                                     "method": method})


def as_matrix(points: list[dict], names: list[str]) -> np.ndarray:
    return np.array([[p[n] for n in names] for p in points], dtype=float)


def invoke(*args):
    return CliRunner().invoke(cli.app, [str(a) for a in args])


# --------------------------------------------------------------------------- Sobol' on Ishigami


def test_analytic_ishigami_values():
    """Guard the reference values used below (the textbook 0.3139, 0.4424, 0, and 0.5576, 0.4424, 0.2437)."""
    assert np.allclose(ISHIGAMI_S1, (0.3139, 0.4424, 0.0), atol=1e-4), f"S1 reference wrong: {ISHIGAMI_S1}"
    assert np.allclose(ISHIGAMI_ST, (0.5576, 0.4424, 0.2437), atol=1e-4), f"ST reference wrong: {ISHIGAMI_ST}"


@pytest.mark.parametrize("seed", [0, 3])
def test_sobol_indices_of_ishigami_on_a_saltelli_sweep_design(seed):
    names = ["x1", "x2", "x3"]
    sw = in_memory({n: {"range": [-math.pi, math.pi]} for n in names}, {"kind": "saltelli", "n": 2048}, seed=seed,
                   method="sobol")
    points = design_points(sw)
    assert len(points) == 2048 * (3 + 2), f"saltelli n=2048, 3 factors should give 10240 points, got {len(points)}"
    y = ishigami(as_matrix(points, names))
    df = sobol_indices(sw.problem(), y, seed=seed).set_index("factor")
    assert list(df.index) == names, f"indices should be listed per factor in order: {list(df.index)}"
    for col, truth in (("S1", ISHIGAMI_S1), ("ST", ISHIGAMI_ST)):
        for name, expected in zip(names, truth):
            est, conf = df.loc[name, col], df.loc[name, f"{col}_conf"]
            assert 0 < conf < 0.1, f"{col}[{name}]: the 95 % half-width {conf} is not a usable tolerance"
            assert abs(est - expected) <= conf, \
                f"{col}[{name}] = {est:.4f} ± {conf:.4f} does not cover the analytic {expected:.4f}"
    st = df["ST"]
    assert st["x1"] > st["x2"] > st["x3"] > 0.1, f"ST should rank x1 > x2 > x3 (x3 acts via interaction): {st.to_dict()}"
    assert abs(df.loc["x3", "S1"]) <= df.loc["x3", "S1_conf"], f"x3 has no first-order effect: {df.loc['x3'].to_dict()}"


# --------------------------------------------------------------------------- Morris on a linear function


@pytest.mark.parametrize("levels", [4, 6])
def test_morris_effects_of_a_linear_function(levels):
    coefs = {"a": 3.0, "b": -0.5, "c": 0.2, "d": 0.0}
    ranges = {"a": (0.0, 1.0), "b": (10.0, 30.0), "c": (-5.0, 5.0), "d": (1.0, 2.0)}
    names = list(coefs)
    sw = in_memory({n: {"range": list(ranges[n])} for n in names}, {"kind": "morris", "n": 12, "levels": levels},
                   seed=2, method="morris")
    points = design_points(sw)
    assert len(points) == 12 * (len(names) + 1), f"12 trajectories of {len(names) + 1} points expected, got {len(points)}"
    x = as_matrix(points, names)
    y = x @ np.array([coefs[n] for n in names])
    df = morris_effects(sw.problem(), x, y, levels, seed=2).set_index("factor")
    expected_star = {n: abs(coefs[n]) * (ranges[n][1] - ranges[n][0]) for n in names}
    for n in names:
        assert df.loc[n, "mu_star"] == pytest.approx(expected_star[n], abs=1e-9), \
            f"mu*[{n}] = {df.loc[n, 'mu_star']}, expected |coef| x range = {expected_star[n]}"
        assert df.loc[n, "mu"] == pytest.approx(coefs[n] * (ranges[n][1] - ranges[n][0]), abs=1e-9), \
            f"mu[{n}] should carry the sign of the coefficient: {df.loc[n, 'mu']}"
        assert df.loc[n, "sigma"] == pytest.approx(0.0, abs=1e-9), f"a linear function has sigma 0: {df.loc[n].to_dict()}"
    ranking = list(df["mu_star"].sort_values(ascending=False).index)
    assert ranking == ["b", "a", "c", "d"], f"factors should rank by |coef| x range (10, 3, 2, 0): {ranking}"


# --------------------------------------------------------------------------- end to end through the CLI


def _write_folder(folder: Path, sweep: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    base = minimal_scenario_dict()
    base["horizon_days"] = 200
    (folder / "base.yaml").write_text(yaml.safe_dump(base, sort_keys=False), encoding="utf-8")
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump({"base": "base.yaml", **sweep}, sort_keys=False), encoding="utf-8")
    return path


MORRIS_KPIS = ["iop_census_mean", "referrals"]


@pytest.fixture(scope="module")
def morris_sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("morris")
    sw = _write_folder(folder, {
        "seed": 4, "replications": 1, "kpis": MORRIS_KPIS, "method": "morris",
        "design": {"kind": "morris", "n": 2, "levels": 4},
        "factors": {"referrals.referrals_per_week": {"range": [3.0, 6.0]},
                    "stages.iop.los_days.mean": {"range": [10.0, 30.0]}},
    })
    out = folder / "out"
    result = invoke("sweep", sw, "--jobs", "1", "--out", out)
    return result, out


def test_morris_sweep_writes_sensitivity_csv_and_figures(morris_sweep):
    result, out = morris_sweep
    assert result.exit_code == 0, f"morris sweep failed: {result.stdout + result.stderr!r} {result.exception!r}"
    assert "Sensitivity" in result.stdout and "mu_star" in result.stdout, f"no sensitivity table printed: {result.stdout!r}"
    results = pd.read_parquet(out / "results.parquet")
    assert sorted(set(results["point_id"])) == list(range(2 * 3)), "2 trajectories x 3 points should all be stored"
    csv = pd.read_csv(out / "sensitivity.csv")
    assert list(csv.columns) == ["kpi", "factor", "mu", "mu_star", "mu_star_conf", "sigma"], f"columns: {list(csv.columns)}"
    assert sorted(zip(csv["kpi"], csv["factor"])) == sorted(
        (k, f) for k in MORRIS_KPIS for f in ("referrals.referrals_per_week", "stages.iop.los_days.mean")), \
        f"one row per KPI and factor expected: {csv[['kpi', 'factor']].values.tolist()}"
    assert np.isfinite(csv["mu_star"]).all() and (csv["mu_star"] >= 0).all(), f"mu* must be finite, >= 0: {csv}"
    ref = csv[csv["kpi"] == "referrals"].set_index("factor")["mu_star"]
    assert ref["referrals.referrals_per_week"] > ref["stages.iop.los_days.mean"], \
        f"referrals should be driven by the referral rate, not the length of stay: {ref.to_dict()}"
    for kpi in MORRIS_KPIS:
        png = out / "figures" / f"sensitivity_{kpi}.png"
        assert png.is_file() and png.read_bytes()[:8] == PNG_MAGIC, f"{png} missing or not a PNG"


def test_sensitivity_command_reanalyses_a_finished_sweep(morris_sweep):
    result, out = morris_sweep
    assert result.exit_code == 0, "morris sweep fixture failed"
    first = (out / "sensitivity.csv").read_text(encoding="utf-8")
    (out / "sensitivity.csv").unlink()
    again = invoke("sensitivity", out)
    assert again.exit_code == 0, f"iopsim sensitivity failed: {again.stdout + again.stderr!r}"
    assert (out / "sensitivity.csv").read_text(encoding="utf-8") == first, "re-analysis should reproduce sensitivity.csv"


def test_sensitivity_of_an_incomplete_sweep_is_refused(morris_sweep, tmp_path):
    import shutil

    result, out = morris_sweep
    assert result.exit_code == 0, "morris sweep fixture failed"
    copy = tmp_path / "incomplete"
    shutil.copytree(out, copy)
    (copy / "points" / "point-000003.parquet").unlink()
    with pytest.raises(IopsimError, match="1 of 6 points are missing"):
        analyse_sweep(copy)


def test_sensitivity_on_a_plain_sweep_folder_exits_2(tmp_path):
    sw = _write_folder(tmp_path, {"seed": 1, "replications": 1, "kpis": ["iop_census_mean"],
                                  "factors": {"stages.iop.capacity": {"values": [5]}}})
    out = tmp_path / "plain"
    ran = invoke("sweep", sw, "--jobs", "1", "--out", out)
    assert ran.exit_code == 0, f"setup sweep failed: {ran.stdout + ran.stderr!r}"
    result = invoke("sensitivity", out)
    text = result.stdout + result.stderr
    assert result.exit_code == 2, f"expected exit 2, got {result.exit_code}: {text!r}"
    assert "Traceback" not in text, f"traceback reached the user: {text!r}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not a sensitivity sweep" in lines[0], \
        f"expected one 'error: ... not a sensitivity sweep' line, got {result.stderr!r}"
    assert not (out / "sensitivity.csv").exists(), "sensitivity.csv written for a plain sweep"
    # and a folder that is not a sweep at all
    result = invoke("sensitivity", tmp_path)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "manifest.json missing" in result.stderr, \
        f"a non-sweep folder should give one error line: {result.exit_code}, {result.stderr!r}"
