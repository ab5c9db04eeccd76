"""Process-wide settings of the pipelines and command lines: one torch thread, a quick exit.

`single_thread`: the fits here are many small tensor operations (a few thousand vertices, a few
dozen unknowns per image), for which a second intra-op thread costs more in waking and waiting
than it saves, and on this project's shared 2-core machines (load 2-4) it made the shading stage
several times slower: 14 photos took 12 s with two threads at load 3.5, 2.5-4 s with one.

`exit_now`: ending a command-line process quickly once its work is done and written.

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
import logging
import os
import sys
from typing import Iterator, NoReturn

import torch

__all__ = ["single_thread", "exit_now"]


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread (the previous count restored after)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


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
