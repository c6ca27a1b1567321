"""Constrained decoding: a grammar per row of the running batch, with llguidance.

A request's grammar (inference.grammar_spec) is checked when the request is validated (a schema the library
cannot express is a 400 before anything is admitted) and compiled against the engine's vocabulary in the
request's own thread when it is submitted, never on the scheduler's thread: a request waits for its own
grammar while the batch goes on. Compiled grammars are kept in an LRU per engine (one compile per schema);
each request gets a copy of the compiled matcher, which the scheduler then drives: before each sampling step
it fills a token bitmask for the constrained rows only and masks their logits; after it, the row's matcher
consumes the chosen token, and the row ends when the grammar is complete.

llguidance was measured fastest here on the 49,152-token vocabulary (benchmarks/grammar_libraries.py):
compiling in about a millisecond where xgrammar takes 6-440 ms and outlines-core 0.06-14 s, with masks of
~12 us per token; it handles `{"type": "object"}` (any JSON object), which outlines-core's regexes take 14 s
for, and it installs with no dependencies (xgrammar pulls in triton).
"""

from __future__ import annotations

import collections
import json
import threading
from functools import lru_cache

import numpy as np
import torch

from inference.grammar_spec import JSON_OBJECT, GrammarSpec

# Compact, single-line JSON with the spacing json.dumps uses: a small model left free to add whitespace can
# spend its whole budget on newlines.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
GRAMMAR_CACHE_ENTRIES = 128


class GrammarError(ValueError):
    """The schema cannot be enforced: malformed, or beyond what the grammar library implements."""


@lru_cache(maxsize=GRAMMAR_CACHE_ENTRIES)
def _grammar_text(spec: GrammarSpec) -> str:
    import llguidance

    # The schema goes in as JSON text: given a dict, llguidance refuses integers beyond 64 bits
    # ("Value is not JSON serializable"), which a JSON schema may hold and the schema fuzz sends.
    schema = '{"type": "object"}' if spec.kind == JSON_OBJECT else spec.schema
    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except ValueError as error:
        raise GrammarError(str(error)) from None
    problem = llguidance.LLMatcher.validate_grammar(grammar)
    if problem:
        raise GrammarError(problem.strip().splitlines()[-1] if "\n" in problem else problem)
    return grammar


def grammar_check(spec: GrammarSpec) -> None:
    """Raise GrammarError if ``spec`` cannot be enforced (needs no vocabulary, so any engine can ask)."""
    _grammar_text(spec)


class RowGuide:
    """One request's grammar state; driven by the scheduler's thread only."""

    def __init__(self, matcher):
        self.matcher = matcher

    def advance(self, token_id: int) -> str | None:
        """Consume a generated token: "stop" when the grammar is complete, "error" if it broke, else None."""
        if not self.matcher.consume_token(token_id) or self.matcher.is_error():
            return "error"
        return "stop" if self.matcher.is_stopped() else None


class GrammarCompiler:
    """Grammars compiled against one vocabulary, least recently used dropped first."""

    def __init__(self, tokenizer, *, vocab_size: int, entries: int = GRAMMAR_CACHE_ENTRIES):
        self._hf_tokenizer = tokenizer
        self.vocab_size = vocab_size
        self._entries = entries
        self._compiled: collections.OrderedDict[GrammarSpec, object] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._tokenizer = None
        self.compiles = 0

    def _ll_tokenizer(self):
        with self._lock:  # built once (about 1-2 s), on the first constrained request's thread
            if self._tokenizer is None:
                import llguidance.hf

                self._tokenizer = llguidance.hf.from_tokenizer(self._hf_tokenizer, n_vocab=self.vocab_size)
            return self._tokenizer

    def compiled(self, spec: GrammarSpec):
        with self._lock:
            matcher = self._compiled.get(spec)
            if matcher is not None:
                self._compiled.move_to_end(spec)
                return matcher
        import llguidance

        grammar = _grammar_text(spec)
        matcher = llguidance.LLMatcher(self._ll_tokenizer(), grammar, log_level=0)
        if matcher.is_error():
            raise GrammarError(matcher.get_error())
        with self._lock:
            self.compiles += 1
            self._compiled[spec] = matcher
            while len(self._compiled) > self._entries:
                self._compiled.popitem(last=False)
        return matcher

    def guide_for(self, spec: GrammarSpec) -> RowGuide:
        return RowGuide(self.compiled(spec).deep_copy())


def guides_mask_logits(logits: torch.Tensor, guided: list[tuple[int, RowGuide]]) -> list[int]:
    """Set to -inf, in place, the logits of every token the row's grammar forbids next (``guided``: (row,
    guide) pairs; other rows are untouched). Returns the rows left with no token to choose.

    The bits are unpacked and applied with numpy, in this thread: the same few operations through torch's
    thread pool cost 50-100 times more on a busy 2-core host (measured: 8 ms against 0.1 ms a row)."""
    vocab = logits.shape[-1]
    words = (vocab + 31) // 32
    bitmask = np.zeros((len(guided), words), dtype=np.int32)
    broken = []
    for index, (row, guide) in enumerate(guided):
        if guide.matcher.is_error():
            broken.append(row)
        else:  # what llguidance.torch's fill does, without importing it (that import takes seconds)
            guide.matcher.unsafe_compute_mask_ptr(bitmask[index].ctypes.data, words * 4)
    # Little-endian int32 words: bit j of word w is token 32 w + j, which is what unpackbits' little order gives.
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=-1, bitorder="little")[:, :vocab].astype(bool)
    on_cpu = logits.device.type == "cpu"
    rows = logits.numpy() if on_cpu else None
    for index, (row, _) in enumerate(guided):
        if on_cpu:
            rows[row][~allowed[index]] = -np.inf
        else:
            logits[row].masked_fill_(~torch.from_numpy(allowed[index]).to(logits.device), float("-inf"))
    empty = [row for index, (row, _) in enumerate(guided) if not allowed[index].any()]
    return sorted(set(broken) | set(empty))
