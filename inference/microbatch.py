"""Batch work from concurrent requests into one call: what arrives while a batch runs forms the next one.

Used for the task endpoints (sentiment, QA), whose items are scored in one batched forward pass; requests
arriving together share it instead of queueing one by one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future


class MicroBatcher:
    def __init__(self, run: Callable[[list], list], *, max_items: int = 64, name: str = "microbatch",
                 threads: int | None = None):
        self._run = run
        self._threads = threads  # torch threads for ``run`` (None: this thread's default)
        self._max_items = max_items
        self._waiting: list[tuple[object, Future]] = []
        self._lock = threading.Condition()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, items: list) -> list:
        """Run ``items`` (with whatever else is waiting) and return their results, in order."""
        futures = []
        with self._lock:
            for item in items:
                future: Future = Future()
                self._waiting.append((item, future))
                futures.append(future)
            self._lock.notify()
        return [future.result() for future in futures]

    def _loop(self) -> None:
        if self._threads:
            from inference.torch_threads import use_threads

            use_threads(self._threads)
        while True:
            with self._lock:
                while not self._waiting:
                    self._lock.wait()
                batch, self._waiting = self._waiting[: self._max_items], self._waiting[self._max_items :]
            try:
                results = self._run([item for item, _ in batch])
                for (_, future), result in zip(batch, results):
                    future.set_result(result)
            except Exception as error:  # every waiting request learns of the failure
                for _, future in batch:
                    future.set_exception(error)
