"""iopsim's event loop processes events in exactly SimPy's order.

:mod:`iopsim.engine.loop` replaces ``env.process``, ``env.timeout`` and
``env.run(until=...)`` in the model.  The claim is that nothing changes but
the cost: the same events, in the same order, at the same times.  Here many
processes on integer delays (so that simultaneous events are the rule, not
the exception) wait on timeouts, on shared events that others trigger, and
on events already processed; each logs every resumption.  The log must be
the same, entry for entry, under SimPy's machinery and under iopsim's.

The intake's wake-up resumes only the clinicians who have something to do
(``Intake._dispatch``); resuming every waiting clinician, as a plain shared
event does, must give the same records to the last bit.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import simpy

from iopsim.engine.loop import run_until, spawn, timeout
from conftest import shipped_raw


def _program(env, log, rng_seed: int, start, wait, until: float):
    """A random program of processes; ``start``/``wait`` are the machinery under test."""
    rng = np.random.default_rng(rng_seed)
    gates = [env.event() for _ in range(4)]
    opened: list = []
    plans = [rng.integers(0, 4, size=12).tolist() for _ in range(25)]
    delays = [rng.integers(0, 3, size=12).tolist() for _ in range(25)]

    def worker(k):
        for step, (kind, d) in enumerate(zip(plans[k], delays[k])):
            log.append((env.now, k, step))
            if kind == 0:
                yield wait(d)
            elif kind == 1:  # wait for a gate another worker opens, or one opened long ago
                if step % 3 == 0 and opened:
                    yield opened[(k + step) % len(opened)]  # processed already: resume at once
                else:
                    yield gates[(k + step) % len(gates)]
            elif kind == 2:  # open a gate, then go on after a zero delay
                i = (k * 3 + step) % len(gates)
                if not gates[i].triggered:
                    gates[i].succeed(k)
                    opened.append(gates[i])
                    gates[i] = env.event()
                yield wait(0)
            else:  # start a child process at this instant
                start(child(k, step))
                yield wait(d)
        log.append((env.now, k, "end"))

    def child(k, step):
        log.append((env.now, k, step, "child"))
        yield wait(1)
        log.append((env.now, k, step, "child end"))

    def opener():
        while True:  # no gate stays closed for ever
            yield wait(2)
            for i, g in enumerate(gates):
                if not g.triggered:
                    g.succeed(-1)
                    opened.append(g)
                    gates[i] = env.event()

    for k in range(25):
        start(worker(k))
    start(opener())


@pytest.mark.parametrize("seed", range(6))
def test_the_same_events_in_the_same_order_as_simpy(seed):
    until = 30.0
    env = simpy.Environment()
    simpy_log: list = []
    _program(env, simpy_log, seed, env.process, env.timeout, until)
    env.run(until=until)
    simpy_now = env.now

    env2 = simpy.Environment()
    ours: list = []
    _program(env2, ours, seed, lambda g: spawn(env2, g), lambda d: timeout(env2, d), until)
    run_until(env2, until)

    assert len(simpy_log) > 300, "the program should do a lot"
    assert ours == simpy_log
    assert env2.now == simpy_now == until


def test_events_at_the_horizon_are_left_as_simpy_leaves_them():
    """An urgent event at the horizon stops the loop before the ordinary events due then (as env.run)."""
    for use_simpy in (True, False):
        env = simpy.Environment()
        seen = []

        def p():
            yield (env.timeout(5) if use_simpy else timeout(env, 5))
            seen.append(env.now)

        (env.process if use_simpy else (lambda g: spawn(env, g)))(p())
        if use_simpy:
            env.run(until=5)
        else:
            run_until(env, 5)
        assert seen == [] and env.now == 5


def test_a_negative_delay_and_a_past_horizon_are_refused_as_simpy_refuses_them():
    env = simpy.Environment()
    with pytest.raises(ValueError, match="Negative delay"):
        timeout(env, -1.0)
    run_until(env, 1.0)
    with pytest.raises(ValueError, match="must be greater"):
        run_until(env, 1.0)


# --------------------------------------------------------------------------- the intake's wake-up

_ALWAYS = [{"days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"], "start_hour": 0, "end_hour": 24}]


def _intake_case(name: str):
    """Baseline variants where several clinicians wait for referrals at once."""
    from iopsim.schema.scenario import validate_raw

    raw = shipped_raw("baseline")
    raw.update(horizon_days=150, warmup_days=0)
    raw["referrals"]["referrals_per_week"] *= 3
    if name == "six clinicians":
        raw["staff"]["roles"]["intake_clinician"]["teams"][0]["headcount"] = 6
    else:  # the group counselors assess too, around the sessions booked for them while they wait
        raw["intake"]["role"] = "counselor"
        for team in raw["staff"]["roles"]["counselor"]["teams"]:
            team["shifts"] = _ALWAYS
    return validate_raw(raw, name)


@pytest.mark.parametrize("case", ["six clinicians", "counselors around their groups, 24/7"])
def test_the_intake_wake_up_is_the_same_as_resuming_every_waiting_clinician(case, monkeypatch):
    """The wake-up resumes only the clinicians who would do something (see ``Intake._dispatch``).
    Resuming every waiting clinician in order, as a plain shared event does, must give the same
    records to the last bit -- with more resumptions, which shows the shortcut is taken."""
    from iopsim.engine import stages
    from iopsim.engine.model import Model

    sc = _intake_case(case)
    resumptions = [0]
    clinician = stages.Intake._clinician

    def counted(self, c):  # the clinician's process, counting its resumptions
        steps = clinician(self, c)
        event = next(steps)
        while True:
            value = yield event
            resumptions[0] += 1
            event = steps.send(value)

    monkeypatch.setattr(stages.Intake, "_clinician", counted)
    fast = Model(sc, 1).run()
    fast_count, resumptions[0] = resumptions[0], 0
    monkeypatch.setattr(stages.Intake, "_dispatch", lambda self, waiting, event: [r(event) for r in waiting])
    every = Model(sc, 1).run()
    assert list(fast) == list(every)
    for name in fast:
        pd.testing.assert_frame_equal(fast[name], every[name], check_exact=True, obj=name)
    assert len(fast.table("visits")) > 500
    assert fast_count < 0.9 * resumptions[0], (fast_count, resumptions[0])
