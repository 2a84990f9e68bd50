"""Benchmark: calibrating the established site (calibration/established.yaml).

    python benchmarks/calibration.py              # the calibration file's budget, 2 worker processes
    python benchmarks/calibration.py --jobs 1 --populations 2 --population-size 12   # smaller

Prints the evaluations, the simulated replications, the wall time, the
effective sample size of the last population and the targets met by the
point estimate; `--json FILE` writes them.  Results go to a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

import iopsim

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--populations", type=int, default=None)
    ap.add_argument("--population-size", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    spec = yaml.safe_load((ROOT / "calibration" / "established.yaml").read_text())
    budget = spec.setdefault("budget", {})
    if args.populations:
        budget["populations"] = args.populations
    if args.population_size:
        budget["population_size"] = args.population_size
    spec["base"] = str(ROOT / "scenarios" / "established.yaml")
    spec["targets"] = str(ROOT / "calibration" / "targets.yaml")
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "established.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")  # the parameters in their order
        t0 = time.perf_counter()
        res = iopsim.fit(path, Path(d) / "out", jobs=args.jobs, report=False)
        wall = time.perf_counter() - t0
    s = res.summary
    out = {"jobs": args.jobs, "populations": s["populations"], "population_size": budget.get("population_size"),
           "evaluations": s["evaluations"], "replications_per_evaluation": s["replications_per_evaluation"],
           "simulated_replications": s["simulated_replications"], "wall_seconds": round(wall, 1),
           "ess_last_population": round(s["ess"], 1), "epsilon": round(s["epsilon"], 3),
           "targets_met": f"{s['targets_met']} of {s['targets']}"}
    for k, v in out.items():
        print(f"{k:28s} {v}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
