"""Patients, waitlists, intake and the generic stage visit of one replication.

:class:`Stage` is one level of care with a fixed number of places and a
waitlist; :class:`iopsim.engine.iop.TrackedIOP` builds the IOP's group
calendar on it; :class:`iopsim.engine.model.Model` wires the stages into the
pathway described in :mod:`iopsim.engine.model`.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from functools import partial
from typing import TYPE_CHECKING

import simpy

from iopsim.schema.scenario import STAGE_ORDER, TREATMENT_STAGES
from iopsim.engine.loop import spawn, timeout
from iopsim.engine.staff import INTAKE_SHORTHAND_ROLE

if TYPE_CHECKING:  # annotations only: the model imports this module
    from iopsim.engine.model import Model

log = logging.getLogger(__name__)

INF = math.inf
_EPS = 1e-9
ADMITTED = "admitted"
#: Namespace offset for the random streams of patients already in care on day 0.
_INITIAL_NS = 10_000
#: Namespace offset per repeat visit to the same stage within an episode.
_REPEAT_NS = 1_000_000


def visit_namespace(p: "Patient", stage: str) -> int:
    """Set and return the namespace of ``p``'s draws for a new visit to ``stage``.

    A patient's first visit to a stage in an episode draws from the episode's
    namespace, as it always has; a repeat visit (routing back to a stage, a
    cycle) draws from its own namespace, so a second stay is a new draw and
    not a copy of the first.  Common random numbers hold visit by visit.
    """
    seen = p.seen
    if seen is None:
        seen = p.seen = {}
    k = seen.get(stage, 0)
    seen[stage] = k + 1
    p.vns = p.ns if k == 0 else p.ns + _REPEAT_NS * k
    return p.vns


class Patient:
    """One person; ``episode`` counts their referrals.  Initial patients have negative ids."""

    __slots__ = ("id", "episode", "source", "ns", "index", "ep_rec", "t_relapse", "availability", "vns", "seen",
                 "prev", "severity", "barrier")

    def __init__(self, pid: int, episode: int, source: str):
        self.id = pid
        self.episode = episode
        self.source = source
        if pid >= 0:
            self.ns, self.index = episode, pid
        else:
            self.ns, self.index = _INITIAL_NS + episode, -pid - 1
        self.vns = self.ns  # namespace of the current stage visit's draws (see visit_namespace)
        self.seen: dict[str, int] | None = None  # visits to each stage so far in this episode
        self.ep_rec: int | None = None  # row of this episode in the recorder's episode log
        self.t_relapse = INF
        self.availability: str | None = None  # drawn when first needed (tracked IOP)
        self.severity: str | None = None  # drawn at the first IOP plan (tracked IOP with severity classes)
        self.prev: str | None = None  # the stage this visit follows in the episode (None: placed here)
        self.barrier: bool | None = None  # travel to the site is a barrier: drawn when first needed (tracked IOP)


class _Waiter:
    """A place in a waitlist.  Called as an event callback when patience runs out."""

    __slots__ = ("event", "record", "owner", "outcome", "done", "duration", "patient", "member")

    def __init__(self, event, record, owner, outcome="reneged", duration=0.0):
        self.event = event
        self.record = record
        self.owner = owner
        self.outcome = outcome
        self.done = False
        self.duration = duration
        self.patient = None
        self.member = None

    def __call__(self, _timeout) -> None:
        if self.done:
            return
        self.owner._leave_waitlist(self)
        v = self.owner.visits
        v.t_leave[self.record] = self.owner.env._now
        v.outcome[self.record] = v.code(self.outcome)
        self.event.succeed(self.outcome)


class _WaitlistOwner:
    """Bookkeeping shared by everything patients wait for (intake, stages): a FIFO
    ``queue`` of waiters (reneged ones are marked done and skipped lazily), the
    number really waiting, and the waitlist's level series."""

    def _init_waitlist(self, level) -> None:
        self.queue: deque[_Waiter] = deque()
        self.n_waiting = 0
        self.waitlist = level

    def _enqueue(self, w: _Waiter, deadline: float) -> None:
        """Add ``w``; if ``deadline`` is finite, ``w`` leaves by itself then (see ``_Waiter``)."""
        self.queue.append(w)
        self.n_waiting += 1
        self.waitlist.add(self.env._now, 1)
        if deadline < INF:
            timeout(self.env, deadline).callbacks.append(w)

    def _anyone_waiting(self) -> bool:
        """Whether anyone is waiting; those at the head who stopped waiting are dropped first."""
        queue = self.queue
        while queue and queue[0].done:
            queue.popleft()
        return bool(queue)

    def _leave_waitlist(self, w: _Waiter) -> None:
        """``w`` stops waiting (admitted, or gave up); it stays in ``queue`` until skipped."""
        w.done = True
        self.n_waiting -= 1
        self.waitlist.add(self.env._now, -1)


def _categorical(u: float, cumulative: list[tuple[str, float]], default: str | None = None):
    for name, c in cumulative:
        if u < c:
            return name
    return default if default is not None else cumulative[-1][0]


def _cumulative(mapping: dict[str, float], order=None) -> list[tuple[str, float]]:
    keys = [k for k in (order or mapping) if k in mapping]
    out, c = [], 0.0
    for k in keys:
        c += mapping[k]
        out.append((k, c))
    return out


class _Clinician:
    """An intake clinician as the wake-up sees them while they wait for a referral: free (on
    shift, not booked) until ``free_until`` as long as their bookings' ``version`` is unchanged."""

    __slots__ = ("member", "free_until", "version")

    def __init__(self, member):
        self.member = member
        self.free_until = -INF
        self.version = -1


class Intake(_WaitlistOwner):
    """Intake waitlist served by rostered clinicians (staff members of the intake role).

    A clinician on shift and not booked for other work takes the head of the
    waitlist if the assessment fits before their shift ends or their next
    booking starts; otherwise they wait.  An assessment longer than the whole
    shift is cut to the shift's length (logged), so work never leaves the
    roster.  Patients waiting may renege.

    Clinicians with nothing to do wait for one shared wake-up event, which the
    next referral triggers; they resume in the order they began to wait.  Most
    of them would find the referral taken by the one before and simply wait
    again, so the wake-up (:meth:`_dispatch`) moves those straight to the next
    wake-up without resuming them -- the same order, the same events, a
    resumption only for a clinician who acts (at 16 times the baseline's
    volume, 1.7 clinician resumptions per referral instead of 2.8).
    """

    def __init__(self, model: "Model", cfg):
        self.model = model
        self.env = model.env
        self.cfg = cfg
        self._init_waitlist(model.rec.waitlist["intake"])
        self.wake: simpy.Event | None = None
        self.census = model.rec.census["intake"]
        self.visits = model.rec.visits
        s = model.streams
        self.duration = s.patient("intake.assessment", lambda u: cfg.assessment_hours.ppf(u) / 24.0)
        self.patience = s.patient("intake.patience", cfg.patience_days.ppf) if cfg.patience_days else None
        role = cfg.role or INTAKE_SHORTHAND_ROLE
        #: A waiting clinician's resumption (what it adds to the wake-up's callbacks) -> the clinician.
        self._clinicians: dict = {}
        for member in model.staff.by_role[role]:
            c = _Clinician(member)
            self._clinicians[spawn(self.env, self._clinician(c)).resume] = c

    def assess(self, p: Patient):
        """Generator: wait for and undergo assessment; returns True if assessed."""
        env = self.env
        now = env._now
        rec = self.model.rec.open_visit(p.id, p.episode, "intake", "intake", now)
        w = _Waiter(env.event(), rec, self, duration=self.duration.get(p.ns, p.index))
        self._enqueue(w, self.patience.get(p.ns, p.index) if self.patience is not None else INF)
        wake = self.wake
        if wake is not None and not wake.triggered:
            wake.succeed()
            # The clinicians waiting now are those this wake-up concerns (a clinician who starts
            # waiting before it happens waits for the next one): the wake-up sorts them out.
            wake.callbacks = [partial(self._dispatch, wake.callbacks)]
        result = yield w.event
        return result == "assessed"

    def _dispatch(self, waiting: list, event) -> None:
        """The wake-up: resume, in order, each clinician in ``waiting`` whose resumption would do
        something; move the others to the next wake-up as their own resumption would.

        A clinician's resumption only waits again when the waitlist is empty (the
        referral taken by one before them) and they are still on shift and free.
        ``free_until`` is the earlier of their span of work's end and their next
        booking's start when they began to wait: while now + ``_EPS`` is before it
        and their bookings have not changed (``version``), the roster and booking
        checks of :meth:`_clinician` answer as they did then.  Anyone else is
        resumed here, at the same moment and in the same order as if every waiting
        clinician were resumed (``tests/test_loop.py`` compares the two).
        """
        now_eps = self.env._now + _EPS
        clinicians = self._clinicians
        for resume in waiting:
            c = clinicians[resume]
            if not self._anyone_waiting() and c.free_until > now_eps and c.member.version == c.version:
                wake = self.wake
                if wake.triggered:
                    wake = self.wake = self.env.event()
                wake.callbacks.append(resume)
            else:
                resume(event)

    def _clinician(self, c: _Clinician):
        member = c.member
        env = self.env
        queue = self.queue
        staff = self.model.staff
        visits = self.visits
        while True:
            now = env._now
            start, end = member.calendar.current_or_next(now)
            if start > now + _EPS:
                yield timeout(env, start - now)
                continue
            nb = member.next_booking(now)
            if nb is not None and nb.start <= now + _EPS:  # booked for other work now (or within rounding)
                yield timeout(env, max(nb.end - now, 0.0))
                continue
            free_until = min(end, nb.start) if nb is not None else end
            if not self._anyone_waiting():
                # Nothing to do until someone joins: the loop then re-checks the
                # roster and bookings, so no timer for the shift end is needed.
                # Free until ``free_until`` while the bookings stay as they are
                # (what the wake-up checks before resuming this clinician).
                c.free_until, c.version = free_until, member.version
                if self.wake is None or self.wake.triggered:
                    self.wake = env.event()
                yield self.wake
                continue
            w = queue[0]
            duration = w.duration
            if duration > end - start:
                log.info("t=%.3f assessment of %.2f h cut to the %.2f h shift", now, duration * 24, (end - start) * 24)
                duration = end - start
            if now + duration > free_until + _EPS:
                # It does not fit before the shift ends or the next booking starts:
                # wait for the end of whichever comes first.
                if nb is not None and nb.start < end:
                    yield timeout(env, nb.end - now)
                else:
                    yield timeout(env, end - now)
                continue
            queue.popleft()
            self._leave_waitlist(w)
            self.census.add(now, 1)
            visits.t_admit[w.record] = now
            staff.book(member, "intake", now, now + duration, visits.patient_id[w.record])
            yield timeout(env, duration)
            now = env._now
            self.census.add(now, -1)
            visits.t_leave[w.record] = now
            visits.outcome[w.record] = visits.code("assessed")
            w.event.succeed("assessed")


class Stage(_WaitlistOwner):
    """A level of care with a fixed number of places (beds/slots) and a FIFO waitlist."""

    def __init__(self, model: "Model", name: str, cfg):
        self.model = model
        self.env = model.env
        self.name = name
        self.cfg = cfg
        self.capacity = INF if cfg.capacity is None else cfg.capacity
        self.occupied = 0
        self.overflow: Stage | None = None  # linked after all stages exist
        self.treatment = name in TREATMENT_STAGES
        self._init_waitlist(model.rec.waitlist[name])
        self.census = model.rec.census[name]
        self.visits = model.rec.visits
        self.code = self.visits.code(name)  # this stage's name in the visit log
        self.trace = model.trace
        s = model.streams
        self.los = s.patient(f"{name}.los", cfg.los_days.ppf) if cfg.los_days is not None else None
        self.patience = s.patient(f"{name}.patience", cfg.patience_days.ppf) if cfg.patience_days else None
        self.exit_u = s.patient(f"{name}.exit") if cfg.exits else None
        self.exit_time_u = s.patient(f"{name}.exit_time") if cfg.exits else None
        self.exits = [(x, c, cfg.exits[x].days) for x, c in _cumulative({k: v.probability for k, v in cfg.exits.items()})]
        #: Exits that move the patient to another stage of the program (step-up, ...).
        self.exit_to = {x: e.to for x, e in cfg.exits.items() if e.to is not None}
        self.step_down = _cumulative(cfg.step_down, order=[*STAGE_ORDER, "discharge"])
        self.step_u = s.patient(f"{name}.step_down") if len(self.step_down) > 1 else None

    # -- places -------------------------------------------------------------------
    def has_room(self, p: Patient) -> bool:
        return self.occupied < self.capacity

    def _target(self, p: Patient) -> "Stage":
        """Where a newcomer goes: here, or a lower level with room if allowed."""
        if self.overflow is None:  # nowhere else to go, room or not
            return self
        if self.has_room(p):
            return self
        s = self.overflow
        while s is not None:
            if s.has_room(p):
                return s
            s = s.overflow
        return self

    def _release(self) -> None:
        """Hand the freed place to the next waiting patient, or leave it empty."""
        now = self.env._now
        q = self.queue
        while q:
            w = q.popleft()
            if w.done:
                continue
            self._leave_waitlist(w)
            w.event.succeed(ADMITTED)
            return
        self.occupied -= 1
        self.census.add(now, -1)

    def _join_waitlist(self, p: Patient, rec: int) -> _Waiter:
        """Put ``p`` on this stage's waitlist, with a deadline if they may renege or relapse."""
        relapse_in = p.t_relapse - self.env._now
        patience = self.patience.get(p.vns, p.index) if self.patience is not None else INF
        w = _Waiter(self.env.event(), rec, self, "relapsed" if relapse_in < patience else "reneged")
        w.patient = p
        self._enqueue(w, min(patience, relapse_in))
        return w

    # -- the stay -----------------------------------------------------------------
    def plan_stay(self, p: Patient) -> tuple[str, float]:
        """Outcome and length of an admitted stay (see the module docstring)."""
        stay = self.los.get(p.vns, p.index)
        outcome = "completed"
        if self.exits:
            exit_name = _categorical(self.exit_u.get(p.vns, p.index), [(x, c) for x, c, _ in self.exits], "completed")
            if exit_name != "completed":
                dist = next(d for x, _, d in self.exits if x == exit_name)
                stay = dist.truncated_ppf(self.exit_time_u.get(p.vns, p.index), stay)
                outcome = exit_name
        return outcome, stay

    def next_stage(self, p: Patient) -> str:
        if self.step_u is None:
            return self.step_down[0][0]
        return _categorical(self.step_u.get(p.vns, p.index), self.step_down)

    def _visit_here(self, p: Patient, intended: str, residual_u: float | None):
        """Generator: one visit to this stage (the caller has resolved overflow with
        ``_target``).  Returns (outcome, next stage or None, this stage's name).

        The hot path of every run: locals and inlined one-liners on purpose."""
        env = self.env
        now = env._now
        name = self.name
        visit_namespace(p, name)
        v = self.visits
        rec = v.row()  # Recorder.open_visit, inlined
        v.patient_id[rec] = p.id
        v.episode[rec] = p.episode
        v.stage[rec] = self.code
        v.intended_stage[rec] = self.code if intended == name else v.code(intended)
        v.t_join[rec] = now
        if self.occupied < self.capacity:
            self.occupied += 1
            self.census.add(now, 1)
        else:
            w = self._join_waitlist(p, rec)
            result = yield w.event
            if result != ADMITTED:
                return result, None, self.name
            now = env._now
        v.t_admit[rec] = now
        if self.trace:
            log.debug("t=%.4f %s: patient %d (episode %d) admitted", now, self.name, p.id, p.episode)
        if self.exits:
            outcome, stay = self.plan_stay(p)
            v.planned_days[rec] = self.los.get(p.vns, p.index)
        else:
            outcome, stay = "completed", self.los.get(p.vns, p.index)
            v.planned_days[rec] = stay
        if residual_u is not None:  # already in care on day 0: only the rest of the stay remains
            stay *= residual_u
        if now + stay > p.t_relapse:
            outcome, stay = "relapsed", max(p.t_relapse - now, 0.0)
        yield timeout(env, stay)
        self._release()
        if outcome == "completed":
            nxt = self.step_down[0][0] if self.step_u is None else self.next_stage(p)
        else:
            nxt = self.exit_to.get(outcome)
        v.t_leave[rec] = env._now
        v.outcome[rec] = v.code(outcome)
        v.next[rec] = v.code(nxt)
        if self.trace:
            log.debug("t=%.4f %s: patient %d leaves (%s), next: %s", env._now, self.name, p.id, outcome, nxt)
        return outcome, nxt, self.name
