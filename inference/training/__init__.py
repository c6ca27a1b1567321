"""Training commands for the task models (``python -m inference.training.sentiment`` / ``.qa``).

Each rebuilds its shipped artefact in ``inference/trained/<task>/`` from ``../shared/data/train/``: a LoRA
adapter (peft) over the packaged all-MiniLM-L6-v2 encoder plus a small head, and a manifest beside it.
"""
