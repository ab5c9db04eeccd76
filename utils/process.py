"""Starting and ending a command-line process quickly: no garbage collection while it imports
(`collection_after_imports`), no interpreter teardown once its work is written (`exit_now`).

Python's cyclic garbage collector runs whenever enough objects have been made, and importing torch
and this project makes about 200,000 that live as long as the process: a start-up spends 0.15-0.3 s
scanning them again and again (of ~1.4 s of imports). `collection_after_imports` pauses the
collector while a command line imports, then freezes what exists (``gc.freeze``: later collections
skip it) and lets the collector run again for the work itself, so memory stays bounded in long runs.

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
import gc
import logging
import os
import sys
from typing import Callable, Iterator, NoReturn

__all__ = ["collection_after_imports", "exit_now"]


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
