"""Response shapes of the inference endpoints, for the OpenAPI schema only (the bodies are built in
responses.py and task_services.py; tests/test_schema_fuzz.py checks that they agree)."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, PolymorphicProxySerializer, extend_schema_serializer
from rest_framework import serializers

from inference.serializers import QuestionContextSerializer, StringOrListField, TaskTextField
from platform.errors import KEYED, WITH_BODY, error_responses
from platform.strict_types import StrictJSONTypes


class StringOrListFieldExtension(OpenApiSerializerFieldExtension):
    target_class = StringOrListField

    def map_serializer_field(self, auto_schema, direction):
        if not self.target.required:  # `stop`: any strings, or none
            return {"oneOf": [{"type": "string"},
                              {"type": "array", "items": {"type": "string"}, "maxItems": self.target.max_items}]}
        text = {"type": "string", "minLength": 1}  # the prompt: an empty one is refused
        return {"oneOf": [text, {"type": "array", "items": text, "minItems": 1, "maxItems": self.target.max_items}]}


class UsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()


class TopLogprobSerializer(serializers.Serializer):
    token = serializers.CharField(allow_blank=True)
    logprob = serializers.FloatField(help_text="-9999.0 for a token a constraint ruled out.")
    bytes = serializers.ListField(child=serializers.IntegerField(min_value=0, max_value=255), allow_null=True)


class TokenLogprobSerializer(TopLogprobSerializer):
    top_logprobs = TopLogprobSerializer(many=True)


class ChatLogprobsSerializer(serializers.Serializer):
    content = TokenLogprobSerializer(many=True, allow_null=True)
    refusal = TokenLogprobSerializer(many=True, allow_null=True, required=False)


class CalledFunctionSerializer(serializers.Serializer):
    name = serializers.CharField()
    arguments = serializers.CharField(allow_blank=True, help_text="JSON text of the arguments.")


class ToolCallSerializer(serializers.Serializer):
    id = serializers.CharField()
    type = serializers.ChoiceField(choices=["function"])
    function = CalledFunctionSerializer()


class ChatMessageSerializer(serializers.Serializer):
    role = serializers.ChoiceField(choices=["assistant"])
    content = serializers.CharField(allow_blank=True, allow_null=True, help_text="null when the reply is only tool calls.")
    tool_calls = ToolCallSerializer(many=True, required=False, help_text="The calls the reply makes, if any.")


class ChatChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    message = ChatMessageSerializer()
    logprobs = ChatLogprobsSerializer(allow_null=True, help_text="With `logprobs: true`; else null.")
    finish_reason = serializers.CharField(help_text="`stop`, `length`, `tool_calls`, `content_filter` or `error`.")


class ChatCompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["chat.completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = ChatChoiceSerializer(many=True)
    usage = UsageSerializer()


class CompletionLogprobsSerializer(serializers.Serializer):
    tokens = serializers.ListField(child=serializers.CharField(allow_blank=True))
    token_logprobs = serializers.ListField(child=serializers.FloatField())
    top_logprobs = serializers.ListField(child=serializers.DictField(child=serializers.FloatField()))
    text_offset = serializers.ListField(child=serializers.IntegerField())


class TextChoiceSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    text = serializers.CharField(allow_blank=True)
    logprobs = CompletionLogprobsSerializer(allow_null=True, help_text="With `logprobs` (0-5); else null.")
    finish_reason = serializers.CharField(help_text="`stop`, `length`, `content_filter` or `error`.")


class TextCompletionSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["text_completion"])
    created = serializers.IntegerField()
    model = serializers.CharField()
    choices = TextChoiceSerializer(many=True)
    usage = UsageSerializer()


class ModelObjectSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = serializers.ChoiceField(choices=["model"])
    created = serializers.IntegerField()
    owned_by = serializers.CharField()


@extend_schema_serializer(many=False)  # the list action answers one object holding the list
class ModelListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ModelObjectSerializer(many=True)


class SentimentItemSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    label = serializers.ChoiceField(choices=["positive", "negative"])
    scores = serializers.DictField(child=serializers.FloatField(), help_text="A probability per label.")


class SentimentResponseSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    model = serializers.CharField()
    data = SentimentItemSerializer(many=True)
    usage = UsageSerializer()


class AnswerSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    answer = serializers.CharField(allow_null=True, allow_blank=True, help_text="A span of the context, or null.")
    score = serializers.FloatField()
    start = serializers.IntegerField(allow_null=True)
    end = serializers.IntegerField(allow_null=True)
    content_filter = serializers.BooleanField(required=False, help_text="Present when the answer was withheld.")


class QAResponseSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    model = serializers.CharField()
    data = AnswerSerializer(many=True)
    usage = UsageSerializer()


class QABatchSerializer(StrictJSONTypes, serializers.Serializer):
    input = QuestionContextSerializer(many=True, allow_empty=False)
    model = serializers.CharField(required=False)


class QAPairSerializer(StrictJSONTypes, serializers.Serializer):
    question = TaskTextField(max_length=2000)
    context = TaskTextField()
    model = serializers.CharField(required=False)


QA_REQUEST = PolymorphicProxySerializer(
    component_name="QA",
    serializers=[QAPairSerializer, QABatchSerializer],
    resource_type_field_name=None,
)


class HealthSerializer(serializers.Serializer):
    status = serializers.ChoiceField(choices=["ok"])


class ReadinessSerializer(serializers.Serializer):
    ready = serializers.BooleanField()
    model = serializers.CharField(help_text="`ready`, `loading` or an error.")
    moderation = serializers.CharField(help_text="`ready`, `loading` or an error.")
    database = serializers.CharField(help_text="`ok` or `error: <kind>`.")


class StreamEventSerializer(serializers.Serializer):
    """One Server-Sent Event of a streamed answer."""

    data = serializers.CharField(help_text="A chunk, as JSON: the answer's object with `object` "
                                           "`chat.completion.chunk` and a `delta` per choice for chat, "
                                           "`text_completion` for text; the last is `[DONE]`.")
    event = serializers.CharField(required=False)


STREAM = OpenApiResponse(
    StreamEventSerializer,
    description="With `stream: true`: Server-Sent Events, one `data: {chunk}` each, then `data: [DONE]`; with "
                "`stream_options.include_usage`, a last chunk with no choices carries `usage`. An error after the "
                "first event ends the stream with `finish_reason: \"error\"`.",
)


GENERATION_ERRORS = error_responses(*KEYED, *WITH_BODY, 502, 504)
TASK_ERRORS = error_responses(*KEYED, *WITH_BODY)
