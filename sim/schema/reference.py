"""The scenario schema as JSON Schema (for editors) and as a Markdown reference (for the docs).

Both are generated from the pydantic models in :mod:`iopsim.schema.scenario`,
so the documentation of a field can never drift from what validation accepts.
"""

from __future__ import annotations

import json
from typing import Any

from iopsim.schema.scenario import Scenario

SCHEMA_ID = "https://iopsim.org/schema/scenario.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a scenario file."""
    schema = Scenario.model_json_schema(by_alias=True, mode="validation")
    props = schema.setdefault("properties", {})
    props.setdefault("extends", {"type": "string", "description": "Path of a parent scenario file, relative to this one; "
                                 "this file's fields are merged over the parent's."})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID,
            "title": "iopsim scenario", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"
