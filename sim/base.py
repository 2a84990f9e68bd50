"""Base class for every validated, immutable piece of a scenario."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, model_validator


class FrozenModel(BaseModel):
    """Immutable pydantic model that rejects unknown keys, naming the allowed ones.

    Pydantic's own ``extra="forbid"`` message does not list what *is* allowed;
    a planner who typed ``los_day`` needs to see ``los_days`` in the error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _reject_unknown_keys(cls, data):
        if isinstance(data, dict):
            allowed = {f.alias or name for name, f in cls.model_fields.items()}
            unknown = [k for k in data if k not in allowed and k not in cls.model_fields]
            if unknown:
                raise ValueError(f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        return data
