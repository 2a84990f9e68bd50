"""Checks that catch a plan that cannot work, before and after a run.

A scenario can be valid (every field allowed) and still describe a site that
cannot run: groups scheduled when no facilitator is on shift, clients whose
availability no track accepts, a stage offered more patient-days than it has
places.  Its waits may even look *better* than a workable plan's, because the
patients it cannot serve leave.  These checks say so in one line each, naming
the field; ``--strict`` (CLI) turns them into errors.

* :func:`scenario_findings` -- before a run, from the scenario alone.
* :func:`result_findings` -- after a run, from the KPIs of its replications.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from iopsim.lazy import pandas as pd

from iopsim.engine.calendar import WeeklyCalendar
from iopsim.engine.staff import INTAKE_SHORTHAND_ROLE, remote_flags, roles_of
from iopsim.schema.scenario import STAGE_ORDER, WEEKDAYS, Roster, Scenario, number_at

#: Share of a track's sessions below the minimum group size above which a run is flagged.
BELOW_MIN_SHARE = 0.25
#: Quantile points used to estimate a stage's mean stay (exits race the planned stay).
_QUANTILES = (np.arange(400) + 0.5) / 400


@dataclass(frozen=True)
class Finding:
    """One problem: the dotted field it concerns and a plain sentence."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


def _amount(x: float) -> str:
    """A yearly count for a sentence: whole numbers from 10, one decimal below (never a bare 0)."""
    return f"{x:,.0f}" if x >= 9.5 else f"{x:.1f}" if x >= 0.05 else "under 0.1"


def _share(x: float) -> str:
    """A share for a sentence: never "0 %" for something that happened."""
    return "under 1%" if 0 < x < 0.005 else f"{x:.0%}"


def _clock(day: int, hour: float) -> str:
    h = int(hour)
    return f"{WEEKDAYS[day]} {h:02d}:{int(round((hour - h) * 60)):02d}"


# --------------------------------------------------------------------------- before a run


def scenario_findings(scenario: Scenario) -> list[Finding]:
    """Everything that makes the scenario's plan unworkable, found without running it."""
    return [*_facilitator_findings(scenario), *_availability_findings(scenario), *_load_findings(scenario),
            *_on_site_findings(scenario), *_payer_findings(scenario), *_review_findings(scenario)]


def _review_findings(scenario: Scenario) -> list[Finding]:
    """Progress reviews that would change a plan but by nothing: a trigger without weeks."""
    iop = scenario.stages.iop
    plan = iop.program.plan if iop is not None and iop.tracks is not None else None
    out = []
    for i, r in enumerate(plan.reviews if plan is not None else ()):
        at = f"stages.iop.program.plan.reviews.{i}"
        if (r.extend_probability > 0 or r.extend_if_missed is not None) and r.extend_weeks == 0:
            out.append(Finding(f"{at}.extend_weeks", "the review extends plans (extend_probability or "
                                                     "extend_if_missed) by 0 weeks, so it extends none"))
        if r.shorten_probability > 0 and r.shorten_weeks == 0:
            out.append(Finding(f"{at}.shorten_weeks", "the review shortens plans (shorten_probability) by 0 weeks, "
                                                      "so it shortens none"))
    return out


def assumption_findings(scenario: Scenario) -> list[Finding]:
    """A declared range (``uncertain:``) that does not hold the value the scenario uses: one of the two is stale.

    Not a warning about the plan (a what-if run with ``--set`` may well leave a
    range on purpose); ``validate --assumptions`` reports it.
    """
    if not scenario.uncertain:
        return []
    dumped = scenario.model_dump(mode="json", by_alias=True)
    out = []
    for path, a in scenario.uncertain.items():
        v = number_at(dumped, path)
        if v is not None and not a.range[0] <= v <= a.range[1]:
            out.append(Finding(f"uncertain.{path}", f"the scenario's value {v:g} is outside the declared range "
                                                    f"{a.range[0]:g} to {a.range[1]:g}; update one or the other"))
    return out


def _facilitator_findings(scenario: Scenario) -> list[Finding]:
    """Group sessions outside every shift of the role they need, or needing more facilitators than can be found.

    A facilitator must be on shift for the whole session and can lead one
    group at a time.  At every moment of the week, the groups meeting then
    need their facilitators from the people who could each lead one of them
    whole: a matching of people to groups (:func:`_most_staffed`).  If even the
    best matching leaves a group without its facilitators, that moment cannot
    be staffed, whatever the weekly plan does; a plan that passes may still
    fall short when the weekly booking chooses badly, which the run reports.
    """
    iop = scenario.stages.iop
    if iop is None or iop.tracks is None:
        return []
    tracks = iop.tracks
    remote = remote_flags(scenario)
    people = {role: [(WeeklyCalendar(Roster(shifts=s)), j < len(remote.get(role, ())) and remote[role][j])
                     for j, s in enumerate(shifts)] for role, shifts in roles_of(scenario).items()}
    sessions = []  # (track, start, end, session index) in days, in week 1 (so spans from week 0 count)
    for name, track in tracks.items():
        for i, st in enumerate(track.sessions):
            for d in st.days:
                a = 7.0 + WEEKDAYS.index(d) + st.start_hour / 24.0
                sessions.append((name, a, a + st.hours / 24.0, i))
    short = "cancelled" if iop.when_short == "cancel" else "merged or cancelled"
    out: list[Finding] = []
    reported: set[tuple[str, int, str]] = set()

    @functools.cache
    def can_lead(role: str, session) -> list[int]:
        name, a, b, _ = session
        return [j for j, (cal, off_site) in enumerate(people.get(role, []))
                if (tracks[name].remote_facilitators or not off_site) and _covers(cal, a, b)]

    for s in sessions:
        name, a, b, i = s
        for fac in tracks[name].facilitators:
            on_site = "" if tracks[name].remote_facilitators or not any(r for _c, r in people.get(fac.role, [])) \
                else "on-site "
            if not can_lead(fac.role, s) and (name, i, fac.role) not in reported:
                reported.add((name, i, fac.role))
                day, hour = int(a - 7.0), (a - 7.0 - int(a - 7.0)) * 24.0
                out.append(Finding(f"stages.iop.tracks.{name}.sessions.{i}",
                                   f"the session on {_clock(day, hour)} falls outside every shift of {on_site}role "
                                   f"{fac.role!r}; it can never be staffed"))
    roles = dict.fromkeys(f.role for t in tracks.values() for f in t.facilitators)
    for t in sorted({x for _n, a, b, _i in sessions for x in (a, b)}):
        active = [s for s in sessions if s[1] <= t < s[2]]
        for role in roles:
            # One slot per facilitator each group meeting now needs, with the people who could lead it whole.
            slots = [(s, can_lead(role, s)) for s in active for f in tracks[s[0]].facilitators if f.role == role
                     for _ in range(tracks[s[0]].groups * f.count)]
            if not slots or all(not who for _s, who in slots):  # none at all: reported above, session by session
                continue
            staffed = _most_staffed([who for _s, who in slots])
            first = next(s for s, who in slots if who)
            if staffed >= len(slots) or (first[0], first[3], role) in reported:
                continue
            name, a, _b, i = first
            reported.add((name, i, role))
            day, hour = int(t - 7.0) % 7, (t - 7.0 - int(t - 7.0)) * 24.0
            need = len(slots)
            out.append(Finding(f"stages.iop.tracks.{name}.sessions.{i}",
                               f"on {_clock(day, hour)} the groups meeting need {need} {role} "
                               f"facilitator{'s' if need > 1 else ''} but at most {staffed} of those rostered can "
                               f"lead them (each must be on shift for a whole session); sessions will be {short}"))
    return out


def _most_staffed(slots: list[list[int]]) -> int:
    """The most slots that can be filled at once, each by one of its people and nobody twice (augmenting paths)."""
    holder: dict[int, int] = {}  # person -> slot

    def place(slot: int, seen: set[int]) -> bool:
        for person in slots[slot]:
            if person in seen:
                continue
            seen.add(person)
            if person not in holder or place(holder[person], seen):
                holder[person] = slot
                return True
        return False

    return sum(place(k, set()) for k in range(len(slots)))


def _on_site_findings(scenario: Scenario) -> list[Finding]:
    """Drug tests need someone on site: a role whose every team is remote cannot do them."""
    iop = scenario.stages.iop
    svc = iop.services.get("drug_test") if iop is not None and iop.tracks is not None else None
    if svc is None or svc.hours <= 0 or svc.role is None:
        return []
    if any(not r for r in remote_flags(scenario).get(svc.role, [])):
        return []
    return [Finding("stages.iop.services.drug_test.role",
                    f"every {svc.role} works remotely, and drug tests need someone on site; they will all be unmet")]


def _payer_findings(scenario: Scenario) -> list[Finding]:
    """Rates for units the site never delivers: they earn nothing (a unit named by mistake?)."""
    enabled = scenario.stages.enabled()
    iop = enabled.get("iop")
    why = {}
    for unit, stage in (("residential_day", "residential"), ("php_day", "php"), ("aftercare_day", "aftercare")):
        if stage not in enabled:
            why[unit] = f"stage {stage!r} is switched off"
    if scenario.intake is None:
        why["assessment"] = "intake is switched off"
    if iop is None:
        why.update({u: "the IOP is switched off" for u in ("iop_session", "iop_day", "individual", "family", "drug_test")})
    else:
        if iop.tracks is None:
            why["iop_session"] = "the IOP has no tracks, so no group sessions (bill iop_day: every patient-day)"
        for unit in ("individual", "family", "drug_test"):
            if unit not in iop.services:
                why.setdefault(unit, f"the IOP has no {unit} service (stages.iop.services)")
    return [Finding(f"payers.{name}.rates.{unit}", f"{why[unit]}; this rate earns nothing")
            for name, payer in scenario.payers.items() for unit, rate in payer.rates.items() if rate > 0 and unit in why]


def _covers(cal: WeeklyCalendar, a: float, b: float) -> bool:
    start, end = cal.current_or_next(a)
    return start <= a + 1e-9 and b <= end + 1e-9


def _availability_findings(scenario: Scenario) -> list[Finding]:
    iop = scenario.stages.iop
    if iop is None or iop.tracks is None:
        return []
    accepted = {c for t in iop.tracks.values() for c in t.accepts}
    out = [Finding(f"stages.iop.availability.{c}",
                   f"no track accepts these clients ({share:.0%} of IOP clients); they can only wait and leave")
           for c, share in iop.availability.items() if share > 0 and c not in accepted]
    barrier = max(scenario.referrals.barrier_shares().values(), default=0.0)
    tb = iop.transport_barrier
    if barrier > 0 and tb is not None and tb.effect == "rules_out":
        online = {c for t in iop.tracks.values() if t.mode != "in_person" for c in t.accepts}
        if not online:
            out.append(Finding("stages.iop.transport_barrier.effect",
                               f"rules_out, and every track is in person: clients with a transport barrier (up to "
                               f"{barrier:.0%} of referrals) can join no track; they can only wait and leave"))
        else:
            out += [Finding(f"stages.iop.availability.{c}",
                            f"only in-person tracks accept these clients: those with a transport barrier (up to "
                            f"{barrier:.0%} of referrals) can join no track; they can only wait and leave")
                    for c, share in iop.availability.items() if share > 0 and c in accepted and c not in online]
    return out


def _mean_stay(stage, planned_parts: list[tuple[float, np.ndarray]] | None = None) -> float:
    """Mean length of an admitted stay: the planned stay raced by the early exits (quantile average).

    ``planned_parts``: the planned stay as weighted quantile arrays (see :func:`_planned_parts`);
    by default the stage's one planned length (``los_days``, or a tracked IOP's phases).
    """
    if planned_parts is None:
        if stage.tracks is not None:
            planned_parts = [(1.0, np.full(_QUANTILES.size, float(sum(ph.weeks for ph in stage.program.phases) * 7.0)))]
        else:
            planned_parts = [(1.0, np.asarray(stage.los_days.ppf(_QUANTILES), dtype=float))]
    total = sum(e.probability for e in stage.exits.values())
    u = _QUANTILES[::8][:, None]  # the exit time's own quantiles, independent of the planned stay's
    weight = sum(w for w, _ in planned_parts)
    mean = 0.0
    for w, planned in planned_parts:
        stay = (1.0 - total) * planned.mean()
        for ex in stage.exits.values():
            p = np.asarray(ex.days.cdf(planned), dtype=float)[None, :]
            early = np.broadcast_to(np.asarray(ex.days.ppf(u * p), dtype=float), (u.size, planned.size))
            early = np.where(p <= 0.0, planned[None, :], np.minimum(early, planned[None, :]))  # as truncated_ppf
            stay += ex.probability * float(early.mean())
        mean += w / weight * stay
    return mean


def _planned_parts(scenario: Scenario, name: str, lam: dict[str, float],
                   routing: np.ndarray, names: list[str]) -> list[tuple[float, np.ndarray]] | None:
    """A tracked IOP's individual plans as weighted quantile arrays of the planned days; None without a plan.

    Each flow of clients gets the plan the engine would give it: those stepping
    down from a stage with ``after[stage]``, the others by their referral source
    (``by_source``, else ``weeks``; for clients coming from another stage, the
    referral sources' shares).  Each severity class stretches the lengths by its
    factor, and each review adds its expected change to the plans still running
    at its week (extensions by probability only: those for missed sessions
    depend on attendance, which this check does not model).
    """
    st = scenario.stages.enabled()[name]
    plan = st.program.plan if st.tracks is not None else None
    if plan is None:
        return None
    ref = scenario.referrals
    per_day = _referrals_per_day(scenario)

    def weeks(dist) -> np.ndarray:
        return 7.0 * np.asarray(dist.ppf(_QUANTILES), dtype=float)

    by_source = [(s.share, weeks(plan.by_source.get(src, plan.weeks))) for src, s in ref.sources.items()]
    flows = [(per_day * s.share * s.placement.get(name, 0.0), days)
             for (_share, days), s in zip(by_source, ref.sources.values())]
    j = names.index(name)
    for i, other in enumerate(names):
        into = lam[other] * routing[i, j]
        if into > 0 and other in plan.after:
            flows.append((into, weeks(plan.after[other])))
        elif into > 0:
            flows += [(into * share, days) for share, days in by_source]
    classes = [(c.share, c.length_factor) for c in plan.severity.values()] or [(1.0, 1.0)]
    parts = []
    for w, days in flows:
        for share, factor in classes:
            planned = days * factor
            for r in sorted(plan.reviews, key=lambda r: r.week):
                change = (r.extend_probability * r.extend_weeks
                          - (1.0 - r.extend_probability) * r.shorten_probability * r.shorten_weeks) * 7.0
                planned = np.where(planned > 7.0 * r.week, np.maximum(planned + change, 7.0 * r.week), planned)
            if w * share > 0:
                parts.append((w * share, planned))
    return parts or None


def _referrals_per_day(scenario: Scenario) -> float:
    """Referrals a day, averaged over the weekday profile and the months."""
    ref = scenario.referrals
    return ref.referrals_per_week / 7.0 * float(np.mean(ref.month_multipliers))


def _routing(scenario: Scenario) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The enabled stages in order, their external admissions a day, and the routing matrix between them."""
    enabled = scenario.stages.enabled()
    names = [n for n in STAGE_ORDER if n in enabled]
    ref = scenario.referrals
    per_day = _referrals_per_day(scenario)
    gamma = np.array([per_day * sum(s.share * s.placement.get(n, 0.0) for s in ref.sources.values()) for n in names])
    p = np.zeros((len(names), len(names)))
    for i, n in enumerate(names):
        st = enabled[n]
        completed = 1.0 - sum(e.probability for e in st.exits.values())
        for j, m in enumerate(names):
            p[i, j] += completed * st.step_down.get(m, 0.0)
            p[i, j] += sum(e.probability for e in st.exits.values() if e.to == m)
    return names, gamma, p


def stage_arrivals(scenario: Scenario) -> dict[str, float]:
    """Expected admissions per day to each stage if every placed referral is admitted.

    The traffic equations of the routing: external arrivals from the referral
    rate (averaged over the weekday profile and the months) and placements,
    plus completed stays routed on and exits with ``to``.  Overflow, reneging
    and returns after relapse are left out, so this is the demand a plan must
    meet, not what a crowded site ends up admitting.
    """
    return _arrivals(*_routing(scenario))


def _arrivals(names: list[str], gamma: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """The traffic equations ``lam = gamma + p.T lam`` solved (infinite for a loop that never discharges)."""
    try:
        lam = np.linalg.solve(np.eye(len(names)) - p.T, gamma)
    except np.linalg.LinAlgError:  # a closed loop that never discharges: unbounded
        lam = np.full(len(names), math.inf)
    return dict(zip(names, lam.tolist()))


def _intake_load(scenario: Scenario) -> tuple[float, float, float] | None:
    """(offered load, assessment hours a week, rostered assessor hours a week) of intake, or None.

    A lower bound: referrals only (returns after relapse come on top), and
    every rostered hour counted as free for assessments (the role's other work
    comes on top).  At or above 1 the intake waitlist cannot be kept down.
    """
    intake = scenario.intake
    if intake is None:
        return None
    role = intake.role or INTAKE_SHORTHAND_ROLE
    shifts = roles_of(scenario).get(role, [])
    hours = sum(24.0 * (b - a) for s in shifts for a, b in WeeklyCalendar(Roster(shifts=s)).intervals)
    demand = 7.0 * _referrals_per_day(scenario) * float(intake.assessment_hours.mean)
    if hours <= 0:
        return (math.inf if demand > 0 else 0.0), demand, hours
    return demand / hours, demand, hours


def _load_findings(scenario: Scenario) -> list[Finding]:
    out = []
    intake = _intake_load(scenario)
    if intake is not None and intake[0] >= 1.0:
        load, demand, hours = intake
        where = f"staff.roles.{scenario.intake.role}" if scenario.intake.role else "intake.clinicians"
        out.append(Finding(where, f"intake offered load {load:.2f} >= 1 ({demand:.0f} hours of assessments a week "
                                  f"/ {hours:.0f} rostered hours of {scenario.intake.role or 'intake clinicians'}): "
                                  "the intake waitlist will grow without bound, or referrals will leave it"))
    names, gamma, routing = _routing(scenario)
    arrivals = _arrivals(names, gamma, routing)
    for name, st in scenario.stages.enabled().items():
        places = sum(t.groups * t.max_group_size for t in st.tracks.values()) if st.tracks else st.capacity
        if places is None:
            continue
        lam = arrivals[name]
        stay = _mean_stay(st, _planned_parts(scenario, name, arrivals, routing, names))
        load = lam * stay / places
        if load >= 1.0:
            out.append(Finding(f"stages.{name}", f"offered load {load:.2f} >= 1 ({lam:.2f} admissions a day x "
                                                 f"{stay:.1f}-day mean stay / {places} places): its waitlist will "
                                                 "grow without bound, or patients will leave it"))
    return out


# --------------------------------------------------------------------------- after a run


def result_findings(per_replication: pd.DataFrame, scenario: Scenario) -> list[Finding]:
    """What went wrong in a run: undersized groups, cancelled sessions, staff time that could not be booked."""
    mean = per_replication.drop(columns=["replication"], errors="ignore").mean(numeric_only=True)
    years = max(scenario.horizon_days - scenario.warmup_days, 1) / 365.0
    out: list[Finding] = []
    iop = scenario.stages.iop
    for name, t in (iop.tracks or {}).items() if iop is not None else ():
        p = f"iop_track_{name}_"
        below = mean.get(p + "share_sessions_below_min", math.nan)
        if below == below and below > BELOW_MIN_SHARE:
            out.append(Finding(f"stages.iop.tracks.{name}.min_group_size",
                               f"{below:.0%} of held sessions had fewer than {t.min_group_size} attendees "
                               f"(more than {BELOW_MIN_SHARE:.0%})"))
        cancelled = mean.get(p + "sessions_cancelled", 0.0)
        if cancelled > 0:
            held = mean.get(p + "sessions_held", 0.0)
            out.append(Finding(f"stages.iop.tracks.{name}.facilitators",
                               f"{_amount(cancelled / years)} sessions a year cancelled for want of staff "
                               f"({_share(cancelled / max(cancelled + held, 1e-9))} of those due)"))
    for role in roles_of(scenario):
        # Group sessions short of staff are reported above, as cancelled sessions.
        unmet = mean.get(f"staff_{role}_unmet_hours", 0.0) - mean.get(f"staff_{role}_unmet_hours_group", 0.0)
        if unmet > 1e-9:
            out.append(Finding("intake.clinicians" if role == INTAKE_SHORTHAND_ROLE else f"staff.roles.{role}",
                               f"{_amount(unmet / years)} hours a year of {role} work could not be booked "
                               "(services or assessments no one on the roster could take)"))
    return out
