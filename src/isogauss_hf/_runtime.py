"""Machinery around the pure math of :mod:`isogauss_hf.functional`: threads, ``torch.compile``, scratch buffers.

Nothing here changes a result beyond float rounding; it only decides *how* the equations run:

* :func:`aux_threads` — intra-op threads for the Gaussian layer's own memory-bound passes on CPU;
* :func:`set_compile` — run the functional definitions through ``torch.compile`` (the compiled kernels
  are generated from the one eager definition, never written a second time);
* :func:`scratch` / :func:`release_workspace` — per-thread reusable (n, m) work buffers on CPU;
* :func:`noise_pool` / :func:`openmp_parallel` — the threads that generate CPU noise (see :mod:`.noise`);
* :func:`run_kernel` — call a functional definition with all of the above applied.

The module-level switches are process-wide settings a user may change at run time; they are read at
call time, never at import.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
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
#: GDU/WDU statistics); the matmuls keep ``torch.get_num_threads()``. ``"auto"`` (default): chosen by
#: measurement, per kernel and matrix shape (:class:`_ThreadTuner`): with torch's thread count or with one
#: thread, whichever ran faster recently. On free cores more threads finish these passes sooner; when other
#: processes share a few cores, every OpenMP region's closing barrier waits for the slowest thread and one
#: thread wins (measured: a (3072, 768) GDU step 2.2x vs 1.1x a dense step on a loaded 2-core machine).
#: ``None``: always torch's count; an int: always that many threads.
AUX_THREADS: int | str | None = "auto"

#: CPU noise blocks are generated on this many threads at once (``torch.randn`` itself is serial on
#: CPU). ``None`` follows ``torch.get_num_threads()``; 1 disables the thread pool. Values are the same
#: either way: each block has its own seed.
NOISE_THREADS: int | None = None


class _ThreadTuner:
    """Online choice between one thread and torch's count for each (kernel, shape): a few timed calls of
    each, then the faster one for :attr:`HOLD` calls, then a fresh comparison (the load may have changed)."""

    PROBES = 3  # timed calls per candidate in each comparison
    HOLD = 200  # calls between comparisons

    def __init__(self) -> None:
        self.state: dict[Any, dict[str, Any]] = {}

    def choose(self, key: Any, candidates: tuple[int, ...]) -> int:
        st = self.state.get(key)
        if st is None or st["candidates"] != candidates:
            st = self.state[key] = {"candidates": candidates, "times": {c: [] for c in candidates}, "pick": None,
                                    "held": 0}
        if st["pick"] is not None:
            st["held"] += 1
            if st["held"] <= self.HOLD:
                return st["pick"]
            st.update(times={c: [] for c in candidates}, pick=None, held=0)
        return min(candidates, key=lambda c: len(st["times"][c]))  # the least-probed candidate next

    def report(self, key: Any, count: int, seconds: float) -> None:
        st = self.state.get(key)
        if st is None or st["pick"] is not None:
            return
        st["times"][count].append(seconds)
        if all(len(t) >= self.PROBES for t in st["times"].values()):
            st["pick"] = min(st["times"], key=lambda c: sorted(st["times"][c])[self.PROBES // 2])


_TUNER = _ThreadTuner()


def _aux_thread_count(key: Any) -> Optional[int]:
    current = torch.get_num_threads()
    wanted = AUX_THREADS
    if wanted == "auto":
        if current <= 1:
            return None
        wanted = _TUNER.choose(key, (1, current))
    if wanted is None or int(wanted) >= current:
        return None
    return max(1, int(wanted))


@contextlib.contextmanager
def aux_threads(device: torch.device | str | None = None, key: Any = None):
    """Run the enclosed CPU work with :data:`AUX_THREADS` intra-op threads (restored afterwards).

    ``key`` identifies the work (a kernel and its shape) for the ``"auto"`` policy, which times it.
    """
    if device is not None and torch.device(device).type != "cpu":
        yield
        return
    count = _aux_thread_count(key)
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    start = time.perf_counter()
    try:
        yield
    finally:
        if AUX_THREADS == "auto" and previous > 1:
            _TUNER.report(key, count or previous, time.perf_counter() - start)
        if count is not None:
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


#: Run the CPU noise kernels on torch's own OpenMP threads (when torch runs on GNU OpenMP, as the Linux wheels
#: do) instead of the thread pool above. After every torch operation its OpenMP workers spin for a while; a
#: separate pool then shares the cores with them, which measured 2x slower draws right after a torch op (3.7 vs
#: 1.8 ms for a 3072x768 draw). On torch's team the spinning threads do the work. Same values either way.
NOISE_ON_OPENMP = True
_OPENMP: list = []  # [GOMP_parallel or None], looked up once


def openmp_parallel():
    """``GOMP_parallel`` of the OpenMP runtime torch's CPU operators run on, or None (other runtimes, not found)."""
    if not _OPENMP:
        _OPENMP.append(_find_gomp_parallel())
    return _OPENMP[0] if NOISE_ON_OPENMP else None


def _find_gomp_parallel():
    import ctypes

    if "parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/libgomp" in line}
    except OSError:
        return None
    torch_dir = os.path.dirname(torch.__file__)
    ranked = sorted(paths, key=lambda p: not p.startswith(torch_dir))  # torch's own copy first
    for path in ranked:
        try:  # RTLD_NOLOAD: the copy already in the process, never a second one
            lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LAZY)
            fn = lib.GOMP_parallel
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        fn.restype = None
        return fn
    return None


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
    return workspace(slot, tuple(like.shape))


def workspace(slot: int, shape: tuple[int, ...]) -> torch.Tensor:
    """An uninitialized fp32 CPU buffer of ``shape`` from slot ``slot`` of this thread's workspace (reused)."""
    numel = 1
    for size in shape:
        numel *= size
    if not REUSE_WORKSPACE:
        return torch.empty(shape, dtype=torch.float32)
    buf = _WORKSPACE.buffers.get(slot)
    if buf is None or buf.numel() < numel:
        with torch.inference_mode(False):  # a normal tensor: reusable inside and outside inference mode
            buf = torch.empty(numel, dtype=torch.float32)
        _WORKSPACE.buffers[slot] = buf
    return buf[:numel].view(shape)


#: Inference draws a Gaussian weight a tile of output rows at a time (never the whole matrix at once); a tile
#: holds at most this many weights on a device of that type (others: the "cpu" value). On CPU 2^22 (16 MiB)
#: keeps a BERT-base matrix in one tile; on CUDA a tile is one kernel launch, so it is larger.
EVAL_TILE_ELEMENTS: dict[str, int] = {"cpu": 1 << 22, "cuda": 1 << 26}


def eval_tile_elements(device: torch.device) -> int:
    """The most weights one inference tile holds on ``device`` (:data:`EVAL_TILE_ELEMENTS`)."""
    return EVAL_TILE_ELEMENTS.get(torch.device(device).type, EVAL_TILE_ELEMENTS["cpu"])


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
    key = (getattr(fn, "__name__", fn), tuple(like.shape) if like is not None else None)
    with aux_threads(device, key):
        if _COMPILE and not _COMPILE_FAILED:
            out = _compiled(fn, args, kwargs, device)
            if out is not None:
                return out
        if scratch_slots and like is not None:
            bufs = tuple(scratch(slot, like) for slot in scratch_slots)
            kwargs["scratch"] = bufs[0] if len(bufs) == 1 else bufs
        return fn(*args, **kwargs)
