"""Shared fixtures for the iopsim test-suite.

* ``minimal_scenario_dict()`` -- a small, valid scenario as a plain dict (one IOP
  stage, no intake, one referral source that places everyone in IOP, a 100-day
  horizon).  Every call returns a fresh deep copy, so tests may mutate it.
  Also available as the ``minimal_scenario`` fixture.
* ``tmp_scenario`` -- a factory fixture: ``tmp_scenario(data, name=...)`` writes
  ``data`` (a dict, dumped as YAML, or a str written verbatim) to a file under
  ``tmp_path`` and returns its :class:`~pathlib.Path`.
* ``repo_root`` -- the repository root (the folder holding ``scenarios/``).
* ``shipped_raw(name)`` -- a shipped scenario (``extends`` resolved) as a dict;
  ``stressed_groups_raw()`` -- the baseline made short of group seats and
  counselors; ``GROUP_VARIANTS`` -- name -> builder of both, for the group and
  staff tests.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]


def shipped_raw(name: str) -> dict:
    """A shipped scenario of ``scenarios/`` as a dict, ``extends`` resolved."""
    from iopsim.schema.scenario import resolve_raw

    return resolve_raw(REPO_ROOT / "scenarios" / f"{name}.yaml")


def stressed_groups_raw() -> dict:
    """Baseline with far more referrals, few seats per group and too few counselors:
    at 09:00 only the day counselor is on shift for three day groups, at 18:00 only
    the late counselor for two evening groups, so sessions are merged or cancelled."""
    raw = shipped_raw("baseline")
    raw["name"] = "stressed"
    raw["referrals"]["referrals_per_week"] = 20.0
    iop = raw["stages"]["iop"]
    iop["when_short"] = "merge"
    iop["tracks"]["day"].update(groups=3, max_group_size=8)
    iop["tracks"]["evening"].update(groups=2, max_group_size=8)
    return raw


GROUP_VARIANTS = {
    "baseline": lambda: shipped_raw("baseline"),
    "evening": lambda: shipped_raw("evening"),
    "weekend": lambda: shipped_raw("weekend"),
    "stressed": stressed_groups_raw,
}

_MINIMAL: dict[str, Any] = {
    "name": "minimal",
    "description": "One IOP stage, no intake; every referral is placed in IOP.",
    "seed": 12345,
    "horizon_days": 100,
    "warmup_days": 0,
    "replications": 2,
    "referrals": {
        "referrals_per_week": 7.0,
        "sources": {
            "community": {"share": 1.0, "placement": {"iop": 1.0}},
        },
    },
    "stages": {
        "iop": {
            "capacity": 10,
            "los_days": {"dist": "exponential", "mean": 20.0},
            "step_down": {"discharge": 1.0},
        },
    },
}


def minimal_scenario_dict() -> dict[str, Any]:
    """A fresh copy of a small valid scenario (safe to mutate)."""
    return copy.deepcopy(_MINIMAL)


@pytest.fixture
def minimal_scenario() -> dict[str, Any]:
    """A fresh, mutable copy of :func:`minimal_scenario_dict`."""
    return minimal_scenario_dict()


@pytest.fixture
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture
def tmp_scenario(tmp_path: Path) -> Callable[..., Path]:
    """Factory: ``tmp_scenario(data, name="scenario.yaml", folder=None) -> Path``.

    ``data`` may be a mapping (written with ``yaml.safe_dump``) or a string
    (written verbatim, for malformed-YAML tests).  ``folder`` is relative to
    ``tmp_path`` and is created if needed.  An existing file is overwritten.
    """

    def make(data: Any = None, name: str = "scenario.yaml", folder: str | Path | None = None) -> Path:
        if data is None:
            data = minimal_scenario_dict()
        where = tmp_path / folder if folder is not None else tmp_path
        where.mkdir(parents=True, exist_ok=True)
        path = where / name
        text = data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False)
        path.write_text(text, encoding="utf-8")
        return path

    return make
