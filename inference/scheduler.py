"""Iteration-level (continuous) batching over a transformers causal LM.

One daemon thread owns the model. Every step it admits waiting requests (one batched prefill), runs one
decode step for every running sequence, samples each row with that request's own parameters and drops the
rows that finished or were cancelled. A request that arrives while others generate joins at the next step
instead of waiting for the batch to drain, which is what makes concurrent requests share forward passes.

The running rows share one preallocated, left-padded KV buffer per layer (`_BatchKV`): every row writes its
next token at the same column, a boolean mask says which columns each row may attend to, and each row keeps
its own position ids. Decoding never re-pads or concatenates the cache; the buffer is only re-laid out when
it runs out of room (rarely) and leading columns no row uses any more are skipped by moving a window start.

Works with decoder-only models whose attention layers call `past_key_values.update(k, v, layer_idx)` and
accept a prepared 4D boolean attention mask (Llama, Mistral without sliding window, Qwen2, ...).
"""

from __future__ import annotations

import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

import torch

from inference.constrained import RowGuide, guides_mask_logits
from inference.logprobs import logprobs_compute
from inference.fair_queue import FcfsQueue, Share, running_by_account
from inference.sampling import SamplingParams

logger = logging.getLogger(__name__)

T = TypeVar("T")

_DONE = object()

# Prompt tokens (padded) one batched prefill may process; longer joins are spread over several steps so the
# running rows are not stalled for long. A single prompt longer than this is still prefilled in one go.
PREFILL_TOKEN_BUDGET = 2048


# Prompts that start alike (a system prompt, the chat template's header) share the keys and values of that
# start: computed once, kept in a small LRU and put in front of each prefill that begins with it, so a
# prefill computes only what differs. A shared start is found by comparing a prompt with the one before it,
# cut to a multiple of PREFIX_BLOCK tokens so that prompts differing a few tokens later share one entry.
PREFIX_BLOCK = 8
MIN_SHARED_PREFIX = 16
MAX_SHARED_PREFIX = 512
PREFIX_CACHE_ENTRIES = 4


class QueueFull(Exception):
    """Raised by `BatchScheduler.submit` when `max_queue` requests are already waiting."""


class GenerationHandle:
    """One submitted generation: iterate it for token ids; it ends when the generation finishes."""

    def __init__(self, scheduler: BatchScheduler, prompt_ids: list[int], params: SamplingParams,
                 deadline: float | None, share: Share | None = None, guide: RowGuide | None = None) -> None:
        self._scheduler = scheduler
        self.prompt_ids = prompt_ids
        self.params = params
        self.deadline = deadline
        self.guide = guide  # the grammar this row's tokens must follow (inference.constrained), or None
        # With params.logprobs: one entry per emitted token, appended before the token is delivered.
        self.logprobs: list = []
        self._pending_logprob = None
        self.share = share  # the account it runs for (inference.fair_queue)
        self.submitted_step: int | None = None
        self.admitted_step: int | None = None  # the step whose prefill it joined
        self.finish_reason: str | None = None
        self.completion_tokens = 0
        self._tokens: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()  # the worker finishes and the caller cancels from different threads
        self._generator: torch.Generator | None = None

    def __iter__(self) -> Iterator[int]:
        while True:
            item = self._tokens.get()
            if item is _DONE:
                self._tokens.put(_DONE)  # a second iteration ends at once instead of blocking forever
                return
            yield item

    def cancel(self) -> None:
        """Stop this generation now; safe from any thread, a no-op once finished. Its row leaves the batch at the
        scheduler's next step."""
        self._finish("cancelled")
        self._scheduler._cancel(self)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    # Called by the scheduler's worker thread only.
    def _emit(self, token_id: int) -> None:
        with self._lock:
            if self.finish_reason is None:
                self.completion_tokens += 1
                if self._pending_logprob is not None:
                    self.logprobs.append(self._pending_logprob)
                    self._pending_logprob = None
                self._tokens.put(token_id)

    def _finish(self, reason: str) -> None:
        with self._lock:
            if self.finish_reason is None:
                self.finish_reason = reason
                self._tokens.put(_DONE)

    def _sampling_generator(self, device: torch.device) -> torch.Generator:
        # Each request owns its generator, so what it samples does not depend on its batch-mates.
        if self._generator is None:
            self._generator = torch.Generator(device=device)
            if self.params.seed is None:
                self._generator.seed()
            else:
                self._generator.manual_seed(self.params.seed)
        return self._generator


class _BatchKV:
    """Left-padded key/value buffers for the running rows, one pair per layer.

    Rows 0..n-1 are live. Columns start..end-1 form the live window; a decode step writes every row's new
    key/value at column `end`. Passed to the model as `past_key_values`: attention layers call `update`.
    Buffers grow (rows and columns) by re-layout, which copies only the live window, and are dropped when
    the batch empties after a long context, so an idle scheduler does not hold the memory of its longest run.
    """

    # Columns of free room a re-layout leaves after the window (at least; more for wide windows).
    MIN_ROOM = 128
    # An empty batch keeps buffers up to this many columns; beyond it they are freed.
    KEEP_IDLE_COLUMNS = 1024

    def __init__(self, max_rows: int, dtype: torch.dtype | None = None) -> None:
        self.max_rows = max_rows
        self.dtype = dtype  # the buffers' element type; None: the model's keys' own
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.mask: torch.Tensor | None = None  # bool [rows, capacity]
        self.rows = 0
        self.capacity = 0
        self.n = 0
        self.start = 0
        self.end = 0

    @property
    def width(self) -> int:
        return self.end - self.start

    def reset(self) -> None:
        self.n = 0
        self.start = self.end = 0
        self.release()

    def release(self) -> None:
        self.keys, self.values, self.mask = [], [], None
        self.rows = self.capacity = 0

    # --- the Cache protocol the model uses during a decode step ---
    is_compileable = False

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        keys[: self.n, :, self.end] = key_states[:, :, 0]
        values[: self.n, :, self.end] = value_states[:, :, 0]
        window = slice(self.start, self.end + 1)
        # Buffers narrower than the model's keys (a float16 cache) widen back for its attention.
        return keys[: self.n, :, window].to(key_states.dtype), values[: self.n, :, window].to(value_states.dtype)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.width

    def decode_slot(self, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor, int, slice]:
        """For a model that writes a decode step's keys and values itself (inference.fast_llama): the layer's
        buffers (rows 0..n-1 live), the column to write, and the window to attend over, that column included."""
        return self.keys[layer_idx], self.values[layer_idx], self.end, slice(self.start, self.end + 1)

    # --- layout management ---
    def _relayout(self, extra_left: int, rows: int, like_k: list[torch.Tensor],
                  like_v: list[torch.Tensor]) -> None:
        """Copy the live window into fresh buffers of `rows` rows, `extra_left` free columns before the window
        and room after it."""
        width = self.width
        capacity = extra_left + width + max(self.MIN_ROOM, width // 2)
        old_window, new_window = slice(self.start, self.end), slice(extra_left, extra_left + width)
        if not self.keys:
            self.keys, self.values = [None] * len(like_k), [None] * len(like_v)
        for store, like in ((self.keys, like_k), (self.values, like_v)):
            for layer, template in enumerate(like):
                # zeros, not empty: masked columns still enter the attention product (with weight 0), and a NaN
                # bit pattern there would poison the whole row.
                buffer = torch.zeros((rows, template.shape[1], capacity, template.shape[3]),
                                     dtype=self.dtype or template.dtype, device=template.device)
                if self.n and width:
                    buffer[: self.n, :, new_window] = store[layer][: self.n, :, old_window]
                # Replaced layer by layer, so the old buffer goes at once: the copy never holds two whole caches.
                store[layer] = buffer
        mask = torch.zeros((rows, capacity), dtype=torch.bool, device=like_k[0].device)
        if self.n and width:
            mask[: self.n, new_window] = self.mask[: self.n, old_window]
        self.mask = mask
        self.rows, self.capacity = rows, capacity
        self.start, self.end = extra_left, extra_left + width

    def insert(self, keys: list[torch.Tensor], values: list[torch.Tensor], mask: torch.Tensor) -> range:
        """Append rows from a prefill ([g, H, P, D] per layer, left-padded; mask [g, P]); returns their indices."""
        g, length = mask.shape
        if self.n + g > self.max_rows:
            raise ValueError("no free rows")
        if self.n == 0:
            self.start = self.end = min(length, self.capacity)
        if not self.keys or self.n + g > self.rows or self.end - length < 0 or self.end >= self.capacity:
            rows = max(self.rows, self.n + g)
            rows = min(self.max_rows, 1 << (rows - 1).bit_length())  # grow rows by powers of two
            self._relayout(max(0, length - self.width), rows, keys, values)
        new_start = min(self.start, self.end - length)
        if new_start < self.start:
            # Columns the existing rows never wrote: hide them (their contents are finite but meaningless).
            self.mask[: self.n, new_start : self.start] = False
            self.start = new_start
        rows = range(self.n, self.n + g)
        first = self.end - length
        for layer in range(len(keys)):
            self.keys[layer][rows.start : rows.stop, :, first : self.end] = keys[layer]
            self.values[layer][rows.start : rows.stop, :, first : self.end] = values[layer]
        self.mask[rows.start : rows.stop, self.start : self.end] = False
        self.mask[rows.start : rows.stop, first : self.end] = mask
        self.n += g
        return rows

    def prepare_decode(self) -> torch.Tensor:
        """Make room for one more column and return the 4D attention mask for the decode step."""
        if self.end >= self.capacity:
            self._relayout(0, self.rows, self.keys, self.values)
        self.mask[: self.n, self.end] = True
        return self.mask[: self.n, None, None, self.start : self.end + 1]

    def advance(self) -> None:
        self.end += 1

    def move_row(self, src: int, dst: int) -> None:
        window = slice(self.start, self.end)
        for layer in range(len(self.keys)):
            self.keys[layer][dst, :, window] = self.keys[layer][src, :, window]
            self.values[layer][dst, :, window] = self.values[layer][src, :, window]
        self.mask[dst, window] = self.mask[src, window]

    def trim_leading_padding(self) -> None:
        """Skip leading columns no live row attends to (e.g. the long prompt of a row that left)."""
        if self.n == 0:
            self.start = self.end
            if self.capacity > self.KEEP_IDLE_COLUMNS:
                self.release()
            return
        used = self.mask[: self.n, self.start : self.end].any(dim=0)
        self.start += int(torch.argmax(used.to(torch.uint8)))


class _PrefixCache:
    """Keys and values ([1, H, p, D] per layer) of prompt starts, least recently used evicted first."""

    def __init__(self, entries: int) -> None:
        self._entries: collections.OrderedDict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = (
            collections.OrderedDict())
        self.capacity = entries

    def longest_for(self, prompt: list[int]) -> tuple[int, ...] | None:
        """The longest cached start of ``prompt`` that leaves at least one token of it to prefill."""
        best = None
        for prefix in self._entries:
            if len(prefix) < len(prompt) and (best is None or len(prefix) > len(best)) and \
                    tuple(prompt[: len(prefix)]) == prefix:
                best = prefix
        if best is not None:
            self._entries.move_to_end(best)
        return best

    def get(self, prefix: tuple[int, ...]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self._entries[prefix]

    def put(self, prefix: tuple[int, ...], keys: list[torch.Tensor], values: list[torch.Tensor]) -> None:
        self._entries[prefix] = (keys, values)
        self._entries.move_to_end(prefix)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _shared_start(a: list[int], b: list[int]) -> int:
    limit = min(len(a), len(b))
    n = 0
    while n < limit and a[n] == b[n]:
        n += 1
    return n


class BatchScheduler:
    """Runs submitted generations in one continuously re-formed batch on a background thread."""

    def __init__(self, model, *, eos_token_ids: set[int], pad_token_id: int, max_batch_size: int = 16,
                 max_queue: int = 64, threads: int | None = None, prefix_cache_entries: int = PREFIX_CACHE_ENTRIES,
                 clock: Callable[[], float] = time.monotonic, waiting_queue=None) -> None:
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        self.model = model
        self.eos_token_ids = set(eos_token_ids)
        self.pad_token_id = pad_token_id
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self._threads = threads  # torch threads for the forward passes (None: this thread's default)
        self._clock = clock
        config = getattr(model, "config", None)
        self._max_positions = getattr(config, "max_position_embeddings", None) or 1 << 30
        self._device = next(model.parameters()).device

        self._cond = threading.Condition()
        # Which waiting request joins next: first come first served, or fair by account (inference.fair_queue).
        self._waiting = waiting_queue if waiting_queue is not None else FcfsQueue(max_batch_size)
        max_rows = getattr(self._waiting, "max_rows", max_batch_size)  # a fair queue may grow the batch a little
        self._running: list[GenerationHandle] = []  # row i of the KV buffer belongs to _running[i]
        self._closed = False
        self._steps = 0

        # A model may keep its cache narrower than its activations (FastLlama on the kernels: float16).
        self._kv = _BatchKV(max_rows, dtype=getattr(model, "kv_cache_dtype", None))
        self._prefixes = _PrefixCache(prefix_cache_entries)  # 0 turns sharing off
        self._chores: collections.deque[tuple[Callable[[], object], Future]] = collections.deque()
        self._last_prompt: list[int] | None = None
        self._next_input = torch.full((max_rows,), pad_token_id, dtype=torch.long, device=self._device)
        self._positions = torch.zeros((max_rows,), dtype=torch.long, device=self._device)
        self._eos_list = torch.tensor(sorted(self.eos_token_ids), dtype=torch.long, device=self._device)

        self._thread = threading.Thread(target=self._run, name="sluice-batch-scheduler", daemon=True)
        self._thread.start()

    # --- public API ---
    def submit(self, prompt_ids: list[int], params: SamplingParams, *, deadline: float | None = None,
               share: Share | None = None, guide: RowGuide | None = None) -> GenerationHandle:
        """Queue a generation. Raises QueueFull when ``max_queue`` wait, and the waiting queue's
        AccountLimitExceeded when ``share``'s account already has all it may queue."""
        if not prompt_ids:
            raise ValueError("prompt_ids must not be empty")
        if params.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < params.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if params.max_tokens < 0 or params.min_tokens < 0:
            raise ValueError("max_tokens and min_tokens must be >= 0")
        if len(prompt_ids) >= self._max_positions:
            raise ValueError(f"prompt of {len(prompt_ids)} tokens exceeds the model's {self._max_positions}")
        handle = GenerationHandle(self, list(prompt_ids), params, deadline, share, guide)
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(f"{len(self._waiting)} requests already waiting")
            if params.max_tokens == 0:
                handle._finish("length")
                return handle
            self._waiting.push(handle, share)
            handle.submitted_step = self._steps
            self._cond.notify()
        return handle

    def run_between_steps(self, work: Callable[[], T]) -> T:
        """Run ``work`` on the worker thread between two steps and return its result.

        For CPU work that would otherwise run beside the forward passes (moderation's encoder, about 2 ms a
        check): on a machine with few cores the two slow each other down far more than running one after
        the other (at 16 streams, moderating output cost 9% of tokens/s beside the model)."""
        if threading.current_thread() is self._thread:
            return work()
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("scheduler is closed")
            self._chores.append((work, future))
            self._cond.notify()
        return future.result()

    def stats(self) -> dict:
        with self._cond:
            return {"running": len(self._running), "waiting": len(self._waiting), "steps": self._steps,
                    "cached_prefixes": len(self._prefixes)}

    def account_stats(self) -> list:
        """Per account: rows running, requests waiting, the recent share of decoded tokens (fair_queue.AccountStats)."""
        with self._cond:
            return self._waiting.stats(running_by_account(h.share for h in self._running))

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()

    # --- internals ---
    def _cancel(self, handle: GenerationHandle) -> None:
        with self._cond:
            self._waiting.remove(handle)  # not started: it stops counting against the queue at once
            self._cond.notify()

    def _expired(self, handle: GenerationHandle, now: float) -> str | None:
        if handle.finished:  # cancelled by its caller
            return "cancelled"
        if handle.deadline is not None and now >= handle.deadline:
            return "timeout"
        return None

    def _run(self) -> None:
        if self._threads:
            from inference.torch_threads import use_threads

            use_threads(self._threads)
        with torch.inference_mode():
            while True:
                admitted = self._wait_for_work()
                if admitted is None:
                    break
                self._run_chores()
                try:
                    self._step(admitted)
                except Exception:  # never let the worker die: fail what was in flight and keep serving
                    logger.exception("batch step failed; failing %d running requests", len(self._running))
                    for handle in admitted + self._running:
                        handle._finish("error")
                    with self._cond:
                        self._running.clear()
                    self._kv.reset()
        self._shutdown()

    def _wait_for_work(self) -> list[GenerationHandle] | None:
        """Block until there is something to do; pop the requests that join this step."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = self._clock()
                for handle in list(self._waiting):
                    reason = self._expired(handle, now)
                    if reason:
                        self._waiting.remove(handle)
                        handle._finish(reason)
                if self._waiting or self._running or self._chores:
                    break
                self._cond.wait()  # a waiting request is admitted at once when idle, so no deadline to watch here
            admitted: list[GenerationHandle] = []
            running = running_by_account(h.share for h in self._running)
            longest = 0
            while True:
                candidate = self._waiting.peek(running, len(self._running) + len(admitted))
                if candidate is None:
                    break
                padded = max(longest, len(candidate.prompt_ids)) * (len(admitted) + 1)
                if admitted and padded > PREFILL_TOKEN_BUDGET:
                    break
                longest = max(longest, len(candidate.prompt_ids))
                self._waiting.pop(candidate)
                candidate.admitted_step = self._steps
                running[(candidate.share or Share()).account] += 1
                admitted.append(candidate)
            return admitted

    def _run_chores(self) -> None:
        while True:
            with self._cond:
                if not self._chores:
                    break
                work, future = self._chores.popleft()
            try:
                future.set_result(work())
            except BaseException as error:  # the caller gets it; the worker goes on
                future.set_exception(error)
        if self._threads:  # a chore may have set its own thread count (moderation uses one)
            from inference.torch_threads import use_threads

            use_threads(self._threads)

    def _shutdown(self) -> None:
        with self._cond:
            pending = list(self._waiting) + self._running
            chores = list(self._chores)
            self._waiting.clear()
            self._running.clear()
            self._chores.clear()
        for _, future in chores:
            future.set_exception(RuntimeError("scheduler is closed"))
        for handle in pending:
            handle._finish("cancelled")

    def _step(self, admitted: list[GenerationHandle]) -> None:
        self._drop_rows(self._expired_rows())
        if admitted:
            try:
                self._prefill(admitted)
            except Exception:
                logger.exception("prefill failed; failing %d joining requests", len(admitted))
                for handle in admitted:
                    handle._finish("error")
                if not self._running:
                    self._kv.reset()
        with self._cond:  # the rows about to decode: one token each, for the fair queue's shares
            self._waiting.charge(running_by_account(h.share for h in self._running))
        if self._running:
            self._decode()
        with self._cond:
            self._steps += 1

    def _expired_rows(self) -> list[int]:
        now = self._clock()
        rows = []
        for row, handle in enumerate(self._running):
            reason = self._expired(handle, now)
            if reason:
                handle._finish(reason)
                rows.append(row)
        return rows

    def _prefill(self, admitted: list[GenerationHandle]) -> None:
        """Prefill the joining requests, those that start with the same cached prefix together."""
        groups: dict[tuple[int, ...] | None, list[GenerationHandle]] = {}
        cached: dict[tuple[int, ...], tuple[list[torch.Tensor], list[torch.Tensor]]] = {}
        for handle in admitted:
            prefix = self._prefix_for(handle.prompt_ids) if self._prefixes.capacity else None
            if prefix is not None:
                cached[prefix] = self._prefixes.get(prefix)  # held here: a later put may evict it
            groups.setdefault(prefix, []).append(handle)
        for prefix, members in groups.items():
            self._prefill_group(members, prefix, cached.get(prefix))

    def _prefix_for(self, prompt: list[int]) -> tuple[int, ...] | None:
        """The cached start to reuse for ``prompt``, caching a new one it shares with the previous prompt."""
        found = self._prefixes.longest_for(prompt)
        previous, self._last_prompt = self._last_prompt, prompt
        if previous is None:
            return found
        shared = min(_shared_start(prompt, previous), len(prompt) - 1, MAX_SHARED_PREFIX)
        shared -= shared % PREFIX_BLOCK
        if shared < MIN_SHARED_PREFIX or (found is not None and len(found) >= shared):
            return found
        prefix = tuple(prompt[:shared])
        out = self.model(input_ids=torch.tensor([prefix], dtype=torch.long, device=self._device),
                         position_ids=torch.arange(shared, device=self._device)[None], use_cache=True,
                         logits_to_keep=1)
        layers = out.past_key_values.layers
        self._prefixes.put(prefix, [layer.keys for layer in layers], [layer.values for layer in layers])
        return prefix

    def _prefill_group(self, admitted: list[GenerationHandle], prefix: tuple[int, ...] | None,
                       prefix_kv: tuple[list[torch.Tensor], list[torch.Tensor]] | None) -> None:
        from transformers import DynamicCache

        shared = len(prefix) if prefix else 0
        lengths = [len(h.prompt_ids) for h in admitted]
        rests = [length - shared for length in lengths]
        longest = max(rests)
        ids = torch.full((len(admitted), longest), self.pad_token_id, dtype=torch.long)
        rest_mask = torch.zeros((len(admitted), longest), dtype=torch.bool)
        for row, handle in enumerate(admitted):
            ids[row, longest - rests[row]:] = torch.tensor(handle.prompt_ids[shared:], dtype=torch.long)
            rest_mask[row, longest - rests[row]:] = True
        positions = shared + (rest_mask.long().cumsum(-1) - 1).clamp(min=0)
        mask2d = torch.cat([torch.ones((len(admitted), shared), dtype=torch.bool), rest_mask], dim=1)
        past = None
        if prefix:
            keys, values = prefix_kv
            rows = len(admitted)
            past = DynamicCache(ddp_cache_data=[(k.expand(rows, -1, -1, -1), v.expand(rows, -1, -1, -1))
                                                for k, v in zip(keys, values)])
        if not prefix and min(rests) == longest:
            attention = None  # no padding, nothing cached: let the model use its plain causal path
        else:
            causal = torch.ones((longest, longest), dtype=torch.bool).tril()
            attention = causal[None, None] & rest_mask[:, None, None, :]
            # Padding queries attend to themselves so no softmax row is empty (which would yield NaN).
            attention |= torch.eye(longest, dtype=torch.bool)[None, None]
            if shared:  # every query sees the whole shared start
                attention = torch.cat([torch.ones((len(admitted), 1, longest, shared), dtype=torch.bool), attention],
                                      dim=-1)
            attention = attention.to(self._device)
        out = self.model(input_ids=ids.to(self._device), attention_mask=attention,
                         position_ids=positions.to(self._device), past_key_values=past, use_cache=True,
                         logits_to_keep=1)
        logits = out.logits[:, -1, :]
        cache = out.past_key_values
        completions = [0] * len(admitted)
        tokens = self._sample(logits, admitted, completions)
        keep = []
        for row, (handle, token) in enumerate(zip(admitted, tokens)):
            if not self._accept(handle, token, lengths[row]):
                keep.append(row)
        if not keep:
            return
        keys = [layer.keys for layer in cache.layers]
        values = [layer.values for layer in cache.layers]
        if len(keep) < len(admitted):
            index = torch.tensor(keep, dtype=torch.long, device=self._device)
            keys = [k.index_select(0, index) for k in keys]
            values = [v.index_select(0, index) for v in values]
            mask2d = mask2d.index_select(0, index.cpu())
        rows = self._kv.insert(keys, values, mask2d.to(self._device))
        with self._cond:
            for row, k in zip(rows, keep):
                self._running.append(admitted[k])
                self._next_input[row] = tokens[k]
                self._positions[row] = lengths[k]

    def _decode(self) -> None:
        kv = self._kv
        n = kv.n
        attention = kv.prepare_decode()
        out = self.model(input_ids=self._next_input[:n, None], attention_mask=attention,
                         position_ids=self._positions[:n, None], past_key_values=kv, use_cache=True)
        kv.advance()
        self._positions[:n] += 1
        tokens = self._sample(out.logits[:, -1, :], self._running, [h.completion_tokens for h in self._running])
        finished = []
        positions = self._positions[:n].tolist()
        for row, (handle, token) in enumerate(zip(self._running, tokens)):
            if handle.finished or self._accept(handle, token, positions[row]):
                finished.append(row)
            else:
                self._next_input[row] = token
        self._drop_rows(finished)

    def _accept(self, handle: GenerationHandle, token: int, position: int) -> bool:
        """Deliver a sampled token to its handle; True when that generation is now finished."""
        params = handle.params
        if handle.finished:
            return True
        if token in self.eos_token_ids and not params.ignore_eos:
            handle._finish("stop")
            return True
        handle._emit(token)
        if handle.guide is not None and (reason := handle.guide.advance(token)):  # grammar complete, or broken
            handle._finish(reason)
            return True
        if handle.completion_tokens >= params.max_tokens or position + 1 >= self._max_positions:
            handle._finish("length")
            return True
        return False

    def _drop_rows(self, rows: list[int]) -> None:
        if not rows:
            return
        with self._cond:
            for row in sorted(rows, reverse=True):
                last = len(self._running) - 1
                if row != last:
                    self._kv.move_row(last, row)
                    self._next_input[row] = self._next_input[last]
                    self._positions[row] = self._positions[last]
                    self._running[row] = self._running[last]
                self._running.pop()
                self._kv.n -= 1
            self._kv.trim_leading_padding()

    def _sample(self, logits: torch.Tensor, handles: list[GenerationHandle], completions: list[int]) -> list[int]:
        """One token per row, each with its request's parameters; a row that cannot be sampled fails alone."""
        logits = logits.float()
        suppress = [row for row, h in enumerate(handles) if completions[row] < h.params.min_tokens]
        if suppress and self._eos_list.numel():
            rows = torch.tensor(suppress, dtype=torch.long, device=logits.device)
            logits[rows[:, None], self._eos_list[None, :]] = float("-inf")
        guided = [(row, h.guide) for row, h in enumerate(handles) if h.guide is not None and not h.finished]
        if guided:  # only the constrained rows get a mask
            for row in guides_mask_logits(logits, guided):
                handles[row]._finish("error")
        chosen = logits.argmax(dim=-1).tolist()
        for row, handle in enumerate(handles):
            params = handle.params
            if params.greedy or handle.finished:
                continue
            try:
                chosen[row] = _sample_row(logits[row], params, handle._sampling_generator(logits.device))
            except Exception:
                logger.exception("sampling failed for one request")
                handle._finish("error")
        asked = [row for row, h in enumerate(handles) if h.params.logprobs and not h.finished]
        if asked:  # one batched log_softmax over the rows that asked; the others pay nothing
            tops = [handles[row].params.top_logprobs for row in asked]
            for row, entry in zip(asked, logprobs_compute(logits, asked, chosen, tops)):
                handles[row]._pending_logprob = entry
        return chosen


def _sample_row(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    scaled = logits / params.temperature
    if 0 < params.top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, params.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if params.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Keep the smallest prefix whose mass reaches top_p (always at least the most likely token).
        outside = (probs.cumsum(-1) - probs) >= params.top_p
        outside[0] = False
        probs = torch.softmax(sorted_logits.masked_fill(outside, float("-inf")), dim=-1)
        return int(order[torch.multinomial(probs, 1, generator=generator)])
    probs = torch.softmax(scaled, dim=-1)
    return int(torch.multinomial(probs, 1, generator=generator))
