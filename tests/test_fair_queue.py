"""The fair queue's policy, stepped by hand: a simulated batch that admits, decodes one token per row per step
and drops finished rows, exactly as the scheduler drives the queue (tests/test_fair_scheduler.py runs it in
the real scheduler)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from inference.fair_queue import (
    BATCH,
    BATCH_EVERY,
    AccountLimitExceeded,
    CapacityFull,
    FairGate,
    FairQueue,
    FcfsQueue,
    Share,
    running_by_account,
)


@dataclass(eq=False)
class Request:
    share: Share
    length: int
    remaining: int = 0
    submitted: int | None = None
    admitted: int | None = None
    finished: int | None = None


class SimulatedBatch:
    def __init__(self, queue) -> None:
        self.queue = queue
        self.running: list[Request] = []
        self.steps = 0
        self.tokens: dict[str, int] = {}
        self.max_rows_seen = 0

    def submit(self, share: Share, length: int) -> Request:
        request = Request(share, length, remaining=length)
        self.queue.push(request, share)
        request.submitted = self.steps
        return request

    def step(self) -> None:
        running = running_by_account(r.share for r in self.running)
        while (candidate := self.queue.peek(running, len(self.running))) is not None:
            self.queue.pop(candidate)
            candidate.admitted = self.steps
            running[candidate.share.account] += 1
            self.running.append(candidate)
        self.max_rows_seen = max(self.max_rows_seen, len(self.running))
        self.queue.charge(running_by_account(r.share for r in self.running))
        for request in self.running:
            request.remaining -= 1
            self.tokens[request.share.account] = self.tokens.get(request.share.account, 0) + 1
            if not request.remaining:
                request.finished = self.steps
        self.running = [r for r in self.running if r.remaining]
        self.steps += 1

    def waiting_of(self, account: str) -> int:
        return next((s.queued for s in self.queue.stats() if s.account == account), 0)


def test_under_contention_each_accounts_share_of_tokens_converges_to_its_weight():
    rng = random.Random(18)
    weights = {"a": 1, "b": 2, "c": 1, "d": 4}
    batch = SimulatedBatch(FairQueue(16))
    for _ in range(1000):
        for account, weight in weights.items():
            while batch.waiting_of(account) < 8:  # every account always has work waiting
                batch.submit(Share(account, weight=weight), rng.randint(5, 120))
        batch.step()
    total = sum(batch.tokens.values())
    for account, weight in weights.items():
        target = weight / sum(weights.values())
        assert abs(batch.tokens[account] / total - target) <= 0.1 * target, (account, batch.tokens)


@pytest.mark.parametrize("queue, longest_wait", [(FcfsQueue(16), None), (FairQueue(16), 2)])
def test_an_account_behind_a_heavy_one_waits_its_turn_only_without_fair_sharing(queue, longest_wait):
    batch = SimulatedBatch(queue)
    heavy = [batch.submit(Share("a"), 256) for _ in range(48)]
    for _ in range(10):
        batch.step()
    light = batch.submit(Share("b"), 64)
    while light.finished is None:
        batch.step()
    wait = light.admitted - light.submitted
    if longest_wait is None:  # first come first served: behind all of a's waiting requests
        assert wait >= 240 and sum(r.admitted is not None for r in heavy) == 48
    else:
        assert wait <= longest_wait


def test_a_newly_active_account_joins_within_two_steps_even_when_the_batch_is_full():
    batch = SimulatedBatch(FairQueue(16, burst_rows=4))
    for _ in range(48):
        batch.submit(Share("a"), 256)
    for _ in range(30):
        batch.step()
    assert len(batch.running) == 16 and batch.waiting_of("a") == 32
    newcomers = [batch.submit(Share(name), 64) for name in ("b", "c", "d", "e")]
    batch.step()
    assert all(r.admitted is not None and r.admitted - r.submitted <= 2 for r in newcomers)
    assert batch.max_rows_seen == 20  # the batch grew by a row for each, no more
    second = batch.submit(Share("b"), 64)  # b now runs a row: its next request waits for a free one
    for _ in range(5):
        batch.step()
    assert second.admitted is None
    while second.admitted is None:
        batch.step()
    assert len(batch.running) <= 20


def test_an_account_below_its_share_of_a_full_batch_takes_the_extra_rows_and_no_more():
    batch = SimulatedBatch(FairQueue(16, burst_rows=4))
    for _ in range(48):
        batch.submit(Share("a"), 256)
    for _ in range(10):
        batch.step()
    light = [batch.submit(Share("b"), 64) for _ in range(6)]  # b's share is 8 rows; 4 extra rows exist
    batch.step()
    batch.step()
    assert sum(r.admitted is not None for r in light) == 4 and len(batch.running) == 20
    assert all(r.admitted is None for r in light[4:])  # the rest wait for rows a gives up


def test_the_batch_shrinks_back_to_its_size_after_newcomers_joined_over_it():
    batch = SimulatedBatch(FairQueue(4, burst_rows=2))
    for _ in range(12):
        batch.submit(Share("a"), 30)
    batch.step()
    batch.submit(Share("b"), 100)
    batch.step()
    assert len(batch.running) == 5
    for _ in range(40):
        batch.step()
        if batch.steps > 32:  # a's first rows are done: the batch is back at its size
            assert len(batch.running) <= 4


def test_an_account_returning_from_idle_gets_its_share_not_a_monopoly():
    rng = random.Random(7)
    batch = SimulatedBatch(FairQueue(16))
    for step in range(1500):
        while batch.waiting_of("a") < 8:
            batch.submit(Share("a"), rng.randint(5, 60))
        if step < 300 or step >= 800:
            while batch.waiting_of("b") < 8:
                batch.submit(Share("b"), rng.randint(5, 60))
        if step == 900:
            before = dict(batch.tokens)
        batch.step()
    a, b = batch.tokens["a"] - before["a"], batch.tokens["b"] - before["b"]
    assert abs(b / (a + b) - 0.5) <= 0.05


def test_an_account_never_runs_more_rows_than_its_limit():
    batch = SimulatedBatch(FairQueue(16))
    for _ in range(30):
        batch.submit(Share("a", max_running=3), 40)
        batch.submit(Share("b"), 40)
    for _ in range(200):
        batch.step()
        assert running_by_account(r.share for r in batch.running)["a"] <= 3
    assert batch.tokens["a"] > 0 and batch.tokens["b"] > batch.tokens["a"]


def test_an_account_past_its_queue_limit_is_refused_and_others_are_not():
    queue = FairQueue(16)
    for n in range(3):
        queue.push(object(), Share("a", max_queued=3))
    with pytest.raises(AccountLimitExceeded) as refused:
        queue.push(object(), Share("a", max_queued=3))
    assert "3 waiting" in refused.value.message
    queue.push(object(), Share("b", max_queued=3))
    assert len(queue) == 4


def test_batch_work_yields_to_interactive_work_of_the_same_account_but_is_not_starved():
    batch = SimulatedBatch(FairQueue(1, burst_rows=0))
    batch_request = batch.submit(Share("a", tier=BATCH), 1)
    interactive = []
    for _ in range(3 * BATCH_EVERY):
        if batch.waiting_of("a") < 3:
            interactive.append(batch.submit(Share("a"), 1))
            interactive.append(batch.submit(Share("a"), 1))
        batch.step()
    assert batch_request.admitted is not None
    admitted_before = [r for r in interactive if r.admitted is not None and r.admitted < batch_request.admitted]
    assert len(admitted_before) == BATCH_EVERY  # interactive first, the batch request after BATCH_EVERY of them


def test_batch_work_of_one_account_does_not_yield_to_another_accounts_interactive_work():
    batch = SimulatedBatch(FairQueue(2, burst_rows=0))
    for _ in range(20):
        batch.submit(Share("a", tier=BATCH), 10)
        batch.submit(Share("b"), 10)
    for _ in range(100):
        batch.step()
    assert batch.tokens["a"] == batch.tokens["b"]


@pytest.mark.parametrize("seed", range(6))
def test_no_request_waits_forever_under_random_arrivals(seed):
    rng = random.Random(seed)
    accounts = [Share(f"acct{i}", weight=rng.choice([1, 1, 2, 3, 8]),
                      max_running=rng.choice([None, None, 1, 4]), tier=rng.choice(["interactive", BATCH]))
                for i in range(rng.randint(2, 7))]
    batch = SimulatedBatch(FairQueue(rng.choice([1, 4, 16]), burst_rows=rng.choice([0, 1, 4])))
    on = {share.account: rng.random() < 0.5 for share in accounts}
    requests = []
    for _ in range(3000):
        for share in accounts:
            if rng.random() < 0.02:
                on[share.account] = not on[share.account]  # bursts and silences
            if on[share.account] and rng.random() < 0.3:
                tier = rng.choice(["interactive", BATCH])
                requests.append(batch.submit(Share(share.account, share.weight, share.max_running, tier=tier),
                                             rng.choice([1, 5, 20, 200])))
        batch.step()
    for _ in range(100_000):
        if not len(batch.queue) and not batch.running:
            break
        batch.step()
    assert all(r.finished is not None for r in requests)
    # Whoever had nothing running or waiting joined at once whenever a burst row (or a free row) was there.
    assert batch.max_rows_seen <= batch.queue.max_rows


def test_every_account_that_asks_gets_rows_however_small_its_weight():
    batch = SimulatedBatch(FairQueue(8, burst_rows=1))
    for _ in range(40):
        batch.submit(Share("heavy", weight=100), 50)
        batch.submit(Share("light", weight=1), 50)
    for _ in range(400):
        batch.step()
    assert batch.tokens["light"] > 0


# --- the gate in front of a remote model (no queue: outstanding requests) ---

def test_an_account_alone_may_use_every_connection():
    gate = FairGate(8, burst=2)
    for _ in range(8):
        gate.acquire(Share("a"))
    with pytest.raises(CapacityFull):
        gate.acquire(Share("a"))


def test_a_newcomer_gets_a_connection_and_the_heavy_account_is_held_to_its_share():
    gate = FairGate(8, burst=2)
    for _ in range(8):
        gate.acquire(Share("a"))
    gate.acquire(Share("b"))  # over the capacity, by the burst
    with pytest.raises(AccountLimitExceeded):
        gate.acquire(Share("a"))
    for _ in range(4):
        gate.release(Share("a"))
    with pytest.raises(AccountLimitExceeded):  # 4 of 8 with b active: a's half
        gate.acquire(Share("a"))
    for _ in range(3):
        gate.acquire(Share("b"))
    with pytest.raises(AccountLimitExceeded):  # b at its half too
        gate.acquire(Share("b"))
    gate.acquire(Share("c"))  # newcomers still get in, over the capacity, up to the burst
    gate.acquire(Share("d"))
    with pytest.raises(CapacityFull):
        gate.acquire(Share("e"))
    assert gate.outstanding == {"a": 4, "b": 4, "c": 1, "d": 1}


def test_an_accounts_concurrent_limit_holds_at_the_gate():
    gate = FairGate(100)
    gate.acquire(Share("a", max_running=1))
    with pytest.raises(AccountLimitExceeded):
        gate.acquire(Share("a", max_running=1))
    gate.release(Share("a"))
    gate.acquire(Share("a", max_running=1))
