"""Starting, running and ending a command-line process quickly: no garbage collection while it
imports (`collection_after_imports`), freed memory kept for reuse (`keep_freed_memory`), a module
imported only when first used (`LazyModule`), no interpreter teardown once its work is written
(`exit_now`).

Python's cyclic garbage collector runs whenever enough objects have been made, and importing torch
and this project makes about 200,000 that live as long as the process: a start-up spends 0.15-0.3 s
scanning them again and again (of ~1.4 s of imports). `collection_after_imports` pauses the
collector while a command line imports, then freezes what exists (``gc.freeze``: later collections
skip it) and lets the collector run again for the work itself, so memory stays bounded in long runs.

The fits and renders allocate and free arrays of a few megabytes hundreds of times (the colour
term's scratch, torch's temporaries, images). glibc's allocator by default maps such an array
afresh from the system when it is larger than its last freed one, and hands the freed top of its
heap back to the system, so the next array's pages are faulted in and zeroed by the kernel again.
`keep_freed_memory` raises both limits (arrays up to 32 MiB from the heap, up to 256 MiB of freed
heap kept): the rig job 0.13-0.2 s and about 0.3 CPU-s shorter, peak memory within 2 %
(docs/benchmarks.md, "Speed, session 12").

With torch loaded, the interpreter's own shutdown (freeing every module, tensor and extension
object) takes 0.9-1.0 s on this project's 2-core machines: a fifth of a whole rig build by now.
It writes nothing a user needs, so the command lines end with `exit_now` instead of returning to
the interpreter: the exit handlers run and the standard streams and logging handlers are flushed,
then the process ends without the teardown (``os._exit``).

What a caller must have done before: closed its own files and writers (every writer here closes
what it opens: meshes, images, videos, archives), joined its threads and waited for its child
processes. What still runs: ``atexit`` handlers (``weakref.finalize`` objects, e.g. temporary
folders not yet removed, are among them), so nothing registered to clean up is skipped.
"""
from __future__ import annotations

import atexit
import contextlib
import ctypes
import ctypes.util
import gc
import importlib
import logging
import os
import sys
from typing import Any, Callable, Iterator, NoReturn

__all__ = ["collection_after_imports", "keep_freed_memory", "LazyModule", "exit_now"]

#: glibc's `mallopt` parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: The largest mmap threshold glibc accepts on 64-bit systems (half its heap size).
MMAP_THRESHOLD_MAX = 32 << 20


def keep_freed_memory(from_heap: int = MMAP_THRESHOLD_MAX, kept: int = 256 << 20) -> bool:
    """Let the C allocator serve blocks below ``from_heap`` bytes from its heap and keep up to
    ``kept`` bytes of freed heap for reuse (module docstring). Process-wide and for good; a child
    forked later inherits it. Returns whether it applied: glibc only (elsewhere nothing changes).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, int(from_heap))) and bool(mallopt(_M_TRIM_THRESHOLD, int(kept)))


class LazyModule:
    """Stands for module ``name``, imported when one of its attributes is first read (by the import
    system, so threads that read at once import it once): for a library only some runs use, e.g. the
    glTF writer's pygltflib (with marshmallow, ~0.03 s of every start-up otherwise), loaded on the
    worker that writes the file. (The standard library's ``LazyLoader`` is not thread-safe before
    Python 3.12.)

    Example:
        >>> json = LazyModule("json")
        >>> json.dumps([1])
        '[1]'
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attribute: str) -> Any:
        return getattr(importlib.import_module(self._name), attribute)

    def __repr__(self) -> str:
        return f"LazyModule({self._name!r})"


@contextlib.contextmanager
def collection_after_imports() -> Iterator[Callable[[], None]]:
    """A context in which the garbage collector is paused until the function it gives is called
    (once the imports are done): that freezes the objects made so far and resumes collection.

    On leaving, the frozen objects are collectable again and the collector is as it was on entry
    (a caller in a notebook or a test keeps its usual collector). A child process forked inside
    starts with the collector paused, as the parent is then.

    Example::

        with collection_after_imports() as imported:
            import torch
            imported()
            run()
    """
    enabled = gc.isenabled()
    gc.disable()
    frozen = False

    def imported() -> None:
        nonlocal frozen
        if not frozen:
            gc.freeze()
            frozen = True
        if enabled:
            gc.enable()

    try:
        yield imported
    finally:
        if frozen:
            gc.unfreeze()
        if enabled:
            gc.enable()


def exit_now(code: int = 0) -> NoReturn:
    """End the process with ``code``: exit handlers, flushed streams and logs, no teardown.

    Example (the last line of a command-line script)::

        if __name__ == "__main__":
            exit_now(main())
    """
    try:
        atexit._run_exitfuncs()
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    finally:
        os._exit(int(code or 0))
