"""One lock for every model load in a process (the generator, the moderation encoder, the task models).

transformers' ``from_pretrained`` swaps process-wide functions while it runs (torch's init functions and
``PreTrainedModel.init_weights`` / ``tie_weights``, ``transformers.initialization``) and puts back what it
found on the way out. Two loads in two threads at once can therefore put back each other's no-op stand-ins
for good: seen in a clean-clone CI run, where the generator loaded beside the task models answered
"orm weaponry weaponry ..." (its output layer was never tied to its embeddings). Loads take a second or two
each, once per process, so they simply take turns. It lives here, at the bottom of the packages that load
models (inference imports moderation, never the reverse).
"""

from __future__ import annotations

import threading

model_loading_lock = threading.RLock()
