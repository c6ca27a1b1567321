from __future__ import annotations

from datetime import date, timedelta

from rest_framework import serializers

from accounts import clock
from accounts.models import ALL_SCOPES, ApiKey
from accounts.reports import API_MAX_DAYS
from accounts.services import KEY_LIMIT_FIELDS, key_limits_check
from platform.strict_types import StrictJSONTypes

# The largest value each limit column holds (PositiveIntegerField / PositiveBigIntegerField on PostgreSQL).
LIMIT_MAXIMUMS = {"requests_per_minute": 2**31 - 1, "tokens_per_minute": 2**31 - 1,
                  "daily_token_quota": 10**12, "monthly_token_quota": 10**12}


class ApiKeySerializer(StrictJSONTypes, serializers.ModelSerializer):
    """A key as its owner sees it: never the plaintext or its hash."""

    id = serializers.CharField(source="lookup_id", read_only=True)
    object = serializers.SerializerMethodField()
    redacted_value = serializers.CharField(source="display", read_only=True)
    scopes = serializers.ListField(child=serializers.ChoiceField(choices=ALL_SCOPES), required=False)
    allowed_models = serializers.ListField(child=serializers.CharField(max_length=200), required=False)

    class Meta:
        model = ApiKey
        fields = [
            "id", "object", "name", "redacted_value", "scopes", "allowed_models", "created_at", "last_used_at",
            "expires_at", "revoked_at", "suspended_at", *KEY_LIMIT_FIELDS,
        ]
        read_only_fields = ["created_at", "last_used_at", "revoked_at", "suspended_at"]
        extra_kwargs = {field: {"min_value": 1, "max_value": LIMIT_MAXIMUMS[field]} for field in KEY_LIMIT_FIELDS}

    def get_object(self, key) -> str:
        return "api_key"

    def validate(self, attrs):
        account = self.context["account"]
        try:
            key_limits_check(account=account, limits_requested={f: attrs.get(f) for f in KEY_LIMIT_FIELDS})
        except ValueError as error:
            field_name = str(error).split(":", 1)[0]
            raise serializers.ValidationError({field_name: str(error).split(": ", 1)[1]}) from None
        return attrs

    def to_internal_value(self, data):
        if isinstance(data, dict):
            forbidden = {"account", "account_id", "lookup_id", "secret_hash", "id"} & set(data)
            if forbidden:
                raise serializers.ValidationError({sorted(forbidden)[0]: "This field cannot be set through the API."})
        return super().to_internal_value(data)


class RotateSerializer(StrictJSONTypes, serializers.Serializer):
    grace_seconds = serializers.IntegerField(required=False, min_value=0, max_value=7 * 24 * 3600)


class UsageQuerySerializer(serializers.Serializer):
    """Inclusive UTC dates, at most ``API_MAX_DAYS`` days; by default the last ``API_MAX_DAYS`` days to today."""

    start_date = serializers.DateField(required=False, help_text="The first UTC day; absent or empty: "
                                                                  "`API_MAX_DAYS` - 1 days before end_date.")
    end_date = serializers.DateField(required=False, help_text="The last UTC day, inclusive, not before start_date; "
                                                                "absent or empty: today.")

    def validate(self, attrs):
        until = attrs.get("end_date") or clock.now().date()
        span = timedelta(days=API_MAX_DAYS - 1)
        since = attrs.get("start_date") or (until - span if until - date.min >= span else date.min)
        if since > until:
            raise serializers.ValidationError({"start_date": f"Must not be after end_date ({until})."})
        if (until - since).days >= API_MAX_DAYS:
            raise serializers.ValidationError(
                {"start_date": f"The range is {(until - since).days + 1} days; at most {API_MAX_DAYS} are reported "
                 "per request (end_date defaults to today)."}
            )
        return {"start_date": since, "end_date": until}
