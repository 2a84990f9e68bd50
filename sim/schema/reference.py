"""The scenario schema as JSON Schema (for editors) and as a Markdown reference (for the docs).

Both are generated from the pydantic models in :mod:`iopsim.schema.scenario`,
so the documentation of a field can never drift from what validation accepts.

:func:`markdown_reference` walks :class:`~iopsim.schema.scenario.Scenario`
field by field, depth first, and writes one table per section of a scenario
file, headed by the section's dotted path: every field's name, its type with
the allowed values and bounds, its unit, its default and its description (the
field's docstring).  Paths use
``<name>`` for a key you choose or pick from a list (``stages.<stage>``,
``referrals.sources.<source>``) and ``[]`` for the items of a list
(``staff.ratio_rules[].role``).  Distributions are described once, family by
family, in their own section.
"""

from __future__ import annotations

import inspect
import json
import re
import types
import typing
from typing import Any, Iterator

import annotated_types as at
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from iopsim.schema.distributions import Distribution
from iopsim.schema.distributions import _Dist as DistributionFamily
from iopsim.schema.scenario import Scenario

SCHEMA_ID = "https://iopsim.org/schema/scenario.json"

#: ``extends`` is read before validation, so it is not a model field; both outputs add it.
EXTENDS_DESCRIPTION = ("Path of a parent scenario file, relative to this one; "
                       "this file's fields are merged over the parent's.")

#: What the default column says for a section whose default is "every field at its default".
SECTION_DEFAULT = "each field's default"

#: Units as the field descriptions state them, first match wins (case-insensitive).
_UNITS: tuple[tuple[str, str], ...] = (
    (r"\bhour of day\b", "hour of day"),
    (r"\bhours per week\b", "hours per week"),
    (r"\bin currency per (?:calendar )?([\w-]+)", r"currency per \1"),
    (r"\bclients per person\b", "clients per person"),
    (r"\bin currency\b", "currency"),
    (r"\bper week\b", "per week"),
    (r"\bshare of the wage\b", "share of the wage"),
    (r"\bshare 0-1\b", "share 0–1"),
    (r"\bin days\b", "days"),
    (r"\bin hours\b", "hours"),
    (r"\bin weeks\b|\bmany weeks\b", "weeks"),
    (r"\bunit of the field that uses it\b|\bsame unit\b", "field's unit"),
    (r"\bno unit\b", "none"),
)


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario file.

    A file that ``extends:`` another holds only part of a scenario, so the
    schema has two levels.  Every file is checked as a *part*: field names,
    types, allowed values and bounds at every depth, nothing required.  A file
    without ``extends`` must also be *whole*: the required fields at every depth.
    """
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    props = schema.setdefault("properties", {})
    props.setdefault("extends", {"type": "string", "description": EXTENDS_DESCRIPTION})
    defs = schema.pop("$defs", {})
    whole = {k: schema[k] for k in ("properties", "required") if k in schema}
    part = {k: v for k, v in _partial(schema).items() if k != "title"}
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "iopsim scenario", **part,
            "if": {"not": {"required": ["extends"]}}, "then": whole,
            "$defs": {**defs, **{name + PART: _partial(d) for name, d in defs.items()}}}


#: Suffix of the schema definitions of a part of a scenario (no field required).
PART = "_part"


def _partial(node: Any, in_properties: bool = False) -> Any:
    """A copy of a JSON Schema node with nothing required, its references pointing at the parts' definitions."""
    if isinstance(node, list):
        return [_partial(x) for x in node]
    if not isinstance(node, dict):
        return node
    if in_properties:  # keys are field names, each value a schema
        return {name: _partial(sub) for name, sub in node.items()}
    out = {}
    for key, value in node.items():
        if key == "required" and isinstance(value, list):
            continue
        if key == "$ref" and isinstance(value, str) and value.startswith("#/$defs/"):
            out[key] = value + PART
        else:
            out[key] = _partial(value, in_properties=key in ("properties", "patternProperties", "$defs"))
    return out


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


# --------------------------------------------------------------------------- the Markdown reference


def markdown_reference() -> str:
    """Every field of a scenario file as Markdown: path, type and allowed values, unit, default, description.

    Headings carry explicit anchors (``{#ref-...}``, the ``attr_list`` Markdown
    extension) so that other pages can link to a section.
    """
    parts = [_section_markdown(s) for s in _walk(Scenario, "", "Top level")]
    parts.append(_distributions_markdown())
    return "\n\n".join(parts) + "\n"


class _Row(typing.NamedTuple):
    path: str
    type: str
    unit: str
    default: str
    description: str


class _Section(typing.NamedTuple):
    path: str  # "" for the top level
    title: str
    intro: str
    rows: list[_Row]


def anchor(path: str) -> str:
    """The anchor of the reference section for a path such as ``stages.<stage>.tracks.<track>``."""
    if path == "":
        return "ref-top-level"
    return "ref-" + re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")


def field_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, FieldInfo]]:
    """``(dotted path, field)`` for each field of ``model``, paths under ``prefix``."""
    out = []
    for name, info in model.model_fields.items():
        key = info.alias or name
        out.append((f"{prefix}.{key}" if prefix else key, info))
    return out


def _walk(model: type[BaseModel], prefix: str, title: str, intro_extra: str = "") -> Iterator[_Section]:
    """The section of ``model`` at ``prefix``, then the sections of its nested models, depth first."""
    children: list[tuple[str, type[BaseModel], str]] = []  # (prefix, model, what the placeholder means)
    grouped = _same_model_fields(model)
    group_prefix = f"{prefix}.<{_singular(prefix.rsplit('.', 1)[-1])}>" if grouped else None
    rows = []
    for path, info in field_rows(model, prefix):
        key = path.rsplit(".", 1)[-1]
        ann = info.annotation
        child = _nested(ann)
        link = None
        if child is not None:
            kind, sub, keys = child
            if grouped and sub is grouped:
                child_prefix = group_prefix
                if not any(c[0] == child_prefix for c in children):
                    names = [f.alias or k for k, f in model.model_fields.items()
                             if (_nested(f.annotation) or (None, None))[1] is grouped]
                    children.append((child_prefix, sub, _placeholder_note(child_prefix, names)))
            elif kind == "model":
                child_prefix = path
                children.append((child_prefix, sub, ""))
            elif kind == "mapping":
                child_prefix = f"{path}.<{_singular(key)}>"
                children.append((child_prefix, sub, _placeholder_note(child_prefix, keys)))
            else:  # list
                child_prefix = f"{path}[]"
                children.append((child_prefix, sub, f"Each item of the list `{path}`."))
            link = anchor(child_prefix)
        rows.append(_Row(path, describe_type(ann, info.metadata, link), _unit(info.description or ""),
                         render_default(info), _clean(info.description or "")))
    if prefix == "":
        rows.insert(0, _Row("extends", "text (a file path)", "", "`null`", EXTENDS_DESCRIPTION))
    intro = "\n\n".join(p for p in (intro_extra, _docstring(model)) if p)
    yield _Section(prefix, title, intro, rows)
    for child_prefix, sub, note in children:
        yield from _walk(sub, child_prefix, f"`{child_prefix}`", note)


def _same_model_fields(model: type[BaseModel]) -> type[BaseModel] | None:
    """A model type that two or more fields of ``model`` hold directly (``stages.residential``, ``.php``, ...)."""
    seen: dict[type, int] = {}
    for info in model.model_fields.values():
        child = _nested(info.annotation)
        if child is not None and child[0] == "model":
            seen[child[1]] = seen.get(child[1], 0) + 1
    multiple = [m for m, n in seen.items() if n > 1]
    return multiple[0] if multiple else None


def _nested(ann) -> tuple[str, type[BaseModel], list[str] | None] | None:
    """``("model" | "mapping" | "list", model, literal keys)`` if ``ann`` holds a scenario model, else None."""
    ann, _ = _unwrap(ann)
    args = [a for a in _union_args(ann) if a is not type(None)]
    if len(args) != 1:
        return None
    ann, _ = _unwrap(args[0])
    origin = typing.get_origin(ann)
    if _is_model(ann):
        return ("model", ann, None)
    if origin is dict:
        key, value = typing.get_args(ann)
        value, _ = _unwrap(value)
        if _is_model(value):
            key, _ = _unwrap(key)
            keys = [str(k) for k in typing.get_args(key)] if typing.get_origin(key) is typing.Literal else None
            return ("mapping", value, keys)
    if origin is list:
        (item,) = typing.get_args(ann)
        item, _ = _unwrap(item)
        if _is_model(item):
            return ("list", item, None)
    return None


def _is_model(t) -> bool:
    return isinstance(t, type) and issubclass(t, BaseModel) and not issubclass(t, DistributionFamily)


def _is_distribution(t) -> bool:
    args = [a for a in _union_args(t) if a is not type(None)]
    return bool(args) and all(isinstance(a, type) and issubclass(a, DistributionFamily) for a in args) and len(args) > 1


def _unwrap(ann) -> tuple[Any, list]:
    """Strip ``Annotated``: the bare type and its constraint objects."""
    meta: list = []
    while typing.get_origin(ann) is typing.Annotated:
        ann, *extra = typing.get_args(ann)
        for m in extra:
            meta.extend(m.metadata if isinstance(m, FieldInfo) else [m])
    return ann, meta


def _union_args(ann) -> tuple:
    if typing.get_origin(ann) in (typing.Union, types.UnionType):
        return typing.get_args(ann)
    return (ann,)


def _singular(word: str) -> str:
    return word[:-1] if word.endswith("s") else word


def _placeholder_note(prefix: str, names: list[str] | None) -> str:
    placeholder = prefix.rsplit(".", 1)[-1]
    if names:
        return f"`{placeholder}` is one of " + ", ".join(f"`{n}`" for n in names) + "."
    return f"`{placeholder}` is a name you choose."


def _docstring(model: type) -> str:
    doc = model.__dict__.get("__doc__")
    if not doc:
        return ""
    return _clean(inspect.cleandoc(doc), table=False)


def _clean(text: str, table: bool = True) -> str:
    """Docstring text as Markdown: ``code`` -> `code`, roles dropped, arrows drawn."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text)
    text = re.sub(r"``([^`]+)``", r"`\1`", text)
    text = text.replace(" -> ", " → ")
    if table:
        text = " ".join(text.split()).replace("|", "\\|")
    return text


def _unit(description: str) -> str:
    for pattern, unit in _UNITS:
        m = re.search(pattern, description, flags=re.IGNORECASE)
        if m:
            return m.expand(unit)
    return ""


# --------------------------------------------------------------------------- types, bounds and defaults


def _num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _bounds(base: str, meta: list) -> str:
    lo = next(((">=", m.ge) for m in meta if isinstance(m, at.Ge)), None) or next(
        ((">", m.gt) for m in meta if isinstance(m, at.Gt)), None)
    hi = next((("<=", m.le) for m in meta if isinstance(m, at.Le)), None) or next(
        (("<", m.lt) for m in meta if isinstance(m, at.Lt)), None)
    sym = {">=": "≥", ">": ">", "<=": "≤", "<": "<"}
    if lo and hi:
        lo_op = {">=": "≤", ">": "<"}[lo[0]]
        return f"{base}, {_num(lo[1])} {lo_op} x {sym[hi[0]]} {_num(hi[1])}"
    if lo:
        return f"{base} {sym[lo[0]]} {_num(lo[1])}"
    if hi:
        return f"{base} {sym[hi[0]]} {_num(hi[1])}"
    return base


def _length(meta: list, noun: tuple[str, str]) -> str:
    lo = next((m.min_length for m in meta if isinstance(m, at.MinLen)), None)
    hi = next((m.max_length for m in meta if isinstance(m, at.MaxLen)), None)

    def n(k: int) -> str:
        return f"{k} {noun[0] if k == 1 else noun[1]}"

    if lo is not None and lo == hi:
        return f", exactly {n(lo)}"
    if lo is not None and hi is not None:
        return f", {lo} to {n(hi)}"
    if lo:
        return f", at least {n(lo)}"
    if hi is not None:
        return f", at most {n(hi)}"
    return ""


_SCALARS = {int: ("integer", "integers"), float: ("number", "numbers"), str: ("text", "text values"),
            bool: ("true or false", "true or false values")}


def describe_type(ann, meta: list | None = None, link: str | None = None, plural: bool = False) -> str:
    """A field's type in words, with its allowed values and bounds (``number, 0 ≤ x ≤ 1``).

    ``link`` is the anchor of the section a nested model is described in;
    ``plural`` words the type as the items of a list.
    """
    ann, inner_meta = _unwrap(ann)
    meta = [*(meta or []), *inner_meta]
    if _is_distribution(ann):
        text = "[distributions](#ref-distributions)" if plural else "[distribution](#ref-distributions)"
        return text + (", or `null`" if type(None) in _union_args(ann) else "")
    args = _union_args(ann)
    if len(args) > 1:
        options = [a for a in args if a is not type(None)]
        words = [describe_type(a, meta if len(options) == 1 else None, link, plural) for a in options]
        text = ("; or " if any("," in w for w in words) else " or ").join(words)
        return text + (", or `null`" if type(None) in args else "")
    origin = typing.get_origin(ann)
    if origin is typing.Literal:
        values = [f"`{v}`" for v in typing.get_args(ann)]
        if plural:
            return "values from " + ", ".join(values)
        return values[0] if len(values) == 1 else "one of " + ", ".join(values)
    if origin is list:
        (item,) = typing.get_args(ann)
        return f"list of {describe_type(item, None, link, plural=True)}{_length(meta, ('item', 'items'))}"
    if origin is dict:
        key, value = typing.get_args(ann)
        keys = "name" if key is str else ", ".join(f"`{k}`" for k in typing.get_args(_unwrap(key)[0]))
        return f"mapping from {keys} to {describe_type(value, None, link)}{_length(meta, ('entry', 'entries'))}"
    if _is_model(ann):
        word = "sections" if plural else "section"
        return f"[{word}](#{link})" if link else word
    singular, many = _SCALARS.get(ann, (getattr(ann, "__name__", str(ann)),) * 2)
    base = many if plural else singular
    if ann is str:
        return base + _length(meta, ("character", "characters"))
    return _bounds(base, meta)


def default_value(info: FieldInfo) -> Any:
    """The value a field takes when a scenario leaves it out (calls a default factory)."""
    if info.default_factory is not None:
        return info.default_factory()
    return info.default


def render_default(info: FieldInfo) -> str:
    """The default column: ``required``, a section's defaults, or the value as YAML in backticks."""
    if info.is_required():
        return "required"
    value = default_value(info)
    if isinstance(value, BaseModel):
        return SECTION_DEFAULT
    return f"`{yaml_value(value)}`"


def yaml_value(value: Any) -> str:
    """``value`` as it would be written in a scenario file (YAML flow style)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=10_000).strip()


# --------------------------------------------------------------------------- rendering


def _table(rows: list[_Row]) -> str:
    lines = ["| field | type and allowed values | unit | default | description |", "|---|---|---|---|---|"]
    for r in rows:
        key = r.path.rsplit(".", 1)[-1]  # the section's heading holds the rest of the path
        lines.append(f"| `{key}` | {r.type} | {r.unit or '–'} | {r.default} | {r.description} |")
    return "\n".join(lines)


def _section_markdown(s: _Section) -> str:
    head = f"## {s.title} {{#{anchor(s.path)}}}"
    return "\n\n".join(p for p in (head, s.intro, _table(s.rows)) if p)


def distribution_families() -> list[type[BaseModel]]:
    """The distribution families of the tagged union, in the order the schema lists them."""
    union, _ = _unwrap(Distribution)
    return list(typing.get_args(union))


def _distributions_markdown() -> str:
    families = distribution_families()
    tags = [typing.get_args(f.model_fields["dist"].annotation)[0] for f in families]
    out = [
        "## Distributions {#ref-distributions}",
        "A field of type distribution is a mapping: `dist:` names the family, and the family's parameters "
        "follow, for example `{dist: lognormal, median: 50, sigma: 0.6}`. Parameters are in the unit of the "
        "field that uses the distribution: days, or hours for `intake.assessment_hours`. The families are "
        + ", ".join(f"[`{t}`](#{anchor('dist.' + t)})" for t in tags) + ".",
    ]
    for family, tag in zip(families, tags):
        out.append(f"### `dist: {tag}` {{#{anchor('dist.' + tag)}}}")
        doc = _docstring(family)
        if doc:
            out.append(doc)
        rows = [_Row(path, describe_type(info.annotation, info.metadata), _unit(info.description or ""),
                     render_default(info), _clean(info.description or ""))
                for path, info in field_rows(family)]
        out.append(_table(rows))
    return "\n\n".join(out)
