"""JSON types as the schema states them: DRF's fields coerce (``-252`` becomes ``"-252"`` for a CharField,
``"12"`` becomes 12 for an IntegerField, ``"yes"`` becomes True for a BooleanField), so a request the OpenAPI
schema calls invalid would be served. Serializers of request bodies mix this in to refuse such values with
the field's name; nested serializers carry it themselves. A leaf: any app may import it."""

from __future__ import annotations

from collections.abc import Mapping

from rest_framework import serializers


def _wrong_type(field: serializers.Field, value) -> str | None:
    """Why ``value`` is not of the JSON type ``field`` documents, or None when it is (or the field decides)."""
    if value is None:
        return None  # allow_null decides
    if isinstance(field, serializers.BooleanField):
        return None if isinstance(value, bool) else "Must be a boolean."
    if isinstance(field, serializers.IntegerField):
        if isinstance(value, float) and value.is_integer():
            return None  # JSON Schema's integer: any number without a fractional part
        return None if isinstance(value, int) and not isinstance(value, bool) else "Must be an integer."
    if isinstance(field, serializers.FloatField):
        return None if isinstance(value, (int, float)) and not isinstance(value, bool) else "Must be a number."
    if isinstance(field, (serializers.CharField, serializers.DateTimeField, serializers.DateField)):
        return None if isinstance(value, str) else "Must be a string."
    if isinstance(field, serializers.ListField):
        if not isinstance(value, list):
            return "Must be a list."
        for index, item in enumerate(value):
            problem = _wrong_type(field.child, item)
            if problem:
                return f"Item {index}: {problem}"
    return None


class StrictJSONTypes:
    """Mix into a ``serializers.Serializer`` (before it) whose input is a JSON body."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            data = dict(data)
            for name, field in self.fields.items():
                if field.read_only or name not in data:
                    continue
                problem = _wrong_type(field, data[name])
                if problem:
                    raise serializers.ValidationError({name: [problem]})
                if isinstance(field, serializers.IntegerField) and isinstance(data[name], float):
                    data[name] = int(data[name])  # 3.0 is the integer 3 in JSON Schema; DRF would refuse 1e20
        return super().to_internal_value(data)
