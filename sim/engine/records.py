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
from array import array
from collections.abc import MutableMapping
from itertools import chain

import numpy as np

NAN = math.nan

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
#: The visit and episode logs' columns while a run goes: (name, array type code, value until set).
#: "i" columns are strings as codes (:meth:`Log.code`; -1 is None, 0 is ``IN_SYSTEM``).
VISIT_SPEC = (
    ("patient_id", "q", 0), ("episode", "q", 0), ("stage", "i", -1), ("intended_stage", "i", -1),
    ("t_join", "d", NAN), ("t_admit", "d", NAN), ("t_leave", "d", NAN), ("outcome", "i", 0), ("next", "i", -1),
    ("track", "i", -1), ("t_first_session", "d", NAN), ("planned_days", "d", NAN), ("extensions", "q", 0),
    ("shortenings", "q", 0), ("t_first_attended", "d", NAN),
)
EPISODE_SPEC = (
    ("patient_id", "q", 0), ("episode", "q", 0), ("source", "i", -1), ("t_referral", "d", NAN),
    ("placement", "i", -1), ("t_exit", "d", NAN), ("exit_stage", "i", -1), ("exit_outcome", "i", 0),
    ("t_program_completed", "d", NAN), ("t_relapse", "d", NAN), ("readmitted", "b", 0), ("payer", "i", -1),
)
_NUMPY_TYPE = {"q": np.int64, "i": np.int32, "d": np.float64, "b": np.int8}
VISIT_COLUMNS = tuple(name for name, _, _ in VISIT_SPEC)
EPISODE_COLUMNS = tuple(name for name, _, _ in EPISODE_SPEC)


class Table:
    """One record table as columns: numpy arrays, strings dictionary-encoded.

    What a replication hands back and what the KPIs read: a few arrays per
    table instead of a DataFrame, so a replication whose caller wants only its
    KPIs (a sweep, a planner's search) never builds one, and a
    worker sends back arrays and short lists of names.  :meth:`frame` builds
    the DataFrame when a caller asks for it.

    ``t[name]`` is a column as a numpy array; a string column comes back as an
    object array with ``""`` where the value is missing (no name is ``""``).
    :meth:`eq` and :meth:`isin` compare a string column through its codes.
    """

    __slots__ = ("n", "_cols", "_strs", "_decoded", "names")

    def __init__(self, n: int, columns: dict, strings: dict | None = None):
        self.n = n
        self.names = tuple(columns)
        self._cols = columns  # name -> ndarray, or None for a dictionary-encoded string column
        self._strs = strings or {}  # name -> (int32 codes, -1 where missing; tuple of categories)
        self._decoded: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    def __contains__(self, name) -> bool:
        return name in self._cols

    def __getitem__(self, name: str) -> np.ndarray:
        col = self._cols[name]
        if col is not None:
            return col
        out = self._decoded.get(name)
        if out is None:
            codes, cats = self._strs[name]
            out = self._decoded[name] = np.array((*cats, ""), dtype=object)[codes]
        return out

    def _code(self, name: str):
        return self._strs.get(name) if self._cols[name] is None else None

    def eq(self, name: str, value: str) -> np.ndarray:
        """Where a string column equals ``value`` (a boolean array)."""
        enc = self._code(name)
        if enc is None:
            return self[name] == value
        codes, cats = enc
        return codes == cats.index(value) if value in cats else np.zeros(self.n, dtype=bool)

    def isin(self, name: str, values) -> np.ndarray:
        """Where a string column is one of ``values``."""
        enc = self._code(name)
        if enc is None:
            return np.isin(self[name], list(values))
        codes, cats = enc
        wanted = [i for i, c in enumerate(cats) if c in set(values)]
        return np.isin(codes, wanted) if wanted else np.zeros(self.n, dtype=bool)

    def __getstate__(self):
        return self.n, self._cols, self._strs

    def __setstate__(self, state) -> None:
        self.n, self._cols, self._strs = state
        self.names = tuple(self._cols)
        self._decoded = {}

    def frame(self):
        """The table as a pandas DataFrame (strings as pandas' ``string`` dtype, through one Arrow
        array each: what ``pd.array(values, dtype="string")`` gives, about five times faster)."""
        import pandas as pd
        import pyarrow as pa

        data = {}
        for name in self.names:
            col = self._cols[name]
            if col is None:
                codes, cats = self._strs[name]
                values = np.array((*cats, None), dtype=object)[codes]
                data[name] = pd.array(pa.array(values, type=pa.large_string()), dtype="string")
            else:
                data[name] = col
        return pd.DataFrame(data, columns=list(self.names))

    @classmethod
    def of_frame(cls, df) -> "Table":
        """A DataFrame read as a Table (string columns as object arrays, missing as ``""``)."""
        cols: dict = {}
        strs: dict = {}
        for name in df.columns:
            s = df[name]
            if str(s.dtype).startswith("string"):
                cols[name] = None
                strs[name] = _encode(s.to_numpy(dtype=object, na_value=None).tolist())
            elif s.dtype == object:
                cols[name] = s.to_numpy(dtype=object, na_value="")
            else:
                cols[name] = s.to_numpy()
        return cls(len(df), cols, strs)

    @classmethod
    def concat(cls, tables: list["Table"]) -> "Table":
        """Tables with the same columns, one after another (string categories merged)."""
        first = tables[0]
        cols: dict = {}
        strs: dict = {}
        for name in first.names:
            if all(t._code(name) is not None for t in tables):
                cats: dict[str, int] = {}
                parts = []
                for t in tables:
                    codes, tc = t._strs[name]
                    remap = np.array([cats.setdefault(c, len(cats)) for c in tc] + [-1], dtype=np.int32)
                    parts.append(remap[codes])
                cols[name] = None
                strs[name] = (np.concatenate(parts), tuple(cats))
            else:
                cols[name] = np.concatenate([t[name] for t in tables])
        return cls(sum(t.n for t in tables), cols, strs)


def _encode(values: list) -> tuple[np.ndarray, tuple]:
    """Strings (or None) -> (int32 codes, -1 for None; categories in order of first appearance).

    The distinct values through ``dict.fromkeys`` and the codes through ``map`` over a dict
    lookup: both loops run in C (a generator with ``setdefault`` cost five times as much)."""
    distinct = dict.fromkeys(values)
    distinct.pop(None, None)
    index = {v: i for i, v in enumerate(distinct)}
    index[None] = -1
    return np.fromiter(map(index.__getitem__, values), dtype=np.int32, count=len(values)), tuple(distinct)


def _table(rows: list, columns: tuple[str, ...], ints=(), strings=(), bools=(), floats=()) -> Table:
    """Rows -> Table, column by column with known dtypes (much faster than inferring every cell).

    Columns in none of the lists take numpy's inference (as pandas infers them: all ints int64,
    any float float64)."""
    k = len(columns)
    n = len(rows)
    flat = list(chain.from_iterable(rows))  # then column i is every k-th cell from i (3x faster than zip(*rows))
    if len(flat) == k * n:
        cols = (flat[i::k] for i in range(k))  # one column at a time, not all k beside the flat list
    else:
        cols = iter(list(zip(*rows)) or [()] * k)
    data: dict = {}
    encoded: dict = {}
    for name, values in zip(columns, cols):
        if name in strings:
            data[name] = None
            encoded[name] = _encode(values)
        elif name in ints:
            data[name] = np.fromiter(values, dtype=np.int64, count=n)
        elif name in bools:
            data[name] = np.fromiter(values, dtype=bool, count=n)
        elif name in floats or not n:
            data[name] = np.fromiter(values, dtype=float, count=n)
        else:
            data[name] = np.asarray(values)
    return Table(n, data, encoded)


#: The record tables of a replication, in the order a run folder lists them.
TABLES = ("visits", "episodes", "levels", "sessions", "bookings", "unmet", "services", "attendance")


class Records(MutableMapping):
    """The record tables of one replication: ``records["visits"]`` is a DataFrame, built on first use.

    :meth:`table` gives the compact :class:`Table` (what the KPIs read).  A
    DataFrame assigned to a name replaces that table.  Pickled (to or from a
    worker), only the tables travel, never the DataFrames built from them.
    """

    def __init__(self, tables: dict[str, Table]):
        self._tables = dict(tables)
        self._frames: dict = {}
        self._given: set[str] = set()  # names whose DataFrame was assigned, not built
        self._names = list(self._tables)  # in order, whichever form each table is in

    def table(self, name: str) -> Table:
        t = self._tables.get(name)
        if t is None:
            t = self._tables[name] = Table.of_frame(self._frames[name])
        return t

    def __getitem__(self, name: str):
        df = self._frames.get(name)
        if df is None:
            df = self._frames[name] = self._tables[name].frame()
        return df

    def __setitem__(self, name: str, df) -> None:
        self._frames[name] = df
        self._given.add(name)
        self._tables.pop(name, None)
        if name not in self._names:
            self._names.append(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._names:
            raise KeyError(name)
        self._tables.pop(name, None)
        self._frames.pop(name, None)
        self._given.discard(name)
        self._names.remove(name)

    def __iter__(self):
        return iter(list(self._names))

    def __len__(self) -> int:
        return len(self._names)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{n}: {len(self._frames[n]) if n in self._given else len(self._tables[n])} rows"
                          for n in self)
        return f"Records({sizes})"

    def __getstate__(self) -> dict:
        return {"tables": {n: t for n, t in self._tables.items() if n not in self._given},
                "frames": {n: self._frames[n] for n in self._given}, "names": list(self._names)}

    def __setstate__(self, state: dict) -> None:
        self._tables = state["tables"]
        self._frames = dict(state["frames"])
        self._given = set(self._frames)
        self._names = state["names"]


def table(records, name: str) -> Table:
    """One table of ``records`` as a :class:`Table`: of :class:`Records`, or of a mapping of DataFrames."""
    if isinstance(records, Records):
        return records.table(name)
    return Table.of_frame(records[name])


class Level:
    """A piecewise-constant quantity (waitlist length, census) integrated per day."""

    __slots__ = ("value", "t_last", "area", "peak", "days", "_day", "_day_end")

    def __init__(self, days: int, value: float = 0.0):
        self.days = days
        self.value = value
        self.t_last = 0.0
        self._day = 0  # the day bin of t_last ...
        self._day_end = 1.0  # ... and where it ends
        self.area = array("d", bytes(8 * days))  # doubles, all 0.0: 8 bytes a day, not a Python float
        self.peak = array("d", bytes(8 * days))
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


class _Vocabulary(dict):
    """String -> code, in order of first appearance; a string not seen before gets the next code."""

    def __init__(self):
        super().__init__({None: -1, IN_SYSTEM: 0})
        self.names: list[str] = [IN_SYSTEM]

    def __missing__(self, s: str) -> int:
        c = self[s] = len(self.names)
        self.names.append(s)
        return c


class Log:
    """Visit or episode records kept as columns while a replication runs.

    One typed array per field (:data:`VISIT_SPEC`, :data:`EPISODE_SPEC`),
    grown in blocks and filled with each field's value-until-set, so a record
    costs a few machine words instead of a list of Python objects, and the end
    of the run turns each column into a numpy array without a copy (:meth:`table`)
    instead of converting every cell.  A record is its row number: the model writes
    ``log.t_admit[row] = now``.  Strings are stored as codes (:meth:`code`),
    one vocabulary for all of a log's string columns.
    """

    def __init__(self, spec: tuple):
        self._spec = spec
        self.n = 0
        self.cap = 0
        self.vocab = _Vocabulary()
        self.names = self.vocab.names
        #: ``code(s)``: the code of string ``s`` (None: -1), added to the vocabulary the first time
        #: (the dict's own lookup: called several times per patient, a method of ours cost 6 % of a run).
        self.code = self.vocab.__getitem__
        for name, typecode, _ in spec:
            setattr(self, name, array(typecode))
        self.grow()

    def grow(self) -> None:
        # By a quarter: at most a fifth of the memory is room not yet used (the arrays are
        # large enough for realloc to move pages rather than copy them).
        block = max(self.cap // 4, 1024)
        for name, typecode, default in self._spec:
            getattr(self, name).extend(array(typecode, [default]) * block)
        self.cap += block

    def row(self) -> int:
        """A new record, every field at its value-until-set: its row number."""
        i = self.n
        if i == self.cap:
            self.grow()
        self.n = i + 1
        return i

    def table(self) -> Table:
        """The records as a :class:`Table`, each column a numpy view of its array (no copy).

        The arrays are cut to the records first and cannot grow afterwards: call it once, at the end."""
        cols: dict = {}
        strs: dict = {}
        cats = tuple(self.names)
        for name, typecode, _ in self._spec:
            col = getattr(self, name)
            del col[self.n:]
            a = np.frombuffer(col, dtype=_NUMPY_TYPE[typecode]) if self.n else np.zeros(0, _NUMPY_TYPE[typecode])
            if typecode == "i":
                cols[name] = None
                strs[name] = (a, cats)
            else:
                cols[name] = a.view(bool) if typecode == "b" else a
        self.cap = self.n
        return Table(self.n, cols, strs)


class Recorder:
    """Collects records during one replication."""

    def __init__(self, horizon_days: int, stages: list[str]):
        self.horizon = horizon_days
        self.visits = Log(VISIT_SPEC)
        self.episodes = Log(EPISODE_SPEC)
        self.waitlist = {s: Level(horizon_days) for s in stages}
        self.census = {s: Level(horizon_days) for s in stages}
        self.sessions: list[list] = []
        self.bookings: list = []  # iopsim.engine.staff.Booking objects
        self.unmet: list[tuple] = []
        self.services: list[tuple] = []
        self.attendance: list[tuple] = []

    def open_visit(self, patient_id, episode, stage, intended, t_join) -> int:
        """A new visit record (not admitted, not left, in the system): its row in :attr:`visits`."""
        v = self.visits
        i = v.row()
        v.patient_id[i] = patient_id
        v.episode[i] = episode
        v.stage[i] = v.code(stage)
        v.intended_stage[i] = v.code(intended)
        v.t_join[i] = t_join
        return i

    def open_episode(self, patient_id, episode, source, t_referral, payer=None) -> int:
        """A new episode record (not placed, in the system): its row in :attr:`episodes`."""
        e = self.episodes
        i = e.row()
        e.patient_id[i] = patient_id
        e.episode[i] = episode
        e.source[i] = e.code(source)
        e.t_referral[i] = t_referral
        e.payer[i] = e.code(payer)
        return i

    def finish(self) -> Records:
        for lvl in (*self.waitlist.values(), *self.census.values()):
            lvl.close(float(self.horizon))
        visits = self.visits.table()
        episodes = self.episodes.table()
        stages = list(self.waitlist)
        days = self.horizon
        # One table for all stages, stage after stage, each with one row per day.
        levels = Table(len(stages) * days, {
            "stage": None,
            "day": np.tile(np.arange(days, dtype=np.int32), len(stages)),
            **{f"{what}_{stat}": np.concatenate([np.frombuffer(getattr(by[s], attr), dtype=float) for s in stages])
               if stages and days else np.zeros(0)
               for what, by in (("waitlist", self.waitlist), ("census", self.census))
               for stat, attr in (("mean", "area"), ("max", "peak"))},
        }, {"stage": (np.repeat(np.arange(len(stages), dtype=np.int32), days), tuple(stages))})
        self.sessions.sort(key=_session_order)  # stable: the order sessions were recorded in breaks ties
        sessions = _table(self.sessions, SESSION_COLUMNS, ints=("group", "members", "expected", "attendees",
                                                                "facilitators", "merged_into"),
                          strings=("track", "status"))
        live = [(b.member.id, b.member.role, b.activity, b.start, b.end, NAN if b.ref is None else b.ref)
                for b in self.bookings if not b.cancelled]
        bookings = _table(live, BOOKING_COLUMNS, strings=("role", "activity"), floats=BOOKING_COLUMNS[3:])
        bookings._cols["member"] = bookings._cols["member"].astype(np.int32)
        unmet = _table(self.unmet, UNMET_COLUMNS, strings=("role", "activity"), floats=("t",))
        services = _table(self.services, SERVICE_COLUMNS, ints=("patient_id", "episode"), strings=("service",),
                          bools=("delivered",))
        attendance = _table(self.attendance, ATTENDANCE_COLUMNS, ints=("patient_id", "episode"), strings=("track",),
                            floats=("t",))
        return Records({
            "attendance": attendance,
            "services": services,
            "visits": visits,
            "episodes": episodes,
            "levels": levels,
            "sessions": sessions,
            "bookings": bookings,
            "unmet": unmet,
        })


def _session_order(row: list):
    return row[2], row[0], row[1]  # t_start, track, group
