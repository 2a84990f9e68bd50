"""The scenario: a validated, immutable description of a treatment program.

Scenarios are YAML files.  A file may ``extends:`` another (path relative to
itself) and override only what differs; mappings merge key by key, anything
else is replaced.  ``--set dotted.path=value`` overrides apply after the merge.
Everything is validated by pydantic into frozen models; any problem becomes a
single-line :class:`~iopsim.errors.ScenarioError` naming the file, the dotted field
path and what is allowed.

Time is in days unless a field name says otherwise (``assessment_hours``).
Day 0 of a run is a Monday at 00:00.
"""

from __future__ import annotations

import copy
import math
import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from iopsim.schema.assumptions import AssumptionEntry, set_assumption
from iopsim.schema.base import FieldError as _FieldError
from iopsim.schema.base import FrozenModel, NotBool
from iopsim.schema.distributions import Distribution
from iopsim.errors import ScenarioError
from iopsim.schema.limits import YamlLimitError, file_problem, limit, load_yaml_text, over, read_regular_file

Probability = Annotated[float, Field(ge=0, le=1, allow_inf_nan=False), NotBool]
NonNegative = Annotated[float, Field(ge=0, allow_inf_nan=False), NotBool]
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: Levels of care from most to least intensive.  Overflow only goes down; routing may go anywhere.
StageName = Literal["residential", "php", "iop", "aftercare"]
STAGE_ORDER: tuple[str, ...] = ("residential", "php", "iop", "aftercare")
#: Stages that are treatment (completing the last of them completes a program).
TREATMENT_STAGES: tuple[str, ...] = ("residential", "php", "iop")
#: Where an intake assessment can send a patient.
PlacementName = Literal["residential", "php", "iop", "outpatient", "not_eligible"]
PLACEMENTS: tuple[str, ...] = ("residential", "php", "iop", "outpatient", "not_eligible")
#: Ways of leaving a stage before the planned stay ends: the TEDS discharge reasons,
#: and ``stepped_up`` (clinical deterioration: moved to a more intensive level).
ExitName = Literal["dropped_out", "transferred", "terminated", "other", "stepped_up"]
EXITS: tuple[str, ...] = ("dropped_out", "transferred", "terminated", "other", "stepped_up")
#: Episode outcomes after which relapse can happen.
RelapseAfter = Literal["completed", "dropped_out", "terminated", "other", "transferred", "stepped_up"]

_SUM_TOL = 1e-6


def _check_sums_to_one(mapping: dict[str, float], what: str) -> dict[str, float]:
    total = sum(mapping.values())
    if abs(total - 1.0) > _SUM_TOL:
        raise ValueError(f"{what} must sum to 1 (got {total:.6g})")
    return mapping


class Shift(FrozenModel):
    """A recurring weekly shift: the same hours on each of ``days``."""

    days: list[Weekday] = Field(min_length=1)
    """Weekdays on which the shift is worked (mon, tue, wed, thu, fri, sat, sun)."""
    start_hour: Annotated[float, Field(ge=0, lt=24)]
    """Start time, hour of day (0 to under 24; 8.5 is 08:30)."""
    end_hour: Annotated[float, Field(ge=0, le=24)]
    """End time, hour of day (0 to 24). An end at or before start_hour runs past midnight into the next day (22 to 6 is an overnight shift)."""

    @model_validator(mode="after")
    def _positive_length(self):
        if self.end_hour == self.start_hour:
            raise ValueError(f"end_hour equals start_hour ({self.start_hour}): a shift needs a length; "
                             "for a whole day write start_hour: 0, end_hour: 24")
        return self


class Roster(FrozenModel):
    """Weekly working hours, as a list of shifts (overlaps are merged)."""

    shifts: list[Shift] = Field(min_length=1)
    """The weekly shifts; overlapping or back-to-back shifts merge into one working span."""


class ReferralSource(FrozenModel):
    """One referral source: its share of referrals and where intake places them."""

    share: Probability
    """Share of all referrals that come from this source (share 0-1); the shares of all sources sum to 1."""
    placement: dict[PlacementName, Probability] = Field(min_length=1)
    """Where intake places this source's referrals: destination -> probability (share 0-1), summing to 1."""
    transport_barrier: Probability | None = None
    """Share of this source's referrals for whom travel to the site is a barrier (share 0-1); null uses referrals.transport_barrier. Its effect is stages.iop.transport_barrier."""
    payers: dict[str, Probability] = Field(default_factory=dict)
    """Payer mix of this source's referrals: payer (a key of payers) -> share 0-1, summing to 1; required once the scenario has payers."""

    @field_validator("placement")
    @classmethod
    def _sum(cls, v):
        return _check_sums_to_one(v, "placement probabilities")

    @field_validator("payers")
    @classmethod
    def _payer_sum(cls, v):
        return _check_sums_to_one(v, "payer shares") if v else v


class Referrals(FrozenModel):
    """Poisson referrals with a weekday profile and month-of-year multipliers.

    The rate on a given day is ``referrals_per_week / 7 * weekday[d] * month[m]``
    where the weekday profile is normalised to average 1 (so it shapes the week
    without changing the weekly total) and months are 12 equal parts of a
    365-day year; ``month_multipliers`` is indexed by calendar month (January
    first), and day 0 falls in ``start_month``.
    """

    referrals_per_week: NonNegative
    """Average number of new referrals per week, before the month multipliers."""
    weekday_profile: list[NonNegative] = Field(default_factory=lambda: [1.0] * 7, min_length=7, max_length=7)
    """Seven relative weights, Monday first, that shape the week; rescaled to average 1, so the weekly total is unchanged."""
    month_multipliers: list[NonNegative] = Field(default_factory=lambda: [1.0] * 12, min_length=12, max_length=12)
    """Twelve rate factors, one per calendar month, January first (a run starting in March uses the third factor first); not rescaled, so an average other than 1 changes the yearly total."""
    sources: dict[str, ReferralSource] = Field(min_length=1)
    """Referral sources by name (free text, e.g. self, provider); their shares sum to 1."""
    transport_barrier: Probability = 0.0
    """Share of referrals for whom travel to the site is a barrier (share 0-1), for every source that does not set its own; 0 switches the barrier off."""

    def barrier_shares(self) -> dict[str, float]:
        """Each source's transport-barrier share (its own, else the referrals' default)."""
        return {k: (self.transport_barrier if v.transport_barrier is None else v.transport_barrier)
                for k, v in self.sources.items()}

    @field_validator("weekday_profile")
    @classmethod
    def _profile_positive(cls, v):
        if sum(v) <= 0:
            raise ValueError("weekday_profile must not be all zero")
        if not 1e-9 <= max(v) <= 1e9:  # relative weights: within these the normalisation neither over- nor underflows
            raise ValueError(f"the largest weight is {max(v):g}; give relative weights between "
                             "1e-09 and 1e+09 (for example 1 for an ordinary day)")
        return v

    @model_validator(mode="after")
    def _peak_rate(self):
        """Month multipliers scale the rate, so they are bounded with it (a multiplier of 1e308 would bypass it)."""
        if self.referrals_per_week > limit("referrals_per_week"):
            raise _FieldError("referrals_per_week", over("referrals_per_week", self.referrals_per_week))
        for i, m in enumerate(self.month_multipliers):
            if not math.isfinite(m) or self.referrals_per_week * m > limit("referrals_per_week"):
                raise _FieldError(f"month_multipliers.{i}", over("referrals_per_week", self.referrals_per_week * m)
                                  .replace("(referrals_per_week)", "(referrals_per_week x this month's multiplier)"))
        return self

    @field_validator("sources")
    @classmethod
    def _shares(cls, v):
        _check_sums_to_one({k: s.share for k, s in v.items()}, "source shares")
        return v


class Intake(FrozenModel):
    """Intake assessment by rostered clinicians, with reneging while waiting.

    Either ``role`` names a staff role (see ``staff``) whose members do the
    assessments, or ``clinicians`` and ``roster`` describe them directly (a
    shorthand for a role with that headcount and roster and no wage).
    """

    role: str | None = None
    """Staff role (a key of staff.roles) whose members do the assessments on their own rosters and are paid through it."""
    clinicians: Annotated[int, Field(ge=1)] | None = None
    """Shorthand instead of role: number of intake clinicians (people), all working roster, with no wage."""
    roster: Roster | None = None
    """Shorthand instead of role: the intake clinicians' weekly working hours."""
    assessment_hours: Distribution
    """Length of one assessment, in hours."""
    patience_days: Distribution | None = None
    """How long a referral waits for an assessment before leaving, in days from referral (calendar time); null waits indefinitely."""
    cost_per_assessment: NonNegative = 0.0
    """Cost of each completed assessment, in currency, on top of any labour cost of the role."""

    @model_validator(mode="after")
    def _who(self):
        if self.role is None and (self.clinicians is None or self.roster is None):
            raise ValueError("give either role (a staff role) or both clinicians and roster")
        if self.role is not None and (self.clinicians is not None or self.roster is not None):
            raise ValueError("give either role or clinicians and roster, not both")
        return self


class Team(FrozenModel):
    """People of one role who work the same weekly roster."""

    headcount: Annotated[int, Field(ge=1)]
    """Number of people in the team, all working the same shifts."""
    shifts: list[Shift] = Field(min_length=1)
    """The team's weekly shifts; a person's overlapping shifts merge, so no hour is paid twice."""
    remote: bool = False
    """The team works off site: it facilitates only tracks with remote_facilitators, does no drug tests, and does the rest of its role's work (assessments, individual and family sessions) by telehealth."""


class Role(FrozenModel):
    """A staff role: its teams (headcount and roster), wage and shift differentials."""

    hourly_wage: NonNegative
    """Pay for a weekday daytime hour, in currency per hour."""
    evening_differential: NonNegative = 0.0
    """Extra pay for a weekday evening hour, as a share of the wage (0.10 is 10 % more)."""
    weekend_differential: NonNegative = 0.0
    """Extra pay for any Saturday or Sunday hour, evenings included, as a share of the wage; replaces the evening differential."""
    teams: list[Team] = Field(min_length=1)
    """The role's teams, each a headcount working the same shifts."""
    charged_to: Literal["intake", "residential", "php", "iop", "aftercare", "shared"] = "shared"
    """Part of the program the role's labour belongs to; only used to attribute costs to the IOP."""


class RatioRule(FrozenModel):
    """A staffing rule such as New Jersey's IOP 1 counselor : 24 clients (daily census)."""

    stage: StageName
    """The enabled stage whose daily census is counted."""
    role: str
    """The staff role whose headcount is counted."""
    max_clients_per_staff: Annotated[float, Field(gt=0)]
    """Most clients the rule allows per member of the role (clients per person); reported, not enforced."""


class Staff(FrozenModel):
    """Staff roles.  Weekday hours from ``evening_start_hour`` earn the evening
    differential; Saturday and Sunday hours (evenings included) earn the
    weekend differential."""

    evening_start_hour: Annotated[float, Field(ge=0, le=24)] = 17.0
    """Hour of day (0-24) from which weekday rostered hours are evening hours and earn the evening differential."""
    fte_hours_per_week: Annotated[float, Field(gt=0)] = 40.0
    """Hours per week of one full-time equivalent; used by the paid_fte and required_fte KPIs."""
    roles: dict[str, Role] = Field(min_length=1)
    """Staff roles by name (free text; the names appear in KPI names)."""
    ratio_rules: list[RatioRule] = Field(default_factory=list)
    """Staffing-ratio rules to report on; checked, not enforced."""


class Exit(FrozenModel):
    """An early exit: with ``probability`` an admitted patient leaves before the
    planned stay ends, at a time drawn from ``days`` conditioned on falling
    before the planned end (see ``iopsim.engine.model`` for the precise definition)."""

    probability: Probability
    """Share of admitted patients who leave by this exit before the planned stay ends (share 0-1)."""
    days: Distribution
    """When the exit happens, in days from admission; the draw is conditioned on falling before the planned stay ends."""
    to: StageName | None = None
    """Stage of this program the patient moves to on this exit (e.g. php on deterioration, iop on a lapse in aftercare); none: they leave the program."""


class SessionTime(FrozenModel):
    """A recurring group session: on each of ``days`` from ``start_hour`` for ``hours``."""

    days: list[Weekday] = Field(min_length=1)
    """Weekdays on which the session is held (mon, tue, wed, thu, fri, sat, sun)."""
    start_hour: Annotated[float, Field(ge=0, lt=24)]
    """Start time, hour of day (0 to under 24; 18.5 is 18:30)."""
    hours: Annotated[float, Field(gt=0, le=12)]
    """Length of the session, in hours (over 0 to 12); it must end by midnight."""

    @model_validator(mode="after")
    def _same_day(self):
        if self.start_hour + self.hours > 24:
            raise ValueError("a session must end by midnight (start_hour + hours <= 24)")
        return self


class Facilitators(FrozenModel):
    """The people who run each session of a group: a number of different people of one role."""

    role: str
    """Staff role of the facilitators."""
    count: Annotated[int, Field(ge=1)] = 1
    """Number of different people of the role who run the whole session."""


class Track(FrozenModel):
    """An IOP track: parallel groups meeting on a weekly session calendar."""

    accepts: list[str] = Field(min_length=1)
    """Availability classes (keys of the stage's availability) whose clients can attend this track."""
    groups: Annotated[int, Field(ge=1)] = 1
    """Number of parallel groups, all meeting at the same times."""
    min_group_size: Annotated[int, Field(ge=1)] = 1
    """Members (clients) a forming cohort group needs to start; for rolling groups only used by the share_sessions_below_min KPI."""
    max_group_size: Annotated[int, Field(ge=1)] = 12
    """Seats in each group (clients); the IOP's capacity is groups x max_group_size summed over its tracks."""
    sessions: list[SessionTime] = Field(min_length=1)
    """When the groups meet, every week."""
    admission: Literal["rolling", "cohort"] = "rolling"
    """rolling: a newcomer takes a free seat at any time and starts at the next session; cohort: closed groups that start together."""
    cohort_start_every_weeks: Annotated[int, Field(ge=1)] | None = None
    """Cohort only: also start a forming group below min_group_size (not empty) every this many calendar weeks, in weeks."""
    facilitators: list[Facilitators] = Field(default_factory=list)
    """Who runs each session of each group; an empty list means sessions need no staff."""
    attendance: Probability | list[Probability] = 0.85
    """Chance that a scheduled member attends a session (share 0-1): one value, or one per program phase."""
    mode: Literal["in_person", "virtual", "hybrid"] = "in_person"
    """in_person: clients come to the site; virtual: everyone joins online; hybrid: a group in the room with clients who join online. Clients with a transport barrier are affected only by in_person tracks."""
    cost_per_client_day: NonNegative | None = None
    """Non-labour cost of each day a client spends in this track (a room, materials), in currency per client-day; null uses the stage's cost_per_patient_day."""
    remote_facilitators: bool = False
    """Virtual tracks only: facilitators may work off site, so members of remote teams can run the sessions."""

    @model_validator(mode="after")
    def _sizes(self):
        if self.min_group_size > self.max_group_size:
            raise ValueError(f"min_group_size ({self.min_group_size}) exceeds max_group_size ({self.max_group_size})")
        if self.cohort_start_every_weeks is not None and self.admission != "cohort":
            raise ValueError("cohort_start_every_weeks needs admission: cohort")
        if self.remote_facilitators and self.mode != "virtual":
            raise _FieldError("remote_facilitators", f"only for mode: virtual (this track is {self.mode}); "
                              "someone must be in the room")
        return self


class Phase(FrozenModel):
    """One phase of the IOP program: its length and weekly intensity."""

    weeks: Annotated[int, Field(ge=1)]
    """Length of the phase, in weeks; a member's phase is set by the time since their first session."""
    sessions_per_week: Annotated[int, Field(ge=1)]
    """Most sessions a member is scheduled for in each calendar week (Monday to Sunday) of the phase."""


class Severity(FrozenModel):
    """A severity class set at the assessment: it stretches the planned length and scales attendance."""

    share: Probability
    """Share of IOP clients in this class (share 0-1); the shares of all classes sum to 1."""
    length_factor: Annotated[float, Field(gt=0, le=10)] = 1.0
    """Multiplies the planned program length (1 leaves it; 1.5 is half as long again)."""
    attendance_factor: Annotated[float, Field(gt=0, le=10)] = 1.0
    """Multiplies the probability of attending each scheduled session (capped at 1)."""


class Review(FrozenModel):
    """A progress review at a set week of the program: the plan may be extended or shortened.

    A client is extended if they missed at least ``extend_if_missed`` sessions
    so far, or else with ``extend_probability``; one not extended is shortened
    with ``shorten_probability``.  An extension holds the client's seat longer.
    """

    week: Annotated[int, Field(ge=1)]
    """When the review happens, in weeks from the first session (week: 3 is day 21 of the program)."""
    extend_weeks: Annotated[float, Field(ge=0)] = 0.0
    """Length added to the plan when it is extended, in weeks."""
    extend_probability: Probability = 0.0
    """Probability that the plan is extended at this review (share 0-1)."""
    extend_if_missed: Annotated[int, Field(ge=1)] | None = None
    """Extend the plan of every client who has missed at least this many scheduled sessions so far."""
    shorten_weeks: Annotated[float, Field(ge=0)] = 0.0
    """Length taken off the plan when it is shortened, in weeks (never ending it before the review)."""
    shorten_probability: Probability = 0.0
    """Probability that a plan not extended is shortened at this review (share 0-1)."""

    @model_validator(mode="after")
    def _bounded_and_effective(self):
        weeks = limit("horizon_days") / 7.0  # nothing in a run lasts longer than the longest horizon
        for name in ("week", "extend_weeks", "shorten_weeks"):
            value = getattr(self, name)
            if not math.isfinite(value) or value > weeks:
                raise _FieldError(name, f"{value:g} weeks is longer than the longest horizon allowed "
                                        f"({weeks:,.0f} weeks; see IOPSIM_LIMIT_HORIZON_DAYS)")
        return self


class TreatmentPlan(FrozenModel):
    """Individual treatment plans: each client's own program length.

    The plan belongs to the client from the assessment on; its length is drawn
    from a stream of its own when the client takes a seat (so when it is drawn
    changes nothing).  The planned length in weeks is drawn from ``after[stage]`` for a client
    stepping down from that level of care, else ``by_source[source]`` for their
    referral source, else ``weeks``; a severity class then stretches it.  The
    phases scale with the plan by ``phase_rule``.
    """

    weeks: Distribution
    """Planned program length, in weeks (not days), for clients no rule below covers."""
    by_source: dict[str, Distribution] = Field(default_factory=dict)
    """Planned length in weeks by referral source (names from referrals.sources)."""
    after: dict[StageName, Distribution] = Field(default_factory=dict)
    """Planned length in weeks for clients stepping down from this level of care (residential, php or aftercare; not iop itself)."""
    phase_rule: Literal["share", "intensive_first"] = "share"
    """How phases scale: share -- each phase keeps its share of the weeks; intensive_first -- the first phase keeps its weeks and the later phases share the rest."""
    severity: dict[str, Severity] = Field(default_factory=dict)
    """Severity classes set at the assessment; none: every client is alike."""
    reviews: list[Review] = Field(default_factory=list)
    """Progress reviews, in any order."""

    @field_validator("severity")
    @classmethod
    def _severity_sum(cls, v):
        if v:
            _check_sums_to_one({k: s.share for k, s in v.items()}, "severity shares")
        return v


class Program(FrozenModel):
    """The IOP program: phases of falling intensity (TIP 47), completion and dropout rules.

    A client completes after the phases' total weeks from their first
    session (or their own planned length, with ``plan``), or, if ``sessions``
    is given, on attending that many sessions.  ``missed_sessions_dropout``
    consecutive missed sessions count as dropout.
    """

    phases: list[Phase] = Field(min_length=1)
    """The program's phases in order; their total weeks are the program's length."""
    sessions: Annotated[int, Field(ge=1)] | None = None
    """If set, a member completes on attending this many sessions; null completes after the phases' total weeks."""
    missed_sessions_dropout: Annotated[int, Field(ge=1)] = 3
    """Number of consecutive scheduled sessions missed that ends the stay as dropped_out."""
    plan: TreatmentPlan | None = None
    """Individual treatment plans (program length by client, reviews); null: every client follows the phases' total weeks."""

    @model_validator(mode="after")
    def _plan_or_sessions(self):
        if self.plan is not None and self.sessions is not None:
            raise _FieldError("plan", "a plan sets the program's length in weeks; remove sessions (or the plan)")
        return self


class Service(FrozenModel):
    """A per-client service besides groups, due every ``every_weeks`` weeks of enrolment."""

    every_weeks: Annotated[int, Field(ge=1)] = 1
    """How often the service is due, every this many weeks counted from the client's first session."""
    hours: NonNegative = 1.0
    """Staff time for one occurrence, in hours; 0 takes no staff time and is always delivered."""
    role: str | None = None
    """Staff role that delivers the service; required when hours is above 0."""
    cost: NonNegative = 0.0
    """Cost of each delivered occurrence besides staff time, in currency (for a drug test: the test itself)."""

    @model_validator(mode="after")
    def _role_for_time(self):
        if self.hours > 0 and self.role is None:
            raise ValueError("a service that takes staff time (hours > 0) needs a role")
        return self


ServiceName = Literal["individual", "family", "drug_test"]


class TransportBarrier(FrozenModel):
    """What a transport barrier does to a client of an in-person IOP track (virtual and hybrid tracks are unaffected)."""

    effect: Literal["attendance", "rules_out"] = "attendance"
    """attendance: they may join in-person tracks but attend less (attendance_factor); rules_out: they can join only virtual or hybrid tracks."""
    attendance_factor: Probability = 1.0
    """With effect attendance: their chance of attending an in-person session is the track's attendance times this (0-1)."""

    @model_validator(mode="after")
    def _factor_needs_attendance(self):
        if self.effect == "rules_out" and "attendance_factor" in self.model_fields_set:
            raise _FieldError("attendance_factor", "only used with effect: attendance (rules_out keeps these clients "
                              "out of in-person tracks); remove it")
        return self


class Stage(FrozenModel):
    """A level of care: capacity, waitlist, length of stay, exits, step-down.

    The IOP stage may instead be organised as ``tracks`` of groups on a
    session calendar with a ``program``; then its capacity is the tracks'
    seats and the program, not ``los_days``, sets the length of stay.
    """

    capacity: Annotated[int, Field(ge=1)] | None = None
    """Places (beds or slots): patients who can be in the stage at once; null is unlimited. Not allowed with tracks."""
    los_days: Distribution | None = None
    """Planned length of stay if no early exit happens, in days. Required unless the stage has tracks; not allowed with them."""
    patience_days: Distribution | None = None
    """How long a patient waits on the stage's waitlist before leaving, in days; null waits indefinitely."""
    exits: dict[ExitName, Exit] = Field(default_factory=dict)
    """Early exits before the planned stay ends (dropped_out, transferred, terminated, other, stepped_up); their probabilities sum to at most 1. An exit with `to` moves the patient to that stage instead of out of the program."""
    step_down: dict[str, Probability] = Field(default_factory=lambda: {"discharge": 1.0})
    """Where a completed stay goes next: discharge or any enabled stage -> probability (share 0-1), summing to 1. Usually a lower level (step-down); a higher level is a step-up and this stage itself a repeat; cycles are allowed."""
    overflow_to: StageName | None = None
    """An enabled lower stage that takes an arriving patient when this one is full, instead of the waitlist."""
    cost_per_patient_day: NonNegative = 0.0
    """Cost of each day a patient spends in the stage, in currency per patient-day; waitlist days are free."""
    tracks: dict[str, Track] | None = None
    """IOP only: run the stage as group therapy, as tracks of groups on a weekly session calendar."""
    program: Program | None = None
    """With tracks (required): the program's phases, completion and dropout rules."""
    availability: dict[str, Probability] | None = None
    """With tracks (required): availability classes of IOP patients (free names) -> share 0-1, summing to 1."""
    services: dict[ServiceName, Service] = Field(default_factory=dict)
    """With tracks only: per-client services besides groups (individual, family, drug_test)."""
    when_short: Literal["cancel", "merge"] = "cancel"
    """With tracks: a session without facilitators is cancelled, or (merge) joins a staffed group of its track at the same time."""
    transport_barrier: TransportBarrier | None = None
    """With tracks: what a transport barrier (a share of referrals, referrals.transport_barrier) does to in-person attendance; required when any share is above 0."""

    @model_validator(mode="after")
    def _tracked_or_not(self):
        if self.tracks is None:
            if self.los_days is None:
                raise _FieldError("los_days", "required (unless the stage is organised as tracks)")
            for f in ("program", "availability"):
                if getattr(self, f) is not None:
                    raise _FieldError(f, "only allowed together with tracks")
            if self.services:
                raise _FieldError("services", "only allowed together with tracks")
            if self.transport_barrier is not None:
                raise _FieldError("transport_barrier", "only allowed together with tracks")
            return self
        if self.capacity is not None:
            raise _FieldError("capacity", "set by the tracks (groups x max_group_size); remove it")
        if self.los_days is not None:
            raise _FieldError("los_days", "set by the program when the stage has tracks; remove it")
        if self.program is None:
            raise _FieldError("program", "required when the stage has tracks")
        if self.availability is None:
            raise _FieldError("availability", "required when the stage has tracks (shares of availability classes)")
        _check_sums_to_one(self.availability, "availability shares")
        if "dropped_out" in self.exits:
            raise _FieldError(
                "exits.dropped_out",
                "in a tracked stage dropout comes from missed sessions (program.missed_sessions_dropout); remove it",
            )
        n_phases = len(self.program.phases)
        for name, t in self.tracks.items():
            for c in t.accepts:
                if c not in self.availability:
                    raise _FieldError(
                        f"tracks.{name}.accepts", f"unknown availability class {_SHORT.repr(c)}; allowed: {', '.join(self.availability)}"
                    )
            if isinstance(t.attendance, list) and len(t.attendance) != n_phases:
                raise _FieldError(f"tracks.{name}.attendance", f"give one value, or one per phase ({n_phases})")
        return self

    @field_validator("exits")
    @classmethod
    def _exit_total(cls, v):
        total = sum(e.probability for e in v.values())
        if total > 1.0 + _SUM_TOL:
            raise ValueError(f"exit probabilities must sum to at most 1 (got {total:.6g})")
        return v

    @field_validator("step_down")
    @classmethod
    def _step_down_sum(cls, v):
        allowed = set(STAGE_ORDER) | {"discharge"}
        for k in v:
            if k not in allowed:
                raise ValueError(f"unknown step-down target {k!r}; allowed: {', '.join(sorted(allowed))}")
        return _check_sums_to_one(v, "step_down probabilities")


class Stages(FrozenModel):
    """The levels of care this site runs; leave one out (or null) to switch it off."""

    residential: Stage | None = None
    """Residential or inpatient care; null or absent switches it off."""
    php: Stage | None = None
    """Partial hospitalization program; null or absent switches it off."""
    iop: Stage | None = None
    """Intensive outpatient program, with places or as group therapy (tracks); null or absent switches it off."""
    aftercare: Stage | None = None
    """Continuing care after treatment (not a treatment stage); null or absent switches it off."""

    def enabled(self) -> dict[str, Stage]:
        return {n: getattr(self, n) for n in STAGE_ORDER if getattr(self, n) is not None}


class Relapse(FrozenModel):
    """Relapse after leaving treatment and return as a new referral."""

    days: Distribution
    """Time from leaving treatment to relapse, in days."""
    return_probability: Probability
    """Chance that a relapsed patient returns as a new referral (share 0-1)."""
    days_to_return: Distribution | None = None
    """Time from relapse to the new referral, in days; null returns at the moment of relapse."""
    after: list[RelapseAfter] = Field(default_factory=lambda: ["completed", "dropped_out", "terminated", "other"])
    """Treatment outcomes after which relapse can happen."""


#: What a payer can be billed for: an intake assessment, an attended IOP group session (per client),
#: a day with at least one attended IOP session, a delivered IOP service, or a patient-day in a stage.
BillingUnit = Literal["assessment", "iop_session", "iop_day", "individual", "family", "drug_test",
                      "residential_day", "php_day", "aftercare_day"]
BILLING_UNITS: tuple[str, ...] = ("assessment", "iop_session", "iop_day", "individual", "family", "drug_test",
                                  "residential_day", "php_day", "aftercare_day")


class Payer(FrozenModel):
    """Who pays for a client's care (Medicaid, commercial insurance, self-pay, ...), and how much is collected."""

    rates: dict[BillingUnit, NonNegative] = Field(default_factory=dict)
    """Reimbursement per billable unit, in currency: assessment, iop_session (per client per attended session), iop_day (per day with an attended session; every patient-day in an IOP without tracks), individual, family, drug_test (per delivered service), residential_day, php_day, aftercare_day (per patient-day). A unit not listed earns nothing."""
    denial_rate: Probability = 0.0
    """Share of what is billed that is denied or never paid (share 0-1)."""
    collection_rate: Probability = 1.0
    """Share of what is not denied that is collected (share 0-1): for self-pay on a sliding scale, the part clients actually pay."""


class Costs(FrozenModel):
    """Program costs not given elsewhere (fixed overhead), the currency label and the price year."""

    fixed_overhead_per_day: NonNegative = 0.0
    """Program cost that depends on neither patients nor modelled staff, in currency per calendar day of the observation window."""
    currency: str = "USD"
    """Currency label of every amount; a label only, nothing is converted."""
    price_year: int | None = None
    """Price year of the amounts, for the record only; not used by the model."""


class StageStart(FrozenModel):
    """The patients of one stage present on day 0."""

    census: Annotated[int, Field(ge=0)] = 0
    """Patients already in care on day 0; at most the stage's places."""
    waitlist: Annotated[int, Field(ge=0)] = 0
    """Patients already on the stage's waitlist on day 0."""


class StartState(FrozenModel):
    """An existing site's census and waitlists on day 0 (a new site starts empty)."""

    intake_waitlist: Annotated[int, Field(ge=0)] = 0
    """Referrals already waiting for an assessment on day 0; must be 0 when intake is off."""
    stages: dict[StageName, StageStart] = Field(default_factory=dict)
    """Census and waitlist on day 0 of each enabled stage."""


class Scenario(FrozenModel):
    """A scenario file: one treatment program, its demand, staff, costs and run settings."""

    name: str = Field(min_length=1)
    """Name of the scenario; used in run folder names and printed titles."""
    description: str = ""
    """Free text."""
    seed: Annotated[int, Field(ge=0)] = 0
    """Base seed of all random streams (--seed overrides it)."""
    horizon_days: Annotated[int, Field(ge=1)]
    """Length of each replication, in days from day 0 (a Monday at 00:00)."""
    warmup_days: Annotated[int, Field(ge=0)] = 0
    """Start of the observation window, in days; KPIs leave out earlier days. Less than horizon_days."""
    replications: Annotated[int, Field(ge=1)] = 10
    """Number of independent replications (-n overrides it)."""
    start_month: Annotated[int, Field(ge=1, le=12)] = 1
    """Calendar month that day 0 falls in (1 is January)."""
    referrals: Referrals
    """Arriving referrals: volume, weekly and yearly pattern, sources."""
    intake: Intake | None = None
    """Intake assessment; null or absent places referrals on arrival, without an assessment."""
    stages: Stages
    """The levels of care."""
    relapse: Relapse | None = None
    """Relapse after treatment and return as a new referral; null or absent means nobody relapses."""
    staff: Staff | None = None
    """Staff roles with their teams, rosters and wages, and staffing-ratio rules; needed once anything names a role."""
    costs: Costs = Field(default_factory=Costs)
    """Fixed overhead, currency label and price year."""
    payers: dict[str, Payer] = Field(default_factory=dict)
    """Payers by name (free text, e.g. medicaid, self_pay) with their rates; with payers, every referral source needs a payer mix and runs report revenue and margin."""
    start_state: StartState = Field(default_factory=StartState)
    """Patients already present on day 0; the default is a new site that opens empty."""
    references: dict[str, str] = Field(default_factory=dict)
    """Source notes, short name -> citation; copied into the run folder, ignored by the model."""
    uncertain: dict[str, AssumptionEntry] = Field(default_factory=dict)
    """Assumptions as data: dotted path -> plausible range ``[low, high]`` (or ``{range, note, source}``)
    of a value no publication fixes; ignored by the model, moved across its range by ``compare --robust``."""

    @model_validator(mode="after")
    def _within_limits(self):
        """Magnitudes that validate and then hang or exhaust memory are refused (see iopsim.schema.limits;
        the referral rate is bounded where it is defined, with the month multipliers: ``Referrals``)."""
        checks = [("horizon_days", self.horizon_days, "horizon_days"),
                  ("replications", self.replications, "replications"),
                  ("start_state.intake_waitlist", self.start_state.intake_waitlist, "count")]
        if self.intake is not None and self.intake.clinicians is not None:
            checks.append(("intake.clinicians", self.intake.clinicians, "count"))
        for name, st in self.stages.enabled().items():
            if st.capacity is not None:
                checks.append((f"stages.{name}.capacity", st.capacity, "count"))
            for tname, tr in (st.tracks or {}).items():
                checks.append((f"stages.{name}.tracks.{tname}.groups", tr.groups, "count"))
                checks.append((f"stages.{name}.tracks.{tname}.max_group_size", tr.max_group_size, "count"))
        for name, start in self.start_state.stages.items():
            checks.append((f"start_state.stages.{name}.waitlist", start.waitlist, "count"))
        for rname, role in (self.staff.roles.items() if self.staff else ()):
            for i, team in enumerate(role.teams):
                checks.append((f"staff.roles.{rname}.teams.{i}.headcount", team.headcount, "count"))
        checks += [(path, value, "amount") for path, value in self._amounts()]
        for path, value, lim in checks:
            if value > limit(lim):
                raise _FieldError(path, over(lim, value))
        return self

    def _amounts(self):
        """(path, amount) of every money field: a run multiplies them by counts, so they are bounded too."""
        yield "costs.fixed_overhead_per_day", self.costs.fixed_overhead_per_day
        if self.intake is not None:
            yield "intake.cost_per_assessment", self.intake.cost_per_assessment
        for name, st in self.stages.enabled().items():
            yield f"stages.{name}.cost_per_patient_day", st.cost_per_patient_day
            for tname, tr in (st.tracks or {}).items():
                if tr.cost_per_client_day is not None:
                    yield f"stages.{name}.tracks.{tname}.cost_per_client_day", tr.cost_per_client_day
            for sname, svc in st.services.items():
                yield f"stages.{name}.services.{sname}.cost", svc.cost
        for rname, role in (self.staff.roles.items() if self.staff else ()):
            yield f"staff.roles.{rname}.hourly_wage", role.hourly_wage
        for pname, payer in self.payers.items():
            for unit, rate in payer.rates.items():
                yield f"payers.{pname}.rates.{unit}", rate

    @model_validator(mode="after")
    def _consistent(self):
        enabled = self.stages.enabled()
        if self.warmup_days >= self.horizon_days:
            raise _FieldError("warmup_days", f"must be less than horizon_days ({self.horizon_days})")
        for src_name, src in self.referrals.sources.items():
            for target in src.placement:
                if target in STAGE_ORDER and target not in enabled and src.placement[target] > 0:
                    raise _FieldError(
                        f"referrals.sources.{src_name}.placement.{target}",
                        f"stage {target!r} is switched off; enabled stages: {', '.join(enabled) or 'none'}",
                    )
        for name, stage in enabled.items():
            level = STAGE_ORDER.index(name)
            for target, p in stage.step_down.items():
                if target == "discharge" or p == 0:
                    continue
                if target not in enabled:
                    raise _FieldError(
                        f"stages.{name}.step_down.{target}",
                        f"stage {target!r} is switched off; allowed: {', '.join([*enabled, 'discharge'])}",
                    )
            for exit_name, ex in stage.exits.items():
                if ex.to is not None and ex.to not in enabled:
                    raise _FieldError(
                        f"stages.{name}.exits.{exit_name}.to",
                        f"stage {ex.to!r} is switched off; allowed: {', '.join(enabled)}",
                    )
            if stage.overflow_to is not None:
                lower = [s for s in STAGE_ORDER[level + 1 :] if s in enabled]
                if stage.overflow_to not in lower:
                    raise _FieldError(
                        f"stages.{name}.overflow_to",
                        f"must be an enabled lower level; allowed: {', '.join(lower) or 'none'}",
                    )
        for name, start in self.start_state.stages.items():
            if name not in enabled:
                raise _FieldError(f"start_state.stages.{name}", f"stage is switched off; enabled: {', '.join(enabled)}")
            cfg = enabled[name]
            places = (
                sum(t.groups * t.max_group_size for t in cfg.tracks.values()) if cfg.tracks else cfg.capacity
            )
            if places is not None and start.census > places:
                raise _FieldError(f"start_state.stages.{name}.census", f"must be at most the stage's {places} places")
        if self.start_state.intake_waitlist and self.intake is None:
            raise _FieldError("start_state.intake_waitlist", "intake is switched off; must be 0")
        self._check_roles(enabled)
        self._check_money_and_transport()
        plan = self.stages.iop.program.plan if self.stages.iop is not None and self.stages.iop.program else None
        if plan is not None:
            for src in plan.by_source:
                if src not in self.referrals.sources:
                    raise _FieldError(f"stages.iop.program.plan.by_source.{src}",
                                      f"unknown referral source; sources: {', '.join(self.referrals.sources)}")
            for stage in plan.after:
                if stage not in enabled or stage == "iop":
                    others = [s for s in enabled if s != "iop"]
                    raise _FieldError(f"stages.iop.program.plan.after.{stage}",
                                      f"must be another enabled stage; allowed: {', '.join(others) or 'none'}")
        return self

    def _check_money_and_transport(self) -> None:
        payers = list(self.payers)
        for src_name, src in self.referrals.sources.items():
            where = f"referrals.sources.{src_name}.payers"
            if payers and not src.payers:
                raise _FieldError(where, f"required once the scenario has payers; payers: {', '.join(payers)}")
            for name in src.payers:
                if name not in self.payers:
                    raise _FieldError(f"{where}.{name}",
                                      f"unknown payer; payers: {', '.join(payers) or 'none (add payers:)'}")
        barrier = {k: v for k, v in self.referrals.barrier_shares().items() if v > 0}
        iop = self.stages.iop
        if barrier and (iop is None or iop.tracks is None or iop.transport_barrier is None):
            src = next(iter(barrier))
            field = ("referrals.transport_barrier" if self.referrals.sources[src].transport_barrier is None
                     else f"referrals.sources.{src}.transport_barrier")
            why = ("needs stages.iop.transport_barrier, its effect on in-person tracks (effect: attendance or rules_out)"
                   if iop is not None and iop.tracks is not None else "only a tracked IOP (stages.iop.tracks) models it")
            raise _FieldError(field, f"is {barrier[src]:g}: {why}; set it to 0 to switch the barrier off")

    def _check_roles(self, enabled: dict[str, "Stage"]) -> None:
        roles = list(self.staff.roles) if self.staff else []

        def need(path: str, role: str) -> None:
            if role not in roles:
                raise _FieldError(path, f"unknown staff role {role!r}; roles: {', '.join(roles) or 'none (add staff.roles)'}")

        if self.intake is not None and self.intake.role is not None:
            need("intake.role", self.intake.role)
        if self.intake is not None and self.intake.role is None and "intake_clinician" in roles:
            raise _FieldError("intake.clinicians", "staff.roles has an 'intake_clinician' role: use intake.role: intake_clinician "
                              "instead of clinicians and roster")
        for name, stage in enabled.items():
            if stage.tracks is not None and name != "iop":
                raise _FieldError(f"stages.{name}.tracks", "tracks are only supported for the iop stage")
            for tname, t in (stage.tracks or {}).items():
                for i, f in enumerate(t.facilitators):
                    need(f"stages.{name}.tracks.{tname}.facilitators.{i}.role", f.role)
            for sname, svc in stage.services.items():
                if svc.role is not None:
                    need(f"stages.{name}.services.{sname}.role", svc.role)
        for i, rule in enumerate(self.staff.ratio_rules if self.staff else []):
            need(f"staff.ratio_rules.{i}.role", rule.role)
            if rule.stage not in enabled:
                raise _FieldError(f"staff.ratio_rules.{i}.stage", f"stage is switched off; enabled: {', '.join(enabled)}")


# --------------------------------------------------------------------------- loading


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping from a regular file, within the limits of :mod:`iopsim.schema.limits`."""
    try:
        data = load_yaml_text(read_regular_file(Path(path)))
    except YamlLimitError as exc:
        raise ScenarioError(str(path), None, str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ScenarioError(str(path), None, f"malformed YAML: {where}{problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ScenarioError(str(path), None, f"top level must be a mapping of fields (got {type(data).__name__})")
    return data


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge ``override`` into a copy of ``base``: mappings merge, the rest replaces."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and not _new_family(out[key], value):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _new_family(base: dict[str, Any], override: dict[str, Any]) -> bool:
    """A child that names another distribution family replaces the parent's whole mapping
    (merging would keep parameters of the old family that the new one does not have)."""
    return "dist" in override and override.get("dist") != base.get("dist")


def resolve_raw(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read ``path`` and everything it ``extends``, merged, without validation."""
    path = Path(path)
    real = path.resolve()
    if real in _chain:
        cycle = " -> ".join(p.name for p in (*_chain, real))
        raise ScenarioError(str(path), "extends", f"circular extends: {cycle}")
    data = read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ScenarioError(str(path), "extends", "must be a path to another scenario file")
    parent_path = path.parent / parent
    problem = file_problem(parent_path)
    if problem is not None:
        raise ScenarioError(str(path), "extends", problem)
    if len(_chain) + 1 >= limit("extends_depth"):
        first = _chain[0] if _chain else path
        raise ScenarioError(str(first), "extends", over("extends_depth", len(_chain) + 2))
    return deep_merge(resolve_raw(parent_path, (*_chain, real)), data)


def apply_overrides(raw: dict[str, Any], overrides: list[str] | dict[str, Any], source: str) -> dict[str, Any]:
    """Apply overrides to a copy of ``raw``.

    ``overrides`` is either a list of ``dotted.path=value`` strings (the CLI's
    ``--set``; values are parsed as YAML) or a mapping of dotted paths to
    values (the API's).  A path part that is a whole number indexes a list
    (``staff.roles.counselor.teams.0.headcount``), as in sweep factors.
    """
    out = copy.deepcopy(raw)
    if isinstance(overrides, dict):
        items = [(_override_parts(str(k), str(k), source), v) for k, v in overrides.items()]
    else:
        items = [_parse_override(s, source) for s in overrides]
    for parts, value in items:
        set_path(out, parts, value, source)
    return out


def _override_parts(key: str, item: str, source: str) -> list[str]:
    parts = key.strip().split(".")
    if not key.strip() or any(not p for p in parts):
        raise ScenarioError(source, f"--set {item}", "expected dotted.path=value")
    return parts


def _parse_override(item: str, source: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ScenarioError(source, f"--set {item}", "expected dotted.path=value")
    key, _, text = item.partition("=")
    parts = _override_parts(key, item, source)
    try:
        value = load_yaml_text(text) if text.strip() else None
    except YamlLimitError as exc:
        raise ScenarioError(source, key.strip(), f"--set value {reprlib.repr(text)}: {exc}") from None
    except yaml.YAMLError:
        raise ScenarioError(source, key.strip(), f"--set value {reprlib.repr(text)} is not valid YAML") from None
    return parts, value


#: A list index in a dotted path: ASCII digits only (str.isdigit() also takes '²' and other scripts' digits).
_INDEX = re.compile(r"[0-9]{1,9}")


def is_index(part: str) -> bool:
    """Whether a dotted path's part can name a list item."""
    return bool(_INDEX.fullmatch(part))


def set_path(tree: dict[str, Any], parts: list[str], value: Any, source: str) -> None:
    """Set ``tree[parts[0]][parts[1]]... = value``, creating missing mappings; list items by index."""
    node: Any = tree
    for i, part in enumerate(parts):
        where = ".".join(parts[: i + 1])
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not (is_index(part) and int(part) < len(node)):
                has = ("the list is empty" if not node else "the list has 1 item (index 0)" if len(node) == 1
                       else f"the list has {len(node)} items (indices 0-{len(node) - 1})")
                raise ScenarioError(source, where, f"no list item {part!r}; {has}")
            key: Any = int(part)
        elif isinstance(node, dict):
            key = part
        else:
            raise ScenarioError(source, ".".join(parts[:i]), "is not a mapping or a list; cannot set a field inside it")
        if last:
            node[key] = value
        else:
            if isinstance(node, dict) and node.get(key) is None:
                node[key] = {}
            node = node[key]


def _clean_path(loc, raw) -> list[str]:
    """The dotted path of an error location, as the user wrote it.

    Pydantic inserts labels of its own into locations (``[key]`` for a mapping
    key, the tag of a tagged union such as ``lognormal``, ``function-after[...]``).
    Walking the location against the raw input keeps exactly the parts that are
    the user's keys and indices, whatever they are called.
    """
    from iopsim.schema.distributions import FAMILIES

    out: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            out.append(str(part))
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(str(part))
            node = node[part]
        elif isinstance(part, str) and (
            part.startswith("[") or part.startswith("function-")
            or (part in FAMILIES and isinstance(node, dict) and node.get("dist") == part)
        ):
            continue  # a pydantic label: skip it, stay at this node
        else:
            out.append(str(part))  # a missing field: name it; the rest is not in the input
            node = None
    return out


_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60


def _format_validation_error(exc: ValidationError, raw=None) -> tuple[str, str]:
    err = exc.errors(include_url=False)[0]
    from iopsim.schema.distributions import FAMILIES

    clean = _clean_path(err["loc"], raw)
    ctx = err.get("ctx") or {}
    inner = ctx.get("error")
    if isinstance(inner, _FieldError):
        return ".".join([*clean, inner.path]), str(inner)
    msg = err["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            msg = msg[len(prefix) :]
    if err["type"] == "union_tag_invalid":
        msg = f"unknown distribution {_SHORT.repr(ctx.get('tag'))}; allowed: {', '.join(FAMILIES)}"
    elif err["type"] == "union_tag_not_found":
        msg = f"a distribution needs 'dist:'; allowed: {', '.join(FAMILIES)}"
    elif err["type"] == "literal_error":
        msg = f"got {_SHORT.repr(err.get('input'))}; allowed: {ctx.get('expected')}"
    elif err["type"] not in ("value_error", "assertion_error") and "input" in err:
        shown = _SHORT.repr(err["input"])  # bounded: the input may be huge (aliases, long lists)
        if len(shown) <= 40 and not isinstance(err["input"], dict):
            msg = f"{msg} (got {shown})"
    n = len(exc.errors())
    if n > 1:
        msg = f"{msg} (and {n - 1} more problem{'s' if n > 2 else ''})"
    return ".".join(clean), msg


def validate_raw(raw: dict[str, Any], source: str) -> Scenario:
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_validation_error(exc, raw)
        raise ScenarioError(source, field or None, msg) from None


def read_with_base(path: str | Path, model) -> tuple[Any, dict[str, Any], Path]:
    """Validate a file that names a ``base`` scenario (a sweep or plan file) with ``model``, and find the base.

    Returns (the validated file, its raw mapping, the base's path); every problem
    is one :class:`ScenarioError` naming the file and the field.
    """
    path = Path(path)
    raw = read_yaml(path)
    try:
        spec = model.model_validate(raw)
    except ValidationError as exc:
        field, msg = _format_validation_error(exc, raw)
        raise ScenarioError(str(path), field or None, msg) from None
    base_path = path.parent / spec.base
    problem = file_problem(base_path)
    if problem is not None:
        raise ScenarioError(str(path), "base", problem)
    return spec, raw, base_path


def load_scenario(path: str | Path, overrides: list[str] | dict[str, Any] | None = None) -> Scenario:
    """Load, merge (``extends``), override (``--set``) and validate a scenario file."""
    path = Path(path)
    raw = apply_overrides(resolve_raw(path), overrides or [], str(path))
    scenario = validate_raw(raw, str(path))
    check_assumptions(scenario, str(path))
    return scenario


def with_assumption(scenario: Scenario, path: str, value: float, source: str) -> Scenario:
    """``scenario`` with the assumption at ``path`` set to ``value`` (shares that sum to 1 rescaled)."""
    raw = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    set_assumption(raw, path.split("."), value, lambda tree, parts, v: set_path(tree, parts, v, source))
    return validate_raw(raw, source)


_MISSING = object()


def get_path(tree: Any, dotted: str, default: Any = _MISSING) -> Any:
    """``tree``'s value at a dotted path (a whole-number part indexes a list); ``default`` if it has none.

    Without a ``default``, a missing path raises ``KeyError``.
    """
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and is_index(part) and int(part) < len(node):
            node = node[int(part)]
        elif default is _MISSING:
            raise KeyError(dotted)
        else:
            return default
    return node


def has_path(tree: Any, dotted: str) -> bool:
    """Whether ``tree`` has a value at the dotted path."""
    return get_path(tree, dotted, _ABSENT) is not _ABSENT


_ABSENT = object()


def number_at(tree: Any, dotted: str) -> int | float | None:
    """The number at a dotted path of a scenario tree (a dumped scenario), or None if there is none there."""
    node = get_path(tree, dotted, None)
    return node if isinstance(node, (int, float)) and not isinstance(node, bool) else None


def check_assumptions(scenario: Scenario, source: str) -> None:
    """Each ``uncertain:`` path names a number of the scenario, and both ends of its range are valid values."""
    if not scenario.uncertain:
        return
    dumped = scenario.model_dump(mode="json", by_alias=True)
    for path, a in scenario.uncertain.items():
        where = f"uncertain.{path}"
        node = get_path(dumped, path, _ABSENT)
        if node is _ABSENT:
            raise ScenarioError(source, where, "no such field in the scenario")
        if number_at(dumped, path) is None:
            raise ScenarioError(source, where, f"not a number in the scenario (it is {reprlib.repr(node)}); "
                                "only numeric values can have a range")
        bare = scenario.model_copy(update={"uncertain": {}})
        for end, value in zip(("low", "high"), a.range):
            try:
                with_assumption(bare, path, value, source)
            except ScenarioError as exc:
                raise ScenarioError(source, f"{where}.range", f"the {end} end {value:g} is not an allowed value "
                                    f"of {path}: {exc.message}") from None


def scenario_to_yaml(scenario: Scenario) -> str:
    """The fully resolved scenario as YAML (what a run actually used)."""
    data = scenario.model_dump(mode="json", by_alias=True, exclude_none=True)
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

