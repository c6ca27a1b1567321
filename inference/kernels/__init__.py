"""Sluice's own CPU kernels (C++, compiled on first use with torch's extension builder, cached by it).

``cpu_kernels.cpp`` (AVX-512) multiplies float32 activations by matrices held in GGUF's Q4_1 and Q8_0 blocks,
and runs the small operations of a decode step (RMS norm, the rotation with the cache write, one query's
attention over the cache, the embedding lookup) without torch's general-case overhead; see its header.
``available()`` compiles and loads it once per process (~15 s the first time on a machine, then a cached library
in torch's extensions folder, ``TORCH_EXTENSIONS_DIR``); where this CPU lacks AVX-512 or the build fails, it says
False and why, and the weight formats that need it are refused.
"""

from __future__ import annotations

import logging
import os
import sysconfig
import threading
from pathlib import Path

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("cpu_kernels.cpp")
EXTENSION_NAME = "sluice_cpu_kernels"
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "f16c", "fma")
COMPILE_FLAGS = ["-O3", "-fopenmp", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma", "-mf16c"]

_lock = threading.Lock()
_state: dict[str, object] = {}


def cpu_lacks() -> list[str]:
    """The instruction sets the kernels need that this CPU does not report."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line.split(":", 1)[1].split() for line in info if line.startswith("flags")), [])
    except OSError:
        flags = []
    return [flag for flag in CPU_FLAGS if flag not in flags]


def available() -> bool:
    """Whether the ``torch.ops.sluice`` kernels can run here (built and loaded once)."""
    with _lock:
        if "ok" not in _state:
            _state["ok"], _state["why"] = _build()
            if not _state["ok"]:
                logger.warning("Sluice's CPU kernels are not available: %s", _state["why"])
        return bool(_state["ok"])


def why_unavailable() -> str:
    available()
    return str(_state.get("why") or "")


def _build() -> tuple[bool, str]:
    lacks = cpu_lacks()
    if lacks:
        return False, f"this CPU lacks {', '.join(lacks)}"
    import torch
    from torch.utils import cpp_extension

    if hasattr(torch.ops, "sluice") and hasattr(torch.ops.sluice, "q4_1_linear"):
        return True, ""
    # torch's builder runs `ninja` from PATH; the venv's own (requirements.txt) when the venv is not activated.
    scripts = sysconfig.get_path("scripts")
    if scripts and scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")
    _remove_stale_build_lock(cpp_extension)
    try:
        cpp_extension.load(name=EXTENSION_NAME, sources=[str(SOURCE)], extra_cflags=COMPILE_FLAGS,
                           extra_ldflags=["-fopenmp"], is_python_module=False, verbose=False)
    except Exception as error:  # no compiler, no ninja, a failed build: say so, serve another format
        return False, f"building {SOURCE.name} failed: {str(error).strip().splitlines()[-1] if str(error).strip() else error!r}"
    return True, ""


STALE_LOCK_S = 600  # a build takes ~15 s; a lock this old was left by a build that was killed


def _remove_stale_build_lock(cpp_extension) -> None:
    """torch's builder serialises builds with a lock file and waits on it forever: a build killed midway (a
    worker stopped at start-up) would leave every later start waiting. A lock older than any build is dropped."""
    import time

    try:
        lock = Path(cpp_extension._get_build_directory(EXTENSION_NAME, verbose=False)) / "lock"
        if time.time() - lock.stat().st_mtime > STALE_LOCK_S:
            logger.warning("Removing %s, left by a kernel build that did not finish", lock)
            lock.unlink()
    except (OSError, AttributeError):  # no lock (the usual case), or a torch without this private helper
        pass
