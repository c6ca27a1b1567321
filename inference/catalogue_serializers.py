"""The staff API's shape of a catalogue entry: the upstream key is write-only; ``api_key_set`` says if one is."""

from __future__ import annotations

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from inference.models import CatalogueEntry


class CatalogueEntrySerializer(serializers.ModelSerializer):
    api_key = serializers.CharField(write_only=True, required=False, allow_blank=True, trim_whitespace=True,
                                    help_text="Stored encrypted; never returned. Empty string: forget it.")
    api_key_set = serializers.BooleanField(read_only=True)

    class Meta:
        model = CatalogueEntry
        fields = ["name", "enabled", "alias_of", "urls", "upstream_model", "tokenizer", "context_window", "defaults",
                  "api_key", "api_key_env", "api_key_set", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]

    def validate(self, attrs):
        probe = CatalogueEntry(**{**self._current(), **{k: v for k, v in attrs.items() if k != "api_key"}})
        try:
            probe.clean()
        except DjangoValidationError as error:
            raise serializers.ValidationError(error.message_dict) from None
        return attrs

    def _current(self) -> dict:
        if self.instance is None:
            return {}
        return {field: getattr(self.instance, field) for field in self.Meta.fields
                if field not in {"api_key", "api_key_set", "created_at", "updated_at"}}
