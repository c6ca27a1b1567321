"""The moderation training data: rows of the public data sets in ``../shared/data/train/``, labelled by
``moderation/data/label_map.toml``, and their split into training and development parts.

Each reader below knows one source's file layout and yields ``(text, label value)``; the label map turns
a label value into per-category targets (1 positive, 0 negative, -1 unknown). Texts are deduplicated
across all sources (after lowercasing and collapsing whitespace; the first source read keeps a text), then
every source is split 80/20 into training and development rows with a seeded hash of the text, so the
development report shows each source on its own.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import random
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def shared_data() -> Path:
    """``shared/data`` beside the checkout (``/work/main``), or two levels up (a worktree in ``/work/wt``)."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return ROOT.parent / "shared" / "data"


DATA_DIR = Path(os.environ.get("SLUICE_TRAIN_DATA") or shared_data() / "train")
LABEL_MAP = Path(__file__).resolve().parent / "data" / "label_map.toml"
DEV_FRACTION = 0.2

# Samples of the large benign sources and of ToxiGen (whose statements repeat across its lines): enough
# negatives to teach "ordinary text", without letting one source outweigh the rest.
SAMPLES = {"sst2": 12000, "squad_questions": 6000, "squad_contexts": 1500, "toxigen": 7000}


@dataclass(frozen=True)
class Row:
    text: str
    source: str
    label: str
    targets: tuple[int, ...]  # per head category: 1, 0, or -1 (unknown)
    dev: bool


def label_map() -> dict:
    with LABEL_MAP.open("rb") as stream:
        return tomllib.load(stream)


def heads() -> tuple[str, ...]:
    return tuple(label_map()["heads"])


def _csv(path: Path) -> Iterator[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        yield from csv.DictReader(stream)


def _davidson(data: Path) -> Iterator[tuple[str, str]]:
    for row in _csv(data / "davidson_hate_offensive" / "labeled_data.csv"):
        yield row["tweet"], row["class"]


def _hatecheck(data: Path) -> Iterator[tuple[str, str]]:
    for row in _csv(data / "hatecheck" / "test_suite_cases.csv"):
        yield row["test_case"], f"{row['functionality']}|{row['label_gold']}"


def _toxigen(data: Path) -> Iterator[tuple[str, str]]:
    for path in sorted((data / "toxigen" / "prompts").glob("*_1k.txt")):
        kind = path.name.split("_", 1)[0]
        for line in path.read_text(encoding="utf-8").splitlines():
            for statement in line.split("\\n-"):
                statement = statement.strip().lstrip("-").strip()
                if statement:
                    yield statement, kind


def _harmbench(data: Path) -> Iterator[tuple[str, str]]:
    for row in _csv(data / "harmbench" / "harmbench_behaviors_text_all.csv"):
        yield row["Behavior"], row["SemanticCategory"]


def _strongreject(data: Path) -> Iterator[tuple[str, str]]:
    for row in _csv(data / "strongreject" / "strongreject_dataset.csv"):
        yield row["forbidden_prompt"], row["category"]


def _advbench(data: Path) -> Iterator[tuple[str, str]]:
    for row in _csv(data / "advbench" / "harmful_behaviors.csv"):
        yield row["goal"], ""


def _do_not_answer(data: Path) -> Iterator[tuple[str, str]]:
    for path in sorted((data / "do_not_answer").glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                record = json.loads(line)
                yield record["prompt"], ",".join(record["intents"])


def _rtp(data: Path) -> Iterator[tuple[str, str]]:
    for path in sorted((data / "realtoxicityprompts_challenging").glob("rtp_*.txt")):
        kind = path.stem.removeprefix("rtp_")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield line.strip(), kind


def _sst2(data: Path) -> Iterator[tuple[str, str]]:
    with (data / "sst2_train" / "train.tsv").open(encoding="utf-8") as stream:
        next(stream)
        for line in stream:
            _, _, sentence = line.rstrip("\n").partition("\t")
            if sentence.strip():
                yield sentence.strip(), ""


def _squad(data: Path) -> dict:
    with gzip.open(data / "squad_v1.1_train" / "train-v1.1.reconstructed.json.gz", "rt", encoding="utf-8") as stream:
        return json.load(stream)


def _squad_questions(data: Path) -> Iterator[tuple[str, str]]:
    for article in _squad(data)["data"]:
        for paragraph in article["paragraphs"]:
            for question in paragraph["qas"]:
                yield question["question"], ""


def _squad_contexts(data: Path) -> Iterator[tuple[str, str]]:
    for article in _squad(data)["data"]:
        for paragraph in article["paragraphs"]:
            yield paragraph["context"], ""


READERS = {
    "davidson": _davidson,
    "hatecheck": _hatecheck,
    "toxigen": _toxigen,
    "harmbench": _harmbench,
    "strongreject": _strongreject,
    "advbench": _advbench,
    "do_not_answer": _do_not_answer,
    "rtp": _rtp,
    "sst2": _sst2,
    "squad_questions": _squad_questions,
    "squad_contexts": _squad_contexts,
}

# The files each source reads (their sha256 go into the manifest).
SOURCE_FILES = {
    "davidson": ["davidson_hate_offensive/labeled_data.csv"],
    "hatecheck": ["hatecheck/test_suite_cases.csv"],
    "toxigen": ["toxigen/prompts"],
    "harmbench": ["harmbench/harmbench_behaviors_text_all.csv"],
    "strongreject": ["strongreject/strongreject_dataset.csv"],
    "advbench": ["advbench/harmful_behaviors.csv"],
    "do_not_answer": ["do_not_answer"],
    "rtp": ["realtoxicityprompts_challenging"],
    "sst2": ["sst2_train/train.tsv"],
    "squad_questions": ["squad_v1.1_train/train-v1.1.reconstructed.json.gz"],
    "squad_contexts": ["squad_v1.1_train/train-v1.1.reconstructed.json.gz"],
}


def _targets(source: str, label: str, mapping: dict, categories: tuple[str, ...]) -> tuple[int, ...] | None:
    """Per-category targets of one row, or None when the row is skipped."""
    table = mapping["sources"][source]
    if label in table.get("skip", []):
        return None
    labels = table.get("labels", {})
    if source == "hatecheck":
        functionality, gold = label.split("|")
        entries = [labels.get(functionality) or table["default_hateful" if gold == "hateful" else "default_non_hateful"]]
    elif source == "do_not_answer":
        entries = [labels[code] for code in label.split(",") if code in labels] or [{"positive": [], "unknown": []}]
    else:
        entries = [labels.get(label) or table["default"]]
    positive = {c for entry in entries for c in entry["positive"]}
    unknown = {c for entry in entries for c in entry["unknown"]} - positive
    unmapped = (positive | unknown) - set(categories) - {"sexual/minors", "violence/graphic"}
    if unmapped:
        raise ValueError(f"{LABEL_MAP}: {source} {label!r} names categories without a head: {sorted(unmapped)}")
    return tuple(1 if c in positive else -1 if c in unknown else 0 for c in categories)


_SPACE = re.compile(r"\s+")


def _normal(text: str) -> str:
    return _SPACE.sub(" ", text.lower()).strip()


def _is_dev(text: str, seed: int) -> bool:
    digest = hashlib.sha256(f"{seed}|{_normal(text)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < DEV_FRACTION


def load_rows(data: Path = DATA_DIR, seed: int = 0) -> list[Row]:
    mapping = label_map()
    categories = tuple(mapping["heads"])
    seen: set[str] = set()
    rows: list[Row] = []
    for source, reader in READERS.items():
        found = []
        for text, label in reader(data):
            key = _normal(text)
            if not key or key in seen:
                continue
            seen.add(key)
            targets = _targets(source, label, mapping, categories)
            if targets is not None:
                found.append((text, label, targets))
        if source in SAMPLES and len(found) > SAMPLES[source]:
            found = random.Random(f"{seed}|{source}").sample(found, SAMPLES[source])
        rows.extend(Row(text, source, label, targets, _is_dev(text, seed)) for text, label, targets in found)
    return rows


def file_hashes(data: Path = DATA_DIR) -> dict[str, str]:
    """sha256 of every file read, by path relative to the data folder."""
    hashes = {}
    for names in SOURCE_FILES.values():
        for name in names:
            path = data / name
            for file in sorted(path.rglob("*") if path.is_dir() else [path]):
                if file.is_file() and file.suffix in {".csv", ".tsv", ".txt", ".jsonl", ".gz"}:
                    hashes[str(file.relative_to(data))] = hashlib.sha256(file.read_bytes()).hexdigest()
    return dict(sorted(hashes.items()))
