"""How ``Potential`` runs its chunks on the host: serially or on worker processes, with a BLAS
thread limit, and with glibc's malloc told to keep its memory.

``Executor(num_threads=..., num_processes=...).map(function, state, inputs, num_inputs)`` maps
``function(state, *chunk_input)`` over chunk inputs and returns the results in order:

- serially in this process (``num_processes=1``), with the BLAS library limited to
  ``num_threads`` threads during the call (threadpoolctl; the previous limits are restored after
  it);
- or on ``num_processes`` spawned worker processes that hold a copy of ``state`` (taken when
  they start, on the first ``map``), one BLAS thread each. Not threads: the OpenBLAS that NumPy
  wheels bundle (0.3.31) returns wrong matrix products when two threads of one process call it
  at once (1 step in 3 differed at 16 384 atoms, and the heap got corrupted).

**Workers that die.** The workers are a `concurrent.futures.ProcessPoolExecutor`, whose
manager thread watches every worker process: when one ends while the pool is in use (killed,
out of memory, a crash in a native library, or unable to start at all, as when the main
script was read from standard input and the spawned interpreter cannot import it again),
the waiting ``map`` raises `WorkerProcessError` at once instead of waiting for results that
will never come. The pool is then discarded; the next ``map`` starts new workers.

**Host memory (glibc malloc).** A chunked evaluation allocates and frees tens of MB of NumPy
temporaries per chunk. Blocks above glibc's ``M_MMAP_THRESHOLD`` are fresh mappings, unmapped on
free, and free memory above ``M_TRIM_THRESHOLD`` at the top of the heap is returned to the
system; both start at 128 KiB, so that memory is page-faulted in (and zeroed) again for every
chunk: 6-17 % of the CPU time of a step for 256 and 1000 Cu atoms (l_max 2, one thread, float32
and float64). Two remedies:

- `keep_host_memory` sets both thresholds with ``mallopt`` (32 MiB and 1 GiB). That is
  process-wide and cannot be undone (``mallopt`` has no getter, and setting a threshold switches
  glibc's dynamic adjustment off for good), so the library does it only in processes it owns:
  its worker processes (``num_processes > 1``), or the caller's process when asked
  (``Potential(keep_host_memory=True)``, the environment variable
  ``ALLEGRO_REF_KEEP_HOST_MEMORY=1``, or a training run, whose ``TrainConfig.keep_host_memory``
  is True unless set otherwise: a training step's temporaries exceed the 64 MiB below, and
  without it a bench_train step took 1.7x the CPU time).
- By default a serial ``map`` calls `grow_malloc_thresholds` instead, which changes no
  setting: it frees one just-under-32-MiB block, and glibc's own dynamic rule (mallopt(3): on
  freeing a mapped block above the threshold, the mmap threshold becomes its size and the trim
  threshold twice that) raises the thresholds to 32 MiB and 64 MiB, as it would after any
  program freed such an array. A process that fixed the thresholds itself (``mallopt`` or the
  ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` environment variables) keeps them,
  since that switches the dynamic rule off. Measured side by side against ``keep_host_memory``
  (CPU time of a step, medians of 11 alternating steps, one thread): -2 % to +3.5 % for 256 and
  1000 Cu atoms in float32 and float64, where leaving malloc alone costs +6 % to +17 %.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import math
import multiprocessing
import os
import pickle
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from threadpoolctl import threadpool_limits

__all__ = [
    "Executor",
    "WorkerProcessError",
    "keep_host_memory",
    "grow_malloc_thresholds",
    "tune_host_memory",
    "KEEP_HOST_MEMORY_ENV",
]

KEEP_HOST_MEMORY_ENV = "ALLEGRO_REF_KEEP_HOST_MEMORY"

# glibc mallopt parameters (malloc.h) and the values set by keep_host_memory
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
# A chunk of Potential.compute frees far less; one training step of the Cu benchmark model
# (l_max 2, S 64, U 32, 5 cells of 32 atoms) frees ~270 MiB, and below that glibc trims and the
# kernel zeroes the same memory again every step (~1.3x the CPU time of the step at 256 MiB).
_TRIM_THRESHOLD = 2**30
# a block this much under 32 MiB (glibc's largest dynamic mmap threshold) once malloc's header
# and page rounding are added
_BELOW_MMAP_MAX = 2**16


@functools.cache
def keep_host_memory() -> bool:
    """Have glibc's malloc serve blocks up to 32 MiB from its heap and keep up to 1 GiB of
    freed heap memory in the process, instead of returning it to the operating system.

    Why: glibc gives memory at the top of its heap back to the system once more than
    ``M_TRIM_THRESHOLD`` of it is free, and serves blocks above ``M_MMAP_THRESHOLD`` with fresh
    mappings that are unmapped on free; both start at 128 KiB and only grow after large frees.
    With the defaults, the NumPy temporaries of every chunk leave the process and are faulted in
    again for the next one. Peak memory does not change; up to 1 GiB freed at the end of a call
    stays with the process.

    Process-wide, permanent and idempotent: call it only in a process the library owns or when
    the user asked for it (module docstring). Returns True if the C library is glibc and accepted
    both settings, False elsewhere (nothing changed).
    """
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not (hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")):
        return False
    return bool(
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        and libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )


@functools.cache
def grow_malloc_thresholds() -> bool:
    """Let glibc's dynamic rule raise its mmap threshold to 32 MiB and its trim threshold to
    64 MiB by freeing one mapped block of just under 32 MiB (module docstring); no ``mallopt``.

    Once per process (the dynamic thresholds only grow). Returns True on glibc, False elsewhere
    (nothing done). Cost: one ``mmap`` and ``munmap``, no page touched.
    """
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return False
    if not hasattr(libc, "gnu_get_libc_version"):
        return False
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    block = libc.malloc(_MMAP_THRESHOLD - _BELOW_MMAP_MAX)
    if not block:
        return False
    libc.free(block)
    return True


def tune_host_memory(keep: bool) -> None:
    """The library's malloc policy for a process that computes (module docstring):
    `keep_host_memory` if ``keep``, otherwise `grow_malloc_thresholds`. Used by a serial
    `Executor.map` and by the trainer."""
    if keep:
        keep_host_memory()
    else:
        grow_malloc_thresholds()


class WorkerProcessError(BrokenProcessPool):
    """A worker process ended while its results were awaited (or could not start); a
    `RuntimeError` (through `concurrent.futures.process.BrokenProcessPool`)."""


def _keep_host_memory_requested() -> bool:
    return os.environ.get(KEEP_HOST_MEMORY_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class Executor:
    """Maps ``function(state, *chunk_input)`` over chunk inputs (module docstring).

    Args:
        num_threads: BLAS threads while a serial ``map`` runs (restored after it); ``None``
            leaves the BLAS as the process has it.
        num_processes: 1 (serial) or the number of worker processes.
        keep_host_memory: apply `keep_host_memory` in this process before a serial
            ``map`` (default: only if ``ALLEGRO_REF_KEEP_HOST_MEMORY=1``; otherwise
            `grow_malloc_thresholds`). Workers always apply it.
    """

    def __init__(
        self,
        *,
        num_threads: int | None = None,
        num_processes: int = 1,
        keep_host_memory: bool | None = None,
    ):
        self.num_threads = num_threads
        self.num_processes = num_processes
        self.keep_host_memory = (
            _keep_host_memory_requested() if keep_host_memory is None else bool(keep_host_memory)
        )
        self._pool = None
        self._stop_workers = None

    def map(self, function: Callable, state: Any, inputs: Iterable[tuple], num_inputs: int) -> list:
        """``[function(state, *x) for x in inputs]``, on the workers if there are several
        processes and more than one input (``num_inputs`` of them).

        ``function`` must be a module-level function (pickled by reference). The workers start
        on the first such call and keep the ``function`` and the copy of ``state`` (e.g. the
        model) they got then, until `close`.
        """
        if self.num_processes > 1 and num_inputs > 1:
            return self._map_on_workers(function, state, inputs, num_inputs)
        tune_host_memory(self.keep_host_memory)
        blas_threads = contextlib.nullcontext()
        if self.num_threads is not None:
            blas_threads = threadpool_limits(self.num_threads, user_api="blas")
        with blas_threads:
            return [function(state, *x) for x in inputs]

    def _map_on_workers(
        self, function: Callable, state: Any, inputs: Iterable[tuple], num_inputs: int
    ) -> list:
        # a few tasks per worker: fewer messages, still balanced
        per_task = math.ceil(num_inputs / (4 * self.num_processes))
        try:
            pool = self._workers(function, state)
            return list(pool.map(_run_in_worker, inputs, chunksize=per_task))
        except BrokenProcessPool as error:
            self.close()
            raise WorkerProcessError(
                f"a worker process (of {self.num_processes}) ended before returning its "
                f"results ({error}). If none could start: the workers are spawned and import "
                "the main script again, so it must be a file (not standard input or an "
                "interactive prompt) whose top-level code runs under "
                "`if __name__ == '__main__':`. Otherwise it was killed, ran out of memory or "
                "crashed; num_processes=1 evaluates in this process"
            ) from error

    def _workers(self, function: Callable, state: Any) -> ProcessPoolExecutor:
        """The pool of ``num_processes`` worker processes, started on first use.

        The task (``function`` and ``state``, pickled now) reaches each worker through a queue
        rather than in the worker's start-up arguments: those are written to the new process
        through a pipe whose read end the parent holds open until the write ends, so a worker
        that dies while reading more than the pipe holds (64 KiB; a model's weights are more)
        would block the caller forever, before the pool could notice.
        """
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            tasks = context.Queue()
            task = pickle.dumps((function, state), protocol=pickle.HIGHEST_PROTOCOL)
            for _ in range(self.num_processes):
                tasks.put(task)  # a feeder thread writes it; put never blocks
            self._pool = ProcessPoolExecutor(
                self.num_processes,
                mp_context=context,
                initializer=_start_worker,
                initargs=(tasks,),
            )
            # Start every worker with the pool, as it does under fork. On demand (CPython >=
            # 3.11's default for spawn) a worker started while the pool's manager thread waits
            # is not among the processes it watches, so its death would go unnoticed until
            # another worker returns a result: possibly never.
            self._pool._safe_to_dynamically_spawn_children = False
            self._stop_workers = weakref.finalize(self, _stop, self._pool, tasks)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (if any were started); a later ``map`` starts new ones."""
        if self._pool is not None:
            self._stop_workers()
            self._pool = None
            self._stop_workers = None

    def __getstate__(self) -> dict:
        """Pickles and copies leave the worker processes behind (they start again if needed)."""
        state = dict(self.__dict__)
        state["_pool"] = None
        state["_stop_workers"] = None
        return state


def _stop(pool: ProcessPoolExecutor, tasks: Any) -> None:
    """Stop the workers of ``pool`` and drop the copies of the task no worker took."""
    pool.shutdown(wait=True, cancel_futures=True)
    tasks.cancel_join_thread()
    tasks.close()


# The function and state of a worker process ("task"), set once when the worker starts.
_WORKER_TASK: dict[str, tuple[Callable, Any]] = {}


def _start_worker(tasks: Any) -> None:
    """Initializer of a worker process: take the task from the queue ``tasks``, one BLAS
    thread, glibc keeps memory (the process is the library's)."""
    _WORKER_TASK["task"] = pickle.loads(tasks.get())
    threadpool_limits(1, user_api="blas")  # for the worker's lifetime
    keep_host_memory()


def _run_in_worker(chunk_input: tuple) -> Any:
    function, state = _WORKER_TASK["task"]
    return function(state, *chunk_input)
