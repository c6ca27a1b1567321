"""Fair admission of waiting generations to the running batch, by account (issue 18).

Pure logic (no torch, no Django, no clock): the scheduler asks it which waiting request joins the batch next
and tells it, every step, how many rows each account decoded. Tests drive it step by step.

The policy (``FairQueue``):

- Waiting requests are grouped by account. When a row is free, the next request comes from the eligible
  account with the fewest running rows per unit of weight, counting the row it would get: ``(running + 1) /
  weight`` (weighted water-filling over decode slots). Each decode step gives one token per row, so an
  account's share of decoded tokens follows its share of rows: under contention, shares converge to the
  weights. Ties go to the account with the least weighted service so far (its virtual time: tokens decoded
  / weight, WFQ over tokens); an account coming back from idle starts at the least virtual time among the
  active ones, so it banks no credit from being away.
- An account with nothing running, or fewer rows than its weighted share of ``max_batch_size``, whose request
  waits may join even when the batch is full: the batch grows by a row for it, up to ``burst_rows`` rows over
  ``max_batch_size`` (no preemption; the rows over the size close as running rows finish, because no one
  else is admitted until the batch is under its size again). So an idle account's first request joins at the
  next step, whatever the others hold, and one below its share need not wait for theirs to finish.
- Per-account limits: at most ``max_running`` rows decoding (the rest wait) and ``max_queued`` requests
  waiting; past those, ``push`` raises ``AccountLimitExceeded`` (the API's 429).
- Within an account, interactive work goes before batch work (``service_tier: "flex"``), except that a batch
  request waiting behind ``BATCH_EVERY`` interactive admissions in a row goes next, so it cannot wait forever.

``FcfsQueue`` is the scheduler's original queue (first come, first served; SLUICE_FAIR_SHARING=0) with the
same interface and the same per-account figures, so both report the shares they gave.
"""

from __future__ import annotations

import collections
import itertools
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

INTERACTIVE = "interactive"
BATCH = "batch"
TIERS = (INTERACTIVE, BATCH)

# Within an account, a waiting batch request goes next after this many interactive admissions in a row.
BATCH_EVERY = 8
# The share an account got is measured over roughly the last 1 / (1 - SHARE_DECAY) steps.
SHARE_DECAY = 1 - 1 / 64
# An account that has nothing waiting or running is forgotten once its recent tokens fall below this.
FORGET_BELOW = 0.01


@dataclass(frozen=True)
class Share:
    """Who a generation is for and what that account is allowed: travels with the request to the engine."""

    account: str = ""  # "" for work no account asked for (warm-up, benchmarks)
    weight: float = 1.0
    max_running: int | None = None  # rows decoding at once; None: up to the batch size
    max_queued: int | None = None  # requests waiting; None: up to the engine's queue
    tier: str = INTERACTIVE

    def __post_init__(self):
        if not self.weight > 0:
            raise ValueError("weight must be positive")
        if self.tier not in TIERS:
            raise ValueError(f"tier must be one of {TIERS}")
        if any(limit is not None and limit < 1 for limit in (self.max_running, self.max_queued)):
            raise ValueError("max_running and max_queued must be at least 1 (or None)")


NO_SHARE = Share()


class AccountLimitExceeded(Exception):
    """The account already has as much running or waiting as it may (a 429 ``rate_limit_exceeded``)."""

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class CapacityFull(Exception):
    """Every slot (connection) is taken, the newcomers' burst included (a 503)."""


@dataclass
class AccountStats:
    account: str
    weight: float
    running: int
    queued: int
    share: float  # of the tokens decoded recently
    tokens: int  # decoded since first seen


@dataclass
class _Account:
    key: str
    weight: float = 1.0
    max_running: int | None = None
    max_queued: int | None = None
    waiting: dict[str, collections.deque] = field(default_factory=lambda: {t: collections.deque() for t in TIERS})
    vtime: float = 0.0
    tokens: int = 0
    recent: float = 0.0
    interactive_streak: int = 0

    def update(self, share: Share) -> None:
        # The latest request carries the account's current settings (an admin may change them any time).
        self.weight, self.max_running, self.max_queued = share.weight, share.max_running, share.max_queued

    @property
    def queued(self) -> int:
        return len(self.waiting[INTERACTIVE]) + len(self.waiting[BATCH])


def running_by_account(shares: Iterable[Share | None]) -> collections.Counter:
    return collections.Counter((share or NO_SHARE).account for share in shares)


class _Accounting:
    """Per-account figures common to both queues: tokens decoded, the recent share, running and queued."""

    def __init__(self, max_batch_size: int) -> None:
        self.max_batch_size = max_batch_size
        self._accounts: dict[str, _Account] = {}
        self._running: collections.Counter = collections.Counter()  # as of the last charge()
        self._order = itertools.count()

    def _account(self, share: Share) -> _Account:
        account = self._accounts.get(share.account)
        if account is None:
            account = self._accounts[share.account] = _Account(share.account)
        account.update(share)
        return account

    def charge(self, running: Mapping[str, int]) -> None:
        """One decode step ran ``running[account]`` rows of each account: one token each."""
        self._running = collections.Counter(running)
        for key, rows in running.items():
            account = self._accounts.get(key) or self._accounts.setdefault(key, _Account(key))
            account.tokens += rows
            account.vtime += rows / account.weight
        for key in list(self._accounts):
            account = self._accounts[key]
            account.recent = account.recent * SHARE_DECAY + running.get(key, 0)
            if not running.get(key) and not account.queued and account.recent < FORGET_BELOW:
                del self._accounts[key]

    def stats(self, running: Mapping[str, int] | None = None) -> list[AccountStats]:
        running = self._running if running is None else running
        total = sum(account.recent for account in self._accounts.values()) or 1.0
        return [AccountStats(account=a.key, weight=a.weight, running=running.get(a.key, 0), queued=a.queued,
                             share=a.recent / total, tokens=a.tokens)
                for a in self._accounts.values()]


class FcfsQueue(_Accounting):
    """First come, first served, up to the batch size: what the scheduler did before fair sharing."""

    def __init__(self, max_batch_size: int) -> None:
        super().__init__(max_batch_size)
        self._items: collections.deque = collections.deque()
        self._share: dict[Hashable, Share] = {}

    def push(self, item: Hashable, share: Share | None = None) -> None:
        share = share or NO_SHARE
        self._account(share).waiting[share.tier].append(item)
        self._items.append(item)
        self._share[item] = share

    def peek(self, running: Mapping[str, int], rows: int):
        return self._items[0] if self._items and rows < self.max_batch_size else None

    def pop(self, item: Hashable) -> None:
        self.remove(item)

    def remove(self, item: Hashable) -> bool:
        share = self._share.pop(item, None)
        if share is None:
            return False
        self._items.remove(item)
        self._accounts[share.account].waiting[share.tier].remove(item)
        return True

    def clear(self) -> None:
        for item in list(self._items):
            self.remove(item)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator:
        return iter(list(self._items))

    def __contains__(self, item) -> bool:
        return item in self._share


class FairQueue(_Accounting):
    """Waiting requests by account, admitted by weighted water-filling over rows (see the module's doc)."""

    def __init__(self, max_batch_size: int, *, burst_rows: int = 4) -> None:
        super().__init__(max_batch_size)
        self.burst_rows = burst_rows
        self._where: dict[Hashable, tuple[_Account, str, int]] = {}

    @property
    def max_rows(self) -> int:
        """The most rows the batch may hold: its size plus the rows newly active accounts may add."""
        return self.max_batch_size + self.burst_rows

    def push(self, item: Hashable, share: Share | None = None) -> None:
        """Queue ``item``; raises AccountLimitExceeded when its account already has ``max_queued`` waiting."""
        share = share or NO_SHARE
        existing = self._accounts.get(share.account)
        idle = existing is None or (not existing.queued and not self._running.get(share.account))
        account = self._account(share)
        if account.max_queued is not None and account.queued >= account.max_queued:
            raise AccountLimitExceeded(
                f"Too many concurrent requests for this account: {self._running.get(account.key, 0)} generating and "
                f"{account.queued} waiting, the most it may queue. Retry when one finishes.")
        if idle:  # back from idle: no credit for the time away
            others = [a.vtime for a in self._accounts.values()
                      if a is not account and (a.queued or self._running.get(a.key))]
            if others:
                account.vtime = max(account.vtime, min(others))
        account.waiting[share.tier].append(item)
        self._where[item] = (account, share.tier, next(self._order))

    def peek(self, running: Mapping[str, int], rows: int):
        """The request that should join next, given the rows each account runs and the rows in the batch
        (those already chosen this step included); None when nobody may join now."""
        full = rows >= self.max_batch_size
        if rows >= self.max_rows:
            return None
        if full:  # over the batch size only for an account below its weighted share of it (or with nothing)
            active = [a for a in self._accounts.values() if a.queued or running.get(a.key)]
            total_weight = sum(a.weight for a in active) or 1.0
        best, best_key = None, None
        for account in self._accounts.values():
            if not account.queued:
                continue
            held = running.get(account.key, 0)
            if account.max_running is not None and held >= account.max_running:
                continue
            if full and held and held >= self.max_batch_size * account.weight / total_weight:
                continue
            head = self._head(account)
            key = ((held + 1) / account.weight, account.vtime, self._where[head][2])
            if best_key is None or key < best_key:
                best, best_key = head, key
        return best

    @staticmethod
    def _head(account: _Account):
        interactive, batch = account.waiting[INTERACTIVE], account.waiting[BATCH]
        if batch and (not interactive or account.interactive_streak >= BATCH_EVERY):
            return batch[0]
        return interactive[0]

    def pop(self, item: Hashable) -> None:
        """``item`` (what ``peek`` returned) joins the batch."""
        account, tier, _ = self._where[item]
        if tier == INTERACTIVE and account.waiting[BATCH]:
            account.interactive_streak += 1
        else:
            account.interactive_streak = 0
        self.remove(item)

    def remove(self, item: Hashable) -> bool:
        where = self._where.pop(item, None)
        if where is None:
            return False
        account, tier, _ = where
        account.waiting[tier].remove(item)
        return True

    def clear(self) -> None:
        for item in list(self._where):
            self.remove(item)

    def __len__(self) -> int:
        return len(self._where)

    def __iter__(self) -> Iterator:
        return iter(list(self._where))

    def __contains__(self, item) -> bool:
        return item in self._where


class FairGate(_Accounting):
    """The same policy for a model without a queue here (a remote one): outstanding requests by account.

    ``capacity`` requests may be outstanding (the connections to the upstreams), plus ``burst`` for accounts
    that have none. An account may use idle capacity alone, but while others have requests outstanding it may
    hold at most its weighted share of the capacity (at least one); past that, or past its ``max_running``,
    ``acquire`` raises AccountLimitExceeded (429); with every slot taken, CapacityFull (503).
    Thread-safe use is the caller's (the remote engine holds its lock).
    """

    def __init__(self, capacity: int, *, burst: int = 4) -> None:
        super().__init__(capacity)
        self.capacity = capacity
        self.burst = burst
        self.outstanding: collections.Counter = collections.Counter()

    def acquire(self, share: Share | None) -> None:
        share = share or NO_SHARE
        account = self._account(share)
        held = self.outstanding[share.account]
        if account.max_running is not None and held >= account.max_running:
            raise AccountLimitExceeded(
                f"Too many concurrent requests for this account: {held} in flight to this model, its limit.")
        others = [key for key, count in self.outstanding.items() if count and key != share.account]
        if others:
            weights = sum(self._accounts[key].weight for key in others) + account.weight
            fair = max(1, math.floor(self.capacity * account.weight / weights))
            if held >= fair:
                raise AccountLimitExceeded(
                    f"This account has {held} requests in flight to this model, its fair share while others use "
                    "it. Retry when one finishes.")
        total = sum(self.outstanding.values())
        if total >= (self.capacity + self.burst if not held else self.capacity):
            raise CapacityFull(f"{total} requests in flight")
        self.outstanding[share.account] += 1

    def release(self, share: Share | None) -> None:
        key = (share or NO_SHARE).account
        self.outstanding[key] -= 1
        if self.outstanding[key] <= 0:
            del self.outstanding[key]

    def sample(self) -> None:
        """Count one sampling period of outstanding requests into the recent shares (for /metrics)."""
        self.charge(dict(self.outstanding))

    def stats(self, running: Mapping[str, int] | None = None) -> list[AccountStats]:
        rows = super().stats(self.outstanding if running is None else running)
        for row in rows:
            row.tokens = 0  # a remote model's tokens are counted upstream, not here
        return rows
