"""What a request asks its output to match, as plain data (a frozen, hashable value: the cache key of the
compiled grammar). Built from `response_format` or from a forced tool call (inference.tool_calls)."""

from __future__ import annotations

import json
from dataclasses import dataclass

JSON_OBJECT = "json_object"
JSON_SCHEMA = "json_schema"


@dataclass(frozen=True)
class GrammarSpec:
    kind: str  # JSON_OBJECT or JSON_SCHEMA
    schema: str = ""  # the JSON schema as compact JSON text, for JSON_SCHEMA

    @classmethod
    def for_schema(cls, schema: dict) -> "GrammarSpec":
        return cls(JSON_SCHEMA, json.dumps(schema, separators=(",", ":")))  # key order kept: it is the output's order

    @classmethod
    def any_json_object(cls) -> "GrammarSpec":
        return cls(JSON_OBJECT)

    def schema_object(self) -> dict:
        return json.loads(self.schema) if self.kind == JSON_SCHEMA else {"type": "object"}

    def as_response_format(self) -> dict:
        """The OpenAI ``response_format`` that asks an upstream server for the same (its name is not kept)."""
        if self.kind == JSON_OBJECT:
            return {"type": "json_object"}
        return {"type": "json_schema", "json_schema": {"name": "response", "schema": json.loads(self.schema),
                                                       "strict": True}}
