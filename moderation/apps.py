from django.apps import AppConfig


class ModerationConfig(AppConfig):
    name = "moderation"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # A missing or altered classifier stops start-up here, with the file and the training command named.
        from moderation.artefact import verify

        verify()
