"""Response shapes of /v1/keys and /v1/usage, and the bearer key, for the OpenAPI schema only."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from accounts.serializers import ApiKeySerializer


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "bearer", "description": "`Authorization: Bearer sk-sluice-…`"}


# many=False: the answer to a list action is this one object, which holds the list (OpenAI's shape).
@extend_schema_serializer(many=False)
class ApiKeyListSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["list"])
    data = ApiKeySerializer(many=True)


class CreatedApiKeySerializer(ApiKeySerializer):
    value = serializers.CharField(read_only=True, help_text="The key itself, shown this once.")

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "value"]


class UsageTotalsSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    errors = serializers.IntegerField()
    rate_limited = serializers.IntegerField()
    moderation_blocks = serializers.IntegerField()


class UsageByDaySerializer(UsageTotalsSerializer):
    day = serializers.DateField()


class UsageByKeySerializer(UsageTotalsSerializer):
    key = serializers.CharField(help_text="The key's id.")


class UsageByEndpointSerializer(UsageTotalsSerializer):
    endpoint = serializers.CharField()


class UsageByModelSerializer(UsageTotalsSerializer):
    model = serializers.CharField(allow_blank=True)


@extend_schema_serializer(many=False)
class UsageReportSerializer(serializers.Serializer):
    object = serializers.ChoiceField(choices=["usage"])
    account = serializers.CharField()
    start_date = serializers.DateField(allow_null=True)
    end_date = serializers.DateField(allow_null=True)
    totals = UsageTotalsSerializer()
    by_day = UsageByDaySerializer(many=True)
    by_key = UsageByKeySerializer(many=True)
    by_endpoint = UsageByEndpointSerializer(many=True)
    by_model = UsageByModelSerializer(many=True)
