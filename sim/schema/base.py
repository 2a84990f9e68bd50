"""Base class for every validated, immutable piece of a scenario."""

from __future__ import annotations

import types
import typing

from pydantic import BaseModel, BeforeValidator, ConfigDict, model_validator


class FieldError(ValueError):
    """A validation error that knows the dotted path (below the model) it concerns."""

    def __init__(self, path: str, message: str):
        self.path = path
        super().__init__(message)


def reject_bool(value):
    """YAML reads ``true`` as a boolean and pydantic would take it as 1: refuse it."""
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {str(value).lower()}")
    return value


NotBool = BeforeValidator(reject_bool)


def _number_not_bool(annotation) -> bool:
    """True if ``annotation`` accepts a number but not a boolean."""
    seen: set = set()

    def walk(t):
        if t in seen:
            return
        seen.add(t)
        origin = typing.get_origin(t)
        if origin is typing.Annotated:
            walk(typing.get_args(t)[0])
        elif origin in (typing.Union, types.UnionType):
            for a in typing.get_args(t):
                walk(a)

    walk(annotation)
    return bool(seen & {int, float}) and bool not in seen


class FrozenModel(BaseModel):
    """Immutable pydantic model that rejects unknown keys, naming the allowed ones.

    Pydantic's own ``extra="forbid"`` message does not list what *is* allowed;
    a planner who typed ``los_day`` needs to see ``los_days`` in the error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, use_attribute_docstrings=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data):
        if isinstance(data, dict):
            allowed = {f.alias or name for name, f in cls.model_fields.items()}
            unknown = [k for k in data if k not in allowed and k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
            for name, f in cls.model_fields.items():
                key = f.alias or name
                if isinstance(data.get(key), bool) and _number_not_bool(f.annotation):
                    raise FieldError(key, f"expected a number, got {str(data[key]).lower()}")
        return data
