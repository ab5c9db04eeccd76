"""One worker thread that runs calls in order while the caller goes on (writing outputs, rendering).

The pipelines hand it the work that does not feed what they compute next: encoding and writing
files, rendering the output videos. Torch, OpenCV, zlib and the z-buffer kernel release the
interpreter lock, so on a machine with a second core the two threads overlap. A bounded queue
keeps memory flat (a caller faster than the worker waits), and an error in the worker is raised
in the caller, by its next `BackgroundWorker.submit` or by `BackgroundWorker.close`.

Where the caller's own work is what the run waits for and the worker's has slack (the rig's files
are written while the whole head and its texture are made), ``nice`` lowers the worker's CPU
priority: on two cores busy with three threads, the caller then keeps its core and the worker
takes what is left (Linux, where a thread has its own nice value, counted from the process's
main thread's; threads the worker starts inherit it; elsewhere it is ignored).

Example:
    >>> written = []
    >>> with BackgroundWorker("example") as worker:
    ...     for i in range(3):
    ...         worker.submit(written.append, i)
    >>> written
    [0, 1, 2]
"""
from __future__ import annotations

import logging
import os
import queue
import sys
import threading
import time
from typing import Any, Callable, List, Optional, Tuple

__all__ = ["BackgroundWorker", "FILES_NICE"]

#: ``nice`` of the workers that write a run's files beside the work its end waits for.
FILES_NICE = 10

logger = logging.getLogger(__name__)


class BackgroundWorker:
    """Calls run in submission order on one daemon thread, at most ``depth`` waiting (a call queued by
    `submit_beside` starts in its turn on a thread of its own, beside the calls after it).

    Attributes:
        waited: seconds the caller spent waiting (for room in the queue, and for the end in `close`).
        nice: how much the worker thread's nice value is above the process's main thread's (0: the
            caller's priority).
    """

    def __init__(self, name: str, depth: int = 4, nice: int = 0) -> None:
        if nice < 0:
            raise ValueError(f"BackgroundWorker: nice must be >= 0 (a lower priority), got {nice}")
        self.nice = int(nice)
        self._queue: "queue.Queue[Optional[Tuple[Callable[..., Any], tuple, bool]]]" = queue.Queue(depth)
        self._error: Optional[BaseException] = None
        self._error_lock = threading.Lock()
        self._beside: List[threading.Thread] = []
        self._closed = False
        self.waited = 0.0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        if self.nice:
            _lower_priority(self.nice)
        while True:
            item = self._queue.get()
            if item is None:
                for thread in self._beside:  # the calls started beside the queue end before the worker
                    thread.join()
                return
            if self._error is None:  # after an error the rest is skipped
                fn, args, beside = item
                if beside:
                    # Started by this thread, the new one inherits its priority.
                    thread = threading.Thread(target=self._call, args=(fn, args), daemon=True,
                                              name=f"{self._thread.name}-beside")
                    self._beside.append(thread)
                    thread.start()
                else:
                    self._call(fn, args)

    def _call(self, fn: Callable[..., Any], args: tuple) -> None:
        try:
            fn(*args)
        except BaseException as err:  # noqa: BLE001 - handed to the caller
            with self._error_lock:
                if self._error is None:
                    self._error = err

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` (waits while the queue is full); raises the worker's error, if any."""
        self._put(fn, args, False)

    def submit_beside(self, fn: Callable[..., Any], *args: Any) -> None:
        """Queue ``fn(*args)`` like `submit`, but when its turn comes it starts on a thread of its own,
        beside the calls queued after it (for a long job they do not depend on: on two cores the
        worker's next calls need not wait for it). The worker waits for it before it stops; its
        error is the worker's."""
        self._put(fn, args, True)

    def _put(self, fn: Callable[..., Any], args: tuple, beside: bool) -> None:
        if self._closed:
            raise RuntimeError("BackgroundWorker: submit after close")
        if self._error is not None:
            raise self._error
        start = time.perf_counter()
        self._queue.put((fn, args, beside))
        self.waited += time.perf_counter() - start

    def close(self, raise_error: bool = True) -> Optional[BaseException]:
        """Run what is queued, stop the thread; raise the worker's error (or return it when
        ``raise_error`` is False). Idempotent."""
        if not self._closed:
            self._closed = True
            start = time.perf_counter()
            self._queue.put(None)
            self._thread.join()
            self.waited += time.perf_counter() - start
        if self._error is not None and raise_error:
            raise self._error
        return self._error

    def __enter__(self) -> "BackgroundWorker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(raise_error=exc_type is None)  # an error already on its way is not masked


def _lower_priority(by: int) -> None:
    """Give the calling thread the nice value of the process's main thread plus ``by`` (Linux: per
    thread; relative to the process, not to the thread that started this one, so that a worker
    started by another worker gets the same priority, not a lower one); elsewhere, or where the
    system refuses, the thread keeps its priority (logged)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        wanted = min(19, os.getpriority(os.PRIO_PROCESS, os.getpid()) + by)
        if wanted > os.getpriority(os.PRIO_PROCESS, tid):
            os.setpriority(os.PRIO_PROCESS, tid, wanted)
    except OSError as err:
        logger.debug("worker thread keeps its priority (%s)", err)
