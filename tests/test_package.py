"""The package: its layers, what it installs, and the public API from scripts and notebooks.

* Layering: a module imports only its own layer or lower ones, and the module
  import graph has no cycles (imports needed only by type checkers excepted).
* The wheel installs ``iopsim`` and nothing else at the top level.
* ``iopsim.run`` / ``compare`` / ``sweep`` give what the CLI gives, and ``jobs=2``
  works from an unguarded script and from code with no script file (a notebook).
"""

from __future__ import annotations

import ast
import copy
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

import iopsim
from iopsim import cli
from iopsim.errors import IopsimError, ScenarioError

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = REPO_ROOT / "sim"
BASELINE = REPO_ROOT / "scenarios" / "baseline.yaml"

#: The layers, lowest first.  A module may import its own layer and those before it.
LAYERS = {
    "errors": 0, "files": 0, "lazy": 0,
    "schema": 1,
    "engine": 2,
    "analysis": 3,
    "experiments": 4,
    "outputs": 5,
    "api": 6,
    "cli": 7, "app": 7,
    "__init__": 8,
}
#: What the web app (``iopsim.app``) may import: the public API, and the output helpers that read
#: run folders, as the CLI's tables do; never the model, the analysis or the experiments directly.
APP_IMPORTS = ("iopsim", "iopsim.api", "iopsim.errors", "iopsim.files", "iopsim.outputs", "iopsim.app")


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = ["iopsim", *rel.parts]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(module: str) -> int:
    parts = module.split(".")
    return LAYERS["__init__"] if len(parts) == 1 else LAYERS[parts[1]]


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported iopsim module, only under TYPE_CHECKING) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(n) for stmt in node.body for n in ast.walk(stmt))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "iopsim":
            if node.module == "iopsim":  # from iopsim import api / cli: submodules
                out += [(f"iopsim.{a.name}", id(node) in typing_only) for a in node.names]
            else:
                out.append((node.module, id(node) in typing_only))
        elif isinstance(node, ast.Import):
            out += [(a.name, id(node) in typing_only) for a in node.names if a.name.split(".")[0] == "iopsim"]
    return out


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_belongs_to_a_layer():
    unknown = [m for m in _graph() if len(m.split(".")) > 1 and m.split(".")[1] not in LAYERS]
    assert not unknown, f"modules outside the declared layers: {unknown}"


def test_no_module_imports_a_higher_layer():
    bad = [(m, t) for m, imps in _graph().items() for t, _ in imps if _layer(t) > _layer(m)]
    assert not bad, "lower layers import higher ones: " + "; ".join(f"{m} -> {t}" for m, t in bad)


def test_module_imports_have_no_cycles():
    graph = _graph()
    modules = set(graph)

    def target(name: str) -> str:  # `from iopsim.x import y` where y is a module
        return name if name in modules else name.rsplit(".", 1)[0] if name.rsplit(".", 1)[0] in modules else name

    edges = {m: sorted({target(t) for t, typing_only in imps if not typing_only} & modules - {m})
             for m, imps in graph.items()}
    edges["iopsim"] = []  # the package root loads its exports lazily
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in edges.get(m, []):
            if state.get(n) == 1:
                cycle = stack[stack.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m)


def test_the_app_uses_only_the_public_api_and_output_helpers():
    graph = _graph()
    app_modules = [m for m in graph if m.startswith("iopsim.app")]
    assert {"iopsim.app", "iopsim.app.logic", "iopsim.app.main"} <= set(app_modules)
    bad = [(m, t) for m in app_modules for t, _ in graph[m] if not any(t == a or t.startswith(a + ".") for a in APP_IMPORTS)]
    assert not bad, "the app imports past the public API: " + "; ".join(f"{m} -> {t}" for m, t in bad)
    assert not [m for m, imps in graph.items() if not m.startswith("iopsim.app") for t, _ in imps
                if t.startswith("iopsim.app")], "only the app itself imports iopsim.app (the CLI starts it as a script)"


def test_layering_check_catches_an_upward_import(tmp_path):
    """The checker itself: an engine module importing the outputs layer is reported."""
    p = PACKAGE / "engine" / "model.py"
    imps = _imports(p) + [("iopsim.outputs.report", False)]
    assert any(_layer(t) > _layer(_module_name(p)) for t, _ in imps)


def test_the_wheel_installs_iopsim_and_nothing_else_at_top_level(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(REPO_ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"building the wheel failed: {proc.stderr[-2000:]}"
    wheel = next(tmp_path.glob("iopsim-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert {t for t in top if not t.endswith(".dist-info")} == {"iopsim"}, f"top-level entries of the wheel: {sorted(top)}"
    assert "iopsim/outputs/templates/report.html.j2" in names, "the report template is not packaged"
    assert "iopsim/app/main.py" in names, "the web app's Streamlit script is not packaged (iopsim app serves it)"
    assert not any(n.startswith(("sim/", "cli.py")) for n in names), "sim/ or cli.py installed at top level"
    entry = next(n for n in names if n.endswith("entry_points.txt"))
    assert "iopsim = iopsim.cli:entry" in zipfile.ZipFile(wheel).read(entry).decode(), "console script entry point"


def test_import_iopsim_is_light():
    """`import iopsim` loads no simulation stack: exports arrive on first use."""
    code = ("import sys, iopsim; print(sorted(m for m in ('pandas', 'simpy', 'scipy', 'matplotlib', 'streamlit') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]", f"import iopsim loaded {out.strip()}"


def test_the_command_line_loads_streamlit_only_for_the_app():
    code = "import sys, iopsim.cli, iopsim.api; print('streamlit' in sys.modules, 'ruamel' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.split() == ["False", "False"], f"import iopsim.cli loaded the app's libraries: {out}"


def _loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    probe = f"{code}; import sys; print(sorted(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True,
                         cwd=str(REPO_ROOT)).stdout
    return ast.literal_eval(out.strip().splitlines()[-1])  # the list of names the probe printed


def test_replications_and_the_command_line_start_without_pandas():
    """A replication's records and KPIs are numpy arrays: the workers, `validate` and every error start
    without pandas and Arrow; the first table built imports pandas (iopsim.lazy), and results are DataFrames."""
    heavy = ("pandas", "pyarrow", "matplotlib", "scipy.stats")
    assert _loaded("import iopsim.experiments.replications", heavy) == []
    assert _loaded("import iopsim.cli, iopsim.api", heavy) == []
    code = ("import iopsim; from iopsim.experiments.replications import run_replication; "
            "r = run_replication(iopsim.load_scenario('scenarios/baseline.yaml', {'horizon_days': 30}), 0); "
            "assert r.kpis['referrals'] > 0; import sys; assert 'pandas' not in sys.modules; "
            "assert type(r.records['visits']).__name__ == 'DataFrame'")
    assert _loaded(code, ("pandas",)) == ["pandas"]


def test_public_api_names():
    for name in ("load_scenario", "run", "compare", "sweep", "sensitivity", "report", "calibrate", "scenario_schema",
                 "Results", "Comparison", "Scenario", "IopsimError", "ScenarioError"):
        assert name in iopsim.__all__ and getattr(iopsim, name) is not None, f"iopsim.{name} is not exported"
    with pytest.raises(AttributeError):
        iopsim.not_a_name  # noqa: B018


# --------------------------------------------------------------------------- the API


def _short(**over):
    base = {"horizon_days": 120, "warmup_days": 0}
    base.update(over)
    return iopsim.load_scenario(BASELINE, overrides=base)


def test_load_scenario_takes_a_mapping_or_set_strings():
    a = iopsim.load_scenario(BASELINE, overrides={"horizon_days": 100, "staff.roles.counselor.teams.0.headcount": 3})
    b = iopsim.load_scenario(BASELINE, overrides=["horizon_days=100", "staff.roles.counselor.teams.0.headcount=3"])
    assert a == b
    assert a.horizon_days == 100 and a.staff.roles["counselor"].teams[0].headcount == 3


def test_list_index_out_of_range_names_the_index():
    with pytest.raises(ScenarioError) as exc:
        iopsim.load_scenario(BASELINE, overrides=["staff.roles.counselor.teams.7.headcount=2"])
    msg = str(exc.value)
    assert "\n" not in msg and "staff.roles.counselor.teams.7" in msg and "indices 0-" in msg, msg


def test_run_results_match_the_replication_functions_and_save_the_cli_folder(tmp_path):
    from iopsim.experiments.replications import run_replication

    sc = _short()
    res = iopsim.run(sc, replications=2, seed=5)
    assert res.replications == 2 and res.seed == 5
    want = run_replication(sc, 1, 5).kpis
    got = res.per_replication.set_index("replication").loc[1]
    assert all(got[k] == v or (v != v and got[k] != got[k]) for k, v in want.items()), "API KPIs differ from a replication"
    visits = res.records("visits")
    assert set(visits["replication"]) == {0, 1} and len(visits) > 0
    row = res.kpi("referrals")
    assert row["ci_low"] <= row["mean"] <= row["ci_high"]
    with pytest.raises(IopsimError, match="unknown record table"):
        res.records("nope")
    folder = res.save(tmp_path / "api-run", report=False)
    assert folder == res.folder and (folder / "manifest.json").exists()
    saved = pd.read_csv(folder / "summary.csv").set_index("kpi")
    assert saved.loc["referrals", "mean"] == pytest.approx(row["mean"], rel=1e-12)

    # the CLI writes the same numbers
    out = tmp_path / "cli-run"
    result = CliRunner().invoke(cli.app, ["run", str(BASELINE), "-n", "2", "--seed", "5", "--jobs", "1", "--no-report",
                                          "--set", "horizon_days=120", "--set", "warmup_days=0", "--out", str(out)])
    assert result.exit_code == 0, result.stdout
    cli_summary = pd.read_csv(out / "summary.csv").set_index("kpi")
    pd.testing.assert_series_equal(cli_summary["mean"], saved["mean"])


def test_compare_api_pairs_replications(tmp_path):
    sc = _short()
    cmp = iopsim.compare([sc, sc], replications=2, seed=3)
    assert cmp.names == [sc.name, f"{sc.name}-2"]
    d = cmp.differences
    assert (d["diff"].fillna(0) == 0).all(), "a scenario compared with itself must differ by exactly 0"
    folder = cmp.save(tmp_path / "cmp", report=False)
    assert (folder / "differences.csv").exists() and (folder / "scenarios" / sc.name / "summary.csv").exists()
    alt = d[d["scenario"] == f"{sc.name}-2"].set_index("kpi")
    # The verdict is in the API's table: no difference wherever both have a value; where they have
    # none (a KPI undefined in this short run), nothing to compare.
    defined = alt["diff"].notna()
    assert defined.any() and (alt.loc[defined, "judgement"] == "no significant difference").all()
    assert (alt.loc[~defined, "judgement"] == "not comparable").all()
    assert alt.loc["cost_per_completed_program", "direction"] == "lower"
    assert alt.loc["programs_completed", "direction"] == "higher"
    assert "judgement" in pd.read_csv(folder / "differences.csv").columns


def test_compare_api_says_better_and_worse(tmp_path):
    sc = _short()
    more = iopsim.load_scenario(BASELINE, {"horizon_days": 120, "warmup_days": 0,
                                           "staff.roles.counselor.teams.0.headcount": 3})
    d = iopsim.compare([sc, more], replications=3, seed=3).differences.set_index(["scenario", "kpi"])
    row = d.loc[(more.name + "-2" if more.name == sc.name else more.name, "cost_total")]
    assert row["judgement"] == "worse" and row["diff"] > 0 and row["rel_change"] > 0, row


def test_api_refuses_bad_arguments_in_one_line():
    sc = _short()
    for kwargs, fragment in (({"replications": 0}, "replications"), ({"warmup": -1}, "warmup"),
                             ({"jobs": 0}, "jobs"), ({"seed": -1}, "seed"), ({"jobs": "two"}, "jobs"),
                             ({"replications": 1.5}, "replications"), ({"jobs": True}, "jobs"),
                             ({"seed": 1.9}, "seed"), ({"replications": float("nan")}, "replications"),
                             ({"precision": -0.1}, "precision"), ({"max_replications": "x"}, "max_replications")):
        with pytest.raises(IopsimError, match=fragment):
            iopsim.run(sc, **kwargs)
    assert iopsim.run(sc, replications=2.0, seed=3.0).replications == 2, "a whole float is a whole number"
    assert iopsim.load_scenario(BASELINE, overrides="horizon_days=30").horizon_days == 30, "one --set string"
    with pytest.raises(IopsimError, match="at least two"):
        iopsim.compare([sc])
    with pytest.raises(IopsimError, match="indifference"):
        iopsim.compare([sc, sc], select="min")


def test_parallel_equals_serial_through_the_api():
    sc = _short()
    a = iopsim.run(sc, replications=3, seed=9, jobs=1).per_replication
    b = iopsim.run(sc, replications=3, seed=9, jobs=2).per_replication
    pd.testing.assert_frame_equal(a, b)


# --------------------------------------------------------------------------- scripts and notebooks

SCRIPT = """
import json, iopsim
sc = iopsim.load_scenario({path!r}, overrides={{"horizon_days": 60, "warmup_days": 0}})
res = iopsim.run(sc, replications=3, seed=4, jobs=2)
print("RESULT", json.dumps(res.per_replication["referrals"].tolist()))
"""


def _python(args: list[str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, *args], cwd=cwd, input=stdin, capture_output=True, text=True,
                          timeout=300, env=env)


def _referrals(proc: subprocess.CompletedProcess) -> list:
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert proc.returncode == 0 and len(lines) == 1, \
        f"exit {proc.returncode}, {len(lines)} result lines (the script must run once):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(lines[0][len("RESULT "):])


@pytest.fixture(scope="module")
def serial_referrals():
    sc = iopsim.load_scenario(BASELINE, overrides={"horizon_days": 60, "warmup_days": 0})
    return iopsim.run(sc, replications=3, seed=4, jobs=1).per_replication["referrals"].tolist()


def test_unguarded_script_with_two_jobs_runs_once_and_equals_serial(tmp_path, serial_referrals):
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT.format(path=str(BASELINE)), encoding="utf-8")
    assert _referrals(_python([str(script)], tmp_path)) == serial_referrals


def test_guarded_script_with_two_jobs_uses_the_fork_server(tmp_path, serial_referrals):
    body = textwrap.indent(SCRIPT.format(path=str(BASELINE)).strip(), "    ")
    script = tmp_path / "guarded.py"
    script.write_text("import multiprocessing\nif __name__ == '__main__':\n" + body + "\n", encoding="utf-8")
    assert _referrals(_python([str(script)], tmp_path)) == serial_referrals


def test_unguarded_module_run_with_python_m_runs_once_and_equals_serial(tmp_path, serial_referrals):
    """`python -m mod`: a fork server's workers import the main module again by name, so it is forked too."""
    (tmp_path / "unguarded_mod.py").write_text(SCRIPT.format(path=str(BASELINE)), encoding="utf-8")
    assert _referrals(_python(["-m", "unguarded_mod"], tmp_path)) == serial_referrals


def test_code_on_standard_input_runs_once(tmp_path, serial_referrals):
    """`python -` (code on stdin): there is no file to look for a guard in, so workers are forked."""
    assert _referrals(_python(["-"], tmp_path, stdin=SCRIPT.format(path=str(BASELINE)))) == serial_referrals


def test_a_jupyter_kernel_runs_two_jobs_on_the_fork_server(tmp_path, serial_referrals):
    """A real notebook kernel: its ``__main__`` has no file, so workers come from the fork server."""
    manager = pytest.importorskip("jupyter_client.manager")
    pytest.importorskip("ipykernel")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    km, kc = manager.start_new_kernel(startup_timeout=120, kernel_name="python3", cwd=str(tmp_path), env=env)
    out: list[str] = []

    def keep(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    try:
        code = SCRIPT.format(path=str(BASELINE)) + (
            "from iopsim.experiments.workers import worker_context\n"
            "print('METHOD', worker_context().get_start_method())\n")
        reply = kc.execute_interactive(code, timeout=300, output_hook=keep)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    text = "".join(out)
    assert reply["content"]["status"] == "ok", text
    assert "METHOD forkserver" in text, text
    lines = [ln for ln in text.splitlines() if ln.startswith("RESULT ")]
    assert len(lines) == 1 and json.loads(lines[0][len("RESULT "):]) == serial_referrals, text


def test_start_method_choice():
    from iopsim.experiments import workers as rep

    assert rep._workers_import_this_package(), "the installed iopsim should be what workers import"
    tree = ast.parse("x = 1\nif __name__ == '__main__':\n    run()\nif '__main__' == __name__:\n    pass\n")
    guards = [n for n in ast.walk(tree) if rep._is_main_guard(n)]
    assert len(guards) == 2
    assert not rep._is_main_guard(ast.parse("if __name__ != '__main__':\n    pass\n").body[0])


def test_checkout_cli_works_without_install(tmp_path):
    """`python cli.py` from a checkout maps sim/ to iopsim when the package is not importable."""
    code = ("import sys, runpy; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in "
            "(getattr(f, '__module__', '') or '')];"
            "import importlib.util; assert importlib.util.find_spec('iopsim') is None, 'iopsim still importable';"
            f"sys.argv = ['cli.py', 'validate', {str(BASELINE)!r}]; runpy.run_path({str(REPO_ROOT / 'cli.py')!r}, "
            "run_name='__main__')")
    proc = _python(["-c", code], tmp_path)
    assert proc.returncode == 0 and "valid scenario" in proc.stdout, proc.stdout + proc.stderr


# --------------------------------------------------------------------------- schema and the cluster extra


def test_schema_command_writes_a_json_schema(tmp_path):
    out = tmp_path / "scenario.schema.json"
    result = CliRunner().invoke(cli.app, ["schema", "--out", str(out)])
    assert result.exit_code == 0, result.stdout
    schema = json.loads(out.read_text())
    assert schema["$schema"].startswith("https://json-schema.org/") and "stages" in schema["properties"]
    assert "extends" in schema["properties"]
    raw = yaml.safe_load(BASELINE.read_text())
    unknown = set(raw) - set(schema["properties"])
    assert not unknown, f"top-level fields of the baseline missing from the schema: {unknown}"
    printed = CliRunner().invoke(cli.app, ["schema"])
    assert json.loads(printed.stdout) == schema


def test_schema_validates_the_shipped_scenarios():
    import jsonschema

    schema = iopsim.scenario_schema()
    from iopsim.schema.scenario import resolve_raw

    for name in ("baseline", "evening", "weekend"):
        jsonschema.validate(resolve_raw(REPO_ROOT / "scenarios" / f"{name}.yaml"), schema)


def test_schema_checks_a_child_file_as_a_part_and_a_whole_file_in_full():
    """What an editor sees: a file with `extends:` needs no required field, but its names and types are checked."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(iopsim.scenario_schema())
    for path in sorted((REPO_ROOT / "scenarios").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert not list(validator.iter_errors(raw)), f"{path.name} as written: {next(validator.iter_errors(raw))}"
    child = yaml.safe_load((REPO_ROOT / "scenarios" / "evening.yaml").read_text(encoding="utf-8"))
    assert "extends" in child
    wrong = copy.deepcopy(child)
    wrong["stages"]["iop"]["tracks"]["evening"]["groupz"] = 1
    assert list(validator.iter_errors(wrong)), "a misspelt field deep in a child file"
    wrong = copy.deepcopy(child)
    wrong["horizon_days"] = "two years"
    assert list(validator.iter_errors(wrong)), "a wrong type in a child file"
    whole = yaml.safe_load(BASELINE.read_text(encoding="utf-8"))
    del whole["stages"]["iop"]["tracks"]["day"]["sessions"]
    assert list(validator.iter_errors(whole)), "a whole file still needs its nested required fields"


def test_scheduler_without_distributed_says_how_to_install(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name == "distributed" or name.startswith("distributed."):
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"base": str(BASELINE), "replications": 1, "kpis": ["iop_census_mean"],
                                     "factors": {"horizon_days": {"values": [30]}}}))
    monkeypatch.setattr(builtins, "__import__", no_distributed)
    result = CliRunner().invoke(cli.app, ["sweep", str(sweep), "--scheduler", "tcp://127.0.0.1:1", "--out",
                                          str(tmp_path / "out")])
    assert result.exit_code == 2, result.stdout
    text = (result.stdout + (result.stderr or "")).strip()
    assert "pip install 'iopsim[cluster]'" in text and "Traceback" not in text, text
