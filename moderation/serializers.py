from django.conf import settings
from drf_spectacular.utils import extend_schema_serializer
from rest_framework import serializers

from platform.strict_types import StrictJSONTypes


@extend_schema_serializer(component_name="Moderation")  # its request component: ModerationRequest
class ModerationRequestSerializer(StrictJSONTypes, serializers.Serializer):
    input = serializers.JSONField()
    model = serializers.CharField(required=False, allow_blank=True)

    def validate_input(self, value):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
            raise serializers.ValidationError("Must be a string or a list of strings.")
        if not items:
            raise serializers.ValidationError("Must not be empty.")
        if len(items) > settings.SLUICE_MODERATION_MAX_INPUTS:
            raise serializers.ValidationError(f"At most {settings.SLUICE_MODERATION_MAX_INPUTS} strings per request.")
        if any(not item.strip() for item in items):
            raise serializers.ValidationError("Strings must not be empty.")
        return items
