"""Scenario schema, loading, ``extends:`` and ``--set``: every rule gives ONE line
``FILE: dotted.field: what is allowed``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from conftest import minimal_scenario_dict
import iopsim.schema.distributions as dist_mod
import iopsim.schema.scenario as sc_mod
from iopsim.schema.distributions import FAMILIES
from iopsim.errors import ScenarioError
from iopsim.schema.scenario import Scenario, Stage, load_scenario, scenario_to_yaml, validate_raw

REPO_ROOT = Path(__file__).resolve().parents[1]
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"
SHIPPED = sorted((REPO_ROOT / "scenarios").glob("*.yaml"))


def allowed_keys(model: type[pydantic.BaseModel]) -> str:
    """The message's ``allowed:`` list for ``model``: its field names (aliases), sorted."""
    return "allowed: " + ", ".join(sorted(f.alias or name for name, f in model.model_fields.items()))


# Derived from the models so the schema can grow; the core keys must always be listed.
TOP_LEVEL_ALLOWED = allowed_keys(Scenario)
STAGE_ALLOWED = allowed_keys(Stage)
CORE_TOP_LEVEL = ("horizon_days", "name", "referrals", "stages", "warmup_days")
CORE_STAGE = ("capacity", "los_days", "step_down", "overflow_to", "exits")


# --------------------------------------------------------------------------- helpers


def set_in(data: dict[str, Any], dotted: str, value: Any) -> dict[str, Any]:
    """Set ``data[a][b][c] = value`` for ``dotted == "a.b.c"``, creating mappings."""
    node = data
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


def fixed(value: float = 1.0) -> dict[str, Any]:
    return {"dist": "fixed", "value": value}


def load_error(tmp_scenario, data: Any, overrides: list[str] | None = None, name: str = "scenario.yaml"):
    """Write ``data``, load it, and return (path, the ScenarioError raised)."""
    path = tmp_scenario(data, name=name)
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(path, overrides)
    return path, excinfo.value


def assert_one_line_error(err: ScenarioError, path: Path | str, field: str | None, *fragments: str) -> None:
    """The message is one line ``PATH: FIELD: ...`` containing every fragment."""
    msg = str(err)
    assert msg.strip(), "error message is empty"
    assert "\n" not in msg and "\r" not in msg, f"error message is not a single line: {msg!r}"
    prefix = f"{path}: {field}: " if field else f"{path}: "
    assert msg.startswith(prefix), f"expected the message to start with {prefix!r}, got {msg!r}"
    assert err.field == field, f"ScenarioError.field is {err.field!r}, expected {field!r} (message {msg!r})"
    for fragment in fragments:
        assert fragment in msg, f"expected {fragment!r} in the error message, got {msg!r}"


# --------------------------------------------------------------------------- fixtures / happy path


def test_minimal_scenario_is_valid(tmp_scenario):
    sc = load_scenario(tmp_scenario(minimal_scenario_dict()))
    enabled = list(sc.stages.enabled())
    assert enabled == ["iop"], f"minimal scenario should enable only iop, got {enabled}"


def test_validate_raw_names_the_given_source(minimal_scenario):
    minimal_scenario["horizon_days"] = "soon"
    with pytest.raises(ScenarioError) as excinfo:
        validate_raw(minimal_scenario, "some/source.yaml")
    assert_one_line_error(excinfo.value, "some/source.yaml", "horizon_days", "valid integer")


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key_lists_allowed_keys(tmp_scenario, minimal_scenario):
    minimal_scenario["horizon_day"] = 100
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, None, "unknown field 'horizon_day'", TOP_LEVEL_ALLOWED, *CORE_TOP_LEVEL)


def test_unknown_nested_stage_key_lists_allowed_keys(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["los_day"] = 3
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop", "unknown field 'los_day'", STAGE_ALLOWED, *CORE_STAGE)


@pytest.mark.parametrize(
    ("parent", "model", "core"),
    [
        ("referrals", sc_mod.Referrals, ("referrals_per_week", "sources")),
        ("referrals.sources.community", sc_mod.ReferralSource, ("placement", "share")),
        ("stages", sc_mod.Stages, ("aftercare", "iop", "php", "residential")),
        ("stages.iop.los_days", dist_mod.Fixed, ("dist", "value")),
        ("costs", sc_mod.Costs, ("currency", "fixed_overhead_per_day")),
        ("start_state", sc_mod.StartState, ("intake_waitlist", "stages")),
    ],
    ids=["referrals", "source", "stages", "distribution", "costs", "start_state"],
)
def test_unknown_nested_key_names_parent_and_allowed_keys(tmp_scenario, parent, model, core):
    data = minimal_scenario_dict()
    if parent == "stages.iop.los_days":
        data["stages"]["iop"]["los_days"] = fixed(5)
    set_in(data, f"{parent}.bogus_key", 1)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, parent, "unknown field 'bogus_key'", allowed_keys(model), *core)


# --------------------------------------------------------------------------- wrong types


@pytest.mark.parametrize(
    ("dotted", "value", "expected"),
    [
        ("horizon_days", "soon", "valid integer"),
        ("horizon_days", 10.5, "valid integer"),
        ("name", 5, "valid string"),
        ("referrals", [1, 2], "valid dictionary"),
        ("referrals.weekday_profile", "flat", "valid list"),
        ("stages.iop.capacity", "many", "valid integer"),
        ("stages.iop.los_days", "fixed", "valid dictionary"),
        ("stages.iop.los_days.mean", "long", "valid number"),
        ("stages.iop.exits", [], "valid dictionary"),
    ],
)
def test_wrong_type_is_rejected(tmp_scenario, dotted, value, expected):
    data = set_in(minimal_scenario_dict(), dotted, value)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, dotted, expected, f"(got {value!r})")


@pytest.mark.parametrize(("dotted", "value"), [("horizon_days", True), ("referrals.sources.community.share", True)])
def test_boolean_is_not_accepted_as_a_number(tmp_scenario, dotted, value):
    data = set_in(minimal_scenario_dict(), dotted, value)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, dotted)


# --------------------------------------------------------------------------- negative rates / durations


GE0, GT0 = "greater than or equal to 0", "greater than 0"
LOS = "stages.iop.los_days"


@pytest.mark.parametrize(
    ("dotted", "value", "field", "expected"),
    [
        ("referrals.referrals_per_week", -1, "referrals.referrals_per_week", "greater than or equal to 0"),
        ("referrals.month_multipliers", [1] * 3 + [-1] + [1] * 8, "referrals.month_multipliers.3", GE0),
        (LOS, {"dist": "fixed", "value": -3}, f"{LOS}.value", GE0),
        (LOS, {"dist": "exponential", "mean": -3}, f"{LOS}.mean", GT0),
        (LOS, {"dist": "gamma", "mean": 3, "sd": -1}, f"{LOS}.sd", GT0),
        (LOS, {"dist": "weibull", "shape": 2, "scale": 0}, f"{LOS}.scale", GT0),
        (LOS, {"dist": "loglogistic", "alpha": -1, "beta": 2}, f"{LOS}.alpha", GT0),
        (LOS, {"dist": "lognormal", "median": -5, "sigma": 0.5}, f"{LOS}.median", GT0),
        (LOS, {"dist": "uniform", "low": -1, "high": 2}, f"{LOS}.low", GE0),
        (LOS, {"dist": "empirical", "values": [1, -2]}, f"{LOS}.values.1", GE0),
        ("stages.iop.patience_days", {"dist": "exponential", "mean": 0}, "stages.iop.patience_days.mean", GT0),
        ("stages.iop.cost_per_patient_day", -5, "stages.iop.cost_per_patient_day", "greater than or equal to 0"),
        ("stages.iop.capacity", 0, "stages.iop.capacity", "greater than or equal to 1"),
        ("costs.fixed_overhead_per_day", -5, "costs.fixed_overhead_per_day", "greater than or equal to 0"),
        ("horizon_days", 0, "horizon_days", "greater than or equal to 1"),
    ],
)
def test_negative_rate_or_duration_is_rejected(tmp_scenario, dotted, value, field, expected):
    data = set_in(minimal_scenario_dict(), dotted, value)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, field, expected)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_rate_is_rejected(tmp_scenario, value):
    data = set_in(minimal_scenario_dict(), "referrals.referrals_per_week", value)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, "referrals.referrals_per_week", "finite number")


# --------------------------------------------------------------------------- probabilities in [0, 1]


@pytest.mark.parametrize(
    ("dotted", "value", "field", "expected"),
    [
        ("referrals.sources.community.share", 1.5, "referrals.sources.community.share", "less than or equal to 1"),
        ("referrals.sources.community.share", -0.1, "referrals.sources.community.share", "greater than or equal to 0"),
        ("referrals.sources.community.placement", {"iop": 1.2}, "referrals.sources.community.placement.iop",
         "less than or equal to 1"),
        ("stages.iop.exits", {"other": {"probability": 1.5, "days": fixed()}}, "stages.iop.exits.other.probability",
         "less than or equal to 1"),
        ("stages.iop.exits", {"dropped_out": {"probability": -0.1, "days": fixed()}},
         "stages.iop.exits.dropped_out.probability", "greater than or equal to 0"),
        ("stages.iop.step_down", {"discharge": 1.5}, "stages.iop.step_down.discharge", "less than or equal to 1"),
        ("relapse", {"days": fixed(30), "return_probability": 2}, "relapse.return_probability",
         "less than or equal to 1"),
    ],
)
def test_probability_outside_unit_interval_is_rejected(tmp_scenario, dotted, value, field, expected):
    data = set_in(minimal_scenario_dict(), dotted, value)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, field, expected)


# --------------------------------------------------------------------------- branch probabilities sum to 1


def test_source_shares_must_sum_to_one(tmp_scenario, minimal_scenario):
    minimal_scenario["referrals"]["sources"]["court"] = {"share": 0.5, "placement": {"iop": 1.0}}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "referrals.sources", "source shares must sum to 1", "(got 1.5)")


def test_placement_probabilities_must_sum_to_one(tmp_scenario, minimal_scenario):
    minimal_scenario["referrals"]["sources"]["community"]["placement"] = {"iop": 0.5, "outpatient": 0.3}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "referrals.sources.community.placement", "placement probabilities must sum to 1",
                          "(got 0.8)")


def test_step_down_probabilities_must_sum_to_one(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["step_down"] = {"discharge": 0.5}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.step_down", "step_down probabilities must sum to 1", "(got 0.5)")


def test_branch_sums_tolerate_rounding(tmp_scenario, minimal_scenario):
    minimal_scenario["referrals"]["sources"]["community"]["placement"] = {"iop": 0.1 + 0.2, "outpatient": 0.7}
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sc.referrals.sources["community"].placement["iop"] == pytest.approx(0.3), "0.1+0.2+0.7 should count as 1"


def test_exit_probabilities_summing_above_one_are_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["exits"] = {
        "dropped_out": {"probability": 0.6, "days": fixed()},
        "other": {"probability": 0.6, "days": fixed()},
    }
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.exits", "exit probabilities must sum to at most 1", "(got 1.2)")


def test_exit_probabilities_summing_to_exactly_one_are_allowed(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["exits"] = {
        "dropped_out": {"probability": 0.5, "days": fixed()},
        "other": {"probability": 0.5, "days": fixed()},
    }
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sum(e.probability for e in sc.stages.iop.exits.values()) == pytest.approx(1.0), "exits summing to 1 rejected"


def test_unknown_exit_name_lists_allowed_names(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["exits"] = {"quit": {"probability": 0.1, "days": fixed()}}
    _, err = load_error(tmp_scenario, minimal_scenario)
    assert "allowed: 'dropped_out', 'transferred', 'terminated', 'other' or 'stepped_up'" in str(err), f"got {err}"


# --------------------------------------------------------------------------- distributions


def test_unknown_distribution_family_lists_allowed_families(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["los_days"] = {"dist": "poisson", "mean": 3}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.los_days", "unknown distribution 'poisson'",
                          "allowed: " + ", ".join(FAMILIES))


def test_distribution_without_dist_lists_allowed_families(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["los_days"] = {"mean": 3}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.los_days", "needs 'dist:'", "allowed: " + ", ".join(FAMILIES))


@pytest.mark.parametrize(
    "params",
    [
        {"mean": 30, "sigma": 0.5},
        {"median": 30, "sd": 5},
        {"mean": 30},
        {"sigma": 0.5},
        {"mean": 30, "sd": 5, "median": 30, "sigma": 0.5},
        {"mean": 30, "sd": 5, "median": 30},
        {},
    ],
    ids=lambda p: "+".join(p) or "none",
)
def test_lognormal_with_inconsistent_parameters_is_rejected(tmp_scenario, params):
    data = set_in(minimal_scenario_dict(), "stages.iop.los_days", {"dist": "lognormal", **params})
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, "stages.iop.los_days", "give either mean and sd, or median and sigma")


@pytest.mark.parametrize(
    "params", [{"mean": 30, "sd": 5}, {"median": 30, "sigma": 0.5}], ids=["mean+sd", "median+sigma"]
)
def test_lognormal_with_one_consistent_parameter_set_is_accepted(tmp_scenario, params):
    data = set_in(minimal_scenario_dict(), "stages.iop.los_days", {"dist": "lognormal", **params})
    sc = load_scenario(tmp_scenario(data))
    assert sc.stages.iop.los_days.dist == "lognormal", f"expected a lognormal, got {sc.stages.iop.los_days!r}"


@pytest.mark.parametrize(
    ("dist", "expected"),
    [
        ({"dist": "triangular", "low": 3, "mode": 1, "high": 5}, "needs low <= mode <= high"),
        ({"dist": "uniform", "low": 5, "high": 5}, "needs low < high"),
        ({"dist": "empirical", "values": [1, 2], "weights": [1]}, "one entry per value"),
        ({"dist": "empirical", "values": [1, 2], "weights": [0, 0]}, "must not all be zero"),
    ],
    ids=["triangular", "uniform", "empirical-length", "empirical-zero"],
)
def test_distribution_parameter_constraints(tmp_scenario, dist, expected):
    data = set_in(minimal_scenario_dict(), "stages.iop.los_days", dist)
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, "stages.iop.los_days", expected)


# --------------------------------------------------------------------------- step-down / overflow / placement


def test_routing_to_a_higher_level_is_a_step_up(tmp_scenario, minimal_scenario):
    """Completed stays may route up (aftercare -> IOP) and cycle; the old lower-only rule was a defect."""
    minimal_scenario["stages"]["iop"]["step_down"] = {"aftercare": 1.0}
    minimal_scenario["stages"]["aftercare"] = {"los_days": fixed(30), "step_down": {"iop": 0.5, "discharge": 0.5}}
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sc.stages.aftercare.step_down == {"iop": 0.5, "discharge": 0.5}


def test_routing_to_the_same_stage_is_allowed(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["step_down"] = {"iop": 0.2, "discharge": 0.8}
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sc.stages.iop.step_down["iop"] == 0.2


def test_routing_error_lists_enabled_stages(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["php"] = {"los_days": fixed(10), "step_down": {"residential": 1.0}}
    minimal_scenario["stages"]["aftercare"] = {"los_days": fixed(10)}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.php.step_down.residential", "stage 'residential' is switched off",
                          "allowed: php, iop, aftercare, discharge")


def test_step_down_to_a_switched_off_stage_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["step_down"] = {"aftercare": 0.6, "discharge": 0.4}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.step_down.aftercare", "stage 'aftercare' is switched off",
                          "allowed: iop, discharge")


def test_exit_to_a_switched_off_stage_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["exits"] = {"stepped_up": {"probability": 0.1, "days": fixed(3), "to": "php"}}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.exits.stepped_up.to", "stage 'php' is switched off", "allowed: iop")


def test_exit_to_an_unknown_stage_lists_stages(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["exits"] = {"stepped_up": {"probability": 0.1, "days": fixed(3), "to": "detox"}}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.exits.stepped_up.to", "'residential', 'php', 'iop' or 'aftercare'")


def test_zero_probability_step_down_to_a_switched_off_stage_is_allowed(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["step_down"] = {"aftercare": 0.0, "discharge": 1.0}
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sc.stages.iop.step_down == {"aftercare": 0.0, "discharge": 1.0}, f"got {sc.stages.iop.step_down}"


def test_step_down_to_an_unknown_target_lists_allowed_targets(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["step_down"] = {"outer_space": 1.0}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.step_down", "unknown step-down target 'outer_space'",
                          "allowed: aftercare, discharge, iop, php, residential")


def test_overflow_to_a_higher_level_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["php"] = {"los_days": fixed(10), "step_down": {"iop": 1.0}}
    minimal_scenario["stages"]["iop"]["overflow_to"] = "php"
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.overflow_to", "must be an enabled lower level", "allowed: none")


def test_overflow_to_itself_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["php"] = {"los_days": fixed(10), "overflow_to": "php"}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.php.overflow_to", "must be an enabled lower level", "allowed: iop")


def test_overflow_to_a_switched_off_lower_stage_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["overflow_to"] = "aftercare"
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.overflow_to", "must be an enabled lower level", "allowed: none")


def test_overflow_to_an_unknown_stage_lists_stage_names(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["iop"]["overflow_to"] = "detox"
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "stages.iop.overflow_to", "got 'detox'",
                          "allowed: 'residential', 'php', 'iop' or 'aftercare'")


def test_overflow_to_an_enabled_lower_stage_is_accepted(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["php"] = {"los_days": fixed(10), "overflow_to": "iop", "step_down": {"iop": 1.0}}
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sc.stages.php.overflow_to == "iop", f"got {sc.stages.php.overflow_to!r}"


@pytest.mark.parametrize("warmup", [100, 150])
def test_warmup_not_below_horizon_is_rejected(tmp_scenario, warmup):
    data = minimal_scenario_dict()
    data["horizon_days"], data["warmup_days"] = 100, warmup
    path, err = load_error(tmp_scenario, data)
    assert_one_line_error(err, path, "warmup_days", "must be less than horizon_days (100)")


def test_warmup_just_below_horizon_is_accepted(tmp_scenario, minimal_scenario):
    minimal_scenario["horizon_days"], minimal_scenario["warmup_days"] = 100, 99
    assert load_scenario(tmp_scenario(minimal_scenario)).warmup_days == 99, "warm-up 99 < horizon 100 rejected"


def test_placement_to_a_switched_off_stage_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["referrals"]["sources"]["community"]["placement"] = {"iop": 0.5, "php": 0.5}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "referrals.sources.community.placement.php", "stage 'php' is switched off",
                          "enabled stages: iop")


def test_placement_with_a_null_stage_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["stages"]["php"] = None
    minimal_scenario["referrals"]["sources"]["community"]["placement"] = {"php": 1.0}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "referrals.sources.community.placement.php", "switched off")


def test_unknown_placement_name_names_a_clean_dotted_path(tmp_scenario, minimal_scenario):
    minimal_scenario["referrals"]["sources"]["community"]["placement"] = {"detox": 1.0}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "referrals.sources.community.placement.detox", "got 'detox'",
                          "'residential', 'php', 'iop', 'outpatient' or 'not_eligible'")


def test_source_named_like_a_distribution_family_keeps_its_path(tmp_scenario, minimal_scenario):
    minimal_scenario["referrals"]["sources"] = {"gamma": {"share": 1.5, "placement": {"iop": 1.0}}}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "referrals.sources.gamma.share", "less than or equal to 1")


def test_start_state_for_a_switched_off_stage_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["start_state"] = {"stages": {"php": {"census": 3}}}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "start_state.stages.php", "switched off", "enabled: iop")


def test_intake_waitlist_without_intake_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["start_state"] = {"intake_waitlist": 4}
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "start_state.intake_waitlist", "must be 0")


def test_shift_ending_before_it_starts_runs_overnight(tmp_scenario, minimal_scenario):
    """22:00-06:00 is an overnight shift (it used to be refused: shifts could not cross midnight)."""
    minimal_scenario["intake"] = {
        "clinicians": 1,
        "roster": {"shifts": [{"days": ["mon"], "start_hour": 22, "end_hour": 6}]},
        "assessment_hours": fixed(1),
    }
    sc = load_scenario(tmp_scenario(minimal_scenario))
    assert sc.intake.roster.shifts[0].end_hour == 6


def test_shift_of_zero_length_is_rejected(tmp_scenario, minimal_scenario):
    minimal_scenario["intake"] = {
        "clinicians": 1,
        "roster": {"shifts": [{"days": ["mon"], "start_hour": 9, "end_hour": 9}]},
        "assessment_hours": fixed(1),
    }
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "intake.roster.shifts.0", "end_hour equals start_hour",
                          "start_hour: 0, end_hour: 24")


def test_unknown_weekday_lists_allowed_days(tmp_scenario, minimal_scenario):
    minimal_scenario["intake"] = {
        "clinicians": 1,
        "roster": {"shifts": [{"days": ["monday"], "start_hour": 9, "end_hour": 17}]},
        "assessment_hours": fixed(1),
    }
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "intake.roster.shifts.0.days.0", "got 'monday'",
                          "'mon', 'tue', 'wed', 'thu', 'fri', 'sat' or 'sun'")


def test_missing_required_field_is_named(tmp_scenario, minimal_scenario):
    del minimal_scenario["horizon_days"]
    path, err = load_error(tmp_scenario, minimal_scenario)
    assert_one_line_error(err, path, "horizon_days", "Field required")


def test_several_problems_are_summarised_on_one_line(tmp_scenario):
    path, err = load_error(tmp_scenario, "")  # empty file: four required fields missing
    assert_one_line_error(err, path, "name", "Field required", "(and 3 more problems)")


# --------------------------------------------------------------------------- files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(path)
    assert_one_line_error(excinfo.value, path, None, "file not found")


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(tmp_path)
    assert_one_line_error(excinfo.value, tmp_path, None, "is a directory")


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("name: x\nhorizon_days: 100\nreferrals:\n  referrals_per_week: 5\n   sources: 3\n", "line 5, column 11"),
        ("name: x\nstages: {iop: [1, 2}\n", "line 2, column 20"),
        ("name: x\n\tseed: 1\n", "line 2, column 1"),
    ],
    ids=["bad-indent", "unclosed-bracket", "tab"],
)
def test_malformed_yaml_reports_the_line(tmp_scenario, text, where):
    path, err = load_error(tmp_scenario, text)
    assert_one_line_error(err, path, None, "malformed YAML", where)


def test_unsafe_yaml_tag_is_rejected_not_executed(tmp_scenario):
    path, err = load_error(tmp_scenario, "name: !!python/object/apply:os.getcwd []\n")
    assert_one_line_error(err, path, None, "malformed YAML", "line 1")


def test_non_utf8_file_is_rejected(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(path)
    assert_one_line_error(excinfo.value, path, None, "not a UTF-8 text file")


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just words\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_scenario, text, kind):
    path, err = load_error(tmp_scenario, text)
    assert_one_line_error(err, path, None, "top level must be a mapping", f"(got {kind})")


# --------------------------------------------------------------------------- extends


def test_circular_extends_between_two_files(tmp_scenario):
    a = tmp_scenario({"extends": "b.yaml", "name": "a"}, name="a.yaml")
    tmp_scenario({"extends": "a.yaml", "name": "b"}, name="b.yaml")
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(a)
    assert_one_line_error(excinfo.value, a, "extends", "circular extends: a.yaml -> b.yaml -> a.yaml")


def test_self_extend_is_circular(tmp_scenario):
    path = tmp_scenario({"extends": "self.yaml", "name": "s"}, name="self.yaml")
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(path)
    assert_one_line_error(excinfo.value, path, "extends", "circular extends: self.yaml -> self.yaml")


def test_extends_of_a_missing_file(tmp_scenario):
    path = tmp_scenario({"extends": "missing_parent.yaml", "name": "child"}, name="child.yaml")
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(path)
    assert_one_line_error(excinfo.value, path, "extends", "file not found", "missing_parent.yaml")


def test_extends_must_be_a_path(tmp_scenario):
    path, err = load_error(tmp_scenario, {"extends": 3, "name": "child"})
    assert_one_line_error(err, path, "extends", "must be a path")


def test_extends_is_relative_to_the_extending_file(tmp_scenario, tmp_path, monkeypatch):
    tmp_scenario(minimal_scenario_dict(), name="parent.yaml", folder="sub")
    child = tmp_scenario({"extends": "parent.yaml", "name": "child"}, name="child.yaml", folder="sub")
    monkeypatch.chdir(tmp_path)  # not the folder holding the files
    sc = load_scenario(Path("sub") / "child.yaml")
    assert (sc.name, sc.horizon_days) == ("child", 100), f"child of {child} resolved to {sc.name!r}/{sc.horizon_days}"


def test_error_in_extends_chain_names_the_broken_file(tmp_scenario):
    parent = tmp_scenario("name: [unclosed\n", name="parent.yaml")
    child = tmp_scenario({"extends": "parent.yaml"}, name="child.yaml")
    with pytest.raises(ScenarioError) as excinfo:
        load_scenario(child)
    assert_one_line_error(excinfo.value, parent, None, "malformed YAML")


#: The one nested value the variant changes: a field every baseline has, whatever else evolves.
VARIANT_RATE_DELTA = 1.5


@pytest.fixture
def variant(tmp_scenario):
    """A variant of the shipped baseline that changes one nested value (referrals.referrals_per_week)."""
    rate = load_scenario(BASELINE).referrals.referrals_per_week + VARIANT_RATE_DELTA
    path = tmp_scenario({"extends": str(BASELINE), "referrals": {"referrals_per_week": rate}}, name="variant.yaml")
    return path, rate


def test_variant_overrides_the_nested_value(variant):
    path, rate = variant
    sc = load_scenario(path)
    assert sc.referrals.referrals_per_week == rate, f"variant rate not applied: {sc.referrals.referrals_per_week}"


def test_variant_keeps_everything_else_from_the_baseline(variant):
    path, rate = variant
    base = load_scenario(BASELINE).model_dump()
    var = load_scenario(path).model_dump()
    base["referrals"]["referrals_per_week"] = rate
    differing = sorted(k for k in base if base[k] != var.get(k))
    assert var == base, f"variant differs from baseline beyond referrals.referrals_per_week in: {differing}"


def test_extends_merges_mappings_and_replaces_lists(tmp_scenario):
    tmp_scenario(minimal_scenario_dict(), name="parent.yaml")
    child = tmp_scenario(
        {"extends": "parent.yaml", "referrals": {"weekday_profile": [2, 2, 2, 2, 2, 1, 1]}}, name="child.yaml"
    )
    sc = load_scenario(child)
    assert sc.referrals.weekday_profile == [2, 2, 2, 2, 2, 1, 1], "a list in the child should replace the parent's"
    assert sc.referrals.referrals_per_week == 7.0, "sibling keys of a merged mapping should be kept"


# --------------------------------------------------------------------------- --set overrides


def test_set_overrides_a_nested_value(tmp_scenario):
    sc = load_scenario(tmp_scenario(), ["stages.iop.capacity=3"])
    assert sc.stages.iop.capacity == 3, f"--set stages.iop.capacity=3 gave {sc.stages.iop.capacity}"


def test_set_creates_missing_nested_mappings(tmp_scenario):
    sc = load_scenario(
        tmp_scenario(),
        ["stages.iop.patience_days.dist=exponential", "stages.iop.patience_days.mean=12.5"],
    )
    assert sc.stages.iop.patience_days is not None and sc.stages.iop.patience_days.mean == 12.5, (
        f"--set should create stages.iop.patience_days, got {sc.stages.iop.patience_days!r}"
    )


def test_set_creates_a_whole_stage(tmp_scenario):
    sc = load_scenario(
        tmp_scenario(),
        ["stages.aftercare.los_days={dist: fixed, value: 30}", "stages.iop.step_down={aftercare: 1.0}"],
    )
    assert list(sc.stages.enabled()) == ["iop", "aftercare"], f"got stages {list(sc.stages.enabled())}"


def test_set_parses_numbers_as_yaml(tmp_scenario):
    sc = load_scenario(tmp_scenario(), ["referrals.referrals_per_week=25.5", "horizon_days=200"])
    assert (sc.referrals.referrals_per_week, sc.horizon_days) == (25.5, 200), "numbers not parsed from --set"


def test_set_parses_lists_as_yaml(tmp_scenario):
    sc = load_scenario(tmp_scenario(), ["referrals.weekday_profile=[1, 1, 1, 1, 1, 0.5, 0.5]"])
    assert sc.referrals.weekday_profile == [1, 1, 1, 1, 1, 0.5, 0.5], f"got {sc.referrals.weekday_profile}"


def test_set_does_not_modify_the_file(tmp_scenario):
    path = tmp_scenario()
    before = path.read_bytes()
    load_scenario(path, ["horizon_days=300"])
    assert path.read_bytes() == before, "--set must not write to the scenario file"


def test_last_set_wins(tmp_scenario):
    sc = load_scenario(tmp_scenario(), ["horizon_days=200", "horizon_days=300"])
    assert sc.horizon_days == 300, f"the later --set should win, got {sc.horizon_days}"


def test_set_applies_after_extends(tmp_scenario):
    tmp_scenario(minimal_scenario_dict(), name="parent.yaml")
    child = tmp_scenario({"extends": "parent.yaml", "horizon_days": 150}, name="child.yaml")
    sc = load_scenario(child, ["horizon_days=175"])
    assert sc.horizon_days == 175, f"--set should override the extends chain, got {sc.horizon_days}"


@pytest.mark.parametrize("item", ["horizon_days", "=3", "a..b=3", "  =1"])
def test_malformed_set_is_rejected(tmp_scenario, item):
    path, err = load_error(tmp_scenario, minimal_scenario_dict(), [item])
    assert_one_line_error(err, path, f"--set {item}", "expected dotted.path=value")


def test_set_to_an_unknown_field_gives_the_unknown_field_error(tmp_scenario):
    path, err = load_error(tmp_scenario, minimal_scenario_dict(), ["stages.iop.los_dayz=3"])
    assert_one_line_error(err, path, "stages.iop", "unknown field 'los_dayz'", STAGE_ALLOWED, *CORE_STAGE)


def test_set_to_an_unknown_top_level_field(tmp_scenario):
    path, err = load_error(tmp_scenario, minimal_scenario_dict(), ["horizon=3"])
    assert_one_line_error(err, path, None, "unknown field 'horizon'", TOP_LEVEL_ALLOWED, *CORE_TOP_LEVEL)


def test_set_inside_a_scalar_is_rejected(tmp_scenario):
    path, err = load_error(tmp_scenario, minimal_scenario_dict(), ["name.first=3"])
    assert_one_line_error(err, path, "name", "is not a mapping")


def test_set_with_invalid_yaml_value(tmp_scenario):
    path, err = load_error(tmp_scenario, minimal_scenario_dict(), ["horizon_days=[1,"])
    assert_one_line_error(err, path, "horizon_days", "is not valid YAML")


def test_set_value_is_validated(tmp_scenario):
    path, err = load_error(tmp_scenario, minimal_scenario_dict(), ["stages.iop.capacity=-2"])
    assert_one_line_error(err, path, "stages.iop.capacity", "greater than or equal to 1")


# --------------------------------------------------------------------------- the model


def test_scenario_is_frozen_at_top_level(tmp_scenario):
    sc = load_scenario(tmp_scenario())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        sc.horizon_days = 5


def test_scenario_is_frozen_when_nested(tmp_scenario):
    sc = load_scenario(tmp_scenario())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        sc.stages.iop.capacity = 99


def test_distribution_is_frozen(tmp_scenario):
    sc = load_scenario(tmp_scenario())
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        sc.stages.iop.los_days.mean_ = 1.0


@pytest.mark.parametrize("source", ["minimal", "baseline"])
def test_scenario_to_yaml_round_trips(tmp_scenario, source):
    original = load_scenario(tmp_scenario() if source == "minimal" else BASELINE)
    dumped = tmp_scenario(scenario_to_yaml(original), name="dumped.yaml")
    again = load_scenario(dumped)
    assert again == original, f"load -> dump -> load changed the {source} scenario"


def test_scenario_to_yaml_is_a_plain_mapping():
    data = yaml.safe_load(scenario_to_yaml(load_scenario(BASELINE)))
    assert isinstance(data, dict) and "extends" not in data, "dumped scenario should be a resolved mapping"


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_scenarios_validate(path):
    sc = load_scenario(path)
    assert isinstance(sc, Scenario) and sc.stages.enabled(), f"{path.name} validated to an empty scenario"


def test_baseline_is_shipped():
    assert BASELINE in SHIPPED, f"expected {BASELINE} among the shipped scenarios {SHIPPED}"


def test_set_values_are_parsed_as_yaml_before_validation():
    from iopsim.schema.scenario import apply_overrides

    out = apply_overrides({"a": {"x": 1}}, ["a.b=3", "c=[1, 2.5]", "d=some text", "e=", "a.f.g=true"], "src.yaml")
    expected = {"a": {"x": 1, "b": 3, "f": {"g": True}}, "c": [1, 2.5], "d": "some text", "e": None}
    assert out == expected, f"apply_overrides gave {out}"
