from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    # No model loading here: the engine loads lazily on first use (see inference/engine.py).

    def ready(self) -> None:
        from inference import checks  # noqa: F401  (registers the task-model artefact check)
        from inference.catalogue_services import catalogue_signals_connect

        catalogue_signals_connect()
