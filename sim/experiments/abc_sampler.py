"""pyabc's sampling step on iopsim's executor: the same particles on one process, many, or a Dask cluster.

pyabc hands its sampler a ``simulate_one`` function that proposes a parameter
set, simulates it and decides whether it is accepted; the sampler calls it
until it has ``n`` accepted particles.  pyabc's own parallel samplers draw the
proposals from whatever random state each worker happens to have and keep the
particles in the order workers finish, so a calibration with two workers (or
on a cluster, or resumed) is not the calibration with one.

:class:`ExecutorSampler` numbers the evaluations of a population ``0, 1, 2,
...``, seeds evaluation ``i`` of population ``t`` from ``(seed, t, i)`` alone,
runs them on an :class:`iopsim.experiments.executor.Executor` (here, local
processes kept for the whole calibration, or Dask) and takes them **in their
numbered order** until ``n`` are accepted.  The population is then the same
whatever ran it and in whatever order the workers finished: a calibration is
bit-for-bit reproducible from its seed with any ``--jobs``, on a cluster, and
when it resumes from its database.  The price is at most a few evaluations a
population computed ahead and not used (twice the workers, at the end).

This module imports pyabc, so it is imported only when a calibration runs.
"""

from __future__ import annotations

import itertools
import random

import cloudpickle
import numpy as np
from pyabc.sampler import Sampler

from iopsim.experiments.executor import Executor

#: Mixed into every evaluation's seed, so that its proposals are not the draws of any other stream.
_SALT = 0xABC5


def evaluate(simulate_one: bytes, seed: int, t: int, index: int):
    """Evaluation ``index`` of population ``t``: pyabc's ``simulate_one`` with the global random
    states seeded from ``(seed, t, index)`` (pure; runs in a worker, or here with one job).

    The function is unpickled afresh for every evaluation, so no state one
    evaluation leaves in it can reach another, in a worker or here.  The
    caller's random states are put back afterwards.
    """
    fn = cloudpickle.loads(simulate_one)
    ss = np.random.SeedSequence([int(seed), _SALT, int(t) % 2**32, int(index)])
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        np.random.seed(ss.generate_state(4))
        random.seed(int(ss.generate_state(1)[0]))
        return fn()
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


class ExecutorSampler(Sampler):
    """A pyabc sampler whose evaluations run on ``executor``, numbered and seeded so that the population
    does not depend on the workers (see the module's docstring)."""

    def __init__(self, executor: Executor, seed: int):
        super().__init__()
        self.executor = executor
        self.seed = int(seed)

    def sample_until_n_accepted(self, n, simulate_one, t, *, max_eval=np.inf, all_accepted=False, ana_vars=None):
        blob = cloudpickle.dumps(simulate_one)
        sample = self._create_empty_sample()
        indices = range(n) if all_accepted else itertools.count()
        # When every evaluation is accepted (pyabc's first, threshold-setting sample), exactly n are needed.
        ahead = n if all_accepted else None
        evaluations = 0
        results = self.executor.ordered(evaluate, ((self.seed, t, i) for i in indices), shared=blob, ahead=ahead)
        try:
            for particle in results:
                sample.append(particle)
                evaluations += 1
                if sample.n_accepted >= n or evaluations >= max_eval:
                    break
        finally:
            results.close()
        self.nr_evaluations_ = evaluations
        if sample.n_accepted < n:
            sample.ok = False
        return sample
