"""The one clock accounts reads. Tests move it (``monkeypatch.setattr(clock, "now", ...)``) instead of sleeping."""

from django.utils import timezone


def now():
    return timezone.now()
