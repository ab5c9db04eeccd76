"""The worker thread of the pipelines' writing and rendering: order, bounded queue, errors raised
in the caller, and the quick process exit after everything is written."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from tests.conftest import REPO_ROOT
from utils.background import BackgroundWorker


def test_calls_run_in_order_off_the_calling_thread():
    seen, threads = [], set()

    def work(i):
        threads.add(threading.get_ident())
        seen.append(i)

    with BackgroundWorker("test", depth=2) as worker:
        for i in range(20):
            worker.submit(work, i)
    assert seen == list(range(20))
    assert threads and threading.get_ident() not in threads


def test_a_full_queue_makes_the_caller_wait():
    gate = threading.Event()
    worker = BackgroundWorker("test", depth=1)
    worker.submit(gate.wait)  # the worker blocks on this one
    worker.submit(lambda: None)  # fills the queue
    timer = threading.Timer(0.3, gate.set)
    timer.start()
    start = time.perf_counter()
    worker.submit(lambda: None)  # waits until the worker frees a slot
    assert time.perf_counter() - start >= 0.2
    worker.close()
    assert worker.waited >= 0.2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a thread's own nice value is Linux's")
def test_a_nice_worker_runs_at_a_lower_priority_than_its_caller():
    import os

    def priority():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    def nested():  # a worker started by a nice worker: the same priority, not a lower one
        with BackgroundWorker("inner", nice=5) as inner:
            inner.submit(lambda: seen.append(priority()))

    seen = []
    with BackgroundWorker("test", nice=5) as worker:
        worker.submit(lambda: seen.append(priority()))
        worker.submit(nested)
    with BackgroundWorker("test") as worker:
        worker.submit(lambda: seen.append(priority()))
    assert seen == [min(19, priority() + 5), min(19, priority() + 5), priority()]
    with pytest.raises(ValueError, match="nice"):
        BackgroundWorker("test", nice=-1)


def test_a_call_beside_the_queue_starts_in_turn_runs_beside_the_next_and_ends_before_close():
    seen, later_ran = [], threading.Event()

    def beside():
        seen.append("beside started")
        seen.append(later_ran.wait(10))  # True only if a call queued after it ran meanwhile
        time.sleep(0.2)
        seen.append("beside done")

    with BackgroundWorker("test", depth=4) as worker:
        worker.submit(seen.append, "before")
        worker.submit_beside(beside)
        worker.submit(later_ran.set)
    assert seen == ["before", "beside started", True, "beside done"]  # close waited for it

    failing = BackgroundWorker("test")
    failing.submit_beside(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.close()


def test_worker_errors_reach_the_caller():
    ran = []
    worker = BackgroundWorker("test", depth=4)
    worker.submit(lambda: 1 / 0)
    worker.submit(ran.append, "skipped after the error")
    with pytest.raises(ZeroDivisionError):
        worker.close()
    assert ran == []
    assert isinstance(worker.close(raise_error=False), ZeroDivisionError)  # idempotent
    with pytest.raises(RuntimeError, match="after close"):
        worker.submit(ran.append, 1)
    with pytest.raises(ValueError, match="in the with block"):  # an error on its way is not masked
        with BackgroundWorker("test") as failing:
            failing.submit(lambda: 1 / 0)
            raise ValueError("in the with block")


def test_exit_now_flushes_runs_exit_handlers_and_keeps_the_code(tmp_path):
    marker = tmp_path / "atexit.txt"
    code = ("import atexit, logging, sys, torch\n"
            "from utils.process import exit_now\n"
            f"atexit.register(lambda: open({str(marker)!r}, 'w').write('ran'))\n"
            "logging.basicConfig(level=logging.INFO)\n"
            "logging.getLogger('t').info('logged')\n"
            "sys.stdout.write('printed without newline')\n"
            "exit_now(3)\n"
            "print('never')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT)
    assert done.returncode == 3
    assert done.stdout == "printed without newline"
    assert "logged" in done.stderr
    assert marker.read_text() == "ran"


def test_collection_paused_until_imported_then_frozen_and_restored():
    """`collection_after_imports`: no collection until ``imported()``, then the objects made so far
    are frozen and collection runs; on leaving, nothing stays frozen and the collector is as it was."""
    import gc

    from utils.process import collection_after_imports

    assert gc.isenabled() and gc.get_freeze_count() == 0
    with collection_after_imports() as imported:
        assert not gc.isenabled()
        imported()
        assert gc.isenabled() and gc.get_freeze_count() > 0
        imported()  # a second call changes nothing
        assert gc.isenabled()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with collection_after_imports() as imported:
            imported()
            assert not gc.isenabled()  # a caller that had paused collection keeps it paused
        assert not gc.isenabled() and gc.get_freeze_count() == 0
    finally:
        gc.enable()
    with pytest.raises(ZeroDivisionError):
        with collection_after_imports():
            1 / 0
    assert gc.isenabled()


def test_freed_memory_is_reused_without_new_page_faults():
    """`keep_freed_memory`: 24 MB freed and asked for again reuse the same memory (no page faults),
    where glibc's default maps them afresh (a fault per 4 KB page). Separate processes: the setting
    is process-wide and for good; C's malloc directly (numpy asks for huge pages)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("glibc's allocator only")
    code = ("import ctypes, ctypes.util, resource, sys\n"
            "from utils.process import keep_freed_memory\n"
            "applied = keep_freed_memory() if sys.argv[1] == 'keep' else None\n"
            "libc = ctypes.CDLL(ctypes.util.find_library('c'))\n"
            "libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]\n"
            "libc.free.argtypes = [ctypes.c_void_p]\n"
            "n = 24 << 20\n"
            "p = libc.malloc(n); ctypes.memset(p, 1, n); libc.free(p)\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
            "p = libc.malloc(n); ctypes.memset(p, 1, n)\n"
            "print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    faults = {}
    for mode in ("keep", "default"):
        done = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True, cwd=REPO_ROOT,
                              check=True)
        applied, count = done.stdout.split()
        faults[mode] = int(count)
        if mode == "keep" and applied != "True":
            pytest.skip("not glibc: keep_freed_memory changes nothing here")
    pages = (24 << 20) // 4096
    assert faults["default"] > pages // 2  # mapped afresh: every page faulted in again
    assert faults["keep"] < pages // 20  # the freed memory reused


def test_a_lazy_module_is_imported_at_its_first_attribute_once_for_all_threads():
    # In a fresh interpreter: no import before an attribute is read; eight threads reading at once
    # see one module, imported once.
    script = (
        "import sys, threading\n"
        "from utils.process import LazyModule\n"
        "wave = LazyModule('wave')\n"
        "assert 'wave' not in sys.modules\n"
        "seen = []\n"
        "threads = [threading.Thread(target=lambda: seen.append(wave.Wave_read)) for _ in range(8)]\n"
        "[t.start() for t in threads]; [t.join() for t in threads]\n"
        "import wave as real\n"
        "assert 'wave' in sys.modules and len(seen) == 8 and all(s is real.Wave_read for s in seen)\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr
