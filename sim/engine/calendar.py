"""Weekly calendars: when a roster is on shift.

Time is in days from a Monday 00:00, so ``t % 7`` is the position in the week
and ``(t % 1) * 24`` the hour of day.
"""

from __future__ import annotations

import math

from iopsim.schema.scenario import WEEKDAYS, Roster

_EPS = 1e-9


class WeeklyCalendar:
    """The open intervals of a roster within a week, merged and sorted."""

    def __init__(self, roster: Roster):
        spans = []
        for shift in roster.shifts:
            for day in shift.days:
                d = WEEKDAYS.index(day)
                spans.append((d + shift.start_hour / 24.0, d + shift.end_hour / 24.0))
        spans.sort()
        merged: list[list[float]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + _EPS:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        # A span ending at the week's end that joins one starting at Monday 00:00
        # stays two spans; callers only ever ask for the span containing a time.
        self.intervals: list[tuple[float, float]] = [(a, b) for a, b in merged]
        self.hours_per_week = sum(b - a for a, b in self.intervals) * 24.0

    def current_or_next(self, t: float) -> tuple[float, float]:
        """The open interval (start, end) containing ``t``, or else the next one, in absolute days."""
        week = math.floor(t / 7.0)
        for w in (week, week + 1):
            base = w * 7.0
            for a, b in self.intervals:
                if base + b > t + _EPS:
                    return base + a, base + b
        raise AssertionError("a roster always has at least one interval")  # pragma: no cover
