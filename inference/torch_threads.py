"""How many CPU threads each torch-running thread of the process uses.

torch's intra-op thread count belongs to the calling thread (OpenMP), and a thread that never set one
starts with whatever the last ``torch.set_num_threads`` call, from any thread, left as the default. So every
thread that runs torch sets its own count here, once:

- the model's threads (the batch scheduler, the sentiment and QA batchers) use every core
  (``SLUICE_TORCH_THREADS``, default: the CPUs this process may run on);
- moderation uses one: its texts are short, and it runs on request threads beside the model. Two pools of
  spinning workers on two cores slow each other badly (a check took 555 ms under load with two threads
  against 7 ms with one), while one thread costs a short check almost nothing (1.97 vs 1.79 ms idle).
"""

from __future__ import annotations

import os


def model_threads() -> int:
    from django.conf import settings

    configured = settings.SLUICE_TORCH_THREADS if settings.configured else int(os.environ.get("SLUICE_TORCH_THREADS") or 0)
    return configured or len(os.sched_getaffinity(0))


def use_threads(count: int) -> None:
    """Make this thread's torch operations use ``count`` threads."""
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
