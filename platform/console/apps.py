from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    """The account holder's console at ``/console/``: usage, quotas, keys, a playground, moderation events and
    members, for the people of an account (the Django admin stays the operator's side).

    It lives inside ``platform`` because it is a page layer over every app (accounts' usage, keys and members,
    moderation's events, inference's models), and only the top of the import chain may read them all; its
    own app keeps its views, templates, static files and command together where a newcomer looks."""

    name = "platform.console"
    label = "console"
    verbose_name = "Sluice console"
    default_auto_field = "django.db.models.BigAutoField"
