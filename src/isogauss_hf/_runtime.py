"""Machinery around the pure math of :mod:`isogauss_hf.functional`: threads, ``torch.compile``, scratch buffers.

Nothing here changes a result beyond float rounding; it only decides *how* the equations run:

* :func:`aux_threads` — intra-op threads for the Gaussian layer's own memory-bound passes on CPU;
* :func:`set_compile` — run the functional definitions through ``torch.compile`` (the compiled kernels
  are generated from the one eager definition, never written a second time);
* :func:`scratch` / :func:`release_workspace` — per-thread reusable (n, m) work buffers on CPU;
* :func:`noise_pool` — the thread pool that generates CPU noise blocks concurrently (see :mod:`.noise`);
* :func:`run_kernel` — call a functional definition with all of the above applied.

The module-level switches are process-wide settings a user may change at run time; they are read at
call time, never at import.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from typing import Any, Callable, Optional

import torch

__all__ = [
    "AUX_THREADS",
    "NOISE_THREADS",
    "REUSE_WORKSPACE",
    "aux_threads",
    "set_compile",
    "compile_enabled",
    "scratch",
    "release_workspace",
    "noise_pool",
    "run_kernel",
]

# ---------------------------------------------------------------------------------------------------
# Threads
# ---------------------------------------------------------------------------------------------------
#: Intra-op threads for the Gaussian layer's own memory-bound passes on CPU (the Eq. 2 combine and the
#: GDU/WDU statistics); the matmuls keep ``torch.get_num_threads()``. ``"auto"`` (default): 1 thread when
#: torch uses at most 4, else torch's count. Each of these passes is short and every OpenMP parallel
#: region ends in a barrier that waits for the slowest thread: on a few cores shared with other processes
#: that wait dominates. ``None``: torch's count; an int: that many threads.
AUX_THREADS: int | str | None = "auto"

#: CPU noise blocks are generated on this many threads at once (``torch.randn`` itself is serial on
#: CPU). ``None`` follows ``torch.get_num_threads()``; 1 disables the thread pool. Values are the same
#: either way: each block has its own seed.
NOISE_THREADS: int | None = None


def _aux_thread_count() -> Optional[int]:
    current = torch.get_num_threads()
    wanted = AUX_THREADS
    if wanted == "auto":
        wanted = 1 if current <= 4 else None
    if wanted is None or int(wanted) >= current:
        return None
    return max(1, int(wanted))


@contextlib.contextmanager
def aux_threads(device: torch.device | str | None = None):
    """Run the enclosed CPU work with :data:`AUX_THREADS` intra-op threads (restored afterwards)."""
    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    count = _aux_thread_count()
    if count is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_POOL: tuple[int, int, Any] | None = None  # (pid, workers, ThreadPoolExecutor)


def noise_pool(workers: int):
    """A process-local thread pool of ``workers`` threads (recreated after fork or a size change)."""
    global _POOL
    pid = os.getpid()
    if _POOL is None or _POOL[0] != pid or _POOL[1] != workers:
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (pid, workers, ThreadPoolExecutor(max_workers=workers, thread_name_prefix="isogauss-noise"))
    return _POOL[2]


def noise_workers(jobs: int) -> int:
    """How many threads generate ``jobs`` CPU noise blocks (:data:`NOISE_THREADS`, capped by ``jobs``)."""
    return min(jobs, NOISE_THREADS or torch.get_num_threads())


# ---------------------------------------------------------------------------------------------------
# Scratch workspace
# ---------------------------------------------------------------------------------------------------
class _Workspace(threading.local):
    def __init__(self) -> None:
        self.buffers: dict[int, torch.Tensor] = {}


_WORKSPACE = _Workspace()

#: Reuse (n, m) scratch buffers across calls on CPU (per thread; sized to the largest layer seen). A fresh
#: multi-megabyte CPU buffer is page-faulted in on every call, which costs about as much as the arithmetic
#: done in it. CUDA's caching allocator already reuses memory, so CUDA tensors get fresh buffers.
REUSE_WORKSPACE = True


def scratch(slot: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialized fp32 buffer shaped like ``like`` (slot ``slot`` of this thread's CPU workspace)."""
    if not REUSE_WORKSPACE or like.device.type != "cpu":
        return torch.empty(like.shape, device=like.device, dtype=torch.float32)
    buf = _WORKSPACE.buffers.get(slot)
    if buf is None or buf.numel() < like.numel():
        buf = torch.empty(like.numel(), dtype=torch.float32)
        _WORKSPACE.buffers[slot] = buf
    return buf[: like.numel()].view(like.shape)


def release_workspace() -> None:
    """Free the scratch buffers this thread keeps for reuse."""
    _WORKSPACE.buffers.clear()


# ---------------------------------------------------------------------------------------------------
# torch.compile (opt-in)
# ---------------------------------------------------------------------------------------------------
_COMPILE = os.environ.get("ISOGAUSS_COMPILE", "0").strip().lower() in ("1", "true", "yes")
_COMPILED: dict[Callable, Callable] = {}
_COMPILE_FAILED = False


def set_compile(enabled: bool) -> None:
    """Run sampling (Eq. 2) and the GDU/WDU statistics through ``torch.compile``.

    Off by default (also switched on by ``ISOGAUSS_COMPILE=1``): the first call compiles for tens of
    seconds, after which one fused kernel replaces several passes over the (n, m) matrix. The kernels are
    compiled from the same functions the eager path runs, so results equal it up to float rounding. If
    compiling or running a kernel fails, a warning is given once and the eager path is used from then on.
    """
    global _COMPILE, _COMPILE_FAILED
    _COMPILE = bool(enabled)
    _COMPILE_FAILED = False


def compile_enabled() -> bool:
    """Whether the ``torch.compile`` kernels are in use (see :func:`set_compile`)."""
    return _COMPILE and not _COMPILE_FAILED


def _compiled(fn: Callable, args: tuple, kwargs: dict, device: Optional[torch.device]) -> Any:
    """``fn(*args, **kwargs)`` through ``torch.compile(fn)``, or ``None`` when that failed (warned once).

    Python floats (a learning rate) are passed as 0-d tensors, so a changing value does not recompile.
    """
    global _COMPILE_FAILED
    args = tuple(torch.tensor(a, dtype=torch.float32, device=device) if isinstance(a, float) else a for a in args)
    try:
        kernel = _COMPILED.get(fn)
        if kernel is None:
            kernel = _COMPILED[fn] = torch.compile(fn, dynamic=True)
        with torch.no_grad():
            return kernel(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - any compiler/toolchain failure falls back to eager
        _COMPILE_FAILED = True
        first = str(exc).splitlines()[0] if str(exc) else ""
        warnings.warn(f"isogauss_hf: torch.compile of {getattr(fn, '__name__', fn)!r} failed "
                      f"({type(exc).__name__}: {first}); using the eager path", RuntimeWarning)
        return None


def run_kernel(fn: Callable, *args: Any, like: Optional[torch.Tensor] = None, scratch_slots: tuple[int, ...] = (),
               **kwargs: Any) -> Any:
    """Call the functional definition ``fn`` with the machinery applied.

    With compiling on, ``fn`` runs compiled and allocates its own temporaries (the compiler fuses them
    away). Otherwise it runs eagerly with ``scratch=`` buffers from the workspace slots ``scratch_slots``
    (shaped like ``like``; one buffer, or a tuple when several slots are named). Either way the call runs
    under :func:`aux_threads` for ``like``'s device.
    """
    device = like.device if like is not None else None
    with aux_threads(device):
        if _COMPILE and not _COMPILE_FAILED:
            out = _compiled(fn, args, kwargs, device)
            if out is not None:
                return out
        if scratch_slots and like is not None:
            bufs = tuple(scratch(slot, like) for slot in scratch_slots)
            kwargs["scratch"] = bufs[0] if len(bufs) == 1 else bufs
        return fn(*args, **kwargs)
