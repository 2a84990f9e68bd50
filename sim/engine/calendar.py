"""Weekly calendars: when a roster is on shift.

Time is in days from a Monday 00:00, so ``t % 7`` is the position in the week
and ``(t % 1) * 24`` the hour of day.

A roster is a set of weekly shifts.  Shifts that overlap or touch end to
start are one continuous span of work, across midnight and across
Sunday -> Monday: a clinician rostered 24/7 is never "between shifts", and an
overnight shift (``start_hour: 22, end_hour: 6``) is one span from 22:00 to
06:00 the next morning.
"""

from __future__ import annotations

import math

from iopsim.schema.scenario import WEEKDAYS, Roster

_EPS = 1e-9
INF = math.inf


def shift_pieces(roster: Roster) -> list[tuple[float, float]]:
    """The roster's shifts as (start, end) in days within one week [0, 7), unmerged.

    A shift ending at or before its start hour runs past midnight into the next
    day; one that runs past Sunday midnight continues on Monday of the next
    week, so it is cut at 7 and its rest placed at the start of the week.
    """
    out = []
    for shift in roster.shifts:
        length = (shift.end_hour - shift.start_hour) % 24.0 or 24.0
        for day in shift.days:
            a = WEEKDAYS.index(day) + shift.start_hour / 24.0
            b = a + length / 24.0
            if b > 7.0 + _EPS:
                out += [(a, 7.0), (0.0, b - 7.0)]
            else:
                out.append((a, min(b, 7.0)))
    return out


class WeeklyCalendar:
    """When a roster is on shift.

    ``intervals``: the merged on-shift time within one week, as disjoint
    (start, end) pairs in [0, 7] (for counting hours).  ``spans``: the same
    time as continuous spans of work, where a span may run past the end of the
    week (end > 7) when it continues on Monday; a roster that never stops is
    one span with an infinite end (``always``).
    """

    def __init__(self, roster: Roster):
        merged: list[list[float]] = []
        for a, b in sorted(shift_pieces(roster)):
            if merged and a <= merged[-1][1] + _EPS:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        self.intervals: list[tuple[float, float]] = [(a, b) for a, b in merged]
        self.hours_per_week = sum(b - a for a, b in self.intervals) * 24.0
        self.always = len(merged) == 1 and merged[0][0] <= _EPS and merged[0][1] >= 7.0 - _EPS
        spans = [list(iv) for iv in merged]
        if self.always:
            spans = [[0.0, INF]]
        elif len(spans) > 1 and spans[0][0] <= _EPS and spans[-1][1] >= 7.0 - _EPS:
            # Sunday's last span continues into Monday's first: one span of work.
            first = spans.pop(0)
            spans[-1][1] = 7.0 + first[1]
        self.spans: list[tuple[float, float]] = [(a, b) for a, b in spans]

    def current_or_next(self, t: float) -> tuple[float, float]:
        """The span of work (start, end) containing ``t``, or else the next one, in absolute days."""
        if self.always:
            return -INF, INF
        week = math.floor(t / 7.0)
        for w in (week - 1, week, week + 1):  # week - 1: a span that began last week may still run
            base = w * 7.0
            for a, b in self.spans:
                if base + b > t + _EPS:
                    return base + a, base + b
        raise AssertionError("a roster always has at least one span")  # pragma: no cover
