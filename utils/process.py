"""Ending a command-line process quickly once its work is done and written (`exit_now`).

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
import logging
import os
import sys
from typing import NoReturn

__all__ = ["exit_now"]


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
