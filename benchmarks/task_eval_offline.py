"""Score the trained task models in process on their development splits, as served (adapter merged, linear
layers int8 or as ``--precisions`` says, float16 word embeddings) beside the float32 adapter that training
scored, and the memory the served pair adds to a process that already holds torch and transformers.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python benchmarks/task_eval_offline.py [--qa-questions 300] [--sst2 2000]
        [--precisions int8,int8-per-channel,float32]

The development splits are the training commands' own (the same seeds: SQuAD by article, SST-2 a random
slice of train), never the test sets in ../shared/data/eval/ (benchmarks/task_eval.py scores those).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "platform.settings")


def rss_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--qa-questions", type=int, default=300)
    parser.add_argument("--sst2", type=int, default=2000)
    parser.add_argument("--precisions", default="as-shipped",
                        help="comma-separated: as-shipped, int8, int8-per-channel, float32 (both tasks served so)")
    args = parser.parse_args()

    import django

    django.setup()
    import torch
    import transformers.models.bert.modeling_bert  # noqa: F401  (the server holds these already)

    torch.set_num_threads(1)
    from peft import PeftModel

    from inference import task_models
    from inference.encoder import TRAINED_DIR, TaskModel, load_base
    from inference.task_models import TaskModels
    from inference.training import qa, sentiment

    tokenizer = None
    data = {}
    for precision in args.precisions.split(","):
        if precision != "as-shipped":
            task_models.SERVED_PRECISION.update({"sentiment": precision, "qa": precision})
        before = rss_mb()
        started = time.perf_counter()
        served = TaskModels()
        label = f"served, {dict(task_models.SERVED_PRECISION)}"
        print(f"{label}: loaded and warmed in {time.perf_counter() - started:.1f} s, RSS +{rss_mb() - before:.0f} MB "
              f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        tokenizer = served.tokenizer
        if not data:
            data = dev_splits(served, args)
        dev, items = data["sst2"], data["squad"]
        pairs = [(i["question"], i["context"]) for i in items]
        results = served.classify([text for text, _ in dev])
        accuracy = 100 * sum((r["label"] == "positive") == (y == 1) for r, (_, y) in zip(results, dev)) / len(dev)
        long = [k for k, (text, _) in enumerate(dev) if len(text.split()) >= sentiment.LONG_WORDS]
        accuracy_long = 100 * sum((results[k]["label"] == "positive") == (dev[k][1] == 1) for k in long) / len(long)
        results = served.answer(pairs)
        f1 = 100 * sum(qa.f1(r["answer"], [i["text"]]) for r, i in zip(results, items)) / len(items)
        spans = sum(r["answer"] is None or r["answer"] == c[r["start"]:r["end"]] for r, (_, c) in zip(results, pairs))
        print(f"  SST-2 dev split: {accuracy:.2f} % ({len(dev)} phrases), {accuracy_long:.2f} % on the {len(long)} of "
              f"{sentiment.LONG_WORDS} words or more; SQuAD dev articles: F1 {f1:.1f} ({len(items)} questions, "
              f"spans of the context: {spans}/{len(items)}, no answer: {sum(r['answer'] is None for r in results)})",
              flush=True)
        del served

    def float32(task, labels, pool):
        model = PeftModel.from_pretrained(TaskModel(load_base(), labels, pool=pool), str(TRAINED_DIR / task))
        return model.eval()

    dev, items = data["sst2"], data["squad"]
    reference = sentiment.accuracy(float32("sentiment", 2, True), tokenizer, dev)
    print(f"float32 adapter (unmerged, as trained): SST-2 dev split {reference:.2f} %", flush=True)
    settings = data["qa_settings"]
    readings = qa.predict(float32("qa", 2, False), tokenizer, [(i["question"], i["context"]) for i in items],
                          length=settings["window"], stride=settings["stride"],
                          max_answer_tokens=settings["max_answer_tokens"])
    reference = qa.score(readings, items, threshold=data["threshold"])
    print(f"float32 adapter (unmerged, as trained): SQuAD dev articles F1 {reference['f1']:.1f}", flush=True)


def dev_splits(served, args) -> dict:
    """The training commands' own development splits, by their manifests' seeds."""
    from inference.training import qa, sentiment

    sst = served.manifests["sentiment"]["settings"]
    _, dev = sentiment.split(sentiment.load(sentiment.DEFAULT_DATA), seed=sst["seed"], dev=sst["dev"])
    settings = served.manifests["qa"]["settings"]
    articles = qa.load_articles(qa.DEFAULT_DATA)
    _, dev_ids = qa.split_articles(len(articles), seed=settings["seed"], dev_articles=settings["dev_articles"])
    items = qa.dev_sample([i for a in dev_ids for i in articles[a]], seed=settings["seed"], questions=args.qa_questions)
    return {"sst2": dev[: args.sst2], "squad": items, "qa_settings": settings, "threshold": served.null_threshold}


if __name__ == "__main__":
    main()
