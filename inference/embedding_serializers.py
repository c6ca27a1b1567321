"""``POST /v1/embeddings``: OpenAI's request shape, and its response shape for the OpenAPI schema (the body is
built in ``embedding_services``; tests/test_schema_fuzz.py checks that they agree)."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema_field, extend_schema_serializer
from rest_framework import serializers

from inference.embedding_model import DIMENSIONS
from inference.serializers import text_items_check
from platform.errors import ApiError
from platform.strict_types import StrictJSONTypes

ENCODING_FORMATS = ("float", "base64")


def _is_token_ids(value) -> bool:
    """OpenAI's other two forms of ``input``: a list of token ids, or a list of such lists."""
    def ints(items):
        return isinstance(items, list) and bool(items) and all(isinstance(i, int) and not isinstance(i, bool) for i in items)

    return ints(value) or (isinstance(value, list) and bool(value) and all(ints(item) for item in value))


@extend_schema_serializer(component_name="Embedding")  # its request component: EmbeddingRequest
class EmbeddingRequestSerializer(StrictJSONTypes, serializers.Serializer):
    """``input``: a string or a list of strings (token ids are refused: see ``validate_input``)."""

    input = serializers.JSONField(help_text="A text, or a list of texts (at most `SLUICE_EMBEDDING_MAX_INPUTS`), "
                                            "none empty, each at most 254 word pieces.")
    model = serializers.CharField(required=False, help_text="The embedding model (the default when left out).")
    encoding_format = serializers.ChoiceField(choices=ENCODING_FORMATS, required=False, default="float",
                                              help_text="`float` (a list of numbers) or `base64` (little-endian "
                                                        "float32 bytes, as OpenAI sends them).")
    dimensions = serializers.IntegerField(required=False, allow_null=True,
                                          help_text=f"Only {DIMENSIONS}, the model's own (it was not trained for "
                                                    "shortened vectors).")
    user = serializers.CharField(required=False, allow_blank=True, max_length=256)

    def validate_input(self, value):
        if _is_token_ids(value):
            # A client that sends token ids (LangChain's OpenAIEmbeddings does, by default) tokenized the text
            # with OpenAI's tiktoken, whose ids name other word pieces in this encoder's vocabulary: embedding
            # them would answer with vectors of other text, so they are refused.
            raise ApiError("input as token ids is not supported: send the text itself (a string or a list of strings); "
                           "ids from OpenAI's tokenizer would mean other words to this model.", param="input",
                           code="unsupported_parameter")
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise serializers.ValidationError("Must be a string or a list of strings.")
        if not items:
            raise serializers.ValidationError("Must not be empty.")
        limit = settings.SLUICE_EMBEDDING_MAX_INPUTS
        if len(items) > limit:
            raise serializers.ValidationError(f"At most {limit} items per request.")
        return text_items_check(items)

    def validate_dimensions(self, value):
        if value is not None and value != DIMENSIONS:
            raise ApiError(f"dimensions: this model's embeddings have {DIMENSIONS} dimensions only (it was not trained "
                           "for shortened vectors); send 384 or leave it out.", param="dimensions",
                           code="unsupported_parameter")
        return value


@extend_schema_field({"oneOf": [
    {"type": "array", "items": {"type": "number"}, "minItems": DIMENSIONS, "maxItems": DIMENSIONS},
    {"type": "string", "description": "base64 of the little-endian float32 values"},
]})
class EmbeddingVectorField(serializers.Field):
    pass


class EmbeddingItemSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["embedding"])
    index = serializers.IntegerField()
    embedding = EmbeddingVectorField(help_text="Unit length; a list with `encoding_format: float`, base64 with "
                                               "`base64`.")


class EmbeddingUsageSerializer(serializers.Serializer):
    prompt_tokens = serializers.IntegerField(help_text="Word pieces the encoder read, [CLS] and [SEP] included.")
    total_tokens = serializers.IntegerField()


class EmbeddingListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = EmbeddingItemSerializer(many=True)
    model = serializers.CharField()
    usage = EmbeddingUsageSerializer()
