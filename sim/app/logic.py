"""The web app's logic, without Streamlit: a site described in forms, checked, run, compared and planned.

A site is a *draft*: a scenario file (shipped or uploaded) and the values the
forms changed.  The changes are kept as the dotted-path overrides of the
CLI's ``--set``, so a draft is loaded, validated and run exactly as
``iopsim run FILE --set path=value ...`` would be, and every message is the
CLI's one line (:class:`Problem`).  Each problem is placed next to the form
field it names (:func:`place`).  The edited scenario downloads as YAML written
over the original text (ruamel.yaml round trip), so comments about sources stay
on every value that was not changed (:func:`edited_yaml`).

Long work (runs, comparisons, plans) goes to a :class:`Job`: one thread per
job, reporting progress through the API's progress callbacks, writing its own
run folder under ``outputs/`` (claimed with an atomic ``mkdir``), so two
browser tabs never share state or a folder.

Scenario files are found in ``./scenarios`` (the working directory: the app
started from the repository folder, as the README says) or else in the
``scenarios`` folder of the checkout iopsim was installed from (``pip install -e .``).
"""

from __future__ import annotations

import copy
import functools
import io
import json
import logging
import re
import threading
import time
import uuid
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from iopsim import api
from iopsim.errors import IopsimError, ScenarioError
from iopsim.files import default_run_dir, safe_name
from iopsim.schema.scenario import is_index  # a dotted path's list index, as the CLI's --set reads it

log = logging.getLogger(__name__)

#: Where the app keeps the files it writes for the model: uploaded scenarios and plan files.
INPUTS = "app-inputs"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


# --------------------------------------------------------------------------- where things are


def scenario_folders(cwd: Path | None = None) -> list[Path]:
    """Folders searched for shipped scenarios, in order: ``./scenarios``, then the checkout's."""
    here = Path(cwd or Path.cwd()) / "scenarios"
    checkout = Path(api.__file__).resolve().parent.parent / "scenarios"
    out = []
    for p in (here, checkout):
        if p.is_dir() and p.resolve() not in [q.resolve() for q in out]:
            out.append(p)
    return out


def shipped_scenarios(cwd: Path | None = None) -> dict[str, Path]:
    """Scenario files by name (file stem), from the first folder that has each."""
    found: dict[str, Path] = {}
    for folder in scenario_folders(cwd):
        for p in sorted(folder.glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def shipped_plans(cwd: Path | None = None) -> dict[str, Path]:
    """Plan files (``scenarios/plans/*.yaml``) by name."""
    found: dict[str, Path] = {}
    for folder in scenario_folders(cwd):
        for p in sorted((folder / "plans").glob("*.yaml")):
            found.setdefault(p.stem, p)
    return found


def display_path(path: Path) -> str:
    """``scenarios/baseline.yaml`` for a file under the working directory, else the absolute path."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def claim_folder(base: Path, name: str) -> Path:
    """A new, empty folder ``base/<name>-<time>``, claimed with an atomic ``mkdir``.

    Two runs started in the same second (two browser tabs) get different
    folders: whoever creates a name first owns it, the other takes the next.
    """
    base = Path(base)
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(1000):
        path = default_run_dir(base, name)
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise IopsimError(f"{base}: cannot claim a new folder for {name!r}")  # pragma: no cover


def release_folder(path: Path | None) -> None:
    """Remove a claimed folder that a failed or cancelled run left empty."""
    if path is not None:
        try:
            Path(path).rmdir()
        except OSError:
            pass


def zip_folder(folder: Path) -> bytes:
    """A run, comparison or plan folder as a zip archive (entries under the folder's own name)."""
    folder = Path(folder)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, str(Path(folder.name) / p.relative_to(folder)))
    return buf.getvalue()


# --------------------------------------------------------------------------- the scenario schema


@dataclass(frozen=True)
class FieldSpec:
    """What the schema says about one field: its kind, bounds, allowed values and description."""

    path: str
    kind: str  # "int", "float", "str", "choice", "days", "other"
    description: str = ""
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple = ()
    optional: bool = False
    title: str = ""

    def help(self) -> str:
        """The description and what is allowed, for a form field's help text."""
        bounds = []
        for attr, word in (("ge", "at least"), ("gt", "more than"), ("le", "at most"), ("lt", "less than")):
            v = getattr(self, attr)
            if v is not None:
                bounds.append(f"{word} {v:g}")
        text = self.description.strip()
        if bounds:
            text += f" Allowed: {' and '.join(bounds)}."
        if self.optional:
            text += " Empty: none (null)."
        return f"{text} Scenario field: `{self.path}`.".strip()


@functools.lru_cache(maxsize=1)
def _schema() -> dict:
    return api.scenario_schema()


def _resolve(node: dict, defs: dict) -> tuple[dict, bool]:
    """(the schema of a value, whether it may be null): ``$ref`` followed, ``anyOf [X, null]`` unwrapped."""
    optional = False
    for _ in range(20):
        if "$ref" in node:
            node = {**defs[node["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
        elif "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            optional = optional or len(options) < len(node["anyOf"])
            if len(options) != 1:
                return node, optional
            node = {**{k: v for k, v in node.items() if k != "anyOf"}, **options[0]}
        else:
            break
    return node, optional


def field_spec(path: str) -> FieldSpec:
    """What the scenario schema (`iopsim.scenario_schema`, the JSON Schema editors use) says about the
    field at a dotted path, mapping keys and list indices included."""
    schema = _schema()
    defs = schema.get("$defs", {})
    node, optional, description = schema, False, ""
    for part in path.split("."):
        node, _opt = _resolve(node, defs)
        if part in (node.get("properties") or {}):
            node = node["properties"][part]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        elif node.get("type") == "array" and isinstance(node.get("items"), dict):
            node = node["items"]
        else:
            return FieldSpec(path, "other", description)
        description = node.get("description", description)
    node, optional = _resolve(node, defs)
    bounds = {"ge": node.get("minimum"), "gt": node.get("exclusiveMinimum"), "le": node.get("maximum"),
              "lt": node.get("exclusiveMaximum")}
    if "enum" in node:
        return FieldSpec(path, "choice", description, choices=tuple(node["enum"]), optional=optional)
    if node.get("type") == "array":
        items, _o = _resolve(node.get("items") or {}, defs)
        if set(items.get("enum") or ()) == set(WEEKDAYS):
            return FieldSpec(path, "days", description, optional=optional)
    kind = {"integer": "int", "number": "float", "string": "str"}.get(node.get("type"), "other")
    return FieldSpec(path, kind, description, optional=optional, title=node.get("title", ""), **bounds)


# --------------------------------------------------------------------------- the draft


@dataclass
class Source:
    """Where a draft comes from: the file the model reads, what messages call it, and its own text."""

    path: Path
    label: str
    text: str
    uploaded: bool = False


def file_source(path: str | Path) -> Source:
    path = Path(path)
    return Source(path, display_path(path), path.read_text(encoding="utf-8"))


def upload_source(filename: str, data: bytes, outputs: Path, shipped: Iterable[Path] = ()) -> Source:
    """An uploaded scenario, kept under ``outputs/app-inputs/`` so that run manifests can name it.

    An uploaded file that ``extends:`` a file it does not come with extends the shipped scenario of
    that name (``extends: baseline.yaml``); the text kept for the YAML download is the upload's own.
    """
    shown = Path(str(filename).replace("\x00", "")).name[:80] or "uploaded.yaml"
    # Kept under a name of our own making: the browser's may be too long, hold a NUL or be "..".
    name = safe_name(Path(shown).stem, "uploaded")[:60] + ".yaml"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ScenarioError(shown, None, "not UTF-8 text; upload a YAML scenario file") from None
    folder = claim_folder(Path(outputs) / INPUTS, Path(name).stem)
    try:
        model_text = _extends_shipped(text, [Path(p) for p in shipped])
        (folder / name).write_text(model_text, encoding="utf-8")
    except OSError as exc:
        release_folder(folder)
        raise ScenarioError(shown, None, f"cannot keep the upload ({exc.strerror or exc})") from None
    return Source(folder / name, f"{shown} (uploaded)", text, uploaded=True)


def _extends_shipped(text: str, shipped: list[Path]) -> str:
    """``text`` with a top-level ``extends: NAME`` pointed at the shipped file of that name, if there is one.

    Read with ruamel.yaml's round trip, which keeps an alias as a reference to its anchor instead of a
    copy, so an upload made of nested aliases costs no more than its text (the model's own reader,
    with its limits, reads the file afterwards).
    """
    try:
        y = _ruamel(text)
        doc = y.load(text)
    except Exception:  # noqa: BLE001 - not YAML: the model's reader names the problem
        return text
    parent = doc.get("extends") if isinstance(doc, dict) else None
    if not isinstance(parent, str):
        return text
    match = next((p for p in shipped if p.name == Path(parent).name), None)
    if match is None:
        return text
    doc["extends"] = str(match.resolve())
    return _dump(y, doc)


def dumped(scenario) -> dict:
    """A validated scenario as the plain mapping the forms edit (defaults included, nulls left out)."""
    return scenario.model_dump(mode="json", by_alias=True, exclude_none=True)


@dataclass
class Problem:
    """One message about a draft, as the CLI words it (``error:``/``warning:`` and the file left off)."""

    field: str | None
    message: str
    level: str = "error"  # or "warning"
    source: str = ""

    @property
    def text(self) -> str:
        """``field: message``: what appears next to the form field."""
        return f"{self.field}: {self.message}" if self.field else self.message

    @property
    def line(self) -> str:
        """The CLI's whole line: ``scenarios/baseline.yaml: field: message``."""
        return f"{self.source}: {self.text}" if self.source else self.text


_MISSING = object()


def get(tree: Any, path: str, default: Any = None) -> Any:
    node = tree
    for part in path.split(".") if path else []:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and is_index(part) and int(part) < len(node):
            node = node[int(part)]
        else:
            return default
    return node


def put(tree: dict, path: str, value: Any) -> None:
    """Set the value at a dotted path, creating mappings on the way (list items by index)."""
    parts = path.split(".")
    node: Any = tree
    for part in parts[:-1]:
        if isinstance(node, list):
            node = node[int(part)]
        else:
            if not isinstance(node.get(part), (dict, list)):
                node[part] = {}
            node = node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def diff(base: Any, doc: Any, prefix: str = "") -> dict[str, Any]:
    """The overrides that turn ``base`` into ``doc``: dotted path -> value, leaf by leaf.

    A list whose length changed (a team added) is one override of the whole list; a key
    that ``doc`` dropped is set to ``None``.
    """
    if isinstance(base, dict) and isinstance(doc, dict):
        out: dict[str, Any] = {}
        for k in doc:
            p = f"{prefix}.{k}" if prefix else str(k)
            out.update(diff(base[k], doc[k], p) if k in base else {p: copy.deepcopy(doc[k])})
        for k in base:
            if k not in doc:
                out[f"{prefix}.{k}" if prefix else str(k)] = None
        return out
    if isinstance(base, list) and isinstance(doc, list) and len(base) == len(doc):
        out = {}
        for i, (a, b) in enumerate(zip(base, doc)):
            out.update(diff(a, b, f"{prefix}.{i}" if prefix else str(i)))
        return out
    if base == doc and type(base) is type(doc) or (_number(base) and _number(doc) and base == doc):
        return {}
    return {prefix: copy.deepcopy(doc)}


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def set_string(path: str, value: Any) -> str:
    """One override as the CLI's ``--set`` argument: ``path=value`` (the value as YAML flow)."""
    return f"{path}={json.dumps(value, ensure_ascii=False)}"


class Draft:
    """A scenario file and the changes the forms made to it.

    ``base`` is the file's scenario as a mapping (``extends`` resolved, defaults
    filled in); ``doc`` is the edited copy the forms read and write.  The draft
    is what ``iopsim run FILE --set ...`` would run: `overrides()` are those
    ``--set`` values, and `check()` loads and validates with them through the
    public API.
    """

    def __init__(self, source: Source):
        self.source = source
        try:
            self.base = dumped(api.load_scenario(source.path))
        except ScenarioError as exc:  # an uploaded file is named as the user knows it
            if Path(exc.source) == Path(source.path):
                raise ScenarioError(source.label, exc.field, exc.message) from None
            raise
        self.doc = copy.deepcopy(self.base)
        self._checked: tuple[str, tuple] | None = None
        self._yaml: tuple[str, str] | None = None
        self.token = uuid.uuid4().hex[:8]  # widget keys of this draft differ from any other's
        self.generation = 0  # bumped when the form's structure changes (a team added), so widgets start afresh

    # -- editing
    def get(self, path: str, default: Any = None) -> Any:
        return get(self.doc, path, default)

    def set(self, path: str, value: Any) -> None:
        put(self.doc, path, value)

    def reset(self) -> None:
        self.doc = copy.deepcopy(self.base)
        self.generation += 1

    def add_item(self, path: str, index: int = -1) -> None:
        """Append a copy of an item of the list at ``path`` (a team, a shift, a session)."""
        items = self.get(path)
        if isinstance(items, list) and items:
            items.append(copy.deepcopy(items[index]))
            self.generation += 1

    def remove_item(self, path: str, index: int) -> None:
        items = self.get(path)
        if isinstance(items, list) and len(items) > 1 and 0 <= index < len(items):
            del items[index]
            self.generation += 1

    def copy_entry(self, path: str, name: str, new: str) -> None:
        """Add ``path.new`` as a copy of ``path.name`` (a track, a role)."""
        mapping = self.get(path)
        if isinstance(mapping, dict) and name in mapping and new and new not in mapping:
            mapping[new] = copy.deepcopy(mapping[name])
            self.generation += 1

    # -- what changed
    def overrides(self) -> dict[str, Any]:
        return diff(self.base, self.doc)

    def set_strings(self) -> list[str]:
        return [set_string(p, v) for p, v in self.overrides().items()]

    def yaml_text(self) -> str:
        """The scenario file with the changes written in (see `edited_yaml`); remembered until the draft changes."""
        overrides = self.overrides()
        key = json.dumps(overrides, sort_keys=True, default=str)
        if self._yaml is None or self._yaml[0] != key:
            self._yaml = (key, edited_yaml(self.source.text, overrides, self.doc, self.base))
        return self._yaml[1]

    def problems_under(self, prefix: str) -> bool:
        """Whether the last check found a problem at or inside ``prefix`` (to open that part of the form)."""
        if self._checked is None:
            return False
        return any(p.field and (p.field == prefix or p.field.startswith(prefix + ".") or prefix.startswith(p.field + "."))
                   for p in self._checked[1][1])

    @property
    def name(self) -> str:
        return str(self.doc.get("name") or self.base.get("name") or "scenario")

    # -- checking
    def scenario(self, overrides: dict[str, Any] | None = None):
        """The validated scenario (raises the CLI's `ScenarioError`)."""
        return api.load_scenario(self.source.path, self.overrides() if overrides is None else overrides)

    def check(self) -> tuple[Any, list[Problem]]:
        """(the scenario or ``None``, the problems): every error the changes cause, one per field, else
        the warnings about the plan (``iopsim validate``'s).  Remembered until the draft changes."""
        overrides = self.overrides()
        key = json.dumps(overrides, sort_keys=True, default=str)
        if self._checked is not None and self._checked[0] == key:
            return self._checked[1]
        try:
            sc = self.scenario(overrides)
            result = sc, [Problem(f.field, f.message, "warning", self.source.label) for f in api.check(sc)]
        except ScenarioError as exc:
            result = None, self._errors(overrides, exc)
        self._checked = (key, result)
        return result

    def _errors(self, overrides: dict[str, Any], first: ScenarioError) -> list[Problem]:
        """Validation stops at the first error; to find the others, the overrides an error names are set
        aside and the rest validated again, until they validate or an error names no override."""
        out: list[Problem] = []
        remaining, exc = dict(overrides), first
        for _ in range(len(overrides) + 1):
            out.append(self._problem(exc))
            where = exc.field or ""
            culprits = [p for p in remaining if _related(p, where)]
            if not culprits:
                break
            for p in culprits:
                del remaining[p]
            try:
                self.scenario(remaining)
                break
            except ScenarioError as nxt:
                exc = nxt
        return out

    def _problem(self, exc: ScenarioError) -> Problem:
        source = self.source.label if Path(exc.source) == Path(self.source.path) else exc.source
        return Problem(exc.field, exc.message, "error", source)


def _related(path: str, field_path: str) -> bool:
    """Whether an override at ``path`` is what a message about ``field_path`` is about (either inside the other)."""
    if not field_path:
        return False
    return path == field_path or path.startswith(field_path + ".") or field_path.startswith(path + ".")


def place(problems: Iterable[Problem], fields: Iterable[str], groups: Iterable[str] = (),
          changed: Iterable[str] = ()) -> tuple[dict[str, list[Problem]], list[Problem]]:
    """Which form field (or group of fields) each problem belongs next to; the rest go at the top.

    In order: the field the message names; a changed field inside the part it names (a share
    that no longer sums to 1 with the others: the share that was changed); the group it names;
    the nearest field or group that contains it; the first field inside it.
    """
    fields, groups, changed = list(fields), list(groups), list(changed)
    spots = fields + groups
    placed: dict[str, list[Problem]] = {}
    general: list[Problem] = []
    for pr in problems:
        f = pr.field or ""
        target = None
        if f in fields:
            target = f
        if target is None and f:
            target = next((c for c in changed if c in fields and c.startswith(f + ".")), None)
        if target is None and f in groups:
            target = f
        if target is None and f:
            holders = [s for s in spots if f.startswith(s + ".")]
            target = max(holders, key=len) if holders else None
        if target is None and f:
            target = next((s for s in fields if s.startswith(f + ".")), None)
        if target is None:
            general.append(pr)
        else:
            placed.setdefault(target, []).append(pr)
    return placed, general


# --------------------------------------------------------------------------- YAML out


def _ruamel(text: str = ""):
    from ruamel.yaml import YAML
    from ruamel.yaml.util import load_yaml_guess_indent

    y = YAML()
    y.preserve_quotes = True
    y.width = 4096
    mapping, sequence, offset = 2, 4, 2  # the shipped files' layout: "- " indented by 2 under its key
    if text.strip():
        try:
            _doc, guessed, dash = load_yaml_guess_indent(text)
        except Exception:  # noqa: BLE001 - only a guess at the layout; the defaults are kept
            guessed, dash = None, None
        mapping = _mapping_indent(text) or mapping
        if dash is not None and guessed:
            sequence, offset = guessed, dash
    y.indent(mapping=mapping, sequence=sequence, offset=offset)
    y.representer.add_representer(type(None), lambda self, data: self.represent_scalar("tag:yaml.org,2002:null", "null"))
    return y


def _mapping_indent(text: str) -> int | None:
    """The most common step from a ``key:`` line to the nested ``key:`` line below it."""
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    steps: dict[int, int] = {}
    for a, b in zip(lines, lines[1:]):
        if a.rstrip().endswith(":") and not b.lstrip().startswith("-"):
            step = (len(b) - len(b.lstrip())) - (len(a) - len(a.lstrip()))
            if step > 0:
                steps[step] = steps.get(step, 0) + 1
    return max(steps, key=steps.get) if steps else None


def _dump(y, doc) -> str:
    out = io.StringIO()
    y.dump(doc, out)
    return out.getvalue()


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if v is None:
        return "null"
    return json.dumps(v, ensure_ascii=False) if not isinstance(v, (int, str)) else str(v)


def _flow(node) -> bool:
    fa = getattr(node, "fa", None)
    return bool(fa is not None and fa.flow_style())


def _note(node, key, old: Any, inherited: bool = False) -> None:
    """Mark a changed value in a block mapping: its end-of-line comment becomes ``changed from OLD``
    (keeping what the old comment said, which was about the old value)."""
    if _flow(node) or not hasattr(node, "ca"):
        return
    was = f"changed from {_scalar(old)}" + (" (inherited)" if inherited else "")
    entry = node.ca.items.get(key)
    slot = 0 if isinstance(key, int) else 2
    token = entry[slot] if entry and len(entry) > slot else None
    if token is None:
        try:
            node.yaml_add_eol_comment(was, key)
        except Exception:  # noqa: BLE001 - a comment is a courtesy, never worth failing the download for
            pass
        return
    first, nl, rest = token.value.partition("\n")
    said = first.lstrip("#").strip()
    token.value = f"# {was}" + (f"; it said: {said}" if said else "") + nl + rest


def _assign(parent, key, new: Any, base: Any) -> None:
    """Write ``new`` at ``parent[key]`` in place: nested mappings and lists item by item, so the
    comments of what did not change stay; a value still at its default is not written."""
    cur = parent[key]
    if isinstance(cur, dict) and isinstance(new, dict):
        for k, v in new.items():
            b = base.get(k, _MISSING) if isinstance(base, dict) else _MISSING
            if k in cur:
                _assign(cur, k, v, b)
            elif b is _MISSING or not _same(v, b):
                _insert(cur, k, _styled(v), list(new))
        return
    if isinstance(cur, list) and isinstance(new, list):
        for i in range(min(len(cur), len(new))):
            _assign(cur, i, new[i], base[i] if isinstance(base, list) and i < len(base) else _MISSING)
        if len(new) > len(cur):
            cur.extend(_styled(v) for v in new[len(cur):])
        else:
            del cur[len(new):]
        return
    if _same(cur, new):
        return
    parent[key] = _styled(new)
    if not isinstance(new, (dict, list)):
        _note(parent, key, cur)


def _same(a: Any, b: Any) -> bool:
    """Equal values, a whole number and the same float counting as one (17 and 17.0)."""
    if _number(a) and _number(b):
        return a == b
    return type(a) is type(b) and a == b


def _scalar_only(v: Any) -> bool:
    return not isinstance(v, (dict, list)) or (isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v))


def _styled(value: Any) -> Any:
    """A plain value as ruamel nodes laid out as the shipped files are: short lists and mappings of
    plain values on one line (``{days: [mon, tue], start_hour: 9, hours: 3}``), the rest as blocks."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    if isinstance(value, dict):
        node = CommentedMap((k, _styled(v)) for k, v in value.items())
        if all(_scalar_only(v) for v in value.values()):
            node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        node = CommentedSeq(_styled(v) for v in value)
        if all(not isinstance(v, (dict, list)) for v in value):
            node.fa.set_flow_style()
        return node
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return int(value)  # 17.0 hours is written 17, as a person would; it validates to the same number
    return value


def _insert(node, key: str, value: Any, order: list) -> None:
    """Add ``key`` to a mapping where the scenario's own order puts it (after the keys it follows)."""
    if key in node or not hasattr(node, "insert") or key not in order:
        node[key] = value
        return
    later = set(order[order.index(key) + 1:])
    pos = next((i for i, k in enumerate(node) if k in later), len(node))
    node.insert(pos, key, value)


def edited_yaml(text: str, overrides: dict[str, Any], edited: dict, base: dict) -> str:
    """The scenario file ``text`` with ``overrides`` written into it, comments kept.

    A changed value the file has is changed where it is, in the text itself, so
    every other byte of the file stays as it was; its end-of-line comment notes the
    old value.  A value the file inherits through ``extends`` is written into this
    file as ``extends`` merges it: only the changed key of a mapping, but a list (a
    staff team's shifts) whole, since a list in a child file replaces the parent's;
    that, and a list that grew or shrank, goes through ruamel.yaml's round trip,
    which keeps every comment but may rejoin a flow mapping written over several
    lines.  ``edited`` is the draft's edited scenario (where whole lists are copied
    from) and ``base`` the unedited one.
    """
    if not overrides:
        return text
    y = _ruamel(text)
    doc = y.load(text) if text.strip() else None
    structural = dict(overrides)
    if isinstance(doc, dict):
        spots = {p: _spot(doc, p, v) for p, v in overrides.items()}
        text = _splice(text, {p: (s, overrides[p]) for p, s in spots.items() if s is not None})
        structural = {p: v for p, v in overrides.items() if spots[p] is None}
    if not structural:
        return text
    return _restructure(text, structural, edited, base)


def _spot(doc, path: str, value: Any) -> tuple[int, int, bool, Any] | None:
    """Where the file writes the value at ``path`` (line, column, inside a flow collection, the old
    value), if it can be replaced in the text: a plain value by a plain value, or a one-line list of
    plain values by another."""
    parts = path.split(".")
    node: Any = doc
    for part in parts[:-1]:
        if isinstance(node, list) and is_index(part) and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return None
    last = parts[-1]
    if isinstance(node, list) and is_index(last) and int(last) < len(node):
        key: Any = int(last)
        where = node.lc.item(key) if hasattr(node, "lc") else None
    elif isinstance(node, dict) and last in node:
        key = last
        where = node.lc.value(key) if hasattr(node, "lc") else None
    else:
        return None
    old = node[key]
    plain = not isinstance(value, (dict, list))
    if old is None or where is None:
        return None
    if isinstance(old, list):
        if not (_flow(old) and isinstance(value, list) and all(_scalar_only(v) and not isinstance(v, list) for v in value)
                and all(not isinstance(v, (dict, list)) for v in old)):
            return None
    elif isinstance(old, dict) or not plain:
        return None
    return where[0], where[1], _flow(node), old


def _plain(v: Any) -> str:
    """A value as YAML the model's reader (PyYAML) reads back as the same value."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if v.is_integer() and abs(v) < 1e15:
            return str(int(v))
        text = repr(v)
        return f"{v:.15f}".rstrip("0") if "e" in text else text  # PyYAML reads 1e-05 as a string
    if isinstance(v, list):
        return "[" + ", ".join(_plain(x) for x in v) + "]"
    s = str(v)
    special = {"true", "false", "yes", "no", "on", "off", "null", "~", ""}
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_ .\-]*", s) and s.lower() not in special and s == s.strip():
        return s
    return json.dumps(s, ensure_ascii=False)


def _token_end(text: str, i: int, flow: bool) -> int:
    """Where the value written at offset ``i`` ends: a quoted string, a flow collection, or a plain
    scalar (up to a comment, the end of the line, or in a flow collection a ``,``, ``]`` or ``}``)."""
    n = len(text)
    ch = text[i] if i < n else ""
    if ch in ("'", '"'):
        j = i + 1
        while j < n:
            if ch == '"' and text[j] == "\\":
                j += 2
                continue
            if text[j] == ch:
                if ch == "'" and j + 1 < n and text[j + 1] == "'":
                    j += 2
                    continue
                return j + 1
            j += 1
        return n
    if ch in ("[", "{"):
        depth, j, quote = 0, i, None
        while j < n:
            c = text[j]
            if quote:
                quote = None if c == quote else quote
            elif c in ("'", '"'):
                quote = c
            elif c in "[{":
                depth += 1
            elif c in "]}":
                depth -= 1
                if depth == 0:
                    return j + 1
            j += 1
        return n
    j = i
    while j < n and text[j] != "\n":
        if text[j] == "#" and j > i and text[j - 1] in " \t":
            break
        if flow and text[j] in ",]}":
            break
        j += 1
    return i + len(text[i:j].rstrip())


def _splice(text: str, edits: dict[str, tuple[tuple[int, int, bool, Any], Any]]) -> str:
    """Replace values in the text at their positions, last first; in a block mapping, the end-of-line
    comment of a changed value becomes ``# changed from OLD; it said: ...`` at the same column."""
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    order = sorted(edits.values(), key=lambda e: (e[0][0], e[0][1]), reverse=True)
    for (line, col, flow, old), value in order:
        i = starts[line] + col
        end = _token_end(text, i, flow)
        new = _plain(value)
        eol = text.find("\n", end)
        eol = len(text) if eol < 0 else eol
        rest = text[end:eol]
        if flow or (rest.strip() and not rest.lstrip().startswith("#")):
            text = text[:i] + new + text[end:]
            continue
        said = rest.strip().lstrip("#").strip()
        note = f"# changed from {_plain(old)}" + (f"; it said: {said}" if said else "")
        head = text[starts[line]:i] + new
        column = (end - starts[line]) + (len(rest) - len(rest.lstrip())) if said else len(head) + 2
        pad = max(column - len(head), 2 if not said else 1)
        text = text[:starts[line]] + head + " " * pad + note + text[eol:]
    return text


def _restructure(text: str, overrides: dict[str, Any], edited: dict, base: dict) -> str:
    """Write changes that are more than a value in place (an inherited value, a list that grew) with
    ruamel.yaml's round trip of ``text``."""
    from ruamel.yaml.comments import CommentedMap

    y = _ruamel(text)
    doc = y.load(text) if text.strip() else None
    if not isinstance(doc, dict):
        doc = CommentedMap()
    for path, value in overrides.items():
        parts = path.split(".")
        node: Any = doc
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            key: Any = int(part) if isinstance(node, list) else part
            here = ".".join(parts[: i + 1])
            exists = (key < len(node)) if isinstance(node, list) else (key in node and node[key] is not None)
            if not exists and isinstance(node, list):
                break  # cannot happen for a valid draft: lists in the file are whole
            if not exists:
                whole = get(edited, here, _MISSING)
                order = list(get(edited, ".".join(parts[:i]), {}) or {}) if i else list(edited)
                if last or isinstance(whole, list):
                    _insert(node, key, _styled(whole if whole is not _MISSING else value), order)
                    if last and not isinstance(value, (dict, list)):
                        _note(node, key, get(base, here), inherited=True)
                    break
                _insert(node, key, CommentedMap(), order)
            if last:
                _assign(node, key, value, get(base, here, _MISSING))
                break
            node = node[key]
    return _dump(y, doc)


# --------------------------------------------------------------------------- long work


#: pyplot is not thread-safe: the figures of jobs (runs, comparisons, plans) that finish at once in two
#: sessions are drawn one job at a time (with more than one worker process a run's are drawn in those
#: processes anyway).
_DRAWING = threading.Lock()


class Cancelled(Exception):
    """Raised from a progress callback to stop a run the user cancelled."""


class Job:
    """One long task on its own thread: progress, a result folder or a one-line error.

    ``work(job)`` does the task, calls ``job.progress(done, total[, phase])``
    as it goes and returns the folder it wrote.  `cancel()` makes the next
    progress call raise `Cancelled`, which unwinds the API call (its staging
    folder is removed, as after Ctrl-C in the CLI).
    """

    def __init__(self, kind: str, title: str, work: Callable[["Job"], Path]):
        self.kind, self.title = kind, title
        self.done, self.total, self.phase = 0, 0, ""
        self.folder: Path | None = None
        self.error: str | None = None
        self.state = "running"
        self.started = time.monotonic()
        self.finished: float | None = None
        self._cancel = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(work,), name=f"iopsim-app-{kind}", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self.state == "running"

    @property
    def fraction(self) -> float:
        return min(self.done / self.total, 1.0) if self.total else 0.0

    @property
    def elapsed(self) -> float:
        return (self.finished or time.monotonic()) - self.started

    def progress(self, done: int, total: int, phase: str | None = None) -> None:
        if self._cancel.is_set():
            raise Cancelled()
        self.done, self.total = int(done), int(total)
        if phase:
            self.phase = phase

    def cancel(self) -> None:
        self._cancel.set()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _main(self, work: Callable[["Job"], Path]) -> None:
        try:
            self.folder = Path(work(self))
            self.state = "done"
        except Cancelled:
            self.state = "cancelled"
        except IopsimError as exc:
            self.error, self.state = str(exc), "failed"
        except Exception as exc:  # noqa: BLE001 - shown to the user in one line, logged in full
            log.exception("%s failed", self.kind)
            self.error, self.state = f"{type(exc).__name__}: {exc}", "failed"
        finally:
            self.finished = time.monotonic()


def start_run(draft: Draft, replications: int, outputs: Path, jobs: int = 1, seed: int | None = None) -> Job:
    """Run the draft as ``iopsim run FILE --set ...`` does, into a new folder under ``outputs``."""
    scenario = draft.scenario()
    path, sets = str(draft.source.path), draft.set_strings()

    def compute(job: Job):
        result = api.run(scenario, replications, seed, jobs, progress=job.progress)
        result.scenario_path, result.overrides = path, sets
        return result

    return Job("run", scenario.name, _saved_in(outputs, scenario.name, compute))


@dataclass
class Candidate:
    """A scenario that can be compared: its name in the comparison, the file and the overrides."""

    name: str
    path: Path
    overrides: dict[str, Any] = field(default_factory=dict)

    def scenario(self):
        sc = api.load_scenario(self.path, self.overrides)
        return sc if sc.name == self.name else sc.model_copy(update={"name": self.name})


def start_compare(candidates: list[Candidate], replications: int, outputs: Path, jobs: int = 1,
                  common: dict[str, Any] | None = None) -> Job:
    """Compare scenarios with common random numbers, as ``iopsim compare A B ... [--set ...]`` does.

    ``common`` overrides apply to every scenario (the CLI's ``--set`` on compare), after each one's own.
    """
    if len(candidates) < 2:
        raise IopsimError("compare: choose at least two scenarios (the first is the baseline)")
    names = [c.name for c in candidates]
    if len(set(names)) < len(names):
        raise IopsimError(f"compare: each scenario needs its own name (got {', '.join(names)})")
    common = dict(common or {})
    loaded = {c.name: Candidate(c.name, c.path, {**c.overrides, **common}).scenario() for c in candidates}
    paths = {c.name: str(c.path) for c in candidates}
    sets = [set_string(p, v) for p, v in common.items()]

    def compute(job: Job):
        result = api.compare(loaded, replications, None, jobs, progress=job.progress)
        result.scenario_paths, result.overrides = paths, sets
        return result

    return Job("compare", f"compare {', '.join(names)}", _saved_in(outputs, "compare", compute))


def _saved_in(outputs: Path, name: str, compute: Callable[[Job], Any]) -> Callable[[Job], Path]:
    """A job's work: claim a run folder, compute the result, save it there (figures drawn one job at a
    time: pyplot is not thread-safe); on any failure the claimed folder is given back."""
    def work(job: Job) -> Path:
        dest = claim_folder(outputs, name)
        try:
            result = compute(job)
            with _DRAWING:
                return result.save(dest)
        except BaseException:
            release_folder(dest)
            raise

    return work


# --------------------------------------------------------------------------- plans


def load_plan_file(path: Path) -> dict:
    """A plan file as a mapping (for the plan form to start from)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise IopsimError(f"{path}: a plan file is a mapping of fields")
    return data


def decision_paths(plan: dict) -> set[str]:
    return {p for d in (plan.get("decisions") or {}).values() for p in (d.get("set") or {})}


def plan_space(plan: dict) -> int:
    """How many plans the decisions' ranges (or values) give."""
    size = 1
    for d in (plan.get("decisions") or {}).values():
        if d.get("values"):
            size *= len(d["values"])
        elif d.get("range"):
            lo, hi = d["range"]
            size *= max(int(hi) - int(lo) + 1, 0)
    return size


def plan_document(plan: dict, base: Path, site_overrides: dict[str, Any]) -> tuple[dict, list[str]]:
    """The plan file to run: the form's plan with ``base`` and the site's changes in its ``set:``.

    The site's changes hold for every plan, like the plan's own ``set:`` (which wins where both
    set a field); a change to a field a decision moves is left out, since the decision sets it
    in every plan.  Returns the document and the paths left out.
    """
    doc = _without_nulls(copy.deepcopy(plan))
    doc["base"] = str(Path(base).resolve())
    moved = decision_paths(doc)
    dropped = sorted(p for p in site_overrides if any(_related(p, m) for m in moved))
    kept = {p: v for p, v in site_overrides.items() if p not in dropped}
    own = {p: v for p, v in (doc.get("set") or {}).items() if p not in moved}
    doc["set"] = {**kept, **own}
    return doc, dropped


def _without_nulls(tree: Any) -> Any:
    """A plan form's document without the fields left empty (they take their defaults)."""
    if isinstance(tree, dict):
        return {k: _without_nulls(v) for k, v in tree.items() if v is not None}
    if isinstance(tree, list):
        return [_without_nulls(v) for v in tree]
    return tree


def start_plan(plan: dict, base: Path, site_overrides: dict[str, Any], outputs: Path, jobs: int = 1) -> Job:
    """Run the planner on the form's plan: the plan file is kept under ``outputs/app-inputs/``,
    the results go to a new folder ``outputs/plan-<name>-<time>``."""
    import yaml

    doc, _dropped = plan_document(plan, base, site_overrides)
    name = safe_name(str(doc.get("name") or "plan"), "plan")
    inputs = claim_folder(Path(outputs) / INPUTS, f"plan-{name}")
    plan_file = inputs / f"{name}.yaml"
    plan_file.write_text("# Written by `iopsim app` (Plan page).\n" + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True),
                         encoding="utf-8")

    def work(job: Job) -> Path:
        dest = claim_folder(outputs, f"plan-{name}")
        try:
            result = api.plan(plan_file, dest, jobs=jobs, progress=job.progress, report=False)
            with _DRAWING:  # the Pareto figure, one job's figures at a time like a run's
                api.report(result.folder)
            return result.folder
        except BaseException:
            release_folder(dest)
            raise

    return Job("plan", f"plan {name}", work)

