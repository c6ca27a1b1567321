"""Constrained decoding's cost to the batch: tokens/s at C = 16 with half of the requests under a JSON schema
against all unconstrained, side by side in one run, in process on the packaged model; and the grammar
compile time per schema.

Every request asks for exactly --tokens tokens, so both arms generate the same number: the unconstrained ones
with ignore_eos, the constrained ones under a schema (an array of at least 12 strings) that no answer completes
within that budget, so every constrained row is masked at every step. Each of the C client threads sends
--rounds requests one after the other (closed loop), through the engine as the API does (its TextStream
decodes the text); the grammar is compiled before the clock starts (a server compiles each schema once).

Compile times: a fresh compiler, cold, for each schema of benchmarks/data/grammar_schemas.json and the one
used here: building the matcher, then its first mask (llguidance builds parts lazily), median of --repeat.

Run from the project root, on a quiet machine (see the README):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/structured_bench.py [--concurrency 16] [--tokens 64]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SCHEMAS = json.loads((Path(__file__).with_name("data") / "grammar_schemas.json").read_text())["schemas"]
LONG_LIST = {"type": "object", "properties": {
    "topic": {"type": "string", "maxLength": 40},
    "facts": {"type": "array", "items": {"type": "string", "maxLength": 80}, "minItems": 12}},
    "required": ["topic", "facts"], "additionalProperties": False}
TOPICS = ["the sea", "volcanoes", "the moon", "bees", "trains", "chess", "rain", "deserts", "owls", "bread",
          "glaciers", "music", "ants", "bridges", "tea", "comets"]


def uptime() -> str:
    return os.popen("uptime").read().strip()


def run_arm(engine, prompts, *, constrained_every: int | None, tokens: int, rounds: int, grammar) -> dict:
    """C closed-loop clients; with constrained_every=2 the even clients' requests are constrained."""
    from inference.sampling import SamplingParams

    counts = [0] * len(prompts)
    errors: list[str] = []

    def client(index: int) -> None:
        constrained = constrained_every is not None and index % constrained_every == 0
        params = SamplingParams(max_tokens=tokens, temperature=0, min_tokens=0 if constrained else tokens,
                                ignore_eos=not constrained, grammar=grammar if constrained else None)
        for _ in range(rounds):
            stream = engine.stream(prompts[index], params)
            for _ in stream:
                pass
            counts[index] += stream.completion_tokens
            if stream.completion_tokens != tokens:
                errors.append(f"client {index}: {stream.completion_tokens} tokens, {stream.finish_reason}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return {"tokens": sum(counts), "seconds": elapsed, "rate": sum(counts) / elapsed, "errors": errors}


def compile_times(engine, repeat: int) -> None:
    from inference.constrained import GrammarCompiler, guides_mask_logits
    from inference.grammar_spec import GrammarSpec

    import torch

    start = time.perf_counter()
    compiler = GrammarCompiler(engine.tokenizer, vocab_size=engine.vocab_size)
    compiler.compiled(GrammarSpec.for_schema({"type": "string"}))  # builds the vocabulary view once
    print(f"grammar library's vocabulary view: {(time.perf_counter() - start) * 1e3:.0f} ms, once per process")
    logits = torch.zeros((1, engine.vocab_size))
    for name, schema in [*((n, e["schema"]) for n, e in SCHEMAS.items()), ("long_list (this run)", LONG_LIST)]:
        builds, firsts = [], []
        for _ in range(repeat):
            fresh = GrammarCompiler(engine.tokenizer, vocab_size=engine.vocab_size)
            fresh._tokenizer = compiler._ll_tokenizer()
            start = time.perf_counter()
            guide = fresh.guide_for(GrammarSpec.for_schema(schema))
            builds.append(time.perf_counter() - start)
            start = time.perf_counter()
            guides_mask_logits(logits, [(0, guide)])
            firsts.append(time.perf_counter() - start)
        print(f"  compile {name:22s} {statistics.median(builds) * 1e3:7.2f} ms, first mask "
              f"{statistics.median(firsts) * 1e3:6.2f} ms (median of {repeat})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2, help="requests each client sends, one after another")
    parser.add_argument("--repeat", type=int, default=5, help="compiles per schema")
    args = parser.parse_args()

    import django

    django.setup()
    from inference.engines.transformers_engine import TransformersEngine
    from inference.grammar_spec import GrammarSpec

    print("uptime before:", uptime())
    engine = TransformersEngine.from_settings()
    grammar = GrammarSpec.for_schema(LONG_LIST)
    engine.grammars.compiled(grammar)
    prompts = []
    for i in range(args.concurrency):
        question = f"List facts about {TOPICS[i % len(TOPICS)]} as JSON: a topic and a list of facts."
        prompts.append(engine.encode_chat([{"role": "user", "content": question}]))
    run_arm(engine, prompts[:2], constrained_every=2, tokens=4, rounds=1, grammar=grammar)  # warm-up

    plain = run_arm(engine, prompts, constrained_every=None, tokens=args.tokens, rounds=args.rounds, grammar=grammar)
    half = run_arm(engine, prompts, constrained_every=2, tokens=args.tokens, rounds=args.rounds, grammar=grammar)
    for label, arm in (("all unconstrained", plain), ("half under a JSON schema", half)):
        print(f"C={args.concurrency} {label:26s} {arm['rate']:7.1f} tokens/s  ({arm['tokens']} tokens in "
              f"{arm['seconds']:.1f} s)" + (f"  ERRORS: {arm['errors'][:3]}" if arm["errors"] else ""))
    print(f"C={args.concurrency} half constrained / all unconstrained: {half['rate'] / plain['rate']:.3f}")
    print("uptime after runs:", uptime())
    compile_times(engine, args.repeat)
    print("uptime after:", uptime())
    engine.scheduler.close()


if __name__ == "__main__":
    main()
