"""Each model's default sampling parameters, applied only to the fields a request leaves out.

Sources, most specific first: the operator's setting for that model (``SLUICE_MODEL_DEFAULTS``, or the
``defaults`` of a remote model's entry); the model's own generation config (``Engine.generation_defaults``);
for the packaged model, its model card's recommendation (``model_card_defaults.json``). What none of them
sets falls back to OpenAI's defaults (temperature 1, top_p 1, no top_k); a remote model then sends nothing
for that field, so its upstream applies its own defaults (vLLM applies the model's generation_config).
"""

from __future__ import annotations

import json
from pathlib import Path

from django.conf import settings

FIELDS = ("temperature", "top_p", "top_k")
FALLBACK = {"temperature": 1.0, "top_p": 1.0, "top_k": 0}
_MODEL_CARDS = Path(__file__).with_name("model_card_defaults.json")


def model_card_defaults(model_file: str) -> dict:
    """The packaged model file's card recommendation (empty for any other file)."""
    entry = json.loads(_MODEL_CARDS.read_text()).get(model_file) or {}
    return {name: entry[name] for name in FIELDS if name in entry}


def generation_config_defaults(generation_config) -> dict:
    """What a transformers GenerationConfig sets away from the library's own defaults (temperature 1, ...)."""
    if generation_config is None:
        return {}
    changed = generation_config.to_diff_dict()
    if changed.get("do_sample") is False:
        return {"temperature": 0.0}  # the model's authors asked for greedy decoding
    return {name: changed[name] for name in FIELDS if changed.get(name) is not None}


def defaults_for(engine) -> tuple[dict, tuple[str, ...]]:
    """The defaults of the model ``engine`` serves: a value for every field, and the fields no source set."""
    layers = [engine.generation_defaults(), settings.SLUICE_MODEL_DEFAULTS.get(engine.model_id) or {},
              getattr(engine, "operator_defaults", None) or {}]
    chosen: dict = {}
    for layer in layers:  # later layers win
        chosen.update({name: layer[name] for name in FIELDS if layer.get(name) is not None})
    return {**FALLBACK, **chosen}, tuple(name for name in FIELDS if name not in chosen)
