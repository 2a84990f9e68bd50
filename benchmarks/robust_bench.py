"""What `iopsim compare --robust` spends on the shipped evening-vs-weekend comparison.

    python benchmarks/robust_bench.py                     # evening vs weekend, 30 replications, --jobs 2, once
    python benchmarks/robust_bench.py --repeats 3 --json robust-bench.json

Each repeat runs the comparison with the robustness analysis through the
public API (`iopsim.compare(..., robust=True)`), nothing saved, and records
the wall time of the comparison alone and with the analysis, the declared
assumptions and the replications the analysis added (screening both ends of
every range, refining the ends in doubt, bisecting where the sign changes).
The table goes to stdout (medians with min-max over repeats); `--json FILE`
also writes every repeat's values.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE.parent / "scenarios"


def one_run(files: list[Path], jobs: int, replications: int | None) -> dict:
    import iopsim

    t0 = time.perf_counter()
    plain = iopsim.compare(files, replications=replications, jobs=jobs)
    t1 = time.perf_counter()
    robust = iopsim.compare(files, replications=replications, jobs=jobs, robust=True)
    t2 = time.perf_counter()
    table = robust.robustness
    return {"compare_s": t1 - t0, "robust_s": t2 - t1, "analysis_s": (t2 - t1) - (t1 - t0),
            "assumptions": int(table["assumption"].nunique()), "flips": int(table["flips"].sum()),
            "replications_compare": plain.replications * len(files),
            "replications_added": int(table.attrs.get("replications", 0))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("-n", "--replications", type=int, default=None, help="default: the scenarios' own (30)")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    files = [SCENARIOS / "evening.yaml", SCENARIOS / "weekend.yaml"]
    runs = []
    for i in range(args.repeats):
        print(f"compare --robust: repeat {i + 1} of {args.repeats} ...", file=sys.stderr)
        runs.append(one_run(files, args.jobs, args.replications))
    print(f"`python benchmarks/robust_bench.py --jobs {args.jobs} --repeats {args.repeats}`: evening vs weekend, "
          f"{runs[0]['assumptions']} declared assumptions\n\n| what | median | min–max |\n|---|---|---|")
    for key, label in [("compare_s", "the comparison alone, s"), ("robust_s", "the comparison with --robust, s"),
                       ("analysis_s", "the robustness analysis, s"),
                       ("replications_compare", "replications of the comparison"),
                       ("replications_added", "replications the analysis added"), ("flips", "assumptions that flip the verdict")]:
        xs = [r[key] for r in runs]
        print(f"| {label} | {statistics.median(xs):.0f} | {min(xs):.0f}–{max(xs):.0f} |")
    if args.json:
        args.json.write_text(json.dumps({"jobs": args.jobs, "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
