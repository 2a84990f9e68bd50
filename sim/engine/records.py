"""What a replication produces: visit and episode records, and daily level series.

Everything the results report is computed from these (see :mod:`iopsim.analysis.kpis`).

* **Visit record** -- one per patient per stage (intake included): when the
  patient joined the stage's waitlist, was admitted (NaN if never), left (NaN
  if still there at the end of the run), the outcome and where they went next;
  the planned length of the stay (days: the drawn length of stay, or an IOP
  client's individual plan) and how often a progress review extended or shortened it.
* **Episode record** -- one per referral (a readmission is a new episode of the
  same patient): referral time, where intake placed them, when they left the
  system and why, whether the episode completed a program, relapse and return.
* **Session record** -- one per scheduled IOP group session: track, group,
  start, status (held, cancelled for want of staff, merged into another
  group, no clients), members enrolled, attendees, facilitators.
* **Attendance record** -- with payers only: one per client per attended
  group session (time, patient, episode, track), what sessions are billed from.
* **Booking record** -- one per piece of staff work (who, what, from, to);
  **unmet demand** -- work no one on the roster could take (hours).
* **Level series** -- waitlist length and census per stage, kept as exact
  time integrals per day (so daily means are exact, not samples) and daily
  maxima.  Memory grows with days, not with events.
"""

from __future__ import annotations

import math
from itertools import chain

import numpy as np
import pandas as pd
import pyarrow as pa

NAN = math.nan

VISIT_COLUMNS = (
    "patient_id",
    "episode",
    "stage",
    "intended_stage",
    "t_join",
    "t_admit",
    "t_leave",
    "outcome",
    "next",
    "track",
    "t_first_session",
    "planned_days",
    "extensions",
    "shortenings",
    "t_first_attended",
)
EPISODE_COLUMNS = (
    "patient_id",
    "episode",
    "source",
    "t_referral",
    "placement",
    "t_exit",
    "exit_stage",
    "exit_outcome",
    "t_program_completed",
    "t_relapse",
    "readmitted",
    "payer",
)
SESSION_COLUMNS = (
    "track",
    "group",
    "t_start",
    "hours",
    "status",
    "members",
    "expected",
    "attendees",
    "facilitators",
    "merged_into",
)
BOOKING_COLUMNS = ("member", "role", "activity", "t_start", "t_end", "ref")
UNMET_COLUMNS = ("t", "role", "activity", "hours")
SERVICE_COLUMNS = ("t_week", "patient_id", "service", "delivered", "episode")
#: One row per attended IOP group session and client; kept when the scenario bills for it (``payers``).
ATTENDANCE_COLUMNS = ("t", "patient_id", "episode", "track")
#: Outcome of a visit or episode still open when the run ends.
IN_SYSTEM = "in_system"
#: A new visit record after its first five fields (patient, episode, stage, intended stage, joined):
#: not admitted, not left, in the system, nowhere next, no track, no session, no plan, no reviews.
VISIT_REST = (NAN, NAN, IN_SYSTEM, None, None, NAN, NAN, 0, 0, NAN)


def _strings(values) -> pd.api.extensions.ExtensionArray:
    """A column of str or None as pandas' ``string`` dtype, through one Arrow array: the
    same array ``pd.array(values, dtype="string")`` gives, about five times faster."""
    return pd.array(pa.array(values, type=pa.large_string()), dtype="string")


def _frame(rows: list[list], columns: tuple[str, ...], ints=(), strings=(), bools=()) -> pd.DataFrame:
    """Rows -> DataFrame, column by column with known dtypes (much faster than
    letting pandas infer the type of every cell)."""
    k = len(columns)
    flat = list(chain.from_iterable(rows))  # then column i is every k-th cell from i (3x faster than zip(*rows))
    if len(flat) == k * len(rows):
        cols = (flat[i::k] for i in range(k))  # one column at a time, not all k beside the flat list
    else:
        cols = iter(list(zip(*rows)) or [()] * k)
    data = {}
    for name, values in zip(columns, cols):
        if name in ints:
            data[name] = np.fromiter(values, dtype=np.int64, count=len(values))
        elif name in strings:
            data[name] = _strings(values)
        elif name in bools:
            data[name] = np.fromiter(values, dtype=bool, count=len(values))
        else:
            data[name] = np.fromiter(values, dtype=float, count=len(values))
    return pd.DataFrame(data, columns=list(columns))


class Level:
    """A piecewise-constant quantity (waitlist length, census) integrated per day."""

    __slots__ = ("value", "t_last", "area", "peak", "days", "_day", "_day_end")

    def __init__(self, days: int, value: float = 0.0):
        self.days = days
        self.value = value
        self.t_last = 0.0
        self._day = 0  # the day bin of t_last ...
        self._day_end = 1.0  # ... and where it ends
        self.area = [0.0] * days
        self.peak = [0.0] * days
        if days:
            self.peak[0] = value

    def _advance(self, t: float) -> None:
        v = self.value
        tl = self.t_last
        day = int(tl)
        days = self.days
        while day < days:
            end = day + 1.0
            if t <= end:
                self.area[day] += v * (t - tl)
                break
            self.area[day] += v * (end - tl)
            tl = end
            day += 1
            if day < days and v > self.peak[day]:
                self.peak[day] = v
        self.t_last = t

    def add(self, t: float, delta: float) -> None:
        if t < self._day_end:  # same day as the last change: no bin boundary to cross
            day = self._day
            self.area[day] += self.value * (t - self.t_last)
            self.t_last = t
        else:
            self._advance(t)
            day = self._day = int(t)
            self._day_end = day + 1.0
        v = self.value + delta
        self.value = v
        if day < self.days and v > self.peak[day]:
            self.peak[day] = v

    def close(self, t: float) -> None:
        self._advance(t)


class Recorder:
    """Collects records during one replication."""

    def __init__(self, horizon_days: int, stages: list[str]):
        self.horizon = horizon_days
        self.visits: list[list] = []
        self.episodes: list[list] = []
        self.waitlist = {s: Level(horizon_days) for s in stages}
        self.census = {s: Level(horizon_days) for s in stages}
        self.sessions: list[list] = []
        self.bookings: list = []  # iopsim.engine.staff.Booking objects
        self.unmet: list[tuple] = []
        self.services: list[tuple] = []
        self.attendance: list[tuple] = []

    def open_visit(self, patient_id, episode, stage, intended, t_join) -> list:
        rec = [patient_id, episode, stage, intended, t_join, *VISIT_REST]
        self.visits.append(rec)
        return rec

    def open_episode(self, patient_id, episode, source, t_referral, payer=None) -> list:
        rec = [patient_id, episode, source, t_referral, None, NAN, None, IN_SYSTEM, NAN, NAN, False, payer]
        self.episodes.append(rec)
        return rec

    def finish(self) -> dict[str, pd.DataFrame]:
        for lvl in (*self.waitlist.values(), *self.census.values()):
            lvl.close(float(self.horizon))
        visits = _frame(self.visits, VISIT_COLUMNS, ints=("patient_id", "episode", "extensions", "shortenings"),
                        strings=("stage", "intended_stage", "outcome", "next", "track"))
        episodes = _frame(self.episodes, EPISODE_COLUMNS, ints=("patient_id", "episode"),
                          strings=("source", "placement", "exit_stage", "exit_outcome", "payer"), bools=("readmitted",))
        stages = list(self.waitlist)
        if not stages or not self.horizon:
            empty = np.zeros(0)  # no days: the per-stage frames of old, for the same (empty) table
            levels = pd.concat([pd.DataFrame({"stage": s, "day": np.arange(0, dtype=np.int32), "waitlist_mean": empty,
                                              "waitlist_max": empty, "census_mean": empty, "census_max": empty})
                                for s in stages], ignore_index=True) if stages else pd.DataFrame()
        else:
            # One frame for all stages, stage after stage, each with one row per day.
            levels = pd.DataFrame(
                {
                    "stage": pd.array(np.repeat(np.array(stages, dtype=object), self.horizon), dtype="string"),
                    "day": np.tile(np.arange(self.horizon, dtype=np.int32), len(stages)),
                    "waitlist_mean": np.concatenate([np.asarray(self.waitlist[s].area, dtype=float) for s in stages]),
                    "waitlist_max": np.concatenate([np.asarray(self.waitlist[s].peak, dtype=float) for s in stages]),
                    "census_mean": np.concatenate([np.asarray(self.census[s].area, dtype=float) for s in stages]),
                    "census_max": np.concatenate([np.asarray(self.census[s].peak, dtype=float) for s in stages]),
                }
            )
        sessions = pd.DataFrame(self.sessions, columns=list(SESSION_COLUMNS))
        sessions = sessions.sort_values(["t_start", "track", "group"], kind="stable", ignore_index=True)
        for c in ("track", "status"):
            sessions[c] = sessions[c].astype("string")
        live = [b for b in self.bookings if not b.cancelled]
        bookings = pd.DataFrame(
            {
                "member": np.array([b.member.id for b in live], dtype=np.int32),
                "role": pd.array([b.member.role for b in live], dtype="string"),
                "activity": pd.array([b.activity for b in live], dtype="string"),
                "t_start": np.array([b.start for b in live], dtype=float),
                "t_end": np.array([b.end for b in live], dtype=float),
                "ref": np.array([np.nan if b.ref is None else b.ref for b in live], dtype=float),
            },
            columns=list(BOOKING_COLUMNS),
        )
        unmet = pd.DataFrame(self.unmet, columns=list(UNMET_COLUMNS))
        for c in ("role", "activity"):
            unmet[c] = unmet[c].astype("string")
        services = pd.DataFrame(self.services, columns=list(SERVICE_COLUMNS))
        services["service"] = services["service"].astype("string")
        services["delivered"] = services["delivered"].astype(bool)
        attendance = _frame(self.attendance, ATTENDANCE_COLUMNS, ints=("patient_id", "episode"), strings=("track",))
        return {
            "attendance": attendance,
            "services": services,
            "visits": visits,
            "episodes": episodes,
            "levels": levels,
            "sessions": sessions,
            "bookings": bookings,
            "unmet": unmet,
        }
