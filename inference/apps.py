from django.apps import AppConfig


class InferenceConfig(AppConfig):
    name = "inference"
    # No model loading here: the engine loads lazily on first use (see inference/engine.py).

    def ready(self):
        from inference.catalogue_services import catalogue_signals_connect

        catalogue_signals_connect()
