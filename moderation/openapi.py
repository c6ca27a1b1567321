"""The response shape of /v1/moderations, for the OpenAPI schema only."""

from __future__ import annotations

from rest_framework import serializers

from moderation.categories import CATEGORIES


class ModerationResultSerializer(serializers.Serializer):
    flagged = serializers.BooleanField()
    categories = serializers.DictField(child=serializers.BooleanField(), help_text=f"Each of {', '.join(CATEGORIES)}.")
    category_scores = serializers.DictField(child=serializers.FloatField(), help_text="A score in [0, 1] per category.")


class ModerationResponseSerializer(serializers.Serializer):
    id = serializers.CharField()
    model = serializers.CharField()
    results = ModerationResultSerializer(many=True)
