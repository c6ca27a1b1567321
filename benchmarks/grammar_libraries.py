"""Which grammar library constrains decoding fastest here: xgrammar, llguidance and outlines-core, side by side.

On the packaged model's tokenizer (49,152 tokens) and the schemas in benchmarks/data/grammar_schemas.json,
for each library it measures, in one process, one after the other:
  setup     building its view of the vocabulary (once per process)
  compile   turning one schema into a matcher, cold (no cache), median of --repeat
  first     the first walk of the document after compiling (libraries that build lazily pay here)
  mask      filling the next-token bitmask and accepting the token, walking the schema's valid document token
            by token: median and p90 microseconds per token (what the scheduler pays per constrained row per step)
Every step also checks that the document's own next token is allowed (a library that refuses it fails here).

Only llguidance is a requirement (the one chosen); the other two are installed for this comparison alone,
without their dependencies (xgrammar's would pull in triton):
    .venv/bin/pip install --no-deps xgrammar==0.2.8 apache-tvm-ffi==0.1.15.post2 outlines-core==0.2.14
A library that is not installed is skipped with a line saying so.

Run from the project root:
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/grammar_libraries.py [--repeat 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SCHEMAS = json.loads((Path(__file__).with_name("data") / "grammar_schemas.json").read_text())["schemas"]


def load_tokenizer():
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")
    django.setup()
    from django.conf import settings
    from transformers import AutoTokenizer

    from inference.model_files import load_model_and_tokenizer, model_source_from_settings

    source = model_source_from_settings(settings.SLUICE_MODEL_PATH, settings.SLUICE_MODEL_GGUF_FILE)
    folder = settings.SLUICE_MODEL_CACHE_DIR / source.cache_name
    if not (folder / "config.json").exists():  # first run: convert the packaged GGUF once
        import torch

        load_model_and_tokenizer(source, dtype=torch.float32, cache_dir=settings.SLUICE_MODEL_CACHE_DIR)
    return AutoTokenizer.from_pretrained(str(folder))


def allowed(bitmask, token_id: int) -> bool:
    return bool((int(bitmask[0, token_id // 32]) >> (token_id % 32)) & 1)


class XGrammar:
    name = "xgrammar"

    def __init__(self, tokenizer, vocab_size, threads):
        import xgrammar

        self.xgr = xgrammar
        self.info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size,
                                                            stop_token_ids=[tokenizer.eos_token_id])
        self.threads = threads
        self.bitmask = xgrammar.allocate_token_bitmask(1, vocab_size)

    def compile(self, schema):
        compiler = self.xgr.GrammarCompiler(self.info, max_threads=self.threads, cache_enabled=False)
        return compiler.compile_json_schema(json.dumps(schema), strict_mode=True)

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher):
        matcher.fill_next_token_bitmask(self.bitmask)
        return self.bitmask

    def accept(self, matcher, token_id):
        return matcher.accept_token(token_id)


class LLGuidance:
    name = "llguidance"

    def __init__(self, tokenizer, vocab_size, threads):
        import llguidance
        import llguidance.hf
        import llguidance.torch

        self.llg = llguidance
        self.kernels = llguidance.torch
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size)
        self.bitmask = llguidance.torch.allocate_token_bitmask(1, vocab_size)

    def compile(self, schema):
        grammar = self.llg.LLMatcher.grammar_from_json_schema(schema)
        matcher = self.llg.LLMatcher(self.tokenizer, grammar)
        if matcher.is_error():
            raise ValueError(matcher.get_error())
        return matcher

    def matcher(self, compiled):
        return compiled.deep_copy()

    def fill(self, matcher):
        self.kernels.fill_next_token_bitmask(matcher, self.bitmask, 0)
        return self.bitmask

    def accept(self, matcher, token_id):
        return matcher.consume_token(token_id)


class OutlinesCore:
    name = "outlines-core"

    def __init__(self, tokenizer, vocab_size, threads):
        import outlines_core
        import outlines_core.kernels.torch

        from inference.token_bytes import vocabulary_bytes

        self.oc = outlines_core
        self.kernels = outlines_core.kernels.torch
        special = set(tokenizer.all_special_ids)
        by_bytes: dict[bytes, list[int]] = {}
        for token_id, token in enumerate(vocabulary_bytes(tokenizer, vocab_size)):
            if token and token_id not in special:
                by_bytes.setdefault(token, []).append(token_id)
        self.vocabulary = outlines_core.Vocabulary(tokenizer.eos_token_id, by_bytes)
        self.bitmask = outlines_core.kernels.torch.allocate_token_bitmask(vocab_size)

    def compile(self, schema):
        from outlines_core.json_schema import build_regex_from_schema

        return self.oc.Index(build_regex_from_schema(json.dumps(schema)), self.vocabulary)

    def matcher(self, compiled):
        return self.oc.Guide(compiled)

    def fill(self, matcher):
        self.kernels.fill_next_token_bitmask(matcher, self.bitmask)
        return self.bitmask

    def accept(self, matcher, token_id):
        matcher.advance(token_id)
        return True


def measure(library, tokenizer, repeat: int) -> dict:
    results = {}
    for name, entry in SCHEMAS.items():
        try:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                compiled = library.compile(entry["schema"])
                times.append(time.perf_counter() - start)
        except Exception as error:  # a schema the library cannot express
            results[name] = {"error": f"{type(error).__name__}: {str(error)[:90]}"}
            continue
        document = tokenizer.encode(json.dumps(entry["document"]), add_special_tokens=False)
        per_token, first_walk = [], 0.0
        for walk in range(repeat):
            matcher = library.matcher(compiled)
            for token_id in document + [tokenizer.eos_token_id]:
                start = time.perf_counter()
                bitmask = library.fill(matcher)
                ok = allowed(bitmask, token_id)
                if token_id != tokenizer.eos_token_id:
                    ok = library.accept(matcher, token_id) and ok
                per_token.append(time.perf_counter() - start)
                if walk == 0:
                    first_walk += per_token[-1]
                if not ok:
                    raise AssertionError(f"{library.name} refused token {token_id} of the {name} document")
        mean = statistics.fmean(per_token)
        per_token.sort()
        results[name] = {"compile_ms": statistics.median(times) * 1e3, "tokens": len(document),
                         "first_walk_ms": first_walk * 1e3, "mask_us_mean": mean * 1e6,
                         "mask_us_p50": statistics.median(per_token) * 1e6,
                         "mask_us_p90": per_token[int(0.9 * (len(per_token) - 1))] * 1e6}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="threads a library may use to compile")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    print("uptime:", os.popen("uptime").read().strip())
    tokenizer = load_tokenizer()
    vocab_size = len(tokenizer)
    print(f"vocabulary: {vocab_size} tokens")
    for cls in (XGrammar, LLGuidance, OutlinesCore):
        start = time.perf_counter()
        try:
            library = cls(tokenizer, vocab_size, args.threads)
        except ImportError as missing:
            print(f"\n{cls.name}: not installed ({missing}); skipped")
            continue
        setup = time.perf_counter() - start
        print(f"\n{library.name}: setup {setup * 1e3:.0f} ms")
        for schema, figures in measure(library, tokenizer, args.repeat).items():
            if "error" in figures:
                print(f"  {schema:16s} cannot: {figures['error']}")
                continue
            print(f"  {schema:16s} compile {figures['compile_ms']:8.2f} ms  first walk {figures['first_walk_ms']:7.2f} ms"
                  f"  mask+accept per token: mean {figures['mask_us_mean']:6.1f} us, p50 {figures['mask_us_p50']:6.1f},"
                  f" p90 {figures['mask_us_p90']:6.1f}  ({figures['tokens']} tokens)")
    print("\nuptime:", os.popen("uptime").read().strip())


if __name__ == "__main__":
    main()
