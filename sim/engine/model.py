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

A completed stay is routed (``step_down`` probabilities) to another stage --
usually a lower level, but any stage, this one included, so patients can step
up and cycle -- or to discharge.  An early exit with ``to`` moves the patient to
that stage (e.g. IOP -> PHP on clinical deterioration) instead of out of the
program.  Re-entering a treatment stage stops a running relapse clock.  Completing a treatment stage (residential, PHP, IOP) and then
leaving treatment (discharge or aftercare) **completes a program**.  After
leaving treatment with an outcome in ``relapse.after`` the patient's relapse
clock runs from the end of treatment; a relapse during aftercare ends the
aftercare stay (outcome ``relapsed``).  With ``return_probability`` a relapsed
patient comes back as a new referral (episode + 1) after ``days_to_return``.

Random decisions use named per-patient streams (:mod:`iopsim.engine.streams`) so that
common random numbers stay aligned across scenarios.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import math

import numpy as np
import simpy

from iopsim.engine.iop import TrackedIOP
from iopsim.engine.loop import run_until, spawn, timeout
from iopsim.engine.records import Recorder
from iopsim.engine.stages import INF, Intake, Patient, Stage, _categorical, _cumulative
from iopsim.schema.scenario import TREATMENT_STAGES, Scenario
from iopsim.engine.staff import StaffPool
from iopsim.engine.streams import Streams

log = logging.getLogger(__name__)

_TREATMENT = frozenset(TREATMENT_STAGES)  # looked up several times per patient

#: Full (oldest-generation) garbage collections during a run wait for this many
#: collections of the middle generation instead of Python's 10 (see ``_fewer_full_collections``).
_FULL_GC_EVERY = 1000


@contextlib.contextmanager
def _fewer_full_collections():
    """Defer the garbage collector's full collections while a replication runs.

    A run keeps its staff bookings and session records, and the model's own
    objects, until it ends, so each full collection walks all of them, and
    Python starts one every time the long-lived heap has grown by a quarter
    (when visit and episode records were lists, about a fifth of a run's time
    went there; with the records in typed arrays, still 3-10 %).  The young
    generations are still collected as usual (short-lived cycles are freed),
    and the thresholds are restored afterwards.
    """
    g0, g1, g2 = gc.get_threshold()
    gc.set_threshold(g0, g1, max(g2, _FULL_GC_EVERY))
    try:
        yield
    finally:
        gc.set_threshold(g0, g1, g2)


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
        # Payers: drawn only when the scenario has them (a stream of its own: nothing else moves).
        self.payers = {k: _cumulative(v.payers) for k, v in ref.sources.items()} if scenario.payers else None
        self.payer_u = s.patient("referral.payer") if scenario.payers else None
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
            yield timeout(env, t - env._now)
            self._refer(self._new_patient())

    def _new_patient(self) -> Patient:
        pid = self._next_id
        self._next_id += 1
        # A one-entry table needs no draw (per-patient streams are indexed, so
        # skipping a draw shifts no other patient's numbers).
        source = self.sources[0][0] if len(self.sources) == 1 else _categorical(self.source_u.get(1, pid), self.sources)
        return Patient(pid, 1, source)

    def _refer(self, p: Patient, t_referral: float | None = None) -> None:
        now = self.env._now if t_referral is None else t_referral
        if self.trace:
            log.debug("t=%.4f referral: patient %d episode %d from %s", now, p.id, p.episode, p.source)
        p.ep_rec = self.rec.open_episode(p.id, p.episode, p.source, now,
                                         None if self.payers is None else self._payer(p))
        p.t_relapse = INF
        spawn(self.env, self._episode(p))

    def _payer(self, p: Patient) -> str | None:
        """Who pays for this episode: drawn from the source's payer mix (None without payers)."""
        if self.payers is None:
            return None
        table = self.payers[p.source]
        return table[0][0] if len(table) == 1 else _categorical(self.payer_u.get(p.ns, p.index), table)

    def _place(self, p: Patient) -> str:
        table = self.placements[p.source]
        if len(table) == 1:
            return table[0][0]
        return _categorical(self.placement_u.get(p.ns, p.index), table)

    # -- one episode ----------------------------------------------------------------
    def _episode(self, p: Patient, first_stage: str | None = None, residual: bool = False, skip_intake=False):
        env = self.env
        ep = p.ep_rec
        log_ = self.rec.episodes
        last_stage, last_outcome = "intake", "assessed"
        if first_stage is None:
            if self.intake is not None and not skip_intake:
                assessed = yield from self.intake.assess(p)
                if not assessed:
                    self._close_episode(ep, "intake", "reneged")
                    return
            first_stage = self._place(p)
        log_.placement[ep] = log_.code(first_stage)
        stage = first_stage
        if stage not in self.stages:  # outpatient elsewhere, or not eligible
            self._close_episode(ep, "intake", first_stage)
            return
        treatment_outcome = None
        while stage is not None and stage != "discharge":
            u = self.residual_u.get(p.ns, p.index) if residual else None
            residual = False
            outcome, nxt, used = yield from self.stages[stage]._target(p)._visit_here(p, stage, u)
            p.prev = used
            last_stage, last_outcome = used, outcome
            if used in _TREATMENT and outcome != "reneged" and outcome != "relapsed":
                treatment_outcome = outcome
                if nxt not in _TREATMENT:  # treatment is over: the relapse clock starts
                    if outcome == "completed":
                        log_.t_program_completed[ep] = env._now
                    if self.relapse is not None:
                        self._start_relapse_clock(p, outcome, env._now)
            stage = nxt
            if stage in _TREATMENT and p.t_relapse < INF:
                # Back in treatment (e.g. aftercare -> IOP on a lapse): the relapse
                # clock stops, and starts again when treatment ends.
                p.t_relapse = INF
        self._close_episode(ep, last_stage, last_outcome)
        if treatment_outcome is not None and p.t_relapse == INF and self.relapse is not None:
            # Left without finishing the pathway (e.g. completed residential, then left
            # the IOP waitlist): the clock runs from leaving, when care really ended.
            self._start_relapse_clock(p, treatment_outcome, env._now)
        if treatment_outcome is None or p.t_relapse == INF:
            return
        if p.t_relapse > env._now:
            if p.t_relapse >= self.horizon:
                return
            yield timeout(env, p.t_relapse - env._now)
        log_.t_relapse[ep] = p.t_relapse
        if self.return_u.get(p.ns, p.index) >= self.relapse.return_probability:
            return
        if self.return_days is not None:
            delay = self.return_days.get(p.ns, p.index)
            if env._now + delay >= self.horizon:
                return
            yield timeout(env, delay)
        log_.readmitted[ep] = 1
        log.debug("t=%.3f patient %s returns (episode %d)", env._now, p.id, p.episode + 1)
        self._refer(Patient(p.id, p.episode + 1, p.source))

    def _start_relapse_clock(self, p: Patient, outcome: str, t_end: float) -> None:
        if self.relapse is not None and outcome in self.relapse.after:
            p.t_relapse = t_end + self.relapse_days.get(p.vns, p.index)

    def _close_episode(self, ep: int, stage: str, outcome: str) -> None:
        log_ = self.rec.episodes
        log_.t_exit[ep] = self.env._now
        log_.exit_stage[ep] = log_.code(stage)
        log_.exit_outcome[ep] = log_.code(outcome)

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
            p.ep_rec = self.rec.open_episode(p.id, 1, p.source, math.nan, self._payer(p))
            return p

        for name, st in start.stages.items():
            for _ in range(st.census):
                p = make()
                spawn(self.env, self._episode(p, first_stage=name, residual=True))
        # Waitlists are filled after the census so the waiting do not take the places.
        for name, st in start.stages.items():
            for _ in range(st.waitlist):
                p = make()
                spawn(self.env, self._episode(p, first_stage=name))
        for _ in range(start.intake_waitlist):
            p = make()
            spawn(self.env, self._episode(p))

    def run(self):
        with _fewer_full_collections():
            self._initial_patients()
            spawn(self.env, self._arrivals())
            run_until(self.env, self.horizon)
            return self.rec.finish()
