"""A photo folder's faces detected in a forked child process while the parent starts up.

Why: a photos -> rig run spends its first seconds importing torch and loading the face model, then
loads dlib's shape predictor (~0.5 s) and detects the photos' landmarks (~0.5 s). dlib holds the GIL,
so a thread cannot overlap that with the import; a child process can, on the second core.

How: `FolderPrefetch.start` forks before torch is imported (forking a process that holds torch's
threads is unsafe) and the child runs `detect_folder` on the folder, exactly as the parent would.
It sends two pickled messages over a pipe: whether it could make its landmarker, then the
`FolderFaces` (decoded images included) with the log records it held back, or why it failed.
`FolderPrefetch.faces` hands the result over, replaying those records in the parent; where the
child failed or died it logs a warning and detects in this process, so nothing is lost.
`DeferredLandmarker` is the parent's landmarker meanwhile: it knows its backend at once and loads
its models only where the parent itself detects (that fallback, or a video tracked by it).

Only dlib is prefetched: face_alignment needs torch, and mediapipe starts threads of its own.
Linux only (elsewhere `start` returns None and the caller detects in-process).
"""
from __future__ import annotations

import logging
import os
import pickle
import signal
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Optional

from utils.landmarks.base import DEFAULT_BACKEND
from utils.landmarks.detect import FaceLandmarker, FolderFaces, Selection, detect_folder

__all__ = ["PREFETCH_BACKENDS", "PrefetchError", "FolderPrefetch", "DeferredLandmarker"]

logger = logging.getLogger(__name__)

#: The landmark backends whose folder detection can run in a forked child.
PREFETCH_BACKENDS = ("dlib",)


class PrefetchError(RuntimeError):
    """The child gave no result: it failed, died, or detected another folder or selection."""


class _RecordKeeper(logging.Handler):
    """The child's log records, kept to be replayed by the parent (message formatted: picklable)."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        if record.exc_info:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        self.records.append(record)


def _send(stream: BinaryIO, message: tuple) -> None:
    pickle.dump(message, stream, protocol=pickle.HIGHEST_PROTOCOL)
    stream.flush()


def _child_detection(folder: Path, backend: str, select: Selection, stream: BinaryIO) -> None:
    """The child's work: its landmarker made (message 1), then the folder detected (message 2)."""
    keeper = _RecordKeeper()
    logging.root.handlers = [keeper]
    try:
        landmarker = FaceLandmarker(backend)  # type: ignore[arg-type]
    except Exception as exc:  # the parent makes its own landmarker and reports the error itself
        _send(stream, ("unavailable", f"{type(exc).__name__}: {exc}"))
        return
    _send(stream, ("ready", None))
    try:
        found = detect_folder(folder, landmarker, select, progress=False)
    except Exception as exc:
        _send(stream, ("failed", f"{type(exc).__name__}: {exc}"))
        return
    _send(stream, ("faces", found, keeper.records))


def _run_child(write_fd: int, folder: Path, backend: str, select: Selection) -> None:
    """The forked child, start to end: it never returns into the parent's code (``os._exit``)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it; the child just ends
        with os.fdopen(write_fd, "wb") as stream:
            _child_detection(folder, backend, select, stream)
        code = 0
    finally:
        os._exit(code)  # no exit handlers, no flush of the parent's buffered output


class FolderPrefetch:
    """`detect_folder` of one folder running in a forked child; a context manager that always
    ends and reaps the child (`close`)."""

    def __init__(self, pid: int, stream: BinaryIO, folder: Path, select: Selection) -> None:
        self.pid = pid
        self.folder = folder
        self.select = select
        self._stream: Optional[BinaryIO] = stream
        self._ready: Optional[bool] = None

    @classmethod
    def start(cls, folder: str | Path, backend: str,
              select: Selection = "largest") -> Optional["FolderPrefetch"]:
        """Fork a child that detects ``folder`` with ``backend`` and ``select``; None where this cannot
        be done safely (not Linux, torch already imported, a backend other than dlib, no such folder)."""
        folder = Path(folder)
        backend = DEFAULT_BACKEND if backend == "auto" else backend
        if backend not in PREFETCH_BACKENDS or not sys.platform.startswith("linux") or not folder.is_dir():
            return None
        if "torch" in sys.modules:
            logger.debug("photo landmarks not prefetched: torch is imported (a fork is unsafe)")
            return None
        read_fd, write_fd = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()  # else the child's copy of unwritten output could be written twice
        try:
            pid = os.fork()
        except OSError as exc:  # no process to be had (limits, memory): detect in-process
            os.close(read_fd)
            os.close(write_fd)
            logger.warning("photo landmarks not prefetched: %s; detecting in this process", exc)
            return None
        if pid == 0:
            os.close(read_fd)
            _run_child(write_fd, folder, backend, select)
        os.close(write_fd)
        return cls(pid, os.fdopen(read_fd, "rb"), folder, select)

    def _receive(self) -> tuple:
        if self._stream is None:
            raise PrefetchError("photo landmarks prefetch: already closed")
        try:
            return pickle.load(self._stream)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self.close()
            raise PrefetchError(f"photo landmarks prefetch: the child process ended without a result "
                                f"({type(exc).__name__})") from exc

    def ready(self) -> bool:
        """Whether the child made its landmarker (waits for it). False where it could not (the
        caller's own landmarker then raises the same error) or died (logged as a warning)."""
        if self._ready is None:
            try:
                kind, detail = self._receive()
            except PrefetchError as err:
                logger.warning("%s; detecting in this process", err)
                kind, detail = "died", None
            self._ready = kind == "ready"
            if not self._ready:
                logger.debug("photo landmarks prefetch: no landmarker in the child (%s)", detail)
                self.close()
        return self._ready

    def result(self, folder: str | Path, select: Selection) -> FolderFaces:
        """The child's `FolderFaces` for ``folder`` and ``select`` (waits for it; its log records are
        replayed here). The child is reaped after.

        Raises:
            PrefetchError: the child failed or died, or detected another folder or selection.
        """
        if Path(folder) != self.folder or select != self.select:
            self.close()
            raise PrefetchError(f"photo landmarks prefetch: detected {self.folder} ({self.select}), "
                                f"asked for {folder} ({select})")
        if not self.ready():
            raise PrefetchError("photo landmarks prefetch: the child made no landmarker")
        message = self._receive()
        self.close()
        if message[0] != "faces":
            raise PrefetchError(f"photo landmarks prefetch: the child failed ({message[1]})")
        _, found, records = message
        for record in records:
            logging.getLogger(record.name).handle(record)
        return found

    def faces(self, folder: str | Path, landmarker: Any, select: Selection) -> FolderFaces:
        """`detect_folder(folder, landmarker, select)`: the child's result, else (a warning logged)
        detected here."""
        try:
            return self.result(folder, select)
        except PrefetchError as err:
            if self._ready is not False:  # else `ready` has said why (or the landmarker will)
                logger.warning("%s; detecting in this process", err)
        return detect_folder(folder, landmarker, select)

    def close(self) -> None:
        """End the child (where it still runs) and reap it; close the pipe. Safe to call again."""
        if self._stream is None:
            return
        self._stream.close()
        self._stream = None
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)

    def __enter__(self) -> "FolderPrefetch":
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.close()


class DeferredLandmarker:
    """A `FaceLandmarker` made on first use: ``backend`` is known at once, the models load only
    where this process detects itself (dlib's predictor: 0.5 s that a prefetched run need not spend)."""

    def __init__(self, backend: str = DEFAULT_BACKEND) -> None:
        self._requested = backend
        self._made: Optional[FaceLandmarker] = None
        self.backend = DEFAULT_BACKEND if backend == "auto" else backend

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._made is None:
            self._made = FaceLandmarker(self._requested)  # type: ignore[arg-type]
        return getattr(self._made, name)
