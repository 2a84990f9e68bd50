"""IOP as group therapy on a weekly calendar: tracks, groups, sessions, services.

A tracked IOP replaces the slot stage of :mod:`iopsim.engine.model` for the ``iop``
level of care.  The model, in the order things happen:

* **Availability.**  Each patient has an availability class (daytime,
  evenings only, ...) drawn from ``iop.availability`` when first needed; a
  track ``accepts`` some classes, and a patient is only ever placed in a
  track that accepts theirs.
* **Seats.**  A track has ``groups`` parallel groups of at most
  ``max_group_size`` members.  *Rolling* groups take a newcomer whenever a
  seat is free; the newcomer's program starts at the group's next session.
  *Cohort* groups are closed: a forming group fills up and starts when it has
  ``min_group_size`` members (or, with ``cohort_start_every_weeks``, on the
  set weeks with whoever is there); its members start together and the group
  takes newcomers again only when the last one has left.  A patient with no
  seat in any feasible track waits on the IOP waitlist (and may renege); the
  visit record's ``track`` column says which tracks they were waiting for.
* **Weekly planning** (each Monday 00:00).  Facilitators (role and count per
  group) are booked for the week's sessions, preferring the group's previous
  facilitators.  A session that cannot be staffed is cancelled, or with
  ``when_short: merge`` its members join another staffed group of the same
  track meeting at the same time if the combined membership fits
  ``max_group_size``; the unstaffed hours are unmet demand.  Then each
  enrolled client's due services (individual, family sessions, drug tests;
  ``every_weeks``) are fitted into the rostered, unbooked hours of a member of
  the service's role that week, or recorded as unmet demand.  Clients who
  join mid-week get services from the following week.
* **Sessions.**  At each session a member is *scheduled* if their phase's
  ``sessions_per_week`` has not been used up that week; a scheduled member
  attends with the track's attendance probability for their phase.
  ``missed_sessions_dropout`` consecutive misses end the stay as
  ``dropped_out``.  A cancelled session counts neither as attended nor as
  missed.
* **Individual plans** (``program.plan``).  Each client's planned length is
  drawn when they take a seat (by the stage they step down from, their
  referral source, and a severity class that also scales attendance); the
  phases scale with it.  Progress reviews at set weeks extend the plan (after
  too many missed sessions, or by chance) or shorten it; an extension holds
  the seat longer.  Without a plan every client follows the phases' weeks.
* **Completion.**  After the planned length from the member's first
  session, or (``program.sessions``) at the end of the session at which the
  member reaches that many attended sessions.  Other early exits
  (transferred, terminated, other) race as in :mod:`iopsim.engine.model`, with the
  planned stay being the program's length.
"""

from __future__ import annotations

import logging
import math
from collections import deque

from iopsim.engine.loop import spawn, timeout
from iopsim.engine.stages import ADMITTED, INF, Patient, Stage, _categorical, _cumulative, visit_namespace
from iopsim.schema.scenario import WEEKDAYS

log = logging.getLogger(__name__)
_EPS = 1e-9
#: Suffix of the waitlist queue of an availability class's clients whom a transport barrier keeps out
#: of in-person tracks (``transport_barrier.effect: rules_out``).
BARRIER = "|transport barrier"


class Member:
    """A patient's seat in a group, and their progress through the program."""

    __slots__ = ("patient", "rec", "group", "t_seat", "t_first", "attended", "missed_run", "week", "week_count",
                 "done", "finished", "_u", "_pos", "_series", "_k", "plan_days", "phase_ends", "att_factor", "missed",
                 "extensions")

    def __init__(self, patient: Patient, rec: int, group: "Group", t_seat: float, series):
        self.patient = patient
        self.rec = rec  # the row of this visit in the recorder's visit log
        self.group = group
        self.t_seat = t_seat
        self.t_first: float | None = None
        self.attended = 0
        self.missed_run = 0
        self.week = -1
        self.week_count = 0
        self.done = None
        self.finished = False
        self._series = series  # the "iop.attendance" PatientSeries
        self._k = 0  # next chunk of this client's attendance uniforms
        self._u: list[float] = []
        self._pos = 0
        self.plan_days = 0.0  # this client's planned program length (set on joining)
        self.phase_ends: list[float] = []  # days from the first session at which each phase ends
        self.att_factor = 1.0  # severity's factor on attendance
        self.missed = 0  # scheduled sessions missed so far
        self.extensions = 0

    def uniform(self) -> float:
        """Next attendance uniform of this patient (a per-patient stream: CRN-safe)."""
        if self._pos >= len(self._u):
            p = self.patient
            self._u = self._series.chunk(p.vns, p.index, self._k)
            self._k += 1
            self._pos = 0
        v = self._u[self._pos]
        self._pos += 1
        return v


class Group:
    __slots__ = ("track", "index", "members", "state", "last_facilitators")

    def __init__(self, track: "Track", index: int):
        self.track = track
        self.index = index
        self.members: list[Member] = []
        self.state = "forming" if track.cfg.admission == "cohort" else "rolling"
        self.last_facilitators: list = []

    def has_seat(self) -> bool:
        if self.state == "running":
            return False
        return len(self.members) < self.track.cfg.max_group_size


class Track:
    def __init__(self, stage: "TrackedIOP", name: str, cfg):
        self.stage = stage
        self.name = name
        self.cfg = cfg
        self.accepts = set(cfg.accepts)
        self.groups = [Group(self, i) for i in range(cfg.groups)]
        self.weekly = sorted(
            (WEEKDAYS.index(d) + st.start_hour / 24.0, st.hours) for st in cfg.sessions for d in st.days
        )
        n_phases = len(stage.cfg.program.phases)
        att = cfg.attendance
        self.attendance = list(att) if isinstance(att, list) else [att] * n_phases
        self.in_person = cfg.mode == "in_person"
        # Waitlist queues this track takes from: its availability classes, and with a barrier
        # that rules in-person tracks out, the same classes of clients with the barrier.
        self.queue_keys = self.accepts | ({c + BARRIER for c in self.accepts} if not self.in_person else set())

    def next_session(self, t: float) -> float:
        week = math.floor(t / 7.0)
        for w in (week, week + 1):
            for off, _h in self.weekly:
                if w * 7.0 + off >= t - _EPS:
                    return w * 7.0 + off
        raise AssertionError("unreachable")  # pragma: no cover


class TrackedIOP(Stage):
    """The IOP level of care organised as tracks of groups (see the module docstring)."""

    def __init__(self, model, name: str, cfg):
        super().__init__(model, name, cfg)
        self.tracks = {n: Track(self, n, t) for n, t in cfg.tracks.items()}
        self._waiting: dict[str, deque] = {}  # queue key (see queue_key) -> (number, waiter), see _enqueue
        self._joined = 0
        self.capacity = sum(t.groups * t.max_group_size for t in cfg.tracks.values())
        prog = cfg.program
        self.phase_ends = []
        acc = 0
        for ph in prog.phases:
            acc += ph.weeks * 7.0
            self.phase_ends.append(acc)
        self.program_days = acc
        self.sessions_per_week = [ph.sessions_per_week for ph in prog.phases]
        self.plan = prog.plan
        if self.plan is not None:
            s = model.streams
            self.plan_u = s.patient("iop.plan.weeks")
            self.severity_u = s.patient("iop.plan.severity") if self.plan.severity else None
            self.severities = _cumulative({k: v.share for k, v in self.plan.severity.items()})
            self.review_u = [(s.patient(f"iop.plan.review.{i}.extend"), s.patient(f"iop.plan.review.{i}.shorten"))
                             for i in range(len(self.plan.reviews))]
        self.classes = _cumulative(cfg.availability)
        self.availability_u = model.streams.patient("iop.availability")
        shares = model.scenario.referrals.barrier_shares()
        tb = cfg.transport_barrier
        # Drawn only when some source has the barrier (a stream of its own: a share of 0 changes nothing).
        self.barrier_shares = shares if tb is not None and any(v > 0 for v in shares.values()) else None
        self.barrier_u = model.streams.patient("iop.transport_barrier") if self.barrier_shares else None
        self.barrier_rules_out = tb is not None and tb.effect == "rules_out"
        self.barrier_factor = tb.attendance_factor if tb is not None and tb.effect == "attendance" else 1.0
        self.attendance_u = model.streams.series("iop.attendance")
        self.billed = model.rec.attendance if model.scenario.payers else None  # attended sessions, to bill
        self.seed = model.seed
        self.rep = model.replication
        self.pool = model.staff
        spawn(self.env, self._clock())

    # -- placement ------------------------------------------------------------------
    def availability(self, p: Patient) -> str:
        if p.availability is None:
            p.availability = _categorical(self.availability_u.get(p.ns, p.index), self.classes)
        return p.availability

    def has_barrier(self, p: Patient) -> bool:
        """Whether travel to the site is a barrier for ``p`` (drawn once per episode, by their source's share)."""
        if self.barrier_shares is None:
            return False
        if p.barrier is None:
            p.barrier = self.barrier_u.get(p.ns, p.index) < self.barrier_shares.get(p.source, 0.0)
        return p.barrier

    def queue_key(self, p: Patient) -> str:
        """The waitlist queue of ``p``: their availability class, marked when a barrier rules in-person tracks out."""
        a = self.availability(p)
        return a + BARRIER if self.barrier_rules_out and self.has_barrier(p) else a

    def feasible(self, p: Patient) -> list[Track]:
        key = self.queue_key(p)
        return [t for t in self.tracks.values() if key in t.queue_keys]

    def _seat_for(self, p: Patient) -> Group | None:
        """The group a newcomer joins: of the feasible tracks, the one meeting next; within
        it the fullest group with a free seat (the first such on a tie)."""
        now = self.env._now
        best, key = None, None
        for t in self.feasible(p):
            cap = t.cfg.max_group_size
            tg, most = None, -1
            for g in t.groups:  # every group of a track meets at the same time
                n = len(g.members)
                if n > most and n < cap and g.state != "running":
                    tg, most = g, n
            if tg is not None:
                k = (t.next_session(now), -most, t.name, tg.index)
                if key is None or k < key:
                    best, key = tg, k
        return best

    def has_room(self, p: Patient) -> bool:
        return self._seat_for(p) is not None

    def _join(self, group: Group, p: Patient, rec: int) -> Member:
        now = self.env._now
        m = Member(p, rec, group, now, self.attendance_u)
        self._set_plan(m, p)
        if self.barrier_factor != 1.0 and group.track.in_person and self.has_barrier(p):
            m.att_factor *= self.barrier_factor  # merged sessions stay within the track, so its mode holds
        m.done = self.env.event()
        group.members.append(m)
        self.occupied += 1
        self.census.add(now, 1)
        v = self.visits
        v.t_admit[rec] = now
        v.track[rec] = v.code(group.track.name)
        return m

    # -- individual plans -------------------------------------------------------------
    def _set_plan(self, m: Member, p: Patient) -> None:
        """This client's planned length and phases (the program's own without a ``plan``).

        The planned length in weeks comes from ``after[stage]`` when the client
        steps down from that stage, else ``by_source[source]``, else ``weeks``;
        a severity class multiplies it.  Phases scale by ``phase_rule``:
        ``share`` keeps each phase's share of the weeks, ``intensive_first``
        keeps the first phase's weeks (cut to the plan) and shares the rest
        among the later phases in proportion to their weeks.
        """
        self.visits.extensions[m.rec] = 0
        plan = self.plan
        if plan is None:
            m.plan_days = self.program_days
            m.phase_ends = self.phase_ends
            self.visits.planned_days[m.rec] = self.program_days
            return
        dist = plan.after.get(p.prev) if p.prev is not None else None
        if dist is None:
            dist = plan.by_source.get(p.source, plan.weeks)
        days = 7.0 * float(dist.ppf(self.plan_u.get(p.vns, p.index)))
        if self.severity_u is not None:
            if p.severity is None:
                p.severity = _categorical(self.severity_u.get(p.ns, p.index), self.severities)
            sev = plan.severity[p.severity]
            days *= sev.length_factor
            m.att_factor = sev.attendance_factor
        days = max(days, 1.0 / 24.0)  # at least an hour: a plan of zero weeks would never meet
        m.plan_days = days
        m.phase_ends = self._scaled_phases(days)
        self.visits.planned_days[m.rec] = days

    def _scaled_phases(self, days: float) -> list[float]:
        total = self.program_days
        ends = self.phase_ends
        if days == total:
            return ends
        if self.plan.phase_rule == "share" or len(ends) == 1:
            f = days / total
            return [e * f for e in ends[:-1]] + [days]
        first = min(ends[0], days)
        rest_total = total - ends[0]
        f = (days - first) / rest_total
        return [first] + [first + (e - ends[0]) * f for e in ends[1:-1]] + [days]

    def _review(self, m: Member, i: int) -> None:
        """Progress review ``i``: extend (missed sessions, or by chance) or shorten the plan; the last phase changes."""
        if m.finished:
            return
        r = self.plan.reviews[i]
        p = m.patient
        ext_u, short_u = self.review_u[i]
        u_ext, u_short = ext_u.get(p.vns, p.index), short_u.get(p.vns, p.index)
        now = self.env._now
        extend = r.extend_weeks > 0 and (
            (r.extend_if_missed is not None and m.missed >= r.extend_if_missed) or u_ext < r.extend_probability)
        if extend:
            m.plan_days += 7.0 * r.extend_weeks
            m.phase_ends = [*m.phase_ends[:-1], m.plan_days]
            m.extensions += 1
            self.visits.extensions[m.rec] = m.extensions
        elif not extend and r.shorten_weeks > 0 and u_short < r.shorten_probability:
            days = max(m.plan_days - 7.0 * r.shorten_weeks, now - m.t_first)
            m.plan_days = days
            m.phase_ends = [min(e, days) for e in m.phase_ends[:-1]] + [days]
            self.visits.shortenings[m.rec] += 1
            timeout(self.env, max(m.t_first + days - now, 0.0)).callbacks.append(lambda _e, m=m: self._complete(m))

    def _complete(self, m: Member) -> None:
        """The planned end: complete, unless the plan was extended since this timer was set."""
        if m.finished:
            return
        due = m.t_first + m.plan_days
        if self.env._now < due - 1e-7:
            timeout(self.env, due - self.env._now).callbacks.append(lambda _e, m=m: self._complete(m))
            return
        self._finish(m, "completed")

    # -- the visit ------------------------------------------------------------------
    def _visit_here(self, p: Patient, intended: str, residual_u: float | None):
        env = self.env
        now = env._now
        visit_namespace(p, self.name)
        rec = self.model.rec.open_visit(p.id, p.episode, self.name, intended, now)
        group = self._seat_for(p)
        if group is not None:
            m = self._join(group, p, rec)
        else:
            # The tracks they are waiting for ("" if no track fits their availability:
            # they wait until they renege -- the site cannot serve them).
            v = self.visits
            v.track[rec] = v.code("|".join(t.name for t in self.feasible(p)))
            w = self._join_waitlist(p, rec)
            result = yield w.event
            if result != ADMITTED:
                return result, None, self.name
            m = w.member
        if residual_u is not None:  # in the program on day 0: part of it is behind them
            self._start(m, env._now - residual_u * m.plan_days)
            if self.cfg.program.sessions is not None:
                m.attended = int(residual_u * self.cfg.program.sessions)
        outcome, stay = self.plan_stay(p, m.plan_days)
        if outcome != "completed":
            timeout(env, stay).callbacks.append(lambda _e, m=m, o=outcome: self._finish(m, o))
        outcome = yield m.done
        nxt = self.next_stage(p) if outcome == "completed" else self.exit_to.get(outcome)
        v = self.visits
        v.t_leave[rec] = env._now
        v.outcome[rec] = v.code(outcome)
        v.next[rec] = v.code(nxt)
        return outcome, nxt, self.name

    def plan_stay(self, p: Patient, planned: float | None = None) -> tuple[str, float]:
        """Early exits other than dropout, racing the planned length (the client's plan, else the program's)."""
        planned = self.program_days if planned is None else planned
        if not self.exits:
            return "completed", planned
        name = _categorical(self.exit_u.get(p.vns, p.index), [(x, c) for x, c, _ in self.exits], "completed")
        if name == "completed":
            return name, planned
        dist = next(d for x, _, d in self.exits if x == name)
        return name, dist.truncated_ppf(self.exit_time_u.get(p.vns, p.index), planned)

    def _start(self, m: Member, t_first: float) -> None:
        m.t_first = t_first
        self.visits.t_first_session[m.rec] = t_first
        if self.cfg.program.sessions is None:
            end = t_first + m.plan_days
            timeout(self.env, max(end - self.env._now, 0.0)).callbacks.append(lambda _e, m=m: self._complete(m))
        if self.plan is not None:
            now = self.env._now
            for i, r in enumerate(self.plan.reviews):
                at = t_first + 7.0 * r.week
                if at >= now:
                    timeout(self.env, at - now).callbacks.append(lambda _e, m=m, i=i: self._review(m, i))

    def _finish(self, m: Member, outcome: str) -> None:
        """The member leaves their group; their seat goes to the next feasible waiting patient."""
        if m.finished:
            return
        m.finished = True
        g = m.group
        g.members.remove(m)
        now = self.env._now
        self.occupied -= 1
        self.census.add(now, -1)
        if g.state == "running" and not g.members:
            g.state = "forming"
        self._fill(g)
        m.done.succeed(outcome)

    def _enqueue(self, w, deadline: float) -> None:
        """Waiters are kept in one FIFO per queue key (availability class, and barrier), numbered in
        order of joining, so that filling a seat looks only at the queues its track takes from."""
        self._joined += 1
        key = self.queue_key(w.patient)
        q = self._waiting.get(key)
        if q is None:
            q = self._waiting[key] = deque()
        q.append((self._joined, w))
        self.n_waiting += 1
        self.waitlist.add(self.env._now, 1)
        if deadline < INF:
            timeout(self.env, deadline).callbacks.append(w)

    def _fill(self, g: Group) -> None:
        """Give free seats of ``g`` to waiting patients who can attend its track, first come
        first served: the earliest-joined head of the accepted classes' queues each time."""
        if not self.n_waiting or not g.has_seat():
            return
        queues = [q for c, q in self._waiting.items() if c in g.track.queue_keys]
        while g.has_seat():
            head, first = None, None
            for q in queues:
                while q and q[0][1].done:  # reneged: dropped lazily
                    q.popleft()
                if q and (first is None or q[0][0] < first):
                    head, first = q, q[0][0]
            if head is None:
                return
            w = head.popleft()[1]
            self._leave_waitlist(w)
            w.member = self._join(g, w.patient, w.record)
            w.event.succeed(ADMITTED)

    # -- the weekly clock -------------------------------------------------------------
    def _clock(self):
        """Plan each week at Monday 00:00, then run its sessions in time order."""
        env = self.env
        horizon = self.model.horizon
        weekly = sorted((off, name, h) for name, t in self.tracks.items() for off, h in t.weekly)
        week = 0
        while week * 7.0 < horizon:
            t_week = week * 7.0
            if env._now < t_week:
                yield timeout(env, t_week - env._now)
            plan = self._plan_week(t_week, weekly)
            for off, name, hours in weekly:
                ts = t_week + off
                if ts >= horizon:
                    break
                if ts > env._now:
                    yield timeout(env, ts - env._now)
                self._run_sessions(self.tracks[name], ts, hours, plan)
            week += 1

    def _plan_week(self, t_week: float, weekly) -> dict:
        """Book facilitators for the week's sessions and fit the week's services."""
        pool = self.pool
        pool.forget_before(t_week - 7.0)
        plan: dict[tuple[float, str, int], list | None] = {}
        for off, name, hours in weekly:
            track = self.tracks[name]
            start = t_week + off
            end = start + hours / 24.0
            for g in track.groups:
                if not g.members:  # staffed at the session if someone joins by then
                    continue
                team = self._facilitators(track, g, start, end)
                if team is None:
                    plan[(start, name, g.index)] = None
                else:
                    plan[(start, name, g.index)] = [pool.book(x, "group", start, end, g.index) for x in team]
                    g.last_facilitators = team
        rec = self.model.rec
        for svc_name, svc in self.cfg.services.items():
            for track in self.tracks.values():
                for g in track.groups:
                    for m in g.members:
                        if m.t_first is None or m.t_first > t_week:
                            continue
                        if math.floor((t_week - m.t_first) / 7.0 + _EPS) % svc.every_weeks:
                            continue
                        delivered = True
                        if svc.hours > 0:
                            booking = pool.fit(svc.role, svc_name, t_week, t_week + 7.0, svc.hours, m.patient.id,
                                               on_site=svc_name == "drug_test")
                            delivered = booking is not None
                        rec.services.append((t_week, m.patient.id, svc_name, delivered, m.patient.episode))
        return plan

    def _facilitators(self, track: Track, g: Group, start: float, end: float) -> list | None:
        """Free people for every facilitator entry of the track (none chosen twice), or None."""
        team: list = []
        for f in track.cfg.facilitators:
            people = self.pool.team(f.role, f.count, start, end, prefer=g.last_facilitators, exclude=team,
                                    on_site=not track.cfg.remote_facilitators)
            if people is None:
                return None
            team.extend(people)
        return team

    def _run_sessions(self, track: Track, ts: float, hours: float, plan: dict) -> None:
        """All groups of ``track`` meeting at ``ts``: finish, staff, start cohorts, merge, attend."""
        cfg = track.cfg
        pool = self.pool
        sessions = self.model.rec.sessions
        week_idx = math.floor(ts / 7.0 + _EPS)
        end = ts + hours / 24.0
        if self.cfg.program.sessions is None:
            # Programs ending exactly at this session's start end before it (the
            # completion timer and the session clock may differ by rounding).
            for g in track.groups:
                for m in list(g.members):
                    if m.t_first is not None and ts >= m.t_first + m.plan_days - 1e-7:
                        self._finish(m, "completed")
        meeting: list[tuple[Group, list | None]] = []
        for g in track.groups:
            key = (ts, track.name, g.index)
            bookings = plan.get(key)
            if g.state == "forming":
                every = cfg.cohort_start_every_weeks
                start_now = len(g.members) >= cfg.min_group_size or (
                    every is not None and g.members and week_idx % every == 0
                )
                if not start_now:
                    for b in bookings or []:
                        pool.cancel(b)
                    continue
            if not g.members:
                for b in bookings or []:
                    pool.cancel(b)
                if key in plan:
                    sessions.append([track.name, g.index, ts, hours, "no_clients", 0, 0, 0, 0, -1])
                continue
            if bookings is None:  # not staffed when the week was planned (or joined since): try again
                team = self._facilitators(track, g, ts, end)
                bookings = None if team is None else [pool.book(x, "group", ts, end, g.index) for x in team]
            if g.state == "forming":
                if bookings is None:  # a cohort starts only at a session that is held
                    for f in cfg.facilitators:
                        pool.unmet(f.role, "group", ts, f.count * hours)
                    sessions.append([track.name, g.index, ts, hours, "cancelled", len(g.members), 0, 0, 0, -1])
                    continue
                g.state = "running"
                for m in g.members:
                    if m.t_first is None:  # those in the program since day 0 have started already
                        self._start(m, ts)
            meeting.append((g, bookings))
        staffed = [(g, b) for g, b in meeting if b is not None]
        hosts = {g.index: list(g.members) for g, _ in staffed}
        records = {}
        for g, b in meeting:
            if b is not None:
                continue
            for f in cfg.facilitators:
                pool.unmet(f.role, "group", ts, f.count * hours)
            host = None
            if self.cfg.when_short == "merge":
                for hg, _ in staffed:
                    if len(hosts[hg.index]) + len(g.members) <= cfg.max_group_size:
                        host = hg
                        break
            if host is None:
                records[g.index] = [track.name, g.index, ts, hours, "cancelled", len(g.members), 0, 0, 0, -1]
            else:
                hosts[host.index].extend(g.members)
                records[g.index] = [track.name, g.index, ts, hours, "merged", len(g.members), 0, 0, 0, host.index]
        for g, bookings in staffed:
            members = hosts[g.index]
            expected, attended, leaving = self._attend(members, ts, week_idx)
            records[g.index] = [track.name, g.index, ts, hours, "held", len(members), expected, attended, len(bookings), -1]
            for m, outcome in leaving:
                if outcome == "dropped_out":
                    self._finish(m, outcome)
                else:  # completes at the end of this session
                    timeout(self.env, hours / 24.0).callbacks.append(lambda _e, m=m: self._finish(m, "completed"))
        for gi in sorted(records):
            sessions.append(records[gi])

    def _attend(self, members: list[Member], ts: float, week_idx: int):
        """Attendance of one session; returns (scheduled, attended, members leaving)."""
        prog = self.cfg.program
        expected = attended = 0
        leaving = []
        billed = self.billed
        for m in members:
            if m.finished:
                continue
            if m.t_first is None:
                self._start(m, ts)
            elapsed = ts - m.t_first
            phase = 0
            ends = m.phase_ends
            while phase < len(ends) - 1 and elapsed >= ends[phase] - _EPS:
                phase += 1
            if m.week != week_idx:
                m.week, m.week_count = week_idx, 0
            if m.week_count >= self.sessions_per_week[phase]:
                continue
            m.week_count += 1
            expected += 1
            p_attend = m.group.track.attendance[phase]
            if m.att_factor != 1.0:
                p_attend = min(1.0, p_attend * m.att_factor)
            if m.uniform() < p_attend:
                if billed is not None:
                    billed.append((ts, m.patient.id, m.patient.episode, m.group.track.name))
                attended += 1
                if not m.attended:
                    self.visits.t_first_attended[m.rec] = ts
                m.attended += 1
                m.missed_run = 0
                if prog.sessions is not None and m.attended >= prog.sessions:
                    leaving.append((m, "completed"))
            else:
                m.missed_run += 1
                m.missed += 1
                if m.missed_run >= prog.missed_sessions_dropout:
                    leaving.append((m, "dropped_out"))
        return expected, attended, leaving
