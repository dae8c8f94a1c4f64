"""The execution policy of chunked evaluations (``allegro_ref._execution``)."""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from allegro_ref import _execution
from allegro_ref._execution import Executor, WorkerProcessError

GLIBC = platform.libc_ver()[0] == "glibc"


def test_keep_host_memory_on_glibc():
    """On glibc both mallopt settings are accepted (True), and the call is idempotent; other C
    libraries are left alone (False)."""
    assert _execution.keep_host_memory() is GLIBC
    assert _execution.keep_host_memory() is GLIBC
    if GLIBC:
        # NumPy still allocates and frees normally afterwards
        a = np.ones(2**23)
        assert float(a.sum()) == 2**23


def test_grow_malloc_thresholds_on_glibc():
    assert _execution.grow_malloc_thresholds() is GLIBC
    a = np.ones(2**23)
    assert float(a.sum()) == 2**23


_MMAPPED_AFTER_GROWING = """
import ctypes
from allegro_ref._execution import grow_malloc_thresholds

class MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
        .split()
    ]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
assert grow_malloc_thresholds()
mapped = libc.mallinfo2().hblks
block = libc.malloc(16 * 2**20)
print(libc.mallinfo2().hblks > mapped)
libc.free(block)
"""


@pytest.mark.skipif(not GLIBC, reason="glibc only")
@pytest.mark.parametrize("user_threshold", [False, True])
def test_grown_thresholds_keep_16_mib_blocks_on_the_heap_unless_the_user_fixed_them(
    user_threshold,
):
    """After grow_malloc_thresholds a 16 MiB block comes from the heap (no fresh mapping to
    fault in); a process whose user fixed the mmap threshold (here MALLOC_MMAP_THRESHOLD_) keeps
    it: glibc's dynamic rule, not a setting of ours, did the growing."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = dict(os.environ)
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if user_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    result = subprocess.run(
        [sys.executable, "-c", _MMAPPED_AFTER_GROWING],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == str(user_threshold)


def _affine(state, x, y):
    return state * x + y


@pytest.mark.parametrize("keep_host_memory", [None, False, True])
def test_serial_map_applies_the_host_memory_policy_asked_for(monkeypatch, keep_host_memory):
    """By default (no environment variable) a serial map only lets glibc's dynamic thresholds
    grow; ``keep_host_memory=True`` or ``ALLEGRO_REF_KEEP_HOST_MEMORY=1`` sets them."""
    calls = []
    monkeypatch.setattr(_execution, "keep_host_memory", lambda: calls.append("mallopt"))
    monkeypatch.setattr(_execution, "grow_malloc_thresholds", lambda: calls.append("grow"))
    monkeypatch.delenv(_execution.KEEP_HOST_MEMORY_ENV, raising=False)
    executor = Executor(keep_host_memory=keep_host_memory)
    assert executor.map(_affine, 3, iter([(1, 2), (4, 5)]), 2) == [5, 17]
    assert calls == ["mallopt" if keep_host_memory else "grow"]

    monkeypatch.setenv(_execution.KEEP_HOST_MEMORY_ENV, "1")
    calls.clear()
    Executor(keep_host_memory=keep_host_memory).map(_affine, 3, [(0, 0)], 1)
    assert calls == ["grow" if keep_host_memory is False else "mallopt"]


def _sleep_in_worker(state, directory):
    Path(directory, str(os.getpid())).touch()  # "I hold a task"
    time.sleep(60)


def _exit_in_worker(state, x):
    if x == 1:
        os._exit(3)  # the worker process ends without returning
    return x


def test_a_killed_worker_raises_a_clear_error_and_the_next_map_starts_new_workers(tmp_path):
    """A worker killed while it holds a task: the waiting map raises within seconds (the other
    worker's task would take a minute), and the next map starts new workers."""
    executor = Executor(num_processes=2)
    outcome = {}

    def run():
        try:
            executor.map(_sleep_in_worker, None, [(str(tmp_path),)] * 2, 2)
        except WorkerProcessError as error:
            outcome["error"] = error

    waiting = threading.Thread(target=run, daemon=True)
    try:
        waiting.start()
        deadline = time.monotonic() + 120
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        start = time.perf_counter()
        os.kill(int(next(tmp_path.iterdir()).name), signal.SIGKILL)
        waiting.join(30)
        assert not waiting.is_alive() and time.perf_counter() - start < 30
        assert re.search("worker process .* ended", str(outcome["error"]))
        assert isinstance(outcome["error"], RuntimeError)
        # the broken pool was discarded: new workers, the same results as serially
        assert executor.map(_affine, 3, [(1, 2), (4, 5)], 2) == [5, 17]
    finally:
        executor.close()


def test_a_worker_that_dies_during_a_map_raises_instead_of_waiting():
    executor = Executor(num_processes=2)
    try:
        with pytest.raises(WorkerProcessError):
            executor.map(_exit_in_worker, None, [(i,) for i in range(4)], 4)
    finally:
        executor.close()


_FROM_STANDARD_INPUT = """
import numpy as np
from allegro_ref import Potential
from allegro_ref.model import AllegroModel
from tests.models import tiny_config

model = AllegroModel.init(tiny_config(), seed=0)
potential = Potential(model, num_processes=2, chunk_bytes=1)
positions = np.random.default_rng(0).uniform(0, 6, (12, 3))
potential.compute(positions, np.full(12, 29), np.eye(3) * 6, [True] * 3)
"""


def test_workers_that_cannot_start_end_in_a_clear_error_not_a_hang():
    """A script read from standard input cannot be imported again by the spawned workers: they
    die at start-up, and compute raises (it used to wait forever)."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-"],
        input=_FROM_STANDARD_INPUT,
        env=env,
        cwd=root,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "WorkerProcessError" in done.stderr and "__main__" in done.stderr
    assert time.perf_counter() - start < 60
