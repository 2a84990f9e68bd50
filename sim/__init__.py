"""iopsim: a discrete-event simulator of addiction-treatment programs.

The public API (see :mod:`iopsim.api`)::

    import iopsim
    results = iopsim.run(iopsim.load_scenario("scenarios/baseline.yaml"), replications=4, jobs=2)
    print(results.summary)

Only the names listed in ``__all__`` are promised; everything below
``iopsim.`` that is not exported here is private and may change.

The package is layered, and a layer imports only the layers before it:
``errors``/``files`` -> ``schema`` -> ``engine`` -> ``analysis`` ->
``experiments`` -> ``outputs`` -> ``api`` -> ``cli``.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

#: Exported name -> module that defines it.  Loaded on first use, so that
#: ``import iopsim`` stays cheap (pandas and SimPy load when a run needs them).
_EXPORTS = {
    "load_scenario": "iopsim.api",
    "check": "iopsim.api",
    "Finding": "iopsim.analysis.checks",
    "run": "iopsim.api",
    "compare": "iopsim.api",
    "sweep": "iopsim.api",
    "plan": "iopsim.api",
    "sensitivity": "iopsim.api",
    "report": "iopsim.api",
    "calibrate": "iopsim.api",
    "fit": "iopsim.api",
    "CalibrationResults": "iopsim.api",
    "scenario_schema": "iopsim.api",
    "Results": "iopsim.api",
    "Comparison": "iopsim.api",
    "SweepResults": "iopsim.api",
    "PlanResults": "iopsim.experiments.plan",
    "Scenario": "iopsim.schema.scenario",
    "IopsimError": "iopsim.errors",
    "ScenarioError": "iopsim.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'iopsim' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # pragma: no cover - for type checkers and editors
    from iopsim.analysis.checks import Finding
    from iopsim.api import (
        CalibrationResults,
        Comparison,
        Results,
        SweepResults,
        calibrate,
        check,
        compare,
        fit,
        load_scenario,
        plan,
        report,
        run,
        scenario_schema,
        sensitivity,
        sweep,
    )
    from iopsim.errors import IopsimError, ScenarioError
    from iopsim.experiments.plan import PlanResults
    from iopsim.schema.scenario import Scenario
