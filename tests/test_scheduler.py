"""The batch scheduler: requests share forward passes without changing what each one gets.

Most tests drive a tiny randomly initialised Llama (milliseconds per step, float64 so batched and lone runs
agree exactly). The tests marked `model` use the packaged SmolLM2 model (the session's `real_model_engine`,
loaded once) in the weight format the platform serves (SLUICE_WEIGHT_FORMAT; its activations are float32).
"""

from __future__ import annotations

import threading
import time

import pytest
import torch

from inference.sampling import SamplingParams
from inference.scheduler import BatchScheduler, QueueFull

TINY_VOCAB = 64
SMOLLM_EOS = 2  # <|im_end|>


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def wait_until(predicate, timeout: float = 30.0) -> None:
    """Bounded polling for the worker thread's progress (never waiting for time itself to pass)."""
    give_up = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > give_up:
            raise AssertionError("worker made no progress in time")
        time.sleep(0.002)


def greedy(max_tokens: int, **kwargs) -> SamplingParams:
    return SamplingParams(max_tokens=max_tokens, temperature=0.0, **kwargs)


@pytest.fixture(scope="module")
def tiny_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=TINY_VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    config._attn_implementation = "sdpa"
    return LlamaForCausalLM(config).to(torch.float64).eval()


@pytest.fixture
def tiny_scheduler(tiny_model):
    schedulers = []

    def make(**kwargs) -> BatchScheduler:
        kwargs.setdefault("eos_token_ids", set())
        kwargs.setdefault("pad_token_id", 0)
        scheduler = BatchScheduler(tiny_model, **kwargs)
        schedulers.append(scheduler)
        return scheduler

    yield make
    for scheduler in schedulers:
        scheduler.close()


def tiny_prompt(seed: int, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(1, TINY_VOCAB, (length,), generator=generator).tolist()


def run_alone(scheduler: BatchScheduler, prompt: list[int], params: SamplingParams) -> list[int]:
    return list(scheduler.submit(prompt, params))


# --- tiny model: batching mechanics ---

def test_a_lone_greedy_request_matches_plain_generate(tiny_model, tiny_scheduler):
    scheduler = tiny_scheduler(max_batch_size=4)
    prompt = tiny_prompt(1, 9)
    with torch.inference_mode():
        expected = tiny_model.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False,
                                       eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    assert run_alone(scheduler, prompt, greedy(20)) == expected


def test_rows_joining_and_leaving_at_different_times_get_what_they_would_get_alone(tiny_scheduler):
    # Prompt lengths chosen so joins need more columns than the running batch has (a re-layout), and rows
    # that leave take the longest prompt with them (the window start moves).
    requests = [(tiny_prompt(10, 5), 40), (tiny_prompt(11, 70), 12), (tiny_prompt(12, 3), 60),
                (tiny_prompt(13, 20), 25), (tiny_prompt(14, 150), 30), (tiny_prompt(15, 8), 8)]
    alone = tiny_scheduler(max_batch_size=1)
    expected = [run_alone(alone, prompt, greedy(n)) for prompt, n in requests]

    scheduler = tiny_scheduler(max_batch_size=3)
    handles = []
    for i, (prompt, n) in enumerate(requests):
        handles.append(scheduler.submit(prompt, greedy(n)))
        if i in (0, 2):  # let the batch run a little before the next ones arrive
            wait_until(lambda h=handles[-1]: h.completion_tokens >= 3)
    results = [list(handle) for handle in handles]
    assert results == expected
    assert all(handle.finish_reason == "length" for handle in handles)


def test_prompts_that_start_alike_share_the_cached_start_and_get_what_they_would_get_without_it(tiny_scheduler):
    system = tiny_prompt(20, 27)  # a shared start (like a system prompt), not a multiple of the block size
    requests = [(system + tiny_prompt(21 + i, 3 + 2 * i), 12 + i) for i in range(6)]
    requests.append((tiny_prompt(40, 30), 10))  # a stranger: no shared start
    requests.append((system + tiny_prompt(41, 40)[:1], 9))  # the shared start plus one token
    plain = tiny_scheduler(max_batch_size=8, prefix_cache_entries=0)
    expected = [run_alone(plain, prompt, greedy(n)) for prompt, n in requests]
    assert plain.stats()["cached_prefixes"] == 0

    scheduler = tiny_scheduler(max_batch_size=8)
    assert run_alone(scheduler, *requests[0][:1], greedy(requests[0][1])) == expected[0]
    assert run_alone(scheduler, *requests[1][:1], greedy(requests[1][1])) == expected[1]  # caches the start
    assert scheduler.stats()["cached_prefixes"] == 1
    handles = [scheduler.submit(prompt, greedy(n)) for prompt, n in requests]  # joining together
    assert [list(handle) for handle in handles] == expected
    assert scheduler.stats()["cached_prefixes"] >= 1


def test_work_run_between_steps_comes_back_and_leaves_the_generations_as_they_were(tiny_scheduler):
    requests = [(tiny_prompt(50 + i, 6 + i), 30) for i in range(3)]
    alone = tiny_scheduler(max_batch_size=1)
    expected = [run_alone(alone, prompt, greedy(n)) for prompt, n in requests]
    scheduler = tiny_scheduler(max_batch_size=4)
    handles = [scheduler.submit(prompt, greedy(n)) for prompt, n in requests]
    wait_until(lambda: handles[0].completion_tokens >= 2)
    threads_seen = []
    result = scheduler.run_between_steps(lambda: threads_seen.append(threading.current_thread().name) or 42)
    assert result == 42 and threads_seen == ["sluice-batch-scheduler"]
    with pytest.raises(ZeroDivisionError):
        scheduler.run_between_steps(lambda: 1 / 0)  # the caller gets the error; the worker goes on
    assert [list(handle) for handle in handles] == expected
    assert scheduler.run_between_steps(lambda: "idle too") == "idle too"  # with nothing generating


def test_a_cancelled_request_frees_its_slot_for_the_next_one(tiny_scheduler):
    scheduler = tiny_scheduler(max_batch_size=1)
    first = scheduler.submit(tiny_prompt(20, 6), greedy(4000))
    second = scheduler.submit(tiny_prompt(21, 6), greedy(5))
    wait_until(lambda: first.completion_tokens >= 2)
    assert scheduler.stats()["waiting"] == 1
    first.cancel()
    assert len(list(second)) == 5
    assert list(first) and first.finish_reason == "cancelled"
    assert first.completion_tokens < 4000
    wait_until(lambda: scheduler.stats()["running"] == 0)


def test_cancelling_a_waiting_request_ends_it_at_once(tiny_scheduler):
    scheduler = tiny_scheduler(max_batch_size=1)
    running = scheduler.submit(tiny_prompt(22, 6), greedy(4000))
    wait_until(lambda: scheduler.stats()["running"] == 1)
    waiting = scheduler.submit(tiny_prompt(23, 6), greedy(5))
    waiting.cancel()
    assert list(waiting) == [] and waiting.finish_reason == "cancelled"
    assert scheduler.stats()["waiting"] == 0
    running.cancel()


def test_it_raises_queue_full_when_max_queue_requests_wait(tiny_scheduler):
    scheduler = tiny_scheduler(max_batch_size=1, max_queue=2)
    running = scheduler.submit(tiny_prompt(30, 4), greedy(4000))
    wait_until(lambda: scheduler.stats()["running"] == 1)
    queued = [scheduler.submit(tiny_prompt(31, 4), greedy(3)), scheduler.submit(tiny_prompt(32, 4), greedy(3))]
    with pytest.raises(QueueFull):
        scheduler.submit(tiny_prompt(33, 4), greedy(3))
    running.cancel()
    assert [len(list(handle)) for handle in queued] == [3, 3]


def test_a_request_whose_deadline_passed_while_waiting_times_out(tiny_scheduler):
    clock = FakeClock()
    scheduler = tiny_scheduler(max_batch_size=1, clock=clock)
    running = scheduler.submit(tiny_prompt(40, 4), greedy(4000))
    waiting = scheduler.submit(tiny_prompt(41, 4), greedy(3), deadline=clock.now + 5)
    wait_until(lambda: running.completion_tokens >= 2)
    clock.now += 10
    assert list(waiting) == [] and waiting.finish_reason == "timeout"
    assert running.finish_reason is None
    running.cancel()


def test_a_running_request_ends_with_timeout_at_its_deadline(tiny_scheduler):
    clock = FakeClock()
    scheduler = tiny_scheduler(clock=clock)
    handle = scheduler.submit(tiny_prompt(42, 4), greedy(4000), deadline=clock.now + 5)
    wait_until(lambda: handle.completion_tokens >= 2)
    clock.now += 10
    tokens = list(handle)
    assert handle.finish_reason == "timeout"
    assert 2 <= len(tokens) < 4000


def test_a_request_past_its_deadline_on_arrival_times_out_without_tokens(tiny_scheduler):
    clock = FakeClock()
    scheduler = tiny_scheduler(clock=clock)
    handle = scheduler.submit(tiny_prompt(43, 4), greedy(10), deadline=clock.now - 1)
    assert list(handle) == [] and handle.finish_reason == "timeout"


def test_a_failing_forward_pass_fails_its_requests_and_the_worker_keeps_serving(tiny_model, tiny_scheduler):
    scheduler = tiny_scheduler()
    prompt = tiny_prompt(50, 5)
    expected = run_alone(scheduler, prompt, greedy(6))

    def broken_forward(*args, **kwargs):
        raise RuntimeError("boom")

    tiny_model.forward = broken_forward
    try:
        failed = scheduler.submit(prompt, greedy(6))
        assert list(failed) == [] and failed.finish_reason == "error"
    finally:
        del tiny_model.forward
    assert run_alone(scheduler, prompt, greedy(6)) == expected


def test_stats_report_running_waiting_and_steps(tiny_scheduler):
    scheduler = tiny_scheduler(max_batch_size=1)
    assert scheduler.stats() == {"running": 0, "waiting": 0, "steps": 0, "cached_prefixes": 0}
    running = scheduler.submit(tiny_prompt(60, 4), greedy(4000))
    waiting = scheduler.submit(tiny_prompt(61, 4), greedy(3))
    wait_until(lambda: scheduler.stats()["steps"] >= 2)
    stats = scheduler.stats()
    assert (stats["running"], stats["waiting"]) == (1, 1)
    running.cancel()
    list(waiting)


def test_max_tokens_zero_finishes_at_once(tiny_scheduler):
    handle = tiny_scheduler().submit(tiny_prompt(62, 4), greedy(0))
    assert list(handle) == [] and handle.finish_reason == "length"


def test_close_cancels_what_is_left(tiny_model):
    scheduler = BatchScheduler(tiny_model, eos_token_ids=set(), pad_token_id=0, max_batch_size=1)
    running = scheduler.submit(tiny_prompt(63, 4), greedy(4000))
    waiting = scheduler.submit(tiny_prompt(64, 4), greedy(4))
    scheduler.close()
    assert running.finish_reason == "cancelled" and waiting.finish_reason == "cancelled"
    with pytest.raises(RuntimeError):
        scheduler.submit(tiny_prompt(65, 4), greedy(4))


# --- the embedded model, float32 ---

@pytest.fixture(scope="module")
def smollm(real_model_engine):
    """The packaged model and tokenizer, shared with the rest of the session (loaded once)."""
    if real_model_engine.model.dtype != torch.float32:
        pytest.skip("the scheduler's model tests compare float32 activations")
    return real_model_engine.tokenizer, real_model_engine.model


@pytest.fixture(scope="module")
def smollm_scheduler(smollm):
    scheduler = BatchScheduler(smollm[1], eos_token_ids={SMOLLM_EOS}, pad_token_id=SMOLLM_EOS, max_batch_size=8)
    yield scheduler
    scheduler.close()


@pytest.fixture(scope="module")
def chat_prompts(smollm):
    tokenizer = smollm[0]
    questions = ["What is the capital of France?", "Write a haiku about the sea.",
                 "Explain in two sentences why the sky is blue to a curious child.", "Who wrote Hamlet?"]
    return [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                          return_tensors="pt")["input_ids"][0].tolist() for q in questions]


@pytest.fixture(scope="module")
def alone_outputs(smollm_scheduler, chat_prompts):
    return [run_alone(smollm_scheduler, prompt, greedy(16, ignore_eos=True)) for prompt in chat_prompts]


@pytest.mark.model
def test_it_answers_like_the_model_does(smollm, smollm_scheduler, chat_prompts):
    tokenizer = smollm[0]
    handle = smollm_scheduler.submit(chat_prompts[0], greedy(32))
    assert "Paris" in tokenizer.decode(list(handle))
    assert handle.finish_reason == "stop"


@pytest.mark.model
def test_greedy_batched_requests_match_the_same_requests_run_alone(smollm_scheduler, chat_prompts, alone_outputs):
    handles = [smollm_scheduler.submit(prompt, greedy(16, ignore_eos=True)) for prompt in chat_prompts]
    assert [list(handle) for handle in handles] == alone_outputs


@pytest.mark.model
def test_concurrent_clients_each_get_their_own_answer(smollm_scheduler, chat_prompts, alone_outputs):
    results: dict[int, list[int]] = {}
    start = threading.Barrier(len(chat_prompts))

    def client(i: int) -> None:
        start.wait()
        results[i] = list(smollm_scheduler.submit(chat_prompts[i], greedy(16, ignore_eos=True)))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(chat_prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert [results[i] for i in range(len(chat_prompts))] == alone_outputs
    assert len({tuple(r) for r in results.values()}) == len(chat_prompts)


@pytest.mark.model
def test_a_request_submitted_while_others_run_joins_before_they_finish(smollm_scheduler, chat_prompts,
                                                                        alone_outputs):
    long_running = [smollm_scheduler.submit(prompt, greedy(400, ignore_eos=True)) for prompt in chat_prompts[:2]]
    wait_until(lambda: all(handle.completion_tokens >= 2 for handle in long_running))
    late = smollm_scheduler.submit(chat_prompts[3], greedy(16, ignore_eos=True))
    assert list(late) == alone_outputs[3]
    assert all(handle.finish_reason is None for handle in long_running)
    assert all(handle.completion_tokens < 100 for handle in long_running)
    for handle in long_running:
        handle.cancel()


@pytest.mark.model
def test_max_tokens_min_tokens_and_ignore_eos_are_honoured(smollm_scheduler, chat_prompts):
    # Alone, this prompt answers in a few tokens and then emits <|im_end|>.
    natural = smollm_scheduler.submit(chat_prompts[0], greedy(64))
    answer = list(natural)
    assert natural.finish_reason == "stop" and natural.completion_tokens == len(answer) < 16
    assert SMOLLM_EOS not in answer

    capped = smollm_scheduler.submit(chat_prompts[0], greedy(3))
    assert list(capped) == answer[:3] and capped.finish_reason == "length"

    at_least = smollm_scheduler.submit(chat_prompts[0], greedy(64, min_tokens=len(answer) + 5))
    longer = list(at_least)
    assert longer[: len(answer)] == answer and len(longer) >= len(answer) + 5
    assert SMOLLM_EOS not in longer[: len(answer) + 5]

    exact = smollm_scheduler.submit(chat_prompts[0], greedy(len(answer) + 5, ignore_eos=True))
    assert len(list(exact)) == len(answer) + 5 and exact.finish_reason == "length"


@pytest.mark.model
def test_a_seed_makes_sampling_reproducible_whoever_shares_the_batch(smollm_scheduler, chat_prompts):
    sampled = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=1234, ignore_eos=True)
    first = run_alone(smollm_scheduler, chat_prompts[1], sampled)
    assert run_alone(smollm_scheduler, chat_prompts[1], sampled) == first

    mates = [smollm_scheduler.submit(p, greedy(16, ignore_eos=True)) for p in (chat_prompts[0], chat_prompts[2])]
    in_batch = smollm_scheduler.submit(chat_prompts[1], sampled)
    assert list(in_batch) == first
    for mate in mates:
        list(mate)

    other_seed = SamplingParams(max_tokens=16, temperature=0.9, top_p=0.95, seed=99, ignore_eos=True)
    assert run_alone(smollm_scheduler, chat_prompts[1], other_seed) != first


def test_it_keeps_serving_after_a_long_generation_empties_the_batch(tiny_scheduler):
    scheduler = tiny_scheduler(max_batch_size=2)
    short = tiny_prompt(70, 5)
    before = run_alone(scheduler, short, greedy(8))
    assert len(run_alone(scheduler, tiny_prompt(71, 30), greedy(1100))) == 1100  # past the idle-buffer limit
    assert run_alone(scheduler, short, greedy(8)) == before
