"""What `iopsim plan` spends on the shipped example, against a full grid with the same final confidence.

    python benchmarks/plan_bench.py                       # scenarios/plans/new-site.yaml, --jobs 2, once
    python benchmarks/plan_bench.py --repeats 3 --json plan-bench.json
    python benchmarks/plan_bench.py --plan my-plan.yaml --jobs 4

Each repeat runs the plan from scratch into a fresh temporary folder, through
the public API (`iopsim.plan`), and records the wall time, the plans
simulated and the replications spent.  (Worker processes start from a fork
server, so they are not this process's children and their CPU time cannot be
read here; on a shared machine, compare the wall time per replication.)  A *full grid with the same final confidence* is a
non-sequential design that fixes every plan's replications in advance: to
decide every plan at the same Bonferroni level it must give each plan as
many replications as the most demanding plan needed.  The search's saving is
the ratio of the two.  The figures go to stdout as a markdown table (medians
with min-max over repeats); `--json FILE` also writes them with every
repeat's raw values.  Nothing in the repository is changed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PLAN = HERE.parent / "scenarios" / "plans" / "new-site.yaml"


def one_run(plan: Path, jobs: int) -> dict:
    import iopsim

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = iopsim.plan(plan, Path(tmp) / "plan", jobs=jobs)
        wall = time.perf_counter() - t0
    s = res.summary
    return {"wall_s": wall, "wall_ms_per_replication": 1000 * wall / max(res.replications, 1),
            "plans_in_space": s["plans_in_space"], "plans_simulated": res.evaluations,
            "replications": res.replications, "grid_replications": res.grid_replications,
            "saving": 1 - res.replications / res.grid_replications, "sentence": res.sentence,
            "recommended": (res.recommended or {}).get("levels")}


def _med(xs):
    return statistics.median(xs), min(xs), max(xs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--plan", type=Path, default=DEFAULT_PLAN)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    runs = []
    for i in range(args.repeats):
        print(f"plan {args.plan.name}: repeat {i + 1} of {args.repeats} ...", file=sys.stderr)
        runs.append(one_run(args.plan, args.jobs))
    rows = []
    for key, label, spec in [("wall_s", "wall time, s", ".0f"),
                             ("wall_ms_per_replication", "wall time per replication, ms", ".0f"),
                             ("plans_simulated", "plans simulated", ".0f"), ("replications", "replications spent", ".0f"),
                             ("grid_replications", "full grid, same confidence: replications", ".0f"),
                             ("saving", "share of the grid's replications saved", ".2f")]:
        m, lo, hi = _med([r[key] for r in runs])
        rows.append(f"| {label} | {m:{spec}} | {lo:{spec}}–{hi:{spec}} |")
    head = (f"`python benchmarks/plan_bench.py --plan {args.plan.name} --jobs {args.jobs} --repeats {args.repeats}`: "
            f"{runs[0]['plans_in_space']} plans in the space\n\n| what | median | min–max |\n|---|---|---|")
    print(head + "\n" + "\n".join(rows))
    print("\n" + runs[0]["sentence"])
    if args.json:
        args.json.write_text(json.dumps({"plan": str(args.plan), "jobs": args.jobs, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
