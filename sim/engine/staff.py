"""Staff: rostered people, their bookings, and the pay their rosters earn.

Every piece of staff work -- an intake assessment, a group session, an
individual or family session, a drug test -- is a **booking** of one staff
member for an interval that lies inside one of their rostered shifts and
overlaps none of their other bookings.  That invariant is what "no staff
member is ever in two places at once" means here, and it is checked in the
tests from the bookings log alone.  Work that cannot be fitted is recorded as
**unmet demand** (hours, by role and activity).

Paid hours come from the rosters (everyone is paid for their rostered hours,
busy or not), split into weekday-day, weekday-evening and weekend hours for
the shift differentials.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_right

import numpy as np

from iopsim.engine.calendar import WeeklyCalendar
from iopsim.schema.scenario import Roster, Scenario, Shift

_EPS = 1e-9
#: Name of the role the ``intake.clinicians``/``intake.roster`` shorthand creates.
INTAKE_SHORTHAND_ROLE = "intake_clinician"


def roles_of(scenario: Scenario) -> dict[str, list[list[Shift]]]:
    """Role -> one shift list per staff member (the intake shorthand included)."""
    out: dict[str, list[list[Shift]]] = {}
    if scenario.staff is not None:
        for name, role in scenario.staff.roles.items():
            out[name] = [list(team.shifts) for team in role.teams for _ in range(team.headcount)]
    if scenario.intake is not None and scenario.intake.role is None:
        out[INTAKE_SHORTHAND_ROLE] = [list(scenario.intake.roster.shifts)] * scenario.intake.clinicians
    return out


def remote_flags(scenario: Scenario) -> dict[str, list[bool]]:
    """Role -> whether each staff member (in the order of :func:`roles_of`) works off site."""
    out: dict[str, list[bool]] = {}
    if scenario.staff is not None:
        for name, role in scenario.staff.roles.items():
            out[name] = [team.remote for team in role.teams for _ in range(team.headcount)]
    return out


class Booking:
    __slots__ = ("member", "activity", "start", "end", "ref", "cancelled")

    def __init__(self, member: "StaffMember", activity: str, start: float, end: float, ref):
        self.member = member
        self.activity = activity
        self.start = start
        self.end = end
        self.ref = ref
        self.cancelled = False


class StaffMember:
    """One person: a weekly calendar and a sorted list of non-overlapping bookings.

    ``version`` counts changes to the bookings; a pool's slot index uses it to
    tell a member's cached free slot from a stale one.  ``changes``, when set
    by the pool, is the role's log of changed members (their ``pos`` in the role).
    """

    __slots__ = ("id", "role", "calendar", "_starts", "_bookings", "version", "pos", "changes", "_window",
                 "_window_spans", "remote")

    def __init__(self, member_id: int, role: str, shifts: list[Shift]):
        self.id = member_id
        self.role = role
        self.calendar = WeeklyCalendar(Roster(shifts=shifts))
        self._starts: list[float] = []
        self._bookings: list[Booking] = []
        self.version = 0
        self.pos = 0
        self.changes: list[int] | None = None
        self._window: tuple[float, float] | None = None
        self._window_spans: list[tuple[float, float]] = []
        self.remote = False  # works off site (a remote team): no in-person groups, no drug tests

    def _changed(self) -> None:
        self.version += 1
        if self.changes is not None:
            self.changes.append(self.pos)

    def on_shift(self, start: float, end: float) -> bool:
        a, b = self.calendar.current_or_next(start)
        return a <= start + _EPS and end <= b + _EPS

    def conflict_end(self, start: float, end: float) -> float | None:
        """End of the earliest booking overlapping [start, end), or None."""
        i = bisect_right(self._starts, start)
        if i > 0 and self._bookings[i - 1].end > start + _EPS:
            return self._bookings[i - 1].end
        if i < len(self._bookings) and self._bookings[i].start < end - _EPS:
            return self._bookings[i].end
        return None

    def next_booking(self, t: float) -> Booking | None:
        """The booking in progress at ``t`` or else the next one (None if there is none)."""
        i = bisect_right(self._starts, t) - 1
        if i >= 0 and self._bookings[i].end > t + _EPS:
            return self._bookings[i]
        return self._bookings[i + 1] if i + 1 < len(self._bookings) else None

    def available(self, start: float, end: float) -> bool:
        return self.on_shift(start, end) and self.conflict_end(start, end) is None

    def find_slot(self, earliest: float, latest: float, duration: float) -> float | None:
        """Earliest start in [earliest, latest - duration] at which the member is free.

        One pass over the shifts in the window and, within each, over the
        bookings it holds (sorted, non-overlapping): the first gap that fits wins.
        """
        cal = self.calendar
        if cal.always:
            return self._first_gap(earliest, latest, duration)
        if self._window != (earliest, latest):
            self._window = (earliest, latest)
            self._window_spans = self._spans_in(earliest, latest)
        for lo, hi in self._window_spans:
            if lo + duration > hi + _EPS:
                continue
            t = self._first_gap(lo, hi, duration)
            if t is not None:
                return t
        return None

    def _spans_in(self, earliest: float, latest: float) -> list[tuple[float, float]]:
        """The spans of work meeting [earliest, latest], clipped to it, in time order.

        Kept for the last window asked for: a week's services are all fitted
        into the same window, so the week's spans are worked out once.
        """
        out = []
        w = math.floor(earliest / 7.0) - 1  # a span that began last week may still run
        while w * 7.0 < latest:
            base = w * 7.0
            for a, b in self.calendar.spans:
                out.append((max(base + a, earliest), min(base + b, latest)))
            w += 1
        return out

    def _first_gap(self, lo: float, hi: float, duration: float) -> float | None:
        """Earliest start in [lo, hi - duration] that overlaps no booking."""
        bookings = self._bookings
        i = max(bisect_right(self._starts, lo) - 1, 0)
        t = lo
        n = len(bookings)
        while i < n:
            bk = bookings[i]
            if bk.start >= hi:
                break
            if bk.end > t:
                if t + duration <= bk.start + _EPS:
                    return t
                t = bk.end
            i += 1
        if t + duration <= hi + _EPS:
            return t
        return None

    def add(self, booking: Booking) -> None:
        i = bisect_right(self._starts, booking.start)
        self._starts.insert(i, booking.start)
        self._bookings.insert(i, booking)
        self._changed()

    def remove(self, booking: Booking) -> None:
        i = self._bookings.index(booking)
        del self._starts[i]
        del self._bookings[i]
        self._changed()

    def forget_before(self, t: float) -> None:
        """Drop bookings that ended before ``t`` (they stay in the log)."""
        k = 0
        while k < len(self._bookings) and self._bookings[k].end <= t:
            k += 1
        if k:
            del self._starts[:k]
            del self._bookings[:k]
            self._changed()


#: Slot indexes kept at most (one per role and window asked for); more clears them all.
_MAX_SLOT_INDEXES = 64


class StaffPool:
    """All staff of a replication, by role, writing bookings and unmet demand to the recorder.

    **Slot index.**  :meth:`fit` books the earliest free slot of any member of
    a role in a window.  Scanning every member for every booking made the cost
    of a booking grow with the roster (quadratic in the size of the site).
    Instead, for each (role, window, duration) asked for, the pool keeps a heap
    of (earliest slot, member position, member version): built once with one
    scan of the role, then updated only for the members whose bookings changed
    since (the role's change log).  An entry whose version is not the member's
    current one is stale and dropped when it reaches the top.  The top entry is
    therefore the minimum over the members of their current earliest slot, ties
    going to the member listed first -- exactly the booking a full scan makes.
    """

    def __init__(self, scenario: Scenario, recorder):
        self.rec = recorder
        self.by_role: dict[str, list[StaffMember]] = {}
        self.members: list[StaffMember] = []
        self._changes: dict[str, list[int]] = {}
        self._slots: dict[tuple, list] = {}
        remote = remote_flags(scenario)
        #: Roles with someone off site: their on-site work has slot indexes of the on-site members alone.
        self.remote_roles = {r for r, flags in remote.items() if any(flags)}
        for role, shift_lists in roles_of(scenario).items():
            people = []
            changes: list[int] = []
            flags = remote.get(role, ())
            for j, shifts in enumerate(shift_lists):
                m = StaffMember(len(self.members), role, shifts)
                m.remote = bool(flags[j]) if j < len(flags) else False
                m.pos = len(people)
                m.changes = changes
                self.members.append(m)
                people.append(m)
            self.by_role[role] = people
            self._changes[role] = changes

    def book(self, member: StaffMember, activity: str, start: float, end: float, ref=None) -> Booking:
        b = Booking(member, activity, start, end, ref)
        member.add(b)
        self.rec.bookings.append(b)
        return b

    def cancel(self, booking: Booking) -> None:
        if not booking.cancelled:
            booking.cancelled = True
            booking.member.remove(booking)

    def unmet(self, role: str, activity: str, t: float, hours: float) -> None:
        self.rec.unmet.append((t, role, activity, hours))

    def team(self, role: str, count: int, start: float, end: float, prefer=(), exclude=(),
             on_site: bool = True) -> list[StaffMember] | None:
        """``count`` members of ``role`` free for [start, end), preferring ``prefer``,
        never one of ``exclude`` (already chosen for the same session).

        ``on_site``: no remote members.  Otherwise (a virtual track that remote
        staff may run) remote members come first, the preferred ones first among
        them, so that the people on site stay free for the groups that need them.
        """
        order = [m for m in dict.fromkeys([*prefer, *self.by_role.get(role, ())]) if m.role == role]
        if role in self.remote_roles:  # on site: nobody remote; otherwise remote first (a stable sort)
            order = [m for m in order if not m.remote] if on_site else sorted(order, key=lambda m: not m.remote)
        chosen: list[StaffMember] = []
        for m in order:
            if len(chosen) >= count:
                break
            if m not in exclude and m.available(start, end):
                chosen.append(m)
        return chosen if len(chosen) >= count else None

    def fit(self, role: str, activity: str, earliest: float, latest: float, hours: float, ref=None,
            on_site: bool = False) -> Booking | None:
        """Book the earliest free ``hours`` of any member of ``role`` in [earliest, latest] (``on_site``: not a remote one)."""
        duration = hours / 24.0
        people = self.by_role.get(role)
        if not people:
            self.unmet(role, activity, earliest, hours)
            return None
        only_on_site = on_site and role in self.remote_roles  # an index of the on-site members alone
        changes = self._changes[role]
        key = (role, earliest, latest, duration, only_on_site)
        index = self._slots.get(key)
        if index is None:
            if len(self._slots) >= _MAX_SLOT_INDEXES:
                self._reset_slots()
            heap = []
            for i, m in enumerate(people):
                s = None if only_on_site and m.remote else m.find_slot(earliest, latest, duration)
                if s is not None:
                    heap.append((s, i, m.version))
            heapq.heapify(heap)
            index = self._slots[key] = [heap, len(changes)]
        else:
            heap, seen = index
            if seen < len(changes):
                for i in set(changes[seen:]):
                    m = people[i]
                    s = None if only_on_site and m.remote else m.find_slot(earliest, latest, duration)
                    if s is not None:
                        heapq.heappush(heap, (s, i, m.version))
                index[1] = len(changes)
        while heap and heap[0][2] != people[heap[0][1]].version:
            heapq.heappop(heap)
        if not heap:
            self.unmet(role, activity, earliest, hours)
            return None
        s, i, _ = heap[0]
        return self.book(people[i], activity, s, s + duration, ref)

    def _reset_slots(self) -> None:
        self._slots.clear()
        for changes in self._changes.values():
            changes.clear()

    def forget_before(self, t: float) -> None:
        for m in self.members:
            m.forget_before(t)
        self._reset_slots()


# --------------------------------------------------------------------------- pay


def shift_hours(shifts: list[Shift], t0: float, t1: float, evening_start_hour: float) -> dict[str, float]:
    """Rostered hours in [t0, t1) (days), split into weekday day/evening and weekend.

    Overlapping shifts of one person are merged first, so no hour is paid twice.
    Each hour is classed by the day it falls on: the part of an overnight shift
    after midnight belongs to the next day (Friday 22:00-06:00 is two weekday
    evening hours and six weekend hours).  On weekdays, hours from
    ``evening_start_hour`` to midnight earn the evening rate and the rest the
    day rate.
    """
    out = {"day": 0.0, "evening": 0.0, "weekend": 0.0}
    if t1 <= t0:
        return out
    first_week, last_week = math.floor(t0 / 7.0), math.floor(t1 / 7.0)
    ev = evening_start_hour / 24.0
    merged = []  # (day, start, end) pieces of the merged calendar, cut at midnight
    for a, b in WeeklyCalendar(Roster(shifts=shifts)).intervals:
        while a < b - _EPS:
            d = min(int(math.floor(a + _EPS)), 6)
            end = min(b, d + 1.0)
            merged.append((d, a, end))
            a = end
    for w in range(first_week, last_week + 1):
        base = w * 7.0
        for d, a, b in merged:
            lo, hi = max(base + a, t0), min(base + b, t1)
            if hi <= lo:
                continue
            hours = (hi - lo) * 24.0
            if d >= 5:
                out["weekend"] += hours
                continue
            split = base + d + ev
            evening = max(0.0, hi - max(lo, split)) * 24.0
            out["evening"] += evening
            out["day"] += hours - evening
    return out


def idle_hours(member_shifts: list[Shift], bookings: list[tuple[float, float]], t0: float, t1: float) -> float:
    """Rostered hours in [t0, t1) not covered by any booking.

    Computed from the calendar and the bookings log independently of the
    paid-hours arithmetic (:func:`shift_hours`), so that paid = busy + idle is
    a real check that every booking lies inside a shift and none overlap.
    """
    cal = WeeklyCalendar(Roster(shifts=member_shifts))
    weeks = np.arange(math.floor(t0 / 7.0), math.floor(t1 / 7.0) + 1) * 7.0
    iv = np.asarray(cal.intervals, dtype=float)
    lo = np.clip((weeks[:, None] + iv[None, :, 0]).ravel(), t0, t1)
    hi = np.clip((weeks[:, None] + iv[None, :, 1]).ravel(), t0, t1)
    rostered = float(np.sum(hi - lo))
    b = np.asarray(bookings, dtype=float).reshape(-1, 2)
    if not len(b):
        return rostered * 24.0
    b = b[np.lexsort((b[:, 1], b[:, 0]))]
    # Union of the bookings as disjoint intervals (a new one starts where a booking
    # begins after every earlier one has ended), then the measure of their
    # intersection with the shifts through the cumulative covered length F(t).
    reach = np.maximum.accumulate(b[:, 1])
    new = np.concatenate([[True], b[1:, 0] > reach[:-1]])
    us = b[new, 0]
    ue = np.maximum.reduceat(b[:, 1], np.flatnonzero(new))
    cum = np.concatenate([[0.0], np.cumsum(ue - us)])

    def covered(t):
        k = np.searchsorted(us, t, side="right")  # intervals starting at or before t
        inside = np.where(k > 0, np.minimum(t, ue[np.maximum(k - 1, 0)]) - us[np.maximum(k - 1, 0)], 0.0)
        return cum[np.maximum(k - 1, 0)] * (k > 0) + np.maximum(inside, 0.0)

    busy_in_shifts = float(np.sum(covered(hi) - covered(lo)))
    return (rostered - busy_in_shifts) * 24.0
