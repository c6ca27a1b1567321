"""What the OpenAPI schema (``/v1/schema``, drf-spectacular) must say beyond what it reads off the
serializers, so that a request valid by the schema is served and one invalid by it is refused
(``tests/test_schema_fuzz.py`` runs schemathesis over it):

- ``NonBlankCharFieldExtension``: DRF trims strings and refuses blank ones and NUL characters;
- ``server_limits``: limits read from this server's settings when the schema is generated (the models served,
  ``SLUICE_MAX_NEW_TOKENS``, the item caps), and what DRF accepts that the serializers cannot say (a non-empty
  list of messages, an empty optional query parameter read as absent).

Imported by ``PlatformConfig.ready`` so the extension is registered before any schema is generated."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from rest_framework import serializers

from inference.embedding_model import DIMENSIONS, EMBEDDING_MODELS
from inference.registry import available_models
from inference.serializers import TaskTextField
from inference.task_models import MODEL_IDS as TASK_MODEL_IDS

NO_NUL = r"^[^\x00]*$"
NOT_BLANK = r"\S"  # JSON Schema patterns search: somewhere a character that is not whitespace
NOT_EMPTY_NO_NUL = r"^[^\x00]+$"
NOT_BLANK_NO_NUL = r"^[^\x00]*[^\s\x00][^\x00]*$"  # something besides whitespace, and no NUL


class NonBlankCharFieldExtension(OpenApiSerializerFieldExtension):
    """A request string as DRF's CharField checks it: no NUL (ProhibitNullCharactersValidator) and, unless
    blank is allowed, not only whitespace (it is trimmed first; TaskTextField checks the same untrimmed)."""

    target_class = serializers.CharField
    match_subclasses = True

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        if direction != "request" or self.target.read_only or schema.get("type") != "string" or "format" in schema:
            return schema
        if self.target.allow_blank:
            schema["pattern"] = NO_NUL
        elif self.target.trim_whitespace or isinstance(self.target, TaskTextField):
            schema["pattern"] = NOT_BLANK_NO_NUL
        else:
            schema["pattern"] = NOT_EMPTY_NO_NUL
        return schema


def _texts(*, max_items: int, nul_refused: bool) -> dict:
    """A string or a non-empty list of strings, none blank (``input`` of sentiment and moderation; sentiment
    checks each as a CharField, which refuses NUL)."""
    text = {"type": "string", "pattern": NOT_BLANK_NO_NUL if nul_refused else NOT_BLANK}
    return {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": max_items}]}


def _generation_limits() -> dict[str, dict]:
    max_new = settings.SLUICE_MAX_NEW_TOKENS
    return {
        "model": {"enum": available_models()},
        "max_tokens": {"maximum": max_new},
        "max_completion_tokens": {"maximum": max_new},
        "min_tokens": {"maximum": max_new, "description": "vLLM's extension: at least this many tokens before a "
                       "stop. At most the `max_tokens` in use (its default when absent), else a 400."},
        "top_p": {"exclusiveMinimum": True},  # 0 < top_p <= 1
        "n": {"enum": [1], "description": "Only 1 is supported."},
        "messages": {"minItems": 1},
    }


def _task_limits(task: str) -> dict[str, dict]:
    return {"model": {"enum": [TASK_MODEL_IDS[task], *available_models()], "description": f"`{TASK_MODEL_IDS[task]}` "
                      "(the trained task model, also the default when left out), or a served generator (local, remote "
                      "or an alias) to run the task on by prompting it."}}


def _every_alternative_requires_something(body: dict, components: dict) -> bool:
    schema = body.get("content", {}).get("application/json", {}).get("schema", {})
    name = schema.get("$ref", "").rsplit("/", 1)[-1]
    alternatives = components.get(name, {}).get("oneOf", [])
    resolved = [components.get(ref.get("$ref", "").rsplit("/", 1)[-1], {}) for ref in alternatives]
    return bool(resolved) and all(alternative.get("required") for alternative in resolved)


def server_limits(result, generator, request, public):
    """drf-spectacular postprocessing hook: this server's limits on the request components."""
    components = result.get("components", {}).get("schemas", {})
    max_items = settings.SLUICE_TASK_MAX_INPUTS
    per_component = {
        "ChatCompletionRequest": _generation_limits(),
        "CompletionRequest": _generation_limits(),
        "GenerateRequest": {"max_tokens": {"maximum": settings.SLUICE_MAX_NEW_TOKENS}},
        "SentimentRequest": {**_task_limits("sentiment"), "input": _texts(max_items=max_items, nul_refused=True)},
        "QAPairRequest": _task_limits("qa"),
        "QABatchRequest": {**_task_limits("qa"), "input": {"minItems": 1, "maxItems": max_items}},
        "ModerationRequest": {"input": _texts(max_items=settings.SLUICE_MODERATION_MAX_INPUTS, nul_refused=False)},
        "EmbeddingRequest": {"model": {"enum": list(EMBEDDING_MODELS)},
                             "input": _texts(max_items=settings.SLUICE_EMBEDDING_MAX_INPUTS, nul_refused=True),
                             "dimensions": {"enum": [DIMENSIONS, None]}},
    }
    for operations in result.get("paths", {}).values():
        for operation in operations.values():
            for parameter in operation.get("parameters", []):
                if parameter["in"] == "query" and not parameter.get("required"):
                    parameter["allowEmptyValue"] = True  # DRF reads `?start_date=` as absent
            body = operation.get("requestBody")
            if body and _every_alternative_requires_something(body, components):
                body["required"] = True  # drf-spectacular cannot tell for a oneOf (/v1/qa): no body is a 400
    for name, fields in per_component.items():
        properties = components.get(name, {}).get("properties", {})
        for field, constraints in fields.items():
            if field in properties:
                if "oneOf" in constraints:  # a whole new schema for the field (was free-form JSON)
                    properties[field] = constraints
                else:
                    if "enum" in constraints:
                        properties[field].pop("pattern", None)  # the enum says it all
                    properties[field].update(constraints)
    return result
