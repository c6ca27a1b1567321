from django.apps import AppConfig


class PlatformConfig(AppConfig):
    """The project package as an app, for what spans the other apps: the admin dashboard, its templates,
    static files and management commands. It sits at the top of the import chain, so it may read every app."""

    name = "platform"
    verbose_name = "Sluice platform"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from platform import openapi  # noqa: F401  (registers the schema's field extension)
