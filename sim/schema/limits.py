"""Limits on what a scenario, sweep or targets file may ask for, and a YAML reader that keeps them.

Validation must bound what it accepts: a few hundred bytes of YAML aliases can
expand to billions of nodes, a special file can be read forever, and a horizon
of ten million days or a billion design points validates and then hangs.  Every
limit below is checked before anything runs, with the usual one-line error, and
each can be raised on purpose where a real study needs it, by setting the
environment variable ``IOPSIM_LIMIT_<NAME>`` (for example
``IOPSIM_LIMIT_HORIZON_DAYS=73000``).
"""

from __future__ import annotations

import math
import os
import reprlib
import stat
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

#: name -> (default, what it bounds).  Raised with IOPSIM_LIMIT_<NAME>.
DEFAULTS: dict[str, tuple[float, str]] = {
    "file_bytes": (2_000_000, "size of a YAML file, in bytes"),
    "yaml_nodes": (200_000, "YAML nodes after alias expansion"),
    "yaml_depth": (64, "nesting depth of a YAML document"),
    "extends_depth": (32, "files in a chain of extends: (a scenario, its parent, its parent's parent, ...)"),
    "horizon_days": (36_500, "horizon_days (100 years)"),
    "replications": (10_000, "replications of one scenario or point"),
    "jobs": (256, "worker processes (--jobs)"),
    "referrals_per_week": (100_000, "referrals_per_week"),
    "count": (1_000_000, "a count of people, places or groups (headcount, capacity, waitlists)"),
    "design_points": (1_000_000, "points of a sweep design"),
    "plans": (10_000, "plans a planner simulates (a grid, a search's trials, a lever's levels)"),
    "distribution_value": (1e9, "the size of a distribution parameter (days, hours, or a spread)"),
    "amount": (1e9, "an amount of money per unit: a wage, a rate, a cost per day or per service"),
}


def limit(name: str) -> float:
    """The limit ``name``: its default, or the value of ``IOPSIM_LIMIT_<NAME>``."""
    default, _ = DEFAULTS[name]
    raw = os.environ.get(f"IOPSIM_LIMIT_{name.upper()}")
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        return default
    return value if value > 0 and math.isfinite(value) else default


def _num(x: float) -> str:
    """A value for a message: '1,000,000', '1e+300'; an integer too large for a float as '1.0e+400'."""
    if isinstance(x, int) and not isinstance(x, bool):
        return f"{x:,}" if abs(x) < 10**15 else f"{Decimal(x):.1e}"
    return f"{int(x):,}" if math.isfinite(x) and float(x).is_integer() and abs(x) < 1e15 else f"{x:g}"


def over(name: str, value: float) -> str:
    """The message for a value above limit ``name``."""
    return (f"{_num(value)} is above the limit of {_num(limit(name))} ({DEFAULTS[name][1]}); "
            f"set IOPSIM_LIMIT_{name.upper()} to raise it")


class YamlLimitError(ValueError):
    """A YAML document breaks one of the limits (message is user-facing)."""


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False):
    # Merge keys (`<<: *defaults`) first, as the safe loader does; a key written twice is refused, while a
    # key that overrides one merged in is allowed (that is what merge keys are for).
    n_explicit = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)  # the merged pairs come first, then the explicit ones
    seen: dict[Any, int] = {}
    for key_node, _ in node.value[len(node.value) - n_explicit:]:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise YamlLimitError(f"line {key_node.start_mark.line + 1}: a mapping key must be a plain value") from None
        if key in seen:
            raise YamlLimitError(f"line {key_node.start_mark.line + 1}: duplicate key {key!r} "
                                 f"(first on line {seen[key] + 1}); each key may appear once")
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _expanded_size(node: yaml.Node, max_nodes: float, max_depth: float) -> None:
    """Raise if the node graph, with aliases expanded, is larger or deeper than allowed.

    Sizes are memoised per node, so a "billion laughs" graph is measured in
    time proportional to its few distinct nodes, never expanded.
    """
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()  # nodes whose children are being measured: meeting one again is a cycle
    # Iterative post-order walk (no recursion: deep documents are what we guard against).
    stack: list[tuple[yaml.Node, bool]] = [(node, False)]
    while stack:
        n, done = stack.pop()
        if id(n) in size:
            continue
        children = []
        if isinstance(n, yaml.SequenceNode):
            children = list(n.value)
        elif isinstance(n, yaml.MappingNode):
            children = [c for kv in n.value for c in kv]
        if not done:
            if id(n) in open_:
                raise YamlLimitError("an alias refers to the node that contains it (a recursive alias)")
            open_.add(id(n))
            stack.append((n, True))
            for c in children:
                if id(c) in open_:
                    raise YamlLimitError("an alias refers to the node that contains it (a recursive alias)")
                if id(c) not in size:
                    stack.append((c, False))
            continue
        open_.discard(id(n))
        size[id(n)] = 1 + sum(size[id(c)] for c in children)
        depth[id(n)] = 1 + max((depth[id(c)] for c in children), default=0)
        if size[id(n)] > max_nodes:
            raise YamlLimitError(f"the document expands to more than {max_nodes:g} nodes (aliases included); "
                                 "set IOPSIM_LIMIT_YAML_NODES to raise the limit")
        if depth[id(n)] > max_depth:
            raise YamlLimitError(f"the document is nested more than {max_depth:g} levels deep; "
                                 "set IOPSIM_LIMIT_YAML_DEPTH to raise the limit")


def load_yaml_text(text: str) -> Any:
    """Parse one YAML document within the node, depth and duplicate-key limits."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, limit("yaml_nodes"), limit("yaml_depth"))
        return loader.construct_document(node)
    except ValueError as exc:  # Python refuses to read an integer of more than 4,300 digits
        if "digits" in str(exc):
            raise YamlLimitError("a number has more digits than any value could need (more than 4,300)") from None
        raise
    except RecursionError:
        raise YamlLimitError(f"the document is nested too deeply (more than {limit('yaml_depth'):g} levels)") from None
    finally:
        loader.dispose()


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be read as a file another file names (``extends``, ``base``, ``targets``), or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"file not found: {path}"
    except OSError as exc:  # a name too long, a file where a folder should be, no permission
        return f"cannot use {reprlib.repr(str(path))} ({exc.strerror or exc})"
    if stat.S_ISDIR(st.st_mode):
        return f"not a regular file (a directory), expected a YAML file: {path}"
    if not stat.S_ISREG(st.st_mode):
        return f"not a regular file (a device, pipe or socket): {path}"
    return None


def read_regular_file(path: Path) -> str:
    """The text of ``path``, which must be a regular file within the size limit (UTF-8)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise YamlLimitError("file not found") from None
    except OSError as exc:
        raise YamlLimitError(f"cannot read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise YamlLimitError("is a directory, expected a YAML file")
    if not stat.S_ISREG(st.st_mode):
        raise YamlLimitError("not a regular file (a device, pipe or socket); give a YAML file")
    max_bytes = limit("file_bytes")
    if st.st_size > max_bytes:
        raise YamlLimitError(f"the file is {st.st_size:,} bytes, above the limit of {max_bytes:,.0f}; "
                             "set IOPSIM_LIMIT_FILE_BYTES to raise it")
    try:
        with open(path, "rb") as fh:
            data = fh.read(int(max_bytes) + 1)
    except OSError as exc:
        raise YamlLimitError(f"cannot read ({exc.strerror or exc})") from None
    if len(data) > max_bytes:
        raise YamlLimitError(f"the file is larger than {max_bytes:,.0f} bytes; set IOPSIM_LIMIT_FILE_BYTES to raise it")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise YamlLimitError("not a UTF-8 text file") from None
