"""Where the trained moderation classifier lies, and the check that it is the file its manifest describes.

Light on purpose (no numpy, no torch): ``moderation.apps`` runs ``verify()`` when Django starts, so a server
whose classifier is missing, unreadable or altered fails at start-up with a message naming the file and
the command that rebuilds it, instead of answering 503 on /readyz for ever.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

TRAINING_COMMAND = "python -m moderation.training"


def classifier_path() -> Path:
    """``moderation/data/classifier.npz``, or ``SLUICE_MODERATION_CLASSIFIER`` when set."""
    override = os.environ.get("SLUICE_MODERATION_CLASSIFIER")
    return Path(override) if override else Path(__file__).resolve().parent / "data" / "classifier.npz"


class ArtefactError(RuntimeError):
    """The moderation classifier is missing, unreadable or not the one its manifest describes."""


def error(path: Path, problem: str) -> ArtefactError:
    return ArtefactError(
        f"moderation classifier {path}: {problem}. Rebuild it with `{TRAINING_COMMAND}` "
        "(or restore it and its manifest from the repository)"
    )


def verify(path: Path | None = None) -> dict:
    """The manifest of ``path`` (default ``classifier_path()``), once the file's sha256 matches it."""
    path = path or classifier_path()
    manifest_path = path.with_suffix(".json")
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        content = path.read_bytes()
    except (OSError, ValueError) as problem:
        raise error(path, f"cannot read it or its manifest {manifest_path.name} ({problem})") from problem
    if not isinstance(manifest, dict) or hashlib.sha256(content).hexdigest() != manifest.get("artefact_sha256"):
        raise error(path, f"its sha256 is not the one in {manifest_path.name}")
    return manifest
