"""Global sensitivity analysis of a sweep with SALib: Sobol' indices and Morris effects.

The model output of a design point is the mean of a KPI over the point's
replications (all points use the same seeds, so the replication noise is
shared and does not masquerade as a factor effect).  Sobol' first-order (S1)
and total (ST) indices come with bootstrap confidence intervals (SALib's
``*_conf``: half-widths of 95 % intervals); Morris gives mu* (mean absolute
elementary effect, with its confidence half-width) and sigma.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sim.errors import IopsimError
from sim.output import atomic_write_text


def sobol_indices(problem: dict, y: np.ndarray, seed: int = 0) -> pd.DataFrame:
    from SALib.analyze import sobol

    si = sobol.analyze(problem, np.asarray(y, dtype=float), calc_second_order=False, seed=seed)
    return pd.DataFrame({
        "factor": problem["names"], "S1": si["S1"], "S1_conf": si["S1_conf"], "ST": si["ST"], "ST_conf": si["ST_conf"],
    })


def morris_effects(problem: dict, x: np.ndarray, y: np.ndarray, levels: int, seed: int = 0) -> pd.DataFrame:
    from SALib.analyze import morris

    si = morris.analyze(problem, np.asarray(x, dtype=float), np.asarray(y, dtype=float), num_levels=levels, seed=seed)
    return pd.DataFrame({
        "factor": problem["names"], "mu": si["mu"], "mu_star": si["mu_star"], "mu_star_conf": si["mu_star_conf"],
        "sigma": si["sigma"],
    })


def analyse_sweep(folder: Path) -> pd.DataFrame:
    """Indices for every KPI of a finished sensitivity sweep; writes sensitivity.csv and figures."""
    from sim.figures import sensitivity_figure
    from sim.sweep import SweepFile, design_points, load_results

    folder = Path(folder)
    mpath = folder / "manifest.json"
    if not mpath.exists():
        raise IopsimError(f"{folder}: not a sweep folder (manifest.json missing)")
    man = json.loads(mpath.read_text(encoding="utf-8"))
    if man.get("kind") != "sweep" or man.get("method") not in ("sobol", "morris"):
        raise IopsimError(f"{folder}: not a sensitivity sweep (the sweep file needs method: sobol or morris)")
    sweep = SweepFile.model_validate({
        "base": "-", "seed": man["seed"], "replications": man["replications"], "kpis": man["kpis"],
        "design": man["design"], "factors": man["factors"], "method": man["method"],
    })
    points = design_points(sweep)
    res = load_results(folder)
    have = set(res["point_id"].unique()) if len(res) else set()
    missing = [i for i in range(len(points)) if i not in have]
    if missing:
        raise IopsimError(f"{folder}: {len(missing)} of {len(points)} points are missing; re-run the sweep to finish it")
    means = res.groupby("point_id")[sweep.kpis].mean().sort_index()
    problem = sweep.problem()
    x = np.array([[p[n] for n in problem["names"]] for p in points], dtype=float)
    frames = []
    for kpi in sweep.kpis:
        y = means[kpi].to_numpy(dtype=float)
        if not np.all(np.isfinite(y)):
            raise IopsimError(f"{folder}: KPI {kpi} is undefined (NaN) at some points; choose another KPI")
        df = sobol_indices(problem, y, sweep.seed) if sweep.method == "sobol" else morris_effects(
            problem, x, y, sweep.design.levels, sweep.seed)
        frames.append(df.assign(kpi=kpi))
    out = pd.concat(frames, ignore_index=True)
    out = out[["kpi", *[c for c in out.columns if c != "kpi"]]]
    atomic_write_text(folder / "sensitivity.csv", out.to_csv(index=False))
    fig_dir = folder / "figures"
    fig_dir.mkdir(exist_ok=True)
    for kpi in sweep.kpis:
        sensitivity_figure(out[out["kpi"] == kpi], sweep.method, kpi, fig_dir / f"sensitivity_{kpi}.png")
    return out
