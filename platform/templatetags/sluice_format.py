"""Number formats for the dashboard."""

from django import template

register = template.Library()


@register.filter
def thousands(value) -> str:
    """12345678 -> "12,345,678"."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return "–"


@register.filter
def percent(value) -> str:
    """0.01234 -> "1.23%"."""
    try:
        return f"{float(value) * 100:.2f}%"
    except (TypeError, ValueError):
        return "–"
