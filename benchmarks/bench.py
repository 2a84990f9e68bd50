#!/usr/bin/env python
"""Performance benchmark for iopsim.

    python benchmarks/bench.py [--quick] [--repeats N] [--json FILE]

Measures, in ONE process and as medians of several repeats (see README.md):

1. M/M/c: patients per second of ``Model(scenario, 0).run()`` on a one-stage
   M/M/c scenario against a minimal hand-written SimPy M/M/c with the same
   parameters and patient count; the ratio is taken within each repeat.
2. Events per second of the baseline scenario against a bare SimPy timeout
   loop; the ratio is taken within each repeat.
3. Replications per second and peak memory of the baseline at 1, 2 and 5 years
   (each horizon timed in a fresh subprocess, whose max RSS is read with
   ``os.wait4``), and the wall time of the goal case: 30 two-year replications
   with ``run_replications(..., jobs=2)``.
4. Sweeps: points per second with 1 and 2 local workers.
5. Start-up: the import time of what ``iopsim run`` needs, in fresh interpreters.
6. ``iopsim run scenarios/baseline.yaml -n 30`` end to end, ``--jobs 2`` against
   ``--jobs 1``, in interleaved rounds (ratio of wall times per round).
7. Volume scan: the baseline at x1, x4 and x16 referral volume with places,
   groups and staff scaled to match; microseconds per patient, as ratios to x1
   taken within each round.
8. Money: one two-year baseline replication (model + KPIs) with its payers
   against the same scenario without them (no attendance records, no revenue
   KPIs), interleaved; the ratio of wall times per round.

Nothing here changes the product; it only imports ``iopsim``.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import simpy

from iopsim.analysis.kpis import replication_kpis
from iopsim.engine.model import Model
from iopsim.experiments.replications import run_replication, run_replications
from iopsim.schema.scenario import resolve_raw, validate_raw

ROOT = Path(__file__).resolve().parent.parent
BASELINE = ROOT / "scenarios" / "baseline.yaml"

#: Goals the figures are compared against.
GOAL_MMC_RATIO = 0.7
GOAL_SWEEP_SPEEDUP = 1.8
GOAL_WALL_S = 60.0
GOAL_IMPORT_S = 0.7
GOAL_JOBS_RATIO = 1.7
GOAL_VOLUME_RATIO = 1.2
GOAL_MMC_FRESH_RATIO = 1.0  # at least 0.8
GOAL_MMC_RSS_RATIO = 2.0

# Sizes: (full, quick).
SIZES = {
    "repeats": (5, 3),
    "mmc_patients": (20_000, 2_500),
    "events_horizon": (730, 365),
    "bare_events": (300_000, 50_000),
    "reps_per_child": ({365: 9, 730: 7, 1825: 5}, {365: 1, 730: 1, 1825: 1}),
    "goal_replications": (30, 4),
    "goal_runs": (3, 1),
    "imports_child": (True, False),
    "sweep_points": (40, 4),
    "sweep_horizon": (730, 120),
    "sweep_replications": (2, 1),
    "startup_rounds": (7, 3),
    "jobs_rounds": (3, 1),
    "jobs_replications": (30, 4),
    "volume_rounds": (3, 1),
    "volume_horizon": (365, 90),
    "volume_factors": ((1, 4, 16), (1, 4)),
    "mmc_fresh_patients": (200_000, 5_000),
    "mmc_fresh_rounds": (3, 1),
}


# --------------------------------------------------------------------------- scenarios


def mmc_scenario(c: int, rho: float, mean_stay: float, patients: int, seed: int = 20261126):
    """One-stage M/M/c in iopsim terms: only ``iop``, no intake, flat Poisson referrals,
    one source placing everyone into iop, exponential stays, no exits/patience/relapse."""
    lam = rho * c / mean_stay  # arrivals per day
    horizon = int(math.ceil(patients / lam))
    raw = {
        "name": f"mmc_c{c}_rho{rho}",
        "seed": seed,
        "horizon_days": horizon,
        "replications": 1,
        "referrals": {
            "referrals_per_week": 7.0 * lam,
            "sources": {"all": {"share": 1.0, "placement": {"iop": 1.0}}},
        },
        "stages": {"iop": {"capacity": c, "los_days": {"dist": "exponential", "mean": mean_stay}}},
    }
    return validate_raw(raw, "bench"), lam


def baseline_scenario(horizon_days: int):
    raw = resolve_raw(BASELINE)
    raw["horizon_days"] = int(horizon_days)
    return validate_raw(raw, "bench")


def erlang_c_wait(c: int, lam: float, mu: float) -> float:
    """Mean wait in queue of an M/M/c queue (Erlang C)."""
    a = lam / mu
    rho = a / c
    s = sum(a**k / math.factorial(k) for k in range(c))
    top = a**c / math.factorial(c) / (1.0 - rho)
    return top / (s + top) / (c * mu - lam)


# --------------------------------------------------------------------------- helpers


class Clock:
    """Wall (``perf_counter``) and CPU (``process_time``) time of a block, in seconds.

    Wall time is what a user waits for; CPU time of this process is much less
    disturbed by other jobs on a shared machine, so both are kept.
    """

    __slots__ = ("wall", "cpu", "_w", "_c")

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = time.process_time() - self._c
        return False


def _timed_env_run(model: Model) -> Clock:
    """Time the event loop alone: wrap ``run_until`` (one call per run, no per-event cost) for
    ``model``'s next run.  The model runs its queue with ``iopsim.engine.loop.run_until``, not
    ``env.run``."""
    import iopsim.engine.model as model_module

    clock = Clock()
    clock.wall = clock.cpu = math.nan
    inner = model_module.run_until

    def run(env, until):
        if env is not model.env:
            return inner(env, until)
        model_module.run_until = inner  # this run only
        with clock:
            return inner(env, until)

    model_module.run_until = run
    return clock


def _count_model_events(model: Model) -> int:
    """Run ``model`` counting every event its loop pops and processes (slow; validation only)."""
    import iopsim.engine.loop as loop

    counter = [0]
    inner = loop.heappop

    def pop(queue):
        counter[0] += 1
        return inner(queue)

    loop.heappop = pop
    try:
        model.run()
    finally:
        loop.heappop = inner
    return counter[0]


def processed_events(env: simpy.Environment) -> int:
    """Events popped from the queue and processed so far (by ``env.step()`` or iopsim's own loop).

    SimPy gives every scheduled event a fresh id from ``env._eid`` (an
    ``itertools.count``) and keeps not-yet-processed events in ``env._queue``,
    so processed = scheduled - still queued.  Reading the counter costs nothing
    during the run (unlike wrapping ``env.step``).  Because both are private,
    ``events_section`` checks this count against a step-counting run first.
    """
    scheduled = next(env._eid)  # consumes one id; harmless after the run
    return scheduled - len(env._queue)


def _count_by_step(env: simpy.Environment) -> list[int]:
    """Patch the instance's ``step`` so every processed event is counted (slow; validation only)."""
    counter = [0]
    inner = env.step

    def step():
        counter[0] += 1
        inner()

    env.step = step
    return counter


def _median(xs):
    xs = [x for x in xs if not (isinstance(x, float) and math.isnan(x))]
    return statistics.median(xs) if xs else math.nan


def _fresh():
    gc.collect()


# --------------------------------------------------------------------------- 1. M/M/c


def handwritten_mmc(c: int, lam: float, mu: float, n: int, seed: int = 1) -> list[float]:
    """A minimal, idiomatic SimPy M/M/c: n customers, returns each customer's wait."""
    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / lam, n).tolist()
    services = rng.exponential(1.0 / mu, n).tolist()
    env = simpy.Environment()
    server = simpy.Resource(env, capacity=c)
    waits: list[float] = []

    def customer(service):
        arrived = env.now
        with server.request() as req:
            yield req
            waits.append(env.now - arrived)
            yield env.timeout(service)

    def source():
        for gap, service in zip(gaps, services):
            yield env.timeout(gap)
            env.process(customer(service))

    env.process(source())
    env.run()
    return waits


def mmc_section(args, sizes) -> dict:
    c, rho, mean_stay = args.c, args.rho, 1.0
    mu = 1.0 / mean_stay
    sc, lam = mmc_scenario(c, rho, mean_stay, sizes["mmc_patients"])
    # Warm-up (imports, scipy/numpy first calls, code caches); not timed.  Replication 0
    # is deterministic, so its patient count is the same in every repeat: the hand-written
    # model simulates exactly that many customers.
    n_patients = _patients(Model(sc, 0).run())
    handwritten_mmc(c, lam, mu, 200)

    rows = []
    for r in range(args.repeats):
        out = {}
        # Alternate the order so neither side always runs on a "warmer" machine.
        order = ("iopsim", "hand") if r % 2 == 0 else ("hand", "iopsim")
        for side in order:
            _fresh()
            if side == "iopsim":
                with Clock() as clk:
                    m = Model(sc, 0)
                    env_clk = _timed_env_run(m)
                    records = m.run()
                n = _patients(records)
                assert n == n_patients, (n, n_patients)
                waits = (records["visits"]["t_admit"] - records["visits"]["t_join"]).dropna()
                out.update(
                    n=n,
                    iop_s=clk.wall,
                    iop_cpu_s=clk.cpu,
                    iop_env_run_s=env_clk.wall,
                    iop_env_run_cpu_s=env_clk.cpu,
                    iop_wait=float(waits.mean()),
                )
                del m, records
            else:
                with Clock() as clk:
                    waits = handwritten_mmc(c, lam, mu, n_patients)
                out.update(hand_n=n_patients, hand_s=clk.wall, hand_cpu_s=clk.cpu, hand_wait=float(np.mean(waits)))
        out["iop_pps"] = out["n"] / out["iop_s"]
        out["hand_pps"] = out["hand_n"] / out["hand_s"]
        out["ratio"] = out["iop_pps"] / out["hand_pps"]
        out["ratio_cpu"] = (out["n"] / out["iop_cpu_s"]) / (out["hand_n"] / out["hand_cpu_s"])
        out["ratio_env_run"] = (out["n"] / out["iop_env_run_s"]) / out["hand_pps"]
        rows.append(out)
        _progress(f"  mmc repeat {r + 1}/{args.repeats}: ratio {out['ratio']:.3f}")
    return {
        "c": c,
        "rho": rho,
        "mean_stay_days": mean_stay,
        "arrivals_per_day": lam,
        "horizon_days": sc.horizon_days,
        "patients": rows[0]["n"],
        "iopsim_patients_per_s": _median([x["iop_pps"] for x in rows]),
        "handwritten_patients_per_s": _median([x["hand_pps"] for x in rows]),
        "ratio_median": _median([x["ratio"] for x in rows]),
        "ratio_min": min(x["ratio"] for x in rows),
        "ratio_max": max(x["ratio"] for x in rows),
        "ratio_cpu_median": _median([x["ratio_cpu"] for x in rows]),
        "ratio_env_run_only_median": _median([x["ratio_env_run"] for x in rows]),
        "iopsim_env_run_share": _median([x["iop_env_run_s"] / x["iop_s"] for x in rows]),
        "mean_wait_iopsim": rows[0]["iop_wait"],
        "mean_wait_handwritten": rows[0]["hand_wait"],
        "mean_wait_erlang_c": erlang_c_wait(c, lam, mu),
        "goal": GOAL_MMC_RATIO,
        "repeats": rows,
    }


# --------------------------------------------------------------------------- 1b. M/M/c, fresh processes

#: The M/M/c case of the issue's table: c = 10, rho = 0.8, 200 000 patients.
MMC_FRESH_C, MMC_FRESH_RHO = 10, 0.8


def mmc_child_main(tool: str, c: int, rho: float, patients: int, n: int) -> dict:
    """Runs in a fresh interpreter: one iopsim M/M/c run, timed: ``Model(sc, 0).run()``
    (construction, simulation and the record DataFrames).  The hand-written model
    runs in its own interpreter (:func:`_handwritten_child`) for iopsim's patient count."""
    sc, _ = mmc_scenario(c, rho, 1.0, patients)
    gc.collect()
    with Clock() as clk:
        records = Model(sc, 0).run()
    n = _patients(records)
    return {"tool": tool, "n": n, "wall_s": clk.wall, "cpu_s": clk.cpu, "maxrss_mb": peak_rss_mb()}


def _patients(records) -> int:
    """Episodes of a replication, counted from its compact table: a DataFrame built only to count
    would add to the peak memory and to the heap every later replication's garbage collector walks."""
    return int(len(records.table("episodes") if hasattr(records, "table") else records["episodes"]))


def _handwritten_child(c: int, rho: float, n: int) -> list[str]:
    """A fresh interpreter running only the hand-written model (simpy and numpy, not this file's imports)."""
    import inspect

    lam = rho * c / 1.0
    code = "\n".join([
        "import gc, json, pathlib, resource, time", "import numpy as np", "import simpy",
        inspect.getsource(handwritten_mmc), inspect.getsource(peak_rss_mb).replace("Path(", "pathlib.Path("),
        "gc.collect()", "w, u = time.perf_counter(), time.process_time()",
        f"handwritten_mmc({c}, {lam!r}, 1.0, {n})",
        "w, u = time.perf_counter() - w, time.process_time() - u",
        f"print(json.dumps({{'tool': 'simpy', 'n': {n}, 'wall_s': w, 'cpu_s': u, 'maxrss_mb': peak_rss_mb()}}))",
    ])
    return [sys.executable, "-c", code]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: ``VmHWM`` of /proc/self/status on Linux.

    ``ru_maxrss`` (from ``getrusage`` or ``os.wait4``) is no use for a child
    started by a big parent: Linux folds the parent's memory, shared with the
    child between fork and exec, into the child's maximum.  ``VmHWM`` belongs
    to the address space the child has after exec.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:  # pragma: no cover - not Linux
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _child_out(cmd: list[str]) -> str:
    """Run ``cmd`` in a fresh interpreter; its stdout (stderr to a file, so a chatty child cannot block)."""
    with tempfile.TemporaryFile() as errf:
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=errf, cwd=str(ROOT))
        if p.returncode != 0:
            errf.seek(0)
            raise SystemExit(f"benchmark child failed: {errf.read().decode(errors='replace')[-2000:]}")
    return p.stdout.decode()


def _peak_of(code: str) -> float:
    """Peak RSS (MB) of a fresh interpreter that runs ``code`` and nothing else."""
    snippet = f"{code}\nimport resource, pathlib\n" + (
        "hw=[l for l in pathlib.Path('/proc/self/status').read_text().splitlines() if l.startswith('VmHWM:')]\n"
        "print(int(hw[0].split()[1]) / 1024.0 if hw else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)")
    return float(_child_out([sys.executable, "-c", snippet]).strip().splitlines()[-1])


def mmc_fresh_section(args, sizes) -> dict:
    """The issue's M/M/c row: each tool in a fresh interpreter per round, order alternating.

    Throughput ratio (iopsim patients/s over hand-written SimPy customers/s) per
    round, wall and CPU; peak RSS of each child (``VmHWM``, see :func:`peak_rss_mb`),
    and of children that only import (``import iopsim.engine.model`` /
    ``import simpy, numpy``) and of a bare interpreter (the floor).
    """
    c, rho, patients = MMC_FRESH_C, MMC_FRESH_RHO, sizes["mmc_fresh_patients"]
    me = [sys.executable, str(Path(__file__).resolve())]
    floor = _peak_of("pass")
    imports = {"iopsim": _peak_of("import iopsim.engine.model"), "simpy": _peak_of("import simpy, numpy")}
    n = 0
    rounds = []
    for r in range(sizes["mmc_fresh_rounds"]):
        row = {}
        for tool in (("iopsim", "simpy") if r % 2 == 0 or not n else ("simpy", "iopsim")):
            cmd = me + ["--_mmc_child", f"{tool}:{c}:{rho}:{patients}:{n}"] if tool == "iopsim" else _handwritten_child(c, rho, n)
            res = json.loads(_child_out(cmd).strip().splitlines()[-1])
            n = res["n"] if tool == "iopsim" else n
            row[tool] = res
        row["ratio"] = (row["iopsim"]["n"] / row["iopsim"]["wall_s"]) / (row["simpy"]["n"] / row["simpy"]["wall_s"])
        row["ratio_cpu"] = (row["iopsim"]["n"] / row["iopsim"]["cpu_s"]) / (row["simpy"]["n"] / row["simpy"]["cpu_s"])
        rounds.append(row)
        _progress(f"  mmc fresh round {r + 1}: ratio {row['ratio']:.3f} (cpu {row['ratio_cpu']:.3f}), RSS "
                  f"{row['iopsim']['maxrss_mb']:.0f} / {row['simpy']['maxrss_mb']:.0f} MB")
    ratios = [x["ratio"] for x in rounds]
    rss_i = _median([x["iopsim"]["maxrss_mb"] for x in rounds])
    rss_s = _median([x["simpy"]["maxrss_mb"] for x in rounds])
    return {
        "c": c, "rho": rho, "patients": rounds[0]["iopsim"]["n"], "rounds": rounds,
        "ratio_median": _median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        "ratio_cpu_median": _median([x["ratio_cpu"] for x in rounds]),
        "maxrss_mb": {"iopsim": rss_i, "simpy": rss_s, "interpreter": floor},
        "imports_only_maxrss_mb": imports,
        "rss_over_floor_ratio": (rss_i - floor) / max(rss_s - floor, 1e-9),
        "goal_ratio": GOAL_MMC_FRESH_RATIO, "goal_rss_ratio": GOAL_MMC_RSS_RATIO,
    }


# --------------------------------------------------------------------------- 2. events


def bare_timeout_loop(n_events: int) -> simpy.Environment:
    """One process yielding ``env.timeout(1)`` forever, run for ``n_events`` time units."""
    env = simpy.Environment()

    def ticker():
        while True:
            yield env.timeout(1.0)

    env.process(ticker())
    env.run(until=n_events)
    return env


def events_section(args, sizes) -> dict:
    sc = baseline_scenario(sizes["events_horizon"])
    n_bare = sizes["bare_events"]

    # Validation (untimed): the _eid/_queue count equals a step-by-step count.
    m = Model(sc, 0)
    by_step = _count_model_events(m)
    by_eid = processed_events(m.env)
    env = simpy.Environment()
    bare_counter = _count_by_step(env)

    def ticker():
        while True:
            yield env.timeout(1.0)

    env.process(ticker())
    env.run(until=1000)
    bare_ok = bare_counter[0] == processed_events(env)
    if by_step != by_eid or not bare_ok:
        raise SystemExit(f"event counting mismatch: step={by_step} eid={by_eid} bare_ok={bare_ok}")
    bare_timeout_loop(1000)  # warm-up

    rows = []
    for r in range(args.repeats):
        out = {}
        order = ("iopsim", "bare") if r % 2 == 0 else ("bare", "iopsim")
        for side in order:
            _fresh()
            if side == "iopsim":
                with Clock() as clk:
                    m = Model(sc, 0)
                    env_clk = _timed_env_run(m)
                    m.run()
                out.update(
                    iop_events=processed_events(m.env),
                    iop_s=clk.wall,
                    iop_env_run_s=env_clk.wall,
                    iop_env_run_cpu_s=env_clk.cpu,
                )
                del m
            else:
                with Clock() as clk:
                    env = bare_timeout_loop(n_bare)
                out.update(bare_events=processed_events(env), bare_s=clk.wall, bare_cpu_s=clk.cpu)
                del env
        out["iop_eps_env_run"] = out["iop_events"] / out["iop_env_run_s"]
        out["iop_eps_whole_run"] = out["iop_events"] / out["iop_s"]
        out["bare_eps"] = out["bare_events"] / out["bare_s"]
        out["ratio"] = out["iop_eps_env_run"] / out["bare_eps"]
        out["ratio_cpu"] = (out["iop_events"] / out["iop_env_run_cpu_s"]) / (out["bare_events"] / out["bare_cpu_s"])
        out["ratio_whole_run"] = out["iop_eps_whole_run"] / out["bare_eps"]
        rows.append(out)
        _progress(f"  events repeat {r + 1}/{args.repeats}: ratio {out['ratio']:.3f}")
    return {
        "horizon_days": sc.horizon_days,
        "iopsim_events": rows[0]["iop_events"],
        "bare_events": rows[0]["bare_events"],
        "counting_validated": {"by_step": by_step, "by_eid": by_eid},
        "iopsim_events_per_s_env_run": _median([x["iop_eps_env_run"] for x in rows]),
        "iopsim_events_per_s_whole_run": _median([x["iop_eps_whole_run"] for x in rows]),
        "bare_events_per_s": _median([x["bare_eps"] for x in rows]),
        "ratio_median": _median([x["ratio"] for x in rows]),
        "ratio_cpu_median": _median([x["ratio_cpu"] for x in rows]),
        "ratio_whole_run_median": _median([x["ratio_whole_run"] for x in rows]),
        "repeats": rows,
    }


# --------------------------------------------------------------------------- 3. horizons


def child_main(horizon: int, reps: int) -> dict:
    """Runs in a fresh subprocess: time ``reps`` replications of the baseline at ``horizon``."""
    out = {"horizon_days": horizon, "reps": reps}
    if horizon <= 0:  # imports only: the RSS floor every child pays
        baseline_scenario(730)
    else:
        sc = baseline_scenario(horizon)
        warm = baseline_scenario(28)  # untimed warm-up: first calls into scipy/pandas/pyarrow
        replication_kpis(Model(warm, 0).run(), warm)
        model_s, kpis_s, cpu_s = [], [], []
        for r in range(reps):
            gc.collect()
            with Clock() as total:
                with Clock() as run:
                    records = Model(sc, r).run()
                with Clock() as kpis:
                    replication_kpis(records, sc)
            model_s.append(run.wall)
            kpis_s.append(kpis.wall)
            cpu_s.append(total.cpu)
            del records
        out.update(model_s=model_s, kpis_s=kpis_s, cpu_s=cpu_s)
    out["self_maxrss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out["vmhwm_mb"] = peak_rss_mb()
    return out


def run_child(horizon: int, reps: int) -> dict:
    """Run ``child_main`` in a fresh interpreter; its own max RSS comes from ``os.wait4``.

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the maximum over *all* children
    waited for so far, so a big earlier child would hide a smaller later one;
    ``os.wait4`` returns the same rusage for this one child only.
    """
    cmd = [sys.executable, str(Path(__file__).resolve()), "--_child", f"{horizon}:{reps}"]
    # stderr goes to a file (a chatty child cannot fill a pipe and block); stdout is one
    # JSON line, read to EOF before the child is reaped with wait4.
    with tempfile.TemporaryFile() as errf:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, cwd=str(ROOT))
        out = p.stdout.read()
        p.stdout.close()
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            errf.seek(0)
            err = errf.read().decode(errors="replace")
            raise SystemExit(f"benchmark child failed ({p.returncode}): {err[-2000:]}")
    res = json.loads(out.decode().strip().splitlines()[-1])
    # Linux: kilobytes.  The child's own VmHWM where it has one: ru_maxrss also counts
    # this (big) process's memory, which the child shares between fork and exec.
    res["child_maxrss_kb"] = res["vmhwm_mb"] * 1024.0 if res.get("vmhwm_mb") else ru.ru_maxrss
    res["wait4_maxrss_kb"] = ru.ru_maxrss
    res["rusage_children_maxrss_kb_so_far"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return res


def tracemalloc_peak(horizon: int) -> float:
    """Peak traced Python allocation (MB) of one replication incl. KPIs, measured in-process.

    tracemalloc only traces blocks allocated after ``start()``, so what this
    process already holds does not count; it is run outside any timed section.
    """
    sc = baseline_scenario(horizon)
    gc.collect()
    tracemalloc.start()
    try:
        records = Model(sc, 0).run()
        replication_kpis(records, sc)
        del records
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 1e6


def horizons_section(args, sizes) -> dict:
    reps = sizes["reps_per_child"]
    # The imports-only child gives the RSS every child pays before simulating anything
    # (skipped in --quick to save an interpreter start).
    floor = run_child(0, 0) if sizes["imports_child"] else None
    rows = []
    for h in (365, 730, 1825):
        k = max(reps[h], 1) if not args.repeats_given else max(args.repeats, 1)
        res = run_child(h, k)
        total = [a + b for a, b in zip(res["model_s"], res["kpis_s"])]
        row = {
            "horizon_days": h,
            "replications_timed": k,
            "replications_per_s": 1.0 / _median(total),
            "model_s_median": _median(res["model_s"]),
            "kpis_s_median": _median(res["kpis_s"]),
            "replications_per_cpu_s": 1.0 / _median(res["cpu_s"]),
            "child_maxrss_mb": res["child_maxrss_kb"] / 1024.0,
            "child_maxrss_over_imports_mb": ((res["child_maxrss_kb"] - floor["child_maxrss_kb"]) / 1024.0 if floor else math.nan),
            "child_self_maxrss_mb": res["self_maxrss_kb"] / 1024.0,
            "rusage_children_maxrss_mb_so_far": res["rusage_children_maxrss_kb_so_far"] / 1024.0,
        }
        rows.append(row)
        _progress(f"  horizon {h}: {row['replications_per_s']:.2f} reps/s, RSS {row['child_maxrss_mb']:.0f} MB")
    for row in rows:
        row["tracemalloc_peak_mb"] = tracemalloc_peak(row["horizon_days"])
    return {"imports_only_child_maxrss_mb": floor["child_maxrss_kb"] / 1024.0 if floor else math.nan, "rows": rows}


def goal_section(args, sizes, horizons: dict) -> dict:
    n = sizes["goal_replications"]
    sc = baseline_scenario(730)
    runs = []
    for r in range(sizes["goal_runs"]):
        _fresh()
        with Clock() as clk:
            res = run_replications(sc, n, jobs=2)
        runs.append(clk.wall)
        assert len(res) == n
        del res
        _progress(f"  goal run {r + 1}/{sizes['goal_runs']}: {runs[-1]:.2f} s")
    rows = horizons["rows"] if horizons else []
    two_year = next((x for x in rows if x["horizon_days"] == 730), None)
    serial_est = n / two_year["replications_per_s"] if two_year else math.nan
    return {
        "horizon_days": 730,
        "replications": n,
        "jobs": 2,
        "wall_s_first": runs[0],
        "wall_s_median": _median(runs),
        "wall_s_runs": runs,
        "serial_estimate_s": serial_est,
        "goal_s": GOAL_WALL_S,
        "cpu_count": os.cpu_count(),
    }


# --------------------------------------------------------------------------- 5. start-up

#: What `iopsim run` imports before its first replication: the CLI and the API.
STARTUP_CODE = "import iopsim.cli, iopsim.api"


def _import_time(code: str) -> float:
    """Wall time of ``python -c code`` minus that of ``python -c pass`` (the interpreter itself)."""
    def once(c: str) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", c], check=True, cwd=str(ROOT), capture_output=True)
        return time.perf_counter() - t0
    return once(code) - once("pass")


def startup_section(args, sizes) -> dict:
    times = [_import_time(STARTUP_CODE) for _ in range(sizes["startup_rounds"])]
    heavy = subprocess.run([sys.executable, "-c", STARTUP_CODE + "; import sys; print(sorted(m for m in "
                            "('scipy.stats', 'matplotlib', 'distributed', 'pandas', 'scipy.special') if m in sys.modules))"],
                           check=True, cwd=str(ROOT), capture_output=True, text=True).stdout.strip()
    return {"code": STARTUP_CODE, "import_s_median": _median(times), "import_s_min": min(times),
            "import_s_max": max(times), "rounds": times, "heavy_modules_loaded": heavy, "goal_s": GOAL_IMPORT_S}


# --------------------------------------------------------------------------- 6. --jobs 2 / --jobs 1


def _cli_run(jobs: int, replications: int, out: Path) -> float:
    cmd = [sys.executable, "-m", "iopsim.cli", "run", str(BASELINE), "-n", str(replications), "--jobs", str(jobs),
           "--out", str(out)]
    t0 = time.perf_counter()
    # A session of its own: the run's fork server and workers (not children this process waits for)
    # are told apart from other processes by their session id.
    subprocess.run(cmd, check=True, cwd=str(ROOT), capture_output=True, start_new_session=True)
    return time.perf_counter() - t0


class OtherLoad:
    """CPU seconds used by processes outside this benchmark while the block runs (Linux; NaN elsewhere).

    A thread samples every process's CPU time (``/proc/PID/stat``) five times a
    second and adds up what the processes of other sessions used between
    samples.  The runs the benchmark starts have sessions of their own
    (``start_new_session``), which their fork servers and workers inherit, so
    they count as ours even though this process never waits for them.  Ours are
    this process and the sessions led by its children.
    """

    def __init__(self, period: float = 0.2):
        self.period = period
        self.seconds = math.nan
        self._stop = None

    @staticmethod
    def _sample() -> dict[int, tuple[int, int, int]]:
        out = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                raw = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            f = raw[raw.rindex(")") + 2:].split()
            # fields after the command: state ppid pgrp session ... utime(11) stime(12)
            out[int(d)] = (int(f[1]), int(f[3]), int(f[11]) + int(f[12]))
        return out

    def __enter__(self) -> "OtherLoad":
        import threading

        if not Path("/proc/self/stat").exists():  # pragma: no cover - not Linux
            return self
        me, mine = os.getpid(), set()
        tick = os.sysconf("SC_CLK_TCK")
        self._stop = threading.Event()
        self.seconds = 0.0

        def loop():
            last = self._sample()
            while not self._stop.wait(self.period):
                now = self._sample()
                for pid, (ppid, sid, cpu) in now.items():
                    if ppid == me:
                        mine.add(sid)  # a run started by this benchmark leads its own session
                    if pid != me and sid not in mine and pid in last:
                        self.seconds += (cpu - last[pid][2]) / tick
                last = now

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join()


#: A pure-Python loop (no I/O, no imports): what two CPUs give two copies of it is the machine's own ceiling.
SPIN_CODE = "x = 0\nfor i in range(12_000_000):\n    x += i\n"


def machine_speedup() -> float:
    """Throughput of two concurrent copies of a CPU-bound loop over one copy alone (2.0 on two free cores).

    On a virtual machine two vCPUs need not give twice one vCPU's work: they may
    share a physical core or be throttled.  Measured in the same round as the
    runs, this is the speed-up ``--jobs 2`` could reach at best.
    """
    def once(copies: int) -> float:
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-c", SPIN_CODE]) for _ in range(copies)]
        for p in procs:
            p.wait()
        return time.perf_counter() - t0
    alone, together = [], []
    for _ in range(2):  # the best of two of each, alternating: a single pair is too noisy
        alone.append(once(1))
        together.append(once(2))
    return 2 * min(alone) / min(together)


def jobs_section(args, sizes) -> dict:
    n = sizes["jobs_replications"]
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(sizes["jobs_rounds"]):
            order = (1, 2) if r % 2 == 0 else (2, 1)
            # CPU the rest of the machine used meanwhile: with other work running, the
            # scheduler (autogroups) gives --jobs 2 no more CPU than --jobs 1.
            t0 = time.perf_counter()
            with OtherLoad() as other:
                ceiling = machine_speedup()
                wall = {j: _cli_run(j, n, Path(tmp) / f"r{r}-j{j}") for j in order}
            share = other.seconds / ((os.cpu_count() or 1) * (time.perf_counter() - t0))
            rounds.append({"jobs1_s": wall[1], "jobs2_s": wall[2], "speedup": wall[1] / wall[2],
                           "machine_speedup": ceiling, "of_machine": wall[1] / wall[2] / ceiling,
                           "others_cpu_share": share})
            _progress(f"  round {r + 1}: --jobs 1 {wall[1]:.1f} s, --jobs 2 {wall[2]:.1f} s, two CPU-bound "
                      f"loops {ceiling:.2f}x one, other processes {share:.0%} of the CPUs")
    sp = [x["speedup"] for x in rounds]
    ceil = [x["machine_speedup"] for x in rounds]
    of = [x["of_machine"] for x in rounds]
    return {"replications": n, "rounds": rounds, "speedup_median": _median(sp), "speedup_min": min(sp),
            "speedup_max": max(sp), "goal": GOAL_JOBS_RATIO,
            "machine_speedup_median": _median(ceil), "machine_speedup_min": min(ceil), "machine_speedup_max": max(ceil),
            "of_machine_median": _median(of), "of_machine_min": min(of), "of_machine_max": max(of),
            "others_cpu_share_max": max(x["others_cpu_share"] for x in rounds)}


# --------------------------------------------------------------------------- 7. volume scan


def scaled_baseline(factor: int, horizon: int):
    """The baseline with referrals, places, groups, staff and intake clinicians all multiplied by ``factor``."""
    raw = resolve_raw(BASELINE)
    raw.update(horizon_days=horizon, warmup_days=0, name=f"baseline-x{factor}")
    raw["referrals"]["referrals_per_week"] *= factor
    for st in raw["stages"].values():
        if not st:
            continue
        if st.get("capacity") is not None:
            st["capacity"] *= factor
        for tr in (st.get("tracks") or {}).values():
            tr["groups"] = tr.get("groups", 1) * factor
    for role in ((raw.get("staff") or {}).get("roles") or {}).values():
        for team in role["teams"]:
            team["headcount"] *= factor
    if raw.get("intake") and raw["intake"].get("clinicians"):
        raw["intake"]["clinicians"] *= factor
    for rule in (raw.get("staff") or {}).get("ratio_rules", []):
        pass  # a ratio is per staff member: scaling both sides keeps it
    return validate_raw(raw, f"bench-x{factor}")


def volume_section(args, sizes) -> dict:
    horizon = sizes["volume_horizon"]
    factors = sizes["volume_factors"]
    scenarios = {f: scaled_baseline(f, horizon) for f in factors}
    for sc in scenarios.values():  # warm-up
        Model(sc, 0).run()
    rounds = []
    for r in range(sizes["volume_rounds"]):
        per = {}
        for f in factors if r % 2 == 0 else tuple(reversed(factors)):
            gc.collect()
            with Clock() as clk:
                rec = Model(scenarios[f], r).run()
                replication_kpis(rec, scenarios[f])
            patients = _patients(rec)
            per[f] = {"wall_s": clk.wall, "patients": patients, "us_per_patient": 1e6 * clk.wall / max(patients, 1)}
        for f in factors:
            per[f]["ratio_to_x1"] = per[f]["us_per_patient"] / per[1]["us_per_patient"]
        rounds.append(per)
        _progress("  round " + str(r + 1) + ": " + ", ".join(f"x{f} {per[f]['us_per_patient']:.0f} us/patient"
                                                             for f in factors))
    out = {"horizon_days": horizon, "factors": list(factors), "rounds": rounds, "goal": GOAL_VOLUME_RATIO}
    for f in factors:
        ratios = [rd[f]["ratio_to_x1"] for rd in rounds]
        out[f"x{f}"] = {"us_per_patient_median": _median([rd[f]["us_per_patient"] for rd in rounds]),
                        "ratio_median": _median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios)}
    return out


# --------------------------------------------------------------------------- 8. money


def money_section(args, sizes) -> dict:
    """What the money side (payers: attendance records and revenue KPIs) adds to a replication."""
    import copy

    raw = resolve_raw(BASELINE)
    bare = copy.deepcopy(raw)
    bare.pop("payers", None)
    for src in bare["referrals"]["sources"].values():
        src.pop("payers", None)
    with_money, without = validate_raw(raw, "baseline"), validate_raw(bare, "baseline-no-payers")
    run_replication(with_money, 0)  # warm-up, not timed
    rounds = []
    for r in range(max(args.repeats, 3)):
        times = {}
        for side in (("money", "bare") if r % 2 == 0 else ("bare", "money")):
            _fresh()
            t0 = time.perf_counter()
            run_replication(with_money if side == "money" else without, r)
            times[side] = time.perf_counter() - t0
        rounds.append({**times, "ratio": times["money"] / times["bare"]})
        _progress(f"  round {r + 1}: with payers {times['money'] * 1000:.0f} ms, without {times['bare'] * 1000:.0f} ms")
    ratios = [rd["ratio"] for rd in rounds]
    return {"rounds": rounds, "ratio_median": _median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "money_ms_median": 1000 * _median([rd["money"] for rd in rounds]),
            "bare_ms_median": 1000 * _median([rd["bare"] for rd in rounds])}


# --------------------------------------------------------------------------- report


# --------------------------------------------------------------------------- 4. sweeps


def _sweep_file(folder: Path, points: int, horizon: int, replications: int) -> Path:
    """A grid sweep of `points` points over the baseline at a shorter horizon."""
    base = folder / "base.yaml"
    raw = resolve_raw(BASELINE)
    raw["horizon_days"] = horizon
    import yaml

    base.write_text(yaml.safe_dump(raw), encoding="utf-8")
    sweep = folder / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({
        "base": "base.yaml", "name": "bench", "seed": 3, "replications": replications, "kpis": ["iop_admitted_wait_mean_days"],
        "design": {"kind": "grid"},
        "factors": {"referrals.referrals_per_week": {"range": [4.0, 7.0], "steps": points}},
    }), encoding="utf-8")
    return sweep


def _timed_sweep(sweep: Path, out: Path, **kw) -> tuple[float, float]:
    """(end-to-end wall time, time running the points incl. the pool start)."""
    from iopsim.experiments.sweep import execute_sweep

    t0 = time.perf_counter()
    res = execute_sweep(sweep, out, **kw)
    wall = time.perf_counter() - t0
    if res["failures"]:
        raise RuntimeError(f"benchmark sweep had failures: {res['failures']}")
    return wall, res["elapsed_s"]


def sweep_section(args, sizes) -> dict:
    """Points per second with 1 and 2 local workers, and the Dask path's overhead per point.

    Each configuration runs the same sweep into a fresh folder (so nothing is
    resumed); the Dask cluster is a LocalCluster of 2 single-threaded worker
    processes on 127.0.0.1, started before timing.
    """
    from distributed import LocalCluster

    n = sizes["sweep_points"]
    out: dict = {"points": n, "horizon_days": sizes["sweep_horizon"], "replications": sizes["sweep_replications"], "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sweep = _sweep_file(tmp, n, sizes["sweep_horizon"], sizes["sweep_replications"])
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None)
        try:
            _timed_sweep(sweep, tmp / "warm", jobs=1)  # warm-up: imports, caches
            reps = max(1, min(args.repeats, 3))
            for r in range(reps):
                row = {}
                for label, kw in (("jobs1", {"jobs": 1}), ("jobs2", {"jobs": 2}),
                                  ("dask2", {"scheduler": cluster.scheduler_address})):
                    row[label], row[f"{label}_points"] = _timed_sweep(sweep, tmp / f"{label}-{r}", **kw)
                out["runs"].append(row)
                _progress(f"   sweep repeat {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items() if "_" not in k))
        finally:
            cluster.close()
    med = {k: _median([r[k] for r in out["runs"]]) for k in ("jobs1", "jobs2", "dask2")}
    out["median_s"] = med
    out["points_per_s"] = {k: n / v for k, v in med.items()}
    out["speedup_2_workers"] = _median([r["jobs1"] / r["jobs2"] for r in out["runs"]])
    out["speedup_2_workers_points_phase"] = _median([r["jobs1_points"] / r["jobs2_points"] for r in out["runs"]])
    out["dask_overhead_per_point_s"] = (med["dask2"] - med["jobs2"]) / n
    out["dask_vs_local_ratio"] = _median([r["dask2"] / r["jobs2"] for r in out["runs"]])
    return out


def _progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _table(title: str, header: list[str], rows: list[list]) -> str:
    cells = [[str(h) for h in header]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    line = "  ".join("-" * w for w in widths)
    out = [title, line]
    for i, r in enumerate(cells):
        out.append("  ".join(c.rjust(w) if j else c.ljust(w) for j, (c, w) in enumerate(zip(r, widths))))
        if i == 0:
            out.append(line)
    return "\n".join(out)


def _fmt(x: float, spec: str, missing: str = "n/a") -> str:
    return missing if math.isnan(x) else spec.format(x)


def _json_safe(x):
    """NaN/inf -> None, so the file is strict JSON."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def _ok(flag: bool) -> str:
    return "MET" if flag else "NOT MET"


def report(res: dict) -> str:
    parts = []
    meta = res["meta"]
    parts.append(
        f"iopsim benchmark  mode={meta['mode']}  repeats={meta['repeats']}  python {meta['python']}  "
        f"simpy {meta['simpy']}  numpy {meta['numpy']}  cpus={meta['cpu_count']}  commit={meta['commit']}"
    )
    m = res.get("mmc")
    if m:
        parts.append(
            _table(
                f"1. One-stage M/M/c (c={m['c']}, rho={m['rho']}, mean stay {m['mean_stay_days']} d, "
                f"{m['patients']} patients; medians of {len(m['repeats'])} interleaved repeats)",
                ["figure", "value"],
                [
                    ["iopsim patients/s  (Model(sc, 0).run())", f"{m['iopsim_patients_per_s']:,.0f}"],
                    ["hand-written SimPy patients/s", f"{m['handwritten_patients_per_s']:,.0f}"],
                    [
                        f"ratio iopsim / hand-written (goal >= {m['goal']})",
                        f"{m['ratio_median']:.3f}  [{_ok(m['ratio_median'] >= m['goal'])}]",
                    ],
                    ["  ratio range over repeats", f"{m['ratio_min']:.3f} .. {m['ratio_max']:.3f}"],
                    ["  ratio of CPU times (less load-sensitive)", f"{m['ratio_cpu_median']:.3f}"],
                    ["  ratio, iopsim event loop only", f"{m['ratio_env_run_only_median']:.3f}"],
                    ["  event loop share of iopsim run()", f"{m['iopsim_env_run_share']:.1%}"],
                    [
                        "mean wait: iopsim / hand / Erlang C (days)",
                        f"{m['mean_wait_iopsim']:.3f} / {m['mean_wait_handwritten']:.3f} / {m['mean_wait_erlang_c']:.3f}",
                    ],
                ],
            )
        )
    e = res.get("events")
    if e:
        parts.append(
            _table(
                f"2. Events per second: baseline {e['horizon_days']} d ({e['iopsim_events']:,} events) "
                f"vs bare SimPy timeout loop ({e['bare_events']:,} events)",
                ["figure", "value"],
                [
                    ["iopsim events/s (event loop only)", f"{e['iopsim_events_per_s_env_run']:,.0f}"],
                    ["iopsim events/s (whole Model(..).run())", f"{e['iopsim_events_per_s_whole_run']:,.0f}"],
                    ["bare SimPy timeout loop events/s", f"{e['bare_events_per_s']:,.0f}"],
                    ["ratio iopsim / bare (event loop only)", f"{e['ratio_median']:.3f}"],
                    ["ratio iopsim / bare (event loop only, CPU times)", f"{e['ratio_cpu_median']:.3f}"],
                    ["ratio iopsim / bare (whole run())", f"{e['ratio_whole_run_median']:.3f}"],
                ],
            )
        )
    h = res.get("horizons")
    if h:
        floor = h["imports_only_child_maxrss_mb"]
        floor_txt = "not measured" if math.isnan(floor) else f"{floor:.0f} MB"
        rows = []
        for x in h["rows"]:
            rows.append(
                [
                    f"{x['horizon_days']} d",
                    x["replications_timed"],
                    f"{x['replications_per_s']:.2f}",
                    f"{x['replications_per_cpu_s']:.2f}",
                    f"{x['model_s_median'] * 1e3:.0f}",
                    f"{x['kpis_s_median'] * 1e3:.0f}",
                    f"{x['tracemalloc_peak_mb']:.1f}",
                    f"{x['child_maxrss_mb']:.0f}",
                    _fmt(x["child_maxrss_over_imports_mb"], "{:+.0f}"),
                ]
            )
        parts.append(
            _table(
                f"3a. Baseline replications (fresh subprocess per horizon; imports-only child RSS {floor_txt}; "
                "model/kpis ms are medians per replication)",
                ["horizon", "reps", "reps/s", "reps/cpu-s", "model ms", "kpis ms", "tracemalloc MB", "max RSS MB", "RSS-imports MB"],
                rows,
            )
        )
    g = res.get("goal")
    if g:
        parts.append(
            _table(
                f"3b. Goal case: baseline {g['horizon_days']} d x {g['replications']} replications, "
                f"run_replications(jobs={g['jobs']}), {g['cpu_count']} cpus",
                ["figure", "value"],
                [
                    ["wall time, first run (incl. forkserver start)", f"{g['wall_s_first']:.2f} s"],
                    [
                        f"wall time, median of {len(g['wall_s_runs'])} (goal < {g['goal_s']:.0f} s)",
                        f"{g['wall_s_median']:.2f} s  [{_ok(g['wall_s_median'] < g['goal_s'])}]",
                    ],
                    [
                        "serial estimate from 3a (reps / reps-per-s)",
                        _fmt(g["serial_estimate_s"], "{:.2f} s", "n/a (horizons not run)"),
                    ],
                ],
            )
        )
    sw = res.get("sweep")
    if sw:
        pps = sw["points_per_s"]
        parts.append(
            _table(
                f"4. Sweeps: {sw['points']} points x {sw['replications']} replications of the baseline at "
                f"{sw['horizon_days']} d, each configuration a fresh sweep incl. its pool start "
                f"(medians of {len(sw['runs'])} repeats; --quick is too small for the speed-up to mean much)",
                ["figure", "value"],
                [
                    ["points/s, 1 local worker", f"{pps['jobs1']:.2f}"],
                    ["points/s, 2 local workers", f"{pps['jobs2']:.2f}"],
                    [f"speed-up with 2 workers, running the points (goal >= {GOAL_SWEEP_SPEEDUP})",
                     f"{sw['speedup_2_workers_points_phase']:.2f}x  "
                     f"[{_ok(sw['speedup_2_workers_points_phase'] >= GOAL_SWEEP_SPEEDUP)}]"],
                    ["speed-up with 2 workers, end to end (validation, store, figures included)",
                     f"{sw['speedup_2_workers']:.2f}x"],
                    ["points/s, Dask LocalCluster (2 workers)", f"{pps['dask2']:.2f}"],
                    ["Dask time / local 2-worker time", f"{sw['dask_vs_local_ratio']:.2f}"],
                    ["Dask overhead per point vs local processes", f"{sw['dask_overhead_per_point_s'] * 1000:.0f} ms"],
                ],
            )
        )
    parts.append("Timings on shared machines are noisy: ratios are measured side by side within each repeat and medians reported.")
    return "\n\n".join(parts)


def report_more(res: dict) -> str:
    """Tables of sections 1b and 5-7 (M/M/c in fresh processes, start-up, --jobs ratio, volume scan)."""
    parts = []
    f = res.get("mmc_fresh")
    if f:
        rss = f["maxrss_mb"]
        imp = f["imports_only_maxrss_mb"]
        parts.append(_table(f"1b. One-stage M/M/c (c={f['c']}, rho={f['rho']}, {f['patients']:,} patients), "
                            f"each tool in a fresh process ({len(f['rounds'])} interleaved rounds)", ["figure", "value"], [
            [f"throughput ratio iopsim / hand-written SimPy, median (goal >= {f['goal_ratio']}, at least 0.8)",
             f"{f['ratio_median']:.3f}  [{_ok(f['ratio_median'] >= f['goal_ratio'])}]"],
            ["  range", f"{f['ratio_min']:.3f} .. {f['ratio_max']:.3f}"],
            ["  ratio of CPU times", f"{f['ratio_cpu_median']:.3f}"],
            ["peak RSS iopsim / hand-written / bare interpreter",
             f"{rss['iopsim']:.0f} / {rss['simpy']:.0f} / {rss['interpreter']:.0f} MB"],
            ["  imports only: iopsim.engine.model / simpy+numpy", f"{imp['iopsim']:.0f} / {imp['simpy']:.0f} MB"],
            [f"RSS above the interpreter, iopsim / SimPy (goal <= {f['goal_rss_ratio']})",
             f"{f['rss_over_floor_ratio']:.2f}  [{_ok(f['rss_over_floor_ratio'] <= f['goal_rss_ratio'])}]"]]))
    s = res.get("startup")
    if s:
        parts.append(_table(f"5. Start-up: `python -c \"{s['code']}\"` minus a bare interpreter "
                            f"({len(s['rounds'])} fresh interpreters)", ["figure", "value"], [
            [f"import time, median (goal < {s['goal_s']} s)",
             f"{s['import_s_median']:.2f} s  [{_ok(s['import_s_median'] < s['goal_s'])}]"],
            ["  range", f"{s['import_s_min']:.2f} .. {s['import_s_max']:.2f} s"],
            ["heavy modules loaded", s["heavy_modules_loaded"]]]))
    j = res.get("jobs")
    if j:
        parts.append(_table(f"6. `iopsim run scenarios/baseline.yaml -n {j['replications']}` end to end "
                            f"({len(j['rounds'])} interleaved rounds)", ["figure", "value"], [
            [f"--jobs 2 speed-up over --jobs 1, median (goal >= {j['goal']})",
             f"{j['speedup_median']:.2f}  [{_ok(j['speedup_median'] >= j['goal'])}]"],
            ["  range", f"{j['speedup_min']:.2f} .. {j['speedup_max']:.2f}"],
            ["--jobs 1 / --jobs 2 wall, round 1", f"{j['rounds'][0]['jobs1_s']:.1f} s / {j['rounds'][0]['jobs2_s']:.1f} s"],
            ["two CPU-bound loops / one, same rounds (the machine's ceiling)",
             f"{j['machine_speedup_median']:.2f} ({j['machine_speedup_min']:.2f} .. {j['machine_speedup_max']:.2f})"],
            ["--jobs 2 speed-up / the machine's ceiling, median",
             f"{j['of_machine_median']:.2f} ({j['of_machine_min']:.2f} .. {j['of_machine_max']:.2f})"],
            ["share of the machine's CPU used by other processes, max round", f"{j['others_cpu_share_max']:.0%}"
             + ("  (busy machine: the speed-up is not meaningful)" if j["others_cpu_share_max"] > 0.1 else "")]]))
    v = res.get("volume")
    if v:
        rows = [[f"x{f}", f"{v[f'x{f}']['us_per_patient_median']:.0f}",
                 f"{v[f'x{f}']['ratio_median']:.2f} ({v[f'x{f}']['ratio_min']:.2f} .. {v[f'x{f}']['ratio_max']:.2f})"]
                for f in v["factors"]]
        last = v[f"x{v['factors'][-1]}"]["ratio_median"]
        rows.append([f"goal: x{v['factors'][-1]} / x1 <= {v['goal']}", "", _ok(last <= v["goal"])])
        parts.append(_table(f"7. Volume scan: baseline, {v['horizon_days']} days, scaled (model + KPIs; "
                            f"{len(v['rounds'])} rounds)", ["volume", "us per patient", "ratio to x1 (range)"], rows))
    m = res.get("money")
    if m:
        parts.append(_table(f"8. Money: a two-year baseline replication with payers / without ({len(m['rounds'])} "
                            "interleaved rounds)", ["figure", "value"], [
            ["wall-time ratio, median (range)", f"{m['ratio_median']:.3f} ({m['ratio_min']:.3f} .. {m['ratio_max']:.3f})"],
            ["with / without payers, median", f"{m['money_ms_median']:.0f} ms / {m['bare_ms_median']:.0f} ms"]]))
    return "\n\n".join(parts)


def _git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sim", "cli.py"], cwd=ROOT, capture_output=True, text=True)
        return sha.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except Exception:  # not a git checkout
        return "unknown"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (~20 s), for smoke tests")
    ap.add_argument("--repeats", type=int, default=None, help="repeats per measurement (default 5, quick 3)")
    ap.add_argument("--json", type=Path, default=None, help="also write all figures and raw repeats to FILE")
    ap.add_argument("--c", type=int, default=3, help="M/M/c servers (default 3)")
    ap.add_argument("--rho", type=float, default=0.8, help="M/M/c utilisation (default 0.8)")
    ap.add_argument("--only", default="mmc,mmc_fresh,events,horizons,goal,sweep,startup,jobs,volume,money",
                    help="comma-separated sections (mmc,mmc_fresh,events,horizons,goal,sweep,startup,jobs,volume,money)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_mmc_child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._child is not None:
        h, k = (int(x) for x in args._child.split(":"))
        print(json.dumps(child_main(h, k)))
        return 0
    if args._mmc_child is not None:
        tool, c, rho, patients, n = args._mmc_child.split(":")
        print(json.dumps(mmc_child_main(tool, int(c), float(rho), int(patients), int(n))))
        return 0

    idx = 1 if args.quick else 0
    sizes = {k: v[idx] for k, v in SIZES.items()}
    args.repeats_given = args.repeats is not None
    args.repeats = args.repeats if args.repeats is not None else sizes["repeats"]
    if args.repeats < 1:
        ap.error("--repeats must be >= 1")
    sections = {s.strip() for s in args.only.split(",") if s.strip()}
    unknown = sections - {"mmc", "mmc_fresh", "events", "horizons", "goal", "sweep", "startup", "jobs", "volume", "money"}
    if unknown:
        ap.error(f"unknown section(s) for --only: {', '.join(sorted(unknown))}")

    res: dict = {
        "meta": {
            "mode": "quick" if args.quick else "full",
            "repeats": args.repeats,
            "python": platform.python_version(),
            "simpy": simpy.__version__,
            "numpy": np.__version__,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "commit": _git_commit(),
            "sizes": {k: (v if not isinstance(v, dict) else {str(a): b for a, b in v.items()}) for k, v in sizes.items()},
        }
    }
    t_start = time.perf_counter()
    section_s = res["meta"]["section_s"] = {}

    def section(name, title, fn):
        _progress(title)
        t0 = time.perf_counter()
        res[name] = fn()
        section_s[name] = time.perf_counter() - t0

    if "mmc" in sections:
        section("mmc", "1. M/M/c ...", lambda: mmc_section(args, sizes))
    if "mmc_fresh" in sections:
        section("mmc_fresh", "1b. M/M/c, fresh processes ...", lambda: mmc_fresh_section(args, sizes))
    if "events" in sections:
        section("events", "2. events ...", lambda: events_section(args, sizes))
    if "horizons" in sections:
        section("horizons", "3a. horizons ...", lambda: horizons_section(args, sizes))
    if "goal" in sections:
        section("goal", "3b. goal case ...", lambda: goal_section(args, sizes, res.get("horizons")))
    if "sweep" in sections:
        section("sweep", "4. sweeps ...", lambda: sweep_section(args, sizes))
    if "startup" in sections:
        section("startup", "5. start-up ...", lambda: startup_section(args, sizes))
    if "jobs" in sections:
        section("jobs", "6. --jobs 2 / --jobs 1 ...", lambda: jobs_section(args, sizes))
    if "volume" in sections:
        section("volume", "7. volume scan ...", lambda: volume_section(args, sizes))
    if "money" in sections:
        section("money", "8. money ...", lambda: money_section(args, sizes))
    res["meta"]["total_s"] = time.perf_counter() - t_start

    print(report(res))
    more = report_more(res)
    if more:
        print("\n" + more)
    took = ", ".join(f"{k} {v:.1f} s" for k, v in res["meta"]["section_s"].items())
    print(f"\n(total benchmark time {res['meta']['total_s']:.1f} s: {took})")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(_json_safe(res), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
