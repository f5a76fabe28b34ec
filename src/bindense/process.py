"""Process settings of the entry points (``train.py``, ``eval.py``, ``scripts/benchmark.py``), made before torch loads.

Two settings (docs/TRAINING.md section 4), each overridable from the environment:

- **Freed heap memory stays in the process** (:func:`keep_freed_memory`): no page faults from re-allocating the
  activations every training step.
- **Idle OpenMP threads spin briefly, then sleep** (:func:`openmp_wait_defaults`).

glibc's ``malloc`` returns freed memory at the top of the heap to the system once more than
``M_TRIM_THRESHOLD`` bytes are free there, and serves large blocks with ``mmap`` (unmapped at ``free``). A
training step frees and re-allocates the same activations every step, so the kernel maps and zeroes those pages
again each time (about 35,000 minor page faults per step of the default run, docs/TRAINING.md section 4). With a
high trim threshold and the largest ``mmap`` threshold (32 MiB), freed blocks stay in the heap for the next step.
Blocks above 32 MiB (activations of large inputs) are still mapped afresh every step unless
``BINDENSE_KEEP_FREED_MEMORY=all`` also turns ``mmap`` off: faster steps at large inputs for a larger resident
size (the heap fragments; measured in docs/TRAINING.md section 5). The values computed are unchanged; the
process keeps its peak heap size instead of shrinking between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os

log = logging.getLogger(__name__)

#: ``mallopt`` parameters (glibc ``malloc.h``)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
#: glibc's largest ``mmap`` threshold on 64-bit systems (``DEFAULT_MMAP_THRESHOLD_MAX``); larger values are refused
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024
#: freed memory kept at the top of the heap before it is returned to the system
TRIM_THRESHOLD = 1 << 30
#: ``1`` (default): blocks up to 32 MiB stay in the heap; ``all``: every block (no ``mmap``); ``0``: glibc's defaults
ENV_SWITCH = "BINDENSE_KEEP_FREED_MEMORY"
SWITCH_VALUES = ("0", "1", "all")
#: busy-wait iterations of an idle GNU OpenMP (libgomp) thread before it sleeps: about a millisecond here
SPIN_COUNT = 30_000


def keep_freed_memory() -> bool:
    """Raise glibc's trim and mmap thresholds for this process (with ``BINDENSE_KEEP_FREED_MEMORY=all``, no
    ``mmap`` at all); True if applied (False: not glibc, or switched off with ``BINDENSE_KEEP_FREED_MEMORY=0``).
    Forked data-loader workers inherit the setting."""
    mode = os.environ.get(ENV_SWITCH, "1").strip().lower()
    if mode not in SWITCH_VALUES:
        raise ValueError(f"{ENV_SWITCH}={mode!r}: expected one of {', '.join(SWITCH_VALUES)}")
    if mode == "0":
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows, musl without mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    if ok and mode == "all":
        ok = mallopt(M_MMAP_MAX, 0) == 1
    if not ok:
        log.debug("mallopt refused the thresholds; glibc defaults kept")
    return ok


def openmp_wait_defaults() -> dict[str, str]:
    """Let idle OpenMP threads spin for about a millisecond, then sleep; returns the variables it set.

    Torch's Linux wheels use GNU OpenMP (libgomp), which reads these variables once, when torch loads. A training
    step runs thousands of short parallel regions; a sleeping thread must be woken for each (tens of microseconds
    on a virtual machine), and a thread that spins for a long time (libgomp's default, ``OMP_WAIT_POLICY=ACTIVE``)
    takes the CPU from any other busy process and slows training many times over when one shares the cores. So:
    sleep (``OMP_WAIT_POLICY=PASSIVE``) after ``GOMP_SPINCOUNT`` = :data:`SPIN_COUNT` busy-wait iterations.
    Nothing is set if either variable is already set (yours win). Measured in docs/TRAINING.md section 4.
    """
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return {}
    chosen = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": str(SPIN_COUNT)}
    os.environ.update(chosen)
    return chosen


def configure_process() -> None:
    """The process settings of the entry points (``train.py``, ``eval.py``, ``scripts/benchmark.py``), so that the
    benchmark times the step that training runs; call it before torch is imported: brief spinning of idle OpenMP
    threads (:func:`openmp_wait_defaults`) and freed heap memory kept (:func:`keep_freed_memory`).
    """
    openmp_wait_defaults()
    keep_freed_memory()
