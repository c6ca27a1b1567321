"""Request shapes of the OpenAI-compatible endpoints (what vLLM calls its ``protocol``)."""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path

from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from inference.logprobs import MAX_COMPLETION_LOGPROBS, MAX_TOP_LOGPROBS
from platform.errors import ApiError
from platform.strict_types import StrictJSONTypes

ROLES = ("system", "developer", "user", "assistant", "tool")
SERVICE_TIERS = ("auto", "default", "flex", "priority")


class StringOrListField(serializers.Field):
    """A string, or a list of strings (OpenAI's ``stop`` and ``prompt``)."""

    def __init__(self, *, max_items: int, min_items: int = 0, **kwargs):
        self.max_items = max_items
        self.min_items = min_items
        super().__init__(**kwargs)

    def to_internal_value(self, data):
        if isinstance(data, str):
            return [data]
        if isinstance(data, list) and all(isinstance(item, str) for item in data):
            if len(data) < self.min_items:
                raise serializers.ValidationError(f"At least {self.min_items} item is required.")
            if len(data) > self.max_items:
                raise serializers.ValidationError(f"At most {self.max_items} items are allowed.")
            return data
        raise serializers.ValidationError("Must be a string or a list of strings.")

    def to_representation(self, value):
        return value


@extend_schema_field({"oneOf": [
    {"type": "string"},
    {"type": "array", "items": {"type": "object", "required": ["type", "text"], "properties": {
        "type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}}}},
]})
class MessageContentField(serializers.Field):
    """A message's content: a string, or a list of ``{"type": "text", "text": ...}`` parts."""

    def to_internal_value(self, data):
        if isinstance(data, str):
            return data
        if isinstance(data, list):
            texts = []
            for part in data:
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise serializers.ValidationError("Only text content parts are supported.")
                texts.append(part["text"])
            return "".join(texts)
        raise serializers.ValidationError("Must be a string or a list of text parts.")

    def to_representation(self, value):
        return value


_SCHEMA_NAME = {"type": "string", "pattern": "^[a-zA-Z0-9_-]{1,64}$"}
JSON_SCHEMA_OBJECT = {"type": "object", "description": "A JSON Schema (the subset llguidance implements; "
                      "anything else is a 400 naming what is not supported)."}


@extend_schema_field({"oneOf": [
    {"type": "object", "required": ["type"], "properties": {"type": {"type": "string", "enum": ["text"]}}},
    {"type": "object", "required": ["type"], "properties": {"type": {"type": "string", "enum": ["json_object"]}}},
    {"type": "object", "required": ["type", "json_schema"], "properties": {
        "type": {"type": "string", "enum": ["json_schema"]},
        "json_schema": {"type": "object", "required": ["name", "schema"], "properties": {
            "name": _SCHEMA_NAME, "description": {"type": "string"}, "schema": JSON_SCHEMA_OBJECT,
            "strict": {"type": ["boolean", "null"]}}}}},
]})
class ResponseFormatField(serializers.Field):
    """OpenAI's ``response_format``: ``text``, ``json_object`` (any JSON object) or ``json_schema``. Becomes the
    grammar the output is decoded under (None for text); a schema the grammar library cannot enforce is refused
    here, before anything is admitted."""

    def to_internal_value(self, data):
        from inference.constrained import GrammarError, grammar_check
        from inference.grammar_spec import GrammarSpec

        if not isinstance(data, dict) or not isinstance(data.get("type"), str) or \
                data["type"] not in ("text", "json_object", "json_schema"):
            raise serializers.ValidationError('Must be an object whose type is "text", "json_object" or "json_schema".')
        if data["type"] == "text":
            return None
        if data["type"] == "json_object":
            return GrammarSpec.any_json_object()
        spec = data.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise serializers.ValidationError("json_schema must be an object with a schema (an object).")
        if "description" in spec and not isinstance(spec["description"], str):
            raise serializers.ValidationError("json_schema.description must be a string.")
        name = spec.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", name):
            raise serializers.ValidationError("json_schema.name must be 1-64 letters, digits, _ or -.")
        if spec.get("strict") is not None and not isinstance(spec["strict"], bool):
            raise serializers.ValidationError("json_schema.strict must be a boolean.")
        grammar = GrammarSpec.for_schema(spec["schema"])
        try:
            grammar_check(grammar)
        except GrammarError as error:
            raise serializers.ValidationError(f"The schema cannot be enforced: {error}") from None
        return grammar

    def to_representation(self, value):
        return value


_FUNCTION_NAME = re.compile(r"[a-zA-Z0-9_-]{1,64}")


def _no_null_items(items):
    """A list field that may itself be null holds objects, never nulls (DRF lets a null item through to a
    child serializer that allows null)."""
    if items and any(item is None for item in items):
        raise serializers.ValidationError("Items must be objects, not null.")
    return items


class CalledFunctionSerializer(StrictJSONTypes, serializers.Serializer):
    name = serializers.CharField(max_length=256)
    arguments = serializers.CharField(allow_blank=True, trim_whitespace=False, help_text="JSON text.")


class MessageToolCallSerializer(StrictJSONTypes, serializers.Serializer):
    """A call an assistant message made (sent back in a later request's conversation)."""

    id = serializers.CharField(max_length=256)
    type = serializers.ChoiceField(choices=["function"])
    function = CalledFunctionSerializer()


class MessageSerializer(StrictJSONTypes, serializers.Serializer):
    role = serializers.ChoiceField(choices=ROLES)
    content = MessageContentField(allow_null=True, help_text="null for an assistant message that only called tools.")
    name = serializers.CharField(required=False, max_length=64)
    tool_calls = MessageToolCallSerializer(many=True, required=False, allow_null=True, max_length=128)
    tool_call_id = serializers.CharField(required=False, max_length=256, help_text="A tool message: the call it answers.")

    def validate_content(self, value):
        return "" if value is None else value

    def validate_tool_calls(self, value):
        return _no_null_items(value)


class FunctionSerializer(StrictJSONTypes, serializers.Serializer):
    name = serializers.RegexField(r"^[a-zA-Z0-9_-]{1,64}$", max_length=64,
                                  error_messages={"invalid": "A function name is 1-64 letters, digits, _ or -."})
    description = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False)
    parameters = serializers.DictField(required=False, allow_null=True, help_text="A JSON Schema of the arguments.")
    strict = serializers.BooleanField(required=False, allow_null=True)

    def validate_parameters(self, value):
        from inference.constrained import GrammarError, grammar_check
        from inference.grammar_spec import GrammarSpec

        if value is None:
            return None
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be an object (a JSON Schema).")
        try:  # a forced call is decoded under it: refuse now what could not be enforced then
            grammar_check(GrammarSpec.for_schema(value))
        except GrammarError as error:
            raise serializers.ValidationError(f"The schema cannot be enforced: {error}") from None
        return value


class ToolSerializer(StrictJSONTypes, serializers.Serializer):
    type = serializers.ChoiceField(choices=["function"])
    function = FunctionSerializer()


@extend_schema_field({"oneOf": [
    {"type": "string", "enum": ["none", "auto", "required"]},
    {"type": "object", "required": ["type", "function"], "properties": {
        "type": {"type": "string", "enum": ["function"]},
        "function": {"type": "object", "required": ["name"], "properties": {"name": _SCHEMA_NAME}}}},
]})
class ToolChoiceField(serializers.Field):
    def to_internal_value(self, data):
        if data in ("none", "auto", "required") and isinstance(data, str):
            return data
        if isinstance(data, dict) and data.get("type") == "function" and isinstance(data.get("function"), dict):
            name = data["function"].get("name")
            if isinstance(name, str) and _FUNCTION_NAME.fullmatch(name):
                return {"type": "function", "function": {"name": name}}
        raise serializers.ValidationError('Must be "none", "auto", "required" or {"type": "function", '
                                          '"function": {"name": ...}}.')

    def to_representation(self, value):
        return value


class StreamOptionsSerializer(StrictJSONTypes, serializers.Serializer):
    include_usage = serializers.BooleanField(required=False, default=False)


@cache
def _unsupported_fields() -> dict[str, set[str]]:
    """Each unimplemented OpenAI field and its no-op values, compared as JSON text (so ``0`` is not ``false``)."""
    table = json.loads((Path(__file__).with_name("unsupported_parameters.json")).read_text())["fields"]
    return {name: {json.dumps(value, sort_keys=True) for value in values} for name, values in table.items()}


def unsupported_fields_refuse(data) -> None:
    """A 400 naming the first OpenAI field sent that this server would otherwise ignore (a client asking for
    tool calls or JSON mode must not believe it got them)."""
    if not isinstance(data, dict):
        return
    for name, no_ops in _unsupported_fields().items():
        if name in data and json.dumps(data[name], sort_keys=True) not in no_ops:
            raise ApiError(f"{name} is not supported by this server.", param=name, code="unsupported_parameter")


def _within_new_token_limit(value: int | None) -> int | None:
    """Checked here as well as where the job is built: a chat request may send both max_tokens and
    max_completion_tokens, and the one that is not used must be within the limit too (as the schema says)."""
    from django.conf import settings

    if value is not None and value > settings.SLUICE_MAX_NEW_TOKENS:
        raise serializers.ValidationError(f"{value} is above this server's limit of {settings.SLUICE_MAX_NEW_TOKENS}.")
    return value


class GenerationOptionsSerializer(StrictJSONTypes, serializers.Serializer):
    """The sampling fields shared by chat and text completions."""

    model = serializers.CharField()
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    # No defaults here: a field left out (or null) takes the model's default (inference.sampling_defaults).
    temperature = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=2.0)
    top_p = serializers.FloatField(required=False, allow_null=True, min_value=0.0, max_value=1.0)
    top_k = serializers.IntegerField(required=False, allow_null=True, min_value=0)  # vLLM's; 0 = off
    stop = StringOrListField(required=False, allow_null=True, max_items=4)
    # OpenAI's bounds (a signed 64-bit integer); torch's generator and vLLM's take no more.
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=-(2**63), max_value=2**63 - 1)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = StreamOptionsSerializer(required=False, allow_null=True)
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)
    # OpenAI's processing tier: "flex" is batch work, which yields to the account's interactive work
    # (inference/fair_queue.py); "auto", "default" and "priority" are interactive.
    service_tier = serializers.ChoiceField(choices=SERVICE_TIERS, required=False, allow_null=True)
    n = serializers.IntegerField(required=False, default=1)
    # vLLM extensions, so a benchmark can ask for exactly N tokens.
    min_tokens = serializers.IntegerField(required=False, default=0, min_value=0)
    ignore_eos = serializers.BooleanField(required=False, default=False)

    def to_internal_value(self, data):
        unsupported_fields_refuse(data)
        return super().to_internal_value(data)

    def validate_n(self, value):
        if value != 1:
            raise serializers.ValidationError("Only n=1 is supported.")
        return value

    def validate_top_p(self, value):
        if value is not None and value <= 0:
            raise serializers.ValidationError("Must be greater than 0.")
        return value

    def validate_max_tokens(self, value):
        return _within_new_token_limit(value)


@extend_schema_serializer(component_name="ChatCompletion")  # its request component: ChatCompletionRequest
class ChatCompletionRequestSerializer(GenerationOptionsSerializer):
    messages = MessageSerializer(many=True, allow_empty=False)
    max_completion_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)
    logprobs = serializers.BooleanField(required=False, allow_null=True,
                                        help_text="Return the log-probability of each generated token.")
    top_logprobs = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_TOP_LOGPROBS,
        help_text="With `logprobs: true`: also the most likely alternatives at each position (0-20).")
    tools = ToolSerializer(many=True, required=False, allow_null=True, max_length=128)
    tool_choice = ToolChoiceField(required=False, allow_null=True)
    parallel_tool_calls = serializers.BooleanField(required=False, allow_null=True)
    response_format = ResponseFormatField(
        required=False, allow_null=True,
        help_text="`json_object` or `json_schema`: the reply is decoded under that grammar, so it always parses "
                  "(and validates) unless it is cut short by max_tokens (finish_reason `length`).")

    def validate_max_completion_tokens(self, value):
        return _within_new_token_limit(value)

    def validate_tools(self, value):
        return _no_null_items(value)

    def validate(self, attrs):
        if attrs.get("top_logprobs") and not attrs.get("logprobs"):
            raise serializers.ValidationError({"top_logprobs": "top_logprobs needs logprobs: true."})
        tools, choice = attrs.get("tools") or [], attrs.get("tool_choice")
        names = [tool["function"]["name"] for tool in tools]
        if len(set(names)) < len(names):
            raise serializers.ValidationError({"tools": "Two tools have the same name."})
        if choice not in (None, "none") and not tools:
            raise serializers.ValidationError({"tool_choice": "tool_choice needs tools."})
        if isinstance(choice, dict) and choice["function"]["name"] not in names:
            raise serializers.ValidationError(
                {"tool_choice": f"No tool is named {choice['function']['name']!r}."})
        return attrs


@extend_schema_serializer(component_name="Completion")  # its request component: CompletionRequest
class CompletionRequestSerializer(GenerationOptionsSerializer):
    prompt = StringOrListField(min_items=1, max_items=1)
    logprobs = serializers.IntegerField(
        required=False, allow_null=True, min_value=0, max_value=MAX_COMPLETION_LOGPROBS,
        help_text="Return each token's log-probability and this many most likely alternatives (0-5).")


@extend_schema_serializer(component_name="Generate")  # its request component: GenerateRequest
class GenerateRequestSerializer(StrictJSONTypes, serializers.Serializer):
    """The original Flask example's contract: ``{"text": ...}`` in, ``{"text": ...}`` out."""

    text = serializers.CharField(trim_whitespace=False)
    max_tokens = serializers.IntegerField(required=False, allow_null=True, min_value=1)


class GenerateResponseSerializer(serializers.Serializer):
    text = serializers.CharField()


class TaskTextField(serializers.CharField):
    def __init__(self, **kwargs):
        super().__init__(allow_blank=False, trim_whitespace=False, **kwargs)

    def to_internal_value(self, data):
        value = super().to_internal_value(data)
        if not value.strip():
            raise serializers.ValidationError("This field may not be blank.")
        return value


def _check_item_count(items: list) -> list:
    from django.conf import settings

    if not items:
        raise serializers.ValidationError("Must not be empty.")
    if len(items) > settings.SLUICE_TASK_MAX_INPUTS:
        raise serializers.ValidationError(f"At most {settings.SLUICE_TASK_MAX_INPUTS} items per request.")
    return items


def text_items_check(items: list) -> list:
    """Each item of a list input is a non-blank string (as ``TaskTextField`` checks one); the error names the item."""
    field = TaskTextField()
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise serializers.ValidationError(f"Item {index} must be a string.")
        try:
            field.run_validation(item)
        except serializers.ValidationError:
            raise serializers.ValidationError(f"Item {index} is empty.") from None
    return items


@extend_schema_serializer(component_name="Sentiment")  # its request component: SentimentRequest
class SentimentRequestSerializer(StrictJSONTypes, serializers.Serializer):
    """``input``: a string or a list of strings."""

    input = serializers.JSONField()
    model = serializers.CharField(required=False)

    def validate_input(self, value):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise serializers.ValidationError("Must be a string or a list of strings.")
        _check_item_count(items)
        return text_items_check(items)


class QuestionContextSerializer(StrictJSONTypes, serializers.Serializer):
    question = TaskTextField(max_length=2000)
    context = TaskTextField()


class QARequestSerializer(StrictJSONTypes, serializers.Serializer):
    """Either ``question`` and ``context``, or ``input``: a list of such pairs."""

    question = TaskTextField(required=False, max_length=2000)
    context = TaskTextField(required=False)
    input = QuestionContextSerializer(many=True, required=False)
    model = serializers.CharField(required=False)

    def validate(self, attrs):
        if "input" in attrs:
            if "question" in attrs or "context" in attrs:
                raise serializers.ValidationError({"input": "Send either input or question and context, not both."})
            try:
                _check_item_count(attrs["input"])
            except serializers.ValidationError as error:
                raise serializers.ValidationError({"input": error.detail}) from None
            attrs["pairs"] = [(item["question"], item["context"]) for item in attrs["input"]]
            return attrs
        for field in ("question", "context"):
            if field not in attrs:
                raise serializers.ValidationError({field: "This field is required."})
        attrs["pairs"] = [(attrs["question"], attrs["context"])]
        return attrs
