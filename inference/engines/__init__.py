"""The engines: everything that turns a prompt into tokens.

Imports run one way, from top to bottom:

    factory.py             picks and loads the process-wide local engine (SLUICE_ENGINE)
    transformers_engine.py a local model on inference.scheduler's continuous batching
    fake.py                no model; replies queued by tests
    remote.py              an upstream OpenAI-compatible server (scale-out)
    token_counting.py      prompt counts for remote models (a local tokenizer, or an estimate)
    base.py                the interface (Engine, TextStream, EngineBusy, EngineError)

Which remote models exist is the registry's business (``inference.registry``, above this package).
"""
