"""The batch executor's ordered map: results in the items' order whoever finishes first, endless
items with an early stop, and the same results on one process or two."""

from __future__ import annotations

import itertools
import time

from iopsim.experiments.executor import Executor


def slow_square(shared, i: int, delay: float) -> tuple[int, int]:
    """``(i, shared * i * i)`` after sleeping ``delay`` seconds (module level: it runs in a worker)."""
    time.sleep(delay)
    return i, shared * i * i


def counted(submitted: list):
    """Endless items ``(i, 0.0)``, each noted in ``submitted`` when it is taken."""
    for i in itertools.count():
        submitted.append(i)
        yield i, 0.0


def test_results_come_in_the_items_order_whoever_finishes_first():
    # The first item is the slowest: with two workers, later ones finish before it.
    items = [(i, 0.6 if i == 0 else 0.01) for i in range(8)]
    with Executor(jobs=2) as ex:
        got = list(ex.ordered(slow_square, items, shared=3))
    assert got == [(i, 3 * i * i) for i in range(8)]


def test_endless_items_stop_when_the_caller_has_enough():
    submitted = []
    with Executor(jobs=2) as ex:
        results = ex.ordered(slow_square, counted(submitted), shared=1, ahead=3)
        got = [next(results) for _ in range(5)]
        results.close()
    assert got == [(i, i * i) for i in range(5)]
    assert len(submitted) <= 5 + 3, f"at most the window ahead of what was used: {len(submitted)} submitted"


def test_one_job_runs_each_call_as_it_is_consumed():
    submitted = []
    with Executor(jobs=1) as ex:
        results = ex.ordered(slow_square, counted(submitted), shared=2)
        assert [next(results) for _ in range(3)] == [(0, 0), (1, 2), (2, 8)]
        results.close()
    assert submitted == [0, 1, 2]
