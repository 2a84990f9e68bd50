"""Global sensitivity analysis of a sweep with SALib: Sobol' indices and Morris effects.

The model output of a design point is the mean of a KPI over the point's
replications (all points use the same seeds, so the replication noise is
shared and does not masquerade as a factor effect).  Sobol' first-order (S1)
and total (ST) indices come with bootstrap confidence intervals (SALib's
``*_conf``: half-widths of 95 % intervals); Morris gives mu* (mean absolute
elementary effect, with its confidence half-width) and sigma.
"""

from __future__ import annotations

import numpy as np
from iopsim.lazy import pandas as pd



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
