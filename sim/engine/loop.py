"""The event loop of a replication: SimPy's, without the parts the model never uses.

A one-stage queue spends about half its time in SimPy's own machinery (the
shipped baseline about a tenth): for every
event ``Environment.run`` calls ``step``, and every generator is driven by a
``simpy.Process``, which marks itself the active process at each resumption and,
when its generator returns, schedules one more event (the process itself)
that nothing in the model ever waits for.  The model never interrupts a
process, never waits for one to end and never fails an event, so:

* :func:`spawn` drives a generator exactly as ``env.process`` does -- an
  urgent event starts it, and it resumes from the callback list of each event
  it yields, in the same position -- but schedules nothing when it ends;
* :func:`timeout` schedules what ``env.timeout(delay)`` schedules, at the
  same place in the queue, as a plain object with the three attributes the
  loop and the processes use (SimPy's ``Timeout`` goes through its generic
  event constructor and ``Environment.schedule``: about twice the cost);
* :func:`run_until` pops and processes the queue as ``env.run(until=t)``
  does, stopping at an urgent event at ``t`` as SimPy does, with the loop
  inlined.

Events are processed in exactly the same order as with ``env.process`` and
``env.run``: SimPy orders its queue by (time, priority, sequence number), and
leaving out events that have no callbacks changes the sequence numbers of
later events but not their order.  ``tests/test_loop.py`` checks the order
against SimPy's on random programs full of simultaneous events, and the
records are the same to the last bit (the exact-trace tests).

The model reads the clock as ``env._now``, the attribute SimPy's
``Environment.now`` property returns: a one-stage queue reads it about ten
times per patient, and the property call cost about 6 % of the run.
"""

from __future__ import annotations

from heapq import heappop, heappush

from simpy.core import Environment
from simpy.events import NORMAL, URGENT, Event


class _Process:
    """A generator resumed by the events it yields (a ``simpy.Process`` without its own event).

    It is its own start event: scheduled urgent at once, as SimPy's ``Initialize``,
    with the first resumption as its one callback (the event loop needs only an
    event's ``callbacks``, ``_ok`` and ``_value``)."""

    __slots__ = ("_send", "_throw", "resume", "callbacks", "_ok", "_value")

    def __init__(self, env: Environment, generator):
        self._send = generator.send
        self._throw = generator.throw
        self.resume = self._resume
        self.callbacks = [self.resume]
        self._ok = True
        self._value = None
        heappush(env._queue, (env._now, URGENT, next(env._eid), self))  # env.schedule(self, URGENT)

    def _resume(self, event: Event) -> None:
        send = self._send
        while True:
            try:
                if event._ok:
                    event = send(event._value)
                else:  # as simpy.Process: the generator handles the failure or fails itself
                    event._defused = True
                    event = self._throw(event._value)
            except StopIteration:
                return
            callbacks = event.callbacks
            if callbacks is not None:  # not yet processed: resume when it is
                callbacks.append(self.resume)
                return
            # Already processed: go on at once with its value, as simpy.Process does.


def spawn(env: Environment, generator) -> _Process:
    """Start ``generator`` as a process of ``env`` (see the module docstring).

    Returns the process: its ``resume`` is the callback it adds to the event it
    waits for, and calling it with that event is what the loop does when the
    event happens."""
    return _Process(env, generator)


class _Timeout:
    """An event that happens ``delay`` after now (``env.timeout(delay)``, scheduled the same way)."""

    __slots__ = ("callbacks", "_ok", "_value")

    def __init__(self, env: Environment, delay: float):
        if delay < 0:
            raise ValueError(f"Negative delay {delay}")
        self.callbacks = []
        self._ok = True
        self._value = None
        heappush(env._queue, (env._now + delay, NORMAL, next(env._eid), self))


#: ``timeout(env, delay)``: an event ``delay`` from now, to yield or to add callbacks to.
timeout = _Timeout


class _Stop(Exception):
    pass


def _stop(_event: Event) -> None:
    raise _Stop


def run_until(env: Environment, until: float) -> None:
    """Process ``env``'s events up to ``until``, as ``env.run(until=until)`` does."""
    if until <= env.now:
        raise ValueError(f"until ({until}) must be greater than the current simulation time")
    end = Event(env)
    end._ok = True
    end._value = None
    end.callbacks = [_stop]
    env.schedule(end, URGENT, until - env.now)
    queue = env._queue
    try:
        while True:
            env._now, _, _, event = heappop(queue)
            callbacks, event.callbacks = event.callbacks, None
            for callback in callbacks:
                callback(event)
            if not event._ok and not hasattr(event, "_defused"):
                raise event._value
    except _Stop:
        return
