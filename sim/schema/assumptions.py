"""Assumptions as data: the plausible range of a value the scenario could not take from a publication.

A scenario declares them under ``uncertain:``, by dotted path::

    uncertain:
      stages.iop.availability.weekends_only:
        range: [0.0, 0.2]
        note: share of clients who can attend only at weekends; none published
      relapse.return_probability: [0.3, 0.7]        # the short form: just the range

``iopsim compare --robust`` moves each one across its range, under common
random numbers, to show which assumptions a verdict rests on.
"""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator

from iopsim.schema.base import FieldError, FrozenModel, NotBool


def _short_form(value):
    """``[low, high]`` is short for ``{range: [low, high]}``."""
    if isinstance(value, (list, tuple)):
        return {"range": list(value)}
    return value


class Assumption(FrozenModel):
    """A value's plausible range, with a note on why and a source where one exists."""

    range: tuple[Annotated[float, NotBool], Annotated[float, NotBool]]
    """[low, high], in the field's own unit (ends included)."""
    note: str | None = None
    """What the value is and why it is uncertain."""
    source: str | None = None
    """Where the range comes from (a short name of ``references``, a citation), if anywhere."""

    @model_validator(mode="after")
    def _ordered(self):
        low, high = self.range
        if not (math.isfinite(low) and math.isfinite(high)):
            raise FieldError("range", "the ends must be finite numbers")
        if low > high:
            raise FieldError("range", f"low must not exceed high (got {low:g} > {high:g})")
        return self


AssumptionEntry = Annotated[Assumption, BeforeValidator(_short_form)]


def share_siblings(tree: dict[str, Any], parts: list[str]) -> list[tuple[dict, str]] | None:
    """The (mapping, key) pairs of the shares that must sum to 1 with the share at ``parts``, or None.

    Two layouts hold shares: a mapping of shares (``availability``,
    ``placement``) and the referral sources' ``share`` fields.
    """
    if len(parts) == 4 and parts[0] == "referrals" and parts[1] == "sources" and parts[3] == "share":
        sources = tree.get("referrals", {}).get("sources", {})
        return [(src, "share") for name, src in sources.items() if name != parts[2] and isinstance(src, dict)]
    node: Any = tree
    for p in parts[:-1]:
        if not isinstance(node, dict) or p not in node:
            return None
        node = node[p]
    if parts[-2] not in ("availability", "placement") or not isinstance(node, dict):
        return None
    return [(node, k) for k in node if k != parts[-1]]


def set_assumption(tree: dict[str, Any], parts: list[str], value: float, set_path) -> None:
    """Set an assumption's value; a share among shares that sum to 1 moves with the others rescaled in proportion.

    ``set_path`` is the scenario loader's setter (it knows list indices and says what is wrong).
    """
    siblings = share_siblings(tree, parts)
    if siblings is None:
        set_path(tree, parts, value)
        return
    rest = sum(float(m.get(k) or 0.0) for m, k in siblings)
    set_path(tree, parts, value)
    if rest > 0:
        scale = (1.0 - float(value)) / rest
        for m, k in siblings:
            m[k] = float(m.get(k) or 0.0) * scale
