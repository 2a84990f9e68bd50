"""The record tables of a replication: compact columns, DataFrames on demand.

* Every table read through its compact columns gives the same KPIs as the
  same table read from its DataFrame (the two ways ``table()`` reads records).
* A table survives DataFrame -> table -> DataFrame unchanged, and pickling
  (what a worker sends back) carries the tables only, never the DataFrames
  built from them, while a DataFrame assigned to a name travels as given.
* Stacking replications through the compact tables (string categories merged
  across replications) equals concatenating their DataFrames.
* String columns compare through their codes: missing values and names a
  table never saw are never equal to anything.
* Empty tables have the same column types as full ones.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iopsim.analysis.kpis import replication_kpis
from iopsim.engine.model import Model
from iopsim.engine.records import TABLES, Recorder, Records, Table, _table
from iopsim.experiments.replications import run_replications
from iopsim.experiments.run import stack_records
from iopsim.schema.scenario import load_scenario

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def baseline():
    return load_scenario(ROOT / "scenarios" / "baseline.yaml", {"horizon_days": 240, "warmup_days": 30})


@pytest.fixture(scope="module")
def records(baseline):
    return Model(baseline, 0).run()


def _same(a: dict, b: dict) -> dict:
    assert a.keys() == b.keys()
    return {k: (a[k], b[k]) for k in a if not (a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])))}


def test_a_run_returns_every_table_compactly(records):
    assert isinstance(records, Records)
    assert list(records) == ["attendance", "services", "visits", "episodes", "levels", "sessions", "bookings",
                             "unmet"]
    assert set(records) == set(TABLES)
    assert not records._frames, "a DataFrame was built before anyone asked for one"
    assert len(records.table("visits")) > 100
    assert repr(records).startswith("Records(attendance: ") and f"visits: {len(records.table('visits'))} rows" in repr(records)


def test_kpis_from_compact_tables_equal_kpis_from_dataframes(baseline, records):
    frames = {name: records[name] for name in TABLES}  # a plain dict of DataFrames
    for warmup in (None, 0, 100):
        diff = _same(replication_kpis(records, baseline, warmup), replication_kpis(frames, baseline, warmup))
        assert not diff, f"warm-up {warmup}: compact and DataFrame records disagree: {list(diff.items())[:4]}"


def test_dataframe_round_trip(records):
    for name in TABLES:
        df = records[name]
        pd.testing.assert_frame_equal(Table.of_frame(df).frame(), df, check_exact=True)


def test_pickle_carries_tables_not_frames(records):
    visits = records["visits"]  # builds (and caches) a DataFrame
    back = pickle.loads(pickle.dumps(records))
    assert not back._frames
    pd.testing.assert_frame_equal(back["visits"], visits, check_exact=True)
    assert len(pickle.dumps(records)) < len(pickle.dumps({n: records[n] for n in TABLES}))


def test_assigned_dataframe_replaces_the_table_and_travels(records):
    r = pickle.loads(pickle.dumps(records))
    forged = r["bookings"].iloc[:0].copy()
    r["bookings"] = forged
    assert len(r.table("bookings")) == 0
    assert list(r) == list(records), "assigning a table moved it"
    back = pickle.loads(pickle.dumps(r))
    assert list(back) == list(records)
    pd.testing.assert_frame_equal(back["bookings"], forged)
    del back["unmet"]
    assert "unmet" not in back and len(back) == len(TABLES) - 1
    with pytest.raises(KeyError):
        back["unmet"]
    assert len(back.table("visits")) == len(records.table("visits"))


def test_stacking_equals_concatenating_dataframes(baseline):
    results = run_replications(baseline.model_copy(update={"horizon_days": 120}), 3, seed=5)
    for name in TABLES:
        frames = [r.records[name] for r in results]
        expected = pd.concat(frames, ignore_index=True)
        expected.insert(0, "replication", np.repeat([r.replication for r in results], [len(f) for f in frames]))
        got = stack_records(results, name)
        pd.testing.assert_frame_equal(got, expected, check_exact=True)


def test_string_comparisons_through_codes():
    t = _table([["a", 1.0], [None, 2.0], ["b", 3.0], ["a", 4.0]], ("s", "x"), strings=("s",), floats=("x",))
    assert t.eq("s", "a").tolist() == [True, False, False, True]
    assert not t.eq("s", "zzz").any()
    assert not t.eq("s", "").any(), "a missing value equals nothing"
    assert t.isin("s", ("b", "zzz")).tolist() == [False, False, True, False]
    assert t["s"].tolist() == ["a", "", "b", "a"]
    assert t.frame()["s"].isna().tolist() == [False, True, False, False]
    merged = Table.concat([t, _table([["b", 5.0], ["c", 6.0]], ("s", "x"), strings=("s",), floats=("x",))])
    assert merged["s"].tolist() == ["a", "", "b", "a", "b", "c"]
    assert merged.eq("s", "b").tolist() == [False, False, True, False, True, False]


def test_empty_tables_keep_their_types(records):
    empty = Recorder(3, ["intake", "iop"]).finish()  # nothing happened
    for name in TABLES:
        assert len(empty[name]) == (6 if name == "levels" else 0), name
        assert empty[name].dtypes.astype(str).to_dict() == records[name].dtypes.astype(str).to_dict(), name
