"""The SimPy model of one replication: referrals through intake and levels of care.

Pathway of one *episode* (a referral; a readmission is a new episode)::

    referral -> intake waitlist -> assessment -> placement
        placement in {residential, php, iop} -> stage visit -> step-down ... -> discharge
        placement in {outpatient, not_eligible} -> leaves the modelled system
    after discharge: relapse (log-logistic time) -> maybe a new referral

A **stage visit**: the patient joins the stage's waitlist (or, if the stage is
full and the scenario gives ``overflow_to``, takes a free place in a lower
level); while waiting they may renege (``patience_days``).  On admission a
planned stay ``S ~ los_days`` is drawn, and the early exits race it:

    **Exit probability, precisely.**  With probability ``exits[x].probability``
    an admitted patient leaves by exit ``x`` (dropped out, transferred, ...)
    before the planned stay ends; the time of leaving is drawn from
    ``exits[x].days`` *conditioned on being earlier than S*.  So the realised
    share of admissions ending in ``x`` equals the probability exactly (tested),
    whatever the two distributions are, and the stays of those who leave early
    are never longer than their planned stays (equal only when the exit-time
    distribution has no mass before the planned end).

A completed stay steps down (``step_down`` probabilities) to a lower level or
to discharge.  Completing a treatment stage (residential, PHP, IOP) and then
leaving treatment (discharge or aftercare) **completes a program**.  After
leaving treatment with an outcome in ``relapse.after`` the patient's relapse
clock runs from the end of treatment; a relapse during aftercare ends the
aftercare stay (outcome ``relapsed``).  With ``return_probability`` a relapsed
patient comes back as a new referral (episode + 1) after ``days_to_return``.

Random decisions use named per-patient streams (:mod:`sim.streams`) so that
common random numbers stay aligned across scenarios.
"""

from __future__ import annotations

import logging
import math
from collections import deque

import numpy as np
import simpy

from sim.records import Recorder
from sim.scenario import STAGE_ORDER, TREATMENT_STAGES, Scenario
from sim.staff import INTAKE_SHORTHAND_ROLE, StaffPool
from sim.streams import Streams

log = logging.getLogger(__name__)

INF = math.inf
_EPS = 1e-9
ADMITTED = "admitted"
#: Namespace offset for the random streams of patients already in care on day 0.
_INITIAL_NS = 10_000


class Patient:
    """One person; ``episode`` counts their referrals.  Initial patients have negative ids."""

    __slots__ = ("id", "episode", "source", "ns", "index", "ep_rec", "t_relapse", "availability")

    def __init__(self, pid: int, episode: int, source: str):
        self.id = pid
        self.episode = episode
        self.source = source
        if pid >= 0:
            self.ns, self.index = episode, pid
        else:
            self.ns, self.index = _INITIAL_NS + episode, -pid - 1
        self.ep_rec: list | None = None
        self.t_relapse = INF
        self.availability: str | None = None  # drawn when first needed (tracked IOP)


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
        self.record[6] = self.owner.env.now
        self.record[7] = self.outcome
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
        self.waitlist.add(self.env.now, 1)
        if deadline < INF:
            self.env.timeout(deadline).callbacks.append(w)

    def _leave_waitlist(self, w: _Waiter) -> None:
        """``w`` stops waiting (admitted, or gave up); it stays in ``queue`` until skipped."""
        w.done = True
        self.n_waiting -= 1
        self.waitlist.add(self.env.now, -1)


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


class Intake(_WaitlistOwner):
    """Intake waitlist served by rostered clinicians (staff members of the intake role).

    A clinician on shift and not booked for other work takes the head of the
    waitlist if the assessment fits before their shift ends or their next
    booking starts; otherwise they wait.  An assessment longer than the whole
    shift is cut to the shift's length (logged), so work never leaves the
    roster.  Patients waiting may renege.
    """

    def __init__(self, model: "Model", cfg):
        self.model = model
        self.env = model.env
        self.cfg = cfg
        self._init_waitlist(model.rec.waitlist["intake"])
        self.wake: simpy.Event | None = None
        self.census = model.rec.census["intake"]
        s = model.streams
        self.duration = s.patient("intake.assessment", lambda u: cfg.assessment_hours.ppf(u) / 24.0)
        self.patience = s.patient("intake.patience", cfg.patience_days.ppf) if cfg.patience_days else None
        role = cfg.role or INTAKE_SHORTHAND_ROLE
        for member in model.staff.by_role[role]:
            self.env.process(self._clinician(member))

    def assess(self, p: Patient):
        """Generator: wait for and undergo assessment; returns True if assessed."""
        env = self.env
        now = env.now
        rec = self.model.rec.open_visit(p.id, p.episode, "intake", "intake", now)
        w = _Waiter(env.event(), rec, self, duration=self.duration.get(p.ns, p.index))
        self._enqueue(w, self.patience.get(p.ns, p.index) if self.patience is not None else INF)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()
        result = yield w.event
        return result == "assessed"

    def _clinician(self, member):
        env = self.env
        queue = self.queue
        staff = self.model.staff
        while True:
            now = env.now
            start, end = member.calendar.current_or_next(now)
            if start > now + _EPS:
                yield env.timeout(start - now)
                continue
            nb = member.next_booking(now)
            if nb is not None and nb.start <= now + _EPS:  # booked for other work now (or within rounding)
                yield env.timeout(max(nb.end - now, 0.0))
                continue
            free_until = min(end, nb.start) if nb is not None else end
            while queue and queue[0].done:
                queue.popleft()
            if not queue:
                # Nothing to do until someone joins: the loop then re-checks the
                # roster and bookings, so no timer for the shift end is needed.
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
                    yield env.timeout(nb.end - now)
                else:
                    yield env.timeout(end - now)
                continue
            queue.popleft()
            self._leave_waitlist(w)
            self.census.add(now, 1)
            w.record[5] = now
            staff.book(member, "intake", now, now + duration, w.record[0])
            yield env.timeout(duration)
            now = env.now
            self.census.add(now, -1)
            w.record[6] = now
            w.record[7] = "assessed"
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
        self.open_visit = model.rec.open_visit
        self.trace = model.trace
        s = model.streams
        self.los = s.patient(f"{name}.los", cfg.los_days.ppf) if cfg.los_days is not None else None
        self.patience = s.patient(f"{name}.patience", cfg.patience_days.ppf) if cfg.patience_days else None
        self.exit_u = s.patient(f"{name}.exit") if cfg.exits else None
        self.exit_time_u = s.patient(f"{name}.exit_time") if cfg.exits else None
        self.exits = [(x, c, cfg.exits[x].days) for x, c in _cumulative({k: v.probability for k, v in cfg.exits.items()})]
        self.step_down = _cumulative(cfg.step_down, order=[*STAGE_ORDER, "discharge"])
        self.step_u = s.patient(f"{name}.step_down") if len(self.step_down) > 1 else None

    # -- places -------------------------------------------------------------------
    def has_room(self, p: Patient) -> bool:
        return self.occupied < self.capacity

    def _target(self, p: Patient) -> "Stage":
        """Where a newcomer goes: here, or a lower level with room if allowed."""
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
        now = self.env.now
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

    def _join_waitlist(self, p: Patient, rec: list) -> _Waiter:
        """Put ``p`` on this stage's waitlist, with a deadline if they may renege or relapse."""
        relapse_in = p.t_relapse - self.env.now
        patience = self.patience.get(p.ns, p.index) if self.patience is not None else INF
        w = _Waiter(self.env.event(), rec, self, "relapsed" if relapse_in < patience else "reneged")
        w.patient = p
        self._enqueue(w, min(patience, relapse_in))
        return w

    # -- the stay -----------------------------------------------------------------
    def plan_stay(self, p: Patient) -> tuple[str, float]:
        """Outcome and length of an admitted stay (see the module docstring)."""
        stay = self.los.get(p.ns, p.index)
        outcome = "completed"
        if self.exits:
            exit_name = _categorical(self.exit_u.get(p.ns, p.index), [(x, c) for x, c, _ in self.exits], "completed")
            if exit_name != "completed":
                dist = next(d for x, _, d in self.exits if x == exit_name)
                stay = dist.truncated_ppf(self.exit_time_u.get(p.ns, p.index), stay)
                outcome = exit_name
        return outcome, stay

    def next_stage(self, p: Patient) -> str:
        if self.step_u is None:
            return self.step_down[0][0]
        return _categorical(self.step_u.get(p.ns, p.index), self.step_down)

    def _visit_here(self, p: Patient, intended: str, residual_u: float | None):
        """Generator: one visit to this stage (the caller has resolved overflow with
        ``_target``).  Returns (outcome, next stage or None, this stage's name).

        The hot path of every run: locals and inlined one-liners on purpose."""
        env = self.env
        now = env.now
        rec = self.open_visit(p.id, p.episode, self.name, intended, now)
        if self.occupied < self.capacity:
            self.occupied += 1
            self.census.add(now, 1)
        else:
            w = self._join_waitlist(p, rec)
            result = yield w.event
            if result != ADMITTED:
                return result, None, self.name
            now = env.now
        rec[5] = now
        if self.trace:
            log.debug("t=%.4f %s: patient %d (episode %d) admitted", now, self.name, p.id, p.episode)
        if self.exits:
            outcome, stay = self.plan_stay(p)
        else:
            outcome, stay = "completed", self.los.get(p.ns, p.index)
        if residual_u is not None:  # already in care on day 0: only the rest of the stay remains
            stay *= residual_u
        if now + stay > p.t_relapse:
            outcome, stay = "relapsed", max(p.t_relapse - now, 0.0)
        yield env.timeout(stay)
        self._release()
        nxt = (self.step_down[0][0] if self.step_u is None else self.next_stage(p)) if outcome == "completed" else None
        rec[6] = env.now
        rec[7] = outcome
        rec[8] = nxt
        if self.trace:
            log.debug("t=%.4f %s: patient %d leaves (%s), next: %s", env.now, self.name, p.id, outcome, nxt)
        return outcome, nxt, self.name


class Model:
    """One replication of a scenario.  ``run()`` returns the records."""

    def __init__(self, scenario: Scenario, replication: int, seed: int | None = None):
        self.scenario = scenario
        self.replication = replication
        self.seed = scenario.seed if seed is None else seed
        self.env = simpy.Environment()
        self.horizon = float(scenario.horizon_days)
        self.trace = log.isEnabledFor(logging.DEBUG)  # -vv: an event trace with simulation times
        self.streams = Streams(self.seed, replication)
        enabled = scenario.stages.enabled()
        names = (["intake"] if scenario.intake else []) + list(enabled)
        self.rec = Recorder(scenario.horizon_days, names)
        self.staff = StaffPool(scenario, self.rec)
        self.intake = Intake(self, scenario.intake) if scenario.intake else None
        from sim.iop import TrackedIOP  # the tracked stage builds on Stage

        self.stages = {n: (TrackedIOP if cfg.tracks else Stage)(self, n, cfg) for n, cfg in enabled.items()}
        for n, cfg in enabled.items():
            if cfg.overflow_to is not None:
                self.stages[n].overflow = self.stages[cfg.overflow_to]
        s = self.streams
        ref = scenario.referrals
        self.sources = _cumulative({k: v.share for k, v in ref.sources.items()})
        self.placements = {k: _cumulative(v.placement) for k, v in ref.sources.items()}
        self.source_u = s.patient("referral.source")
        self.placement_u = s.patient("referral.placement")
        self.residual_u = s.patient("initial.residual")
        rel = scenario.relapse
        self.relapse = rel
        if rel is not None:
            self.relapse_days = s.patient("relapse.days", rel.days.ppf)
            self.return_u = s.patient("relapse.return")
            self.return_days = s.patient("relapse.days_to_return", rel.days_to_return.ppf) if rel.days_to_return else None
        self._next_id = 0

    # -- referrals ----------------------------------------------------------------
    def rate_per_day(self, t: float) -> float:
        ref = self.scenario.referrals
        profile = ref.weekday_profile
        mean_w = sum(profile) / 7.0
        month = (self.scenario.start_month - 1 + int((t % 365.0) / (365.0 / 12.0))) % 12
        return ref.referrals_per_week / 7.0 * profile[int(t) % 7] / mean_w * ref.month_multipliers[month]

    def _arrivals(self):
        """Non-homogeneous Poisson referrals by thinning a process at the peak rate."""
        ref = self.scenario.referrals
        mean_w = sum(ref.weekday_profile) / 7.0
        peak = ref.referrals_per_week / 7.0 * max(ref.weekday_profile) / mean_w * max(ref.month_multipliers)
        if peak <= 0:
            return
        flat = len(set(ref.weekday_profile)) == 1 and len(set(ref.month_multipliers)) == 1
        gaps = self.streams.sequential("referral.arrivals", lambda u: -np.log1p(-u) / peak)
        accept = None if flat else self.streams.sequential("referral.thinning")
        env = self.env
        t = 0.0
        while True:
            t += gaps.next()
            if t >= self.horizon:
                return
            if accept is not None and accept.next() * peak > self.rate_per_day(t):
                continue
            yield env.timeout(t - env.now)
            self._refer(self._new_patient())

    def _new_patient(self) -> Patient:
        pid = self._next_id
        self._next_id += 1
        # A one-entry table needs no draw (per-patient streams are indexed, so
        # skipping a draw shifts no other patient's numbers).
        source = self.sources[0][0] if len(self.sources) == 1 else _categorical(self.source_u.get(1, pid), self.sources)
        return Patient(pid, 1, source)

    def _refer(self, p: Patient, t_referral: float | None = None) -> None:
        now = self.env.now if t_referral is None else t_referral
        if self.trace:
            log.debug("t=%.4f referral: patient %d episode %d from %s", now, p.id, p.episode, p.source)
        p.ep_rec = self.rec.open_episode(p.id, p.episode, p.source, now)
        p.t_relapse = INF
        self.env.process(self._episode(p))

    def _place(self, p: Patient) -> str:
        table = self.placements[p.source]
        if len(table) == 1:
            return table[0][0]
        return _categorical(self.placement_u.get(p.ns, p.index), table)

    # -- one episode ----------------------------------------------------------------
    def _episode(self, p: Patient, first_stage: str | None = None, residual: bool = False, skip_intake=False):
        env = self.env
        ep = p.ep_rec
        last_stage, last_outcome = "intake", "assessed"
        if first_stage is None:
            if self.intake is not None and not skip_intake:
                assessed = yield from self.intake.assess(p)
                if not assessed:
                    self._close_episode(ep, "intake", "reneged")
                    return
            first_stage = self._place(p)
        ep[4] = first_stage
        stage = first_stage
        if stage not in self.stages:  # outpatient elsewhere, or not eligible
            self._close_episode(ep, "intake", first_stage)
            return
        treatment_outcome = None
        while stage is not None and stage != "discharge":
            u = self.residual_u.get(p.ns, p.index) if residual else None
            residual = False
            outcome, nxt, used = yield from self.stages[stage]._target(p)._visit_here(p, stage, u)
            last_stage, last_outcome = used, outcome
            if used in TREATMENT_STAGES and outcome != "reneged" and outcome != "relapsed":
                treatment_outcome = outcome
                if nxt not in TREATMENT_STAGES:  # treatment is over: the relapse clock starts
                    if outcome == "completed":
                        ep[8] = env.now
                    if self.relapse is not None:
                        self._start_relapse_clock(p, outcome, env.now)
            stage = nxt
        self._close_episode(ep, last_stage, last_outcome)
        if treatment_outcome is not None and p.t_relapse == INF:
            # Left without finishing the pathway (e.g. completed residential, then left
            # the IOP waitlist): the clock runs from leaving, when care really ended.
            self._start_relapse_clock(p, treatment_outcome, env.now)
        if treatment_outcome is None or p.t_relapse == INF:
            return
        if p.t_relapse > env.now:
            if p.t_relapse >= self.horizon:
                return
            yield env.timeout(p.t_relapse - env.now)
        ep[9] = p.t_relapse
        if self.return_u.get(p.ns, p.index) >= self.relapse.return_probability:
            return
        if self.return_days is not None:
            delay = self.return_days.get(p.ns, p.index)
            if env.now + delay >= self.horizon:
                return
            yield env.timeout(delay)
        ep[10] = True
        log.debug("t=%.3f patient %s returns (episode %d)", env.now, p.id, p.episode + 1)
        self._refer(Patient(p.id, p.episode + 1, p.source))

    def _start_relapse_clock(self, p: Patient, outcome: str, t_end: float) -> None:
        if self.relapse is not None and outcome in self.relapse.after:
            p.t_relapse = t_end + self.relapse_days.get(p.ns, p.index)

    def _close_episode(self, ep: list, stage: str, outcome: str) -> None:
        ep[5] = self.env.now
        ep[6] = stage
        ep[7] = outcome

    # -- start state ----------------------------------------------------------------
    def _initial_patients(self) -> None:
        """An existing site on day 0: patients in care and on waitlists."""
        start = self.scenario.start_state
        k = 0

        def make() -> Patient:
            nonlocal k
            k += 1
            p = Patient(-k, 1, "")
            # Their referral source is drawn like anyone's (it sets the placement mix of
            # those still waiting for intake, and of any return after relapse).
            p.source = self.sources[0][0] if len(self.sources) == 1 else _categorical(
                self.source_u.get(p.ns, p.index), self.sources)
            p.ep_rec = self.rec.open_episode(p.id, 1, p.source, math.nan)
            return p

        for name, st in start.stages.items():
            for _ in range(st.census):
                p = make()
                self.env.process(self._episode(p, first_stage=name, residual=True))
        # Waitlists are filled after the census so the waiting do not take the places.
        for name, st in start.stages.items():
            for _ in range(st.waitlist):
                p = make()
                self.env.process(self._episode(p, first_stage=name))
        for _ in range(start.intake_waitlist):
            p = make()
            self.env.process(self._episode(p))

    def run(self):
        self._initial_patients()
        self.env.process(self._arrivals())
        self.env.run(until=self.horizon)
        return self.rec.finish()
