"""A photo folder's faces, or a video's landmarks, found in a forked child process while the
parent starts up.

Why: a photos -> rig run spends its first seconds importing torch and loading the face model, then
loads dlib's shape predictor (~0.5 s) and detects the photos' landmarks (~0.5 s). A video run
landmarks every frame once before anything else (`utils.landmarks.scan`: ~2 s for 250 frames at
480 x 480, with MediaPipe's 0.5 s of loading). dlib and the frame loop hold the GIL, so a thread
cannot overlap that with the import; a child process can, on the second core.

How: `FolderPrefetch.start` and `VideoPrefetch.start` fork before torch is imported (forking a
process that holds torch's threads is unsafe) and the child runs `detect_folder` on the folder, or
`scan_landmarks` on the video, exactly as the parent would. It sends pickled messages over a pipe:
whether it could make its landmarker, a video's progress (frames scanned, at most every 0.25 s:
few enough never to fill the pipe while the parent is busy; shown on a bar once the parent waits),
then its result with the log records it held back, or why it failed. A folder's result is its
`FolderFaces` (decoded images included); a video's is its `VideoScan` (the landmarks in scratch
files the parent maps) whose candidates are only the frames `choose_frames` picks for the source
rig, whole, so that the parent's crops of them are its own.
`FolderPrefetch.faces` and `VideoPrefetch.scan` hand the result over, replaying those records in
the parent; where the child failed or died a warning is logged and the caller detects in this
process, so nothing is lost. `DeferredLandmarker` is the parent's landmarker meanwhile: it knows
its backend at once and loads its models only where the parent itself detects (that fallback, or
frames a scan did not cover).

Photos are prefetched with dlib only (their default), videos with dlib or MediaPipe (in a child
that starts MediaPipe's threads itself); face_alignment needs torch. Linux only (elsewhere
`start` returns None and the caller detects in-process).
"""
from __future__ import annotations

import gc
import logging
import os
import pickle
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Callable, Optional, Tuple

import numpy as np

from utils.landmarks.base import DEFAULT_BACKEND
from utils.landmarks.detect import FaceLandmarker, FolderFaces, Selection, detect_folder
from utils.landmarks.filters import OneEuroParams
from utils.landmarks.scan import SourceFrames, VideoScan, choose_frames, scan_landmarks

__all__ = ["PREFETCH_BACKENDS", "VIDEO_PREFETCH_BACKENDS", "PrefetchError", "FolderPrefetch", "VideoPrefetch",
           "DeferredLandmarker"]

logger = logging.getLogger(__name__)

#: The landmark backends whose folder detection can run in a forked child.
PREFETCH_BACKENDS = ("dlib",)
#: The landmark backends whose video scan can run in a forked child (face_alignment needs torch).
VIDEO_PREFETCH_BACKENDS = ("dlib", "mediapipe")


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


def _child_work(backend: str, stream: BinaryIO, kind: str, work: Callable[[FaceLandmarker], Any]) -> None:
    """A child's work: its landmarker made (message 1: "ready", or "unavailable" and why), then
    ``work(landmarker)`` sent as (``kind``, result, the log records held back) or ("failed", why)."""
    keeper = _RecordKeeper()
    logging.root.handlers = [keeper]
    try:
        landmarker = FaceLandmarker(backend)  # type: ignore[arg-type]
    except Exception as exc:  # the parent makes its own landmarker and reports the error itself
        _send(stream, ("unavailable", f"{type(exc).__name__}: {exc}"))
        return
    _send(stream, ("ready", None))
    try:
        result = work(landmarker)
    except Exception as exc:
        _send(stream, ("failed", f"{type(exc).__name__}: {exc}"))
        return
    _send(stream, (kind, result, keeper.records))


def _child_detection(folder: Path, backend: str, select: Selection, stream: BinaryIO) -> None:
    """The photo child's work: the folder detected."""
    _child_work(backend, stream, "faces",
                lambda landmarker: detect_folder(folder, landmarker, select, progress=False))


def _whole_frame(image: np.ndarray, landmarks: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """What the video child keeps of a candidate frame: the frame and its landmarks (the parent crops
    the chosen ones, so that its crops are those of a scan in the parent)."""
    return image, landmarks


def _child_scan(video: Path, backend: str, select: Selection, stream: BinaryIO, source_frames: SourceFrames,
                landmark_filter: Optional[OneEuroParams], scratch: Path) -> None:
    """The video child's work: the video scanned, its candidate frames cut down to those
    `choose_frames` picks (the others' pixels stay here)."""

    def scan(landmarker: FaceLandmarker) -> VideoScan:
        # A child forked while its parent imports runs with the garbage collector paused
        # (`utils.process.collection_after_imports`); a frame loop leaves reference cycles behind.
        gc.enable()
        found = scan_landmarks(video, landmarker, source_frames=source_frames,
                               landmark_filter=landmark_filter, face=select, keep=_whole_frame,
                               progress=False, scratch=scratch, on_frame=_ProgressSender(stream))
        found.candidates = choose_frames(found.candidates, source_frames)
        return found

    _child_work(backend, stream, "scan", scan)


class _ProgressSender:
    """The child's frames scanned so far, sent as ("progress", done, total) at most every
    ``interval`` seconds: the parent shows them once it waits (`_ChildJob._result`), and so few
    messages never fill the pipe while it is busy elsewhere."""

    def __init__(self, stream: BinaryIO, interval: float = 0.25) -> None:
        self.stream, self.interval = stream, interval
        self.last = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last >= self.interval:
            _send(self.stream, ("progress", done, total))
            self.last = now


def _run_child(write_fd: int, work: Callable[[BinaryIO], None]) -> None:
    """The forked child, start to end: it never returns into the parent's code (``os._exit``)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: the parent reports it; the child just ends
        with os.fdopen(write_fd, "wb") as stream:
            work(stream)
        code = 0
    finally:
        os._exit(code)  # no exit handlers, no flush of the parent's buffered output


def _fork(work: Callable[[BinaryIO], None]) -> Optional[Tuple[int, BinaryIO]]:
    """A child running ``work`` on the write end of a pipe: (its pid, the read end), or None where
    this cannot be done safely (torch imported: its threads do not survive a fork; no process)."""
    if "torch" in sys.modules:
        logger.debug("landmarks not prefetched: torch is imported (a fork is unsafe)")
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
        logger.warning("landmarks not prefetched: %s; detecting in this process", exc)
        return None
    if pid == 0:
        os.close(read_fd)
        _run_child(write_fd, work)
    os.close(write_fd)
    return pid, os.fdopen(read_fd, "rb")


class _ChildJob:
    """A forked child's messages (its landmarker made, any progress, then its result); a context
    manager that always ends and reaps the child (`close`). ``what`` names the job in messages."""

    what = "landmarks prefetch"
    progress_desc = "landmarks"

    def __init__(self, pid: int, stream: BinaryIO) -> None:
        self.pid = pid
        self._stream: Optional[BinaryIO] = stream
        self._ready: Optional[bool] = None

    def _receive(self) -> tuple:
        if self._stream is None:
            raise PrefetchError(f"{self.what}: already closed")
        try:
            return pickle.load(self._stream)
        except (EOFError, OSError, pickle.UnpicklingError) as exc:
            self.close()
            raise PrefetchError(f"{self.what}: the child process ended without a result "
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
                logger.debug("%s: no landmarker in the child (%s)", self.what, detail)
                self.close()
        return self._ready

    def _result(self, kind: str) -> Any:
        """The child's result of ``kind`` (waits for it; its log records are replayed here); the
        child is reaped after.

        Raises:
            PrefetchError: the child failed or died.
        """
        if not self.ready():
            raise PrefetchError(f"{self.what}: the child made no landmarker")
        message = self._receive()
        if message[0] == "progress":  # the child still works: its count on a bar until it is done
            from utils.progress import progress_counter  # tqdm: imported after the fork, by the parent

            with progress_counter(total=message[2] or None, initial=message[1], desc=self.progress_desc,
                                  unit="frame") as bar:
                while message[0] == "progress":
                    bar.update(message[1] - bar.n)
                    message = self._receive()
        self._reap()
        if message[0] != kind:
            raise PrefetchError(f"{self.what}: the child failed ({message[1]})")
        _, result, records = message
        for record in records:
            logging.getLogger(record.name).handle(record)
        return result

    def _warn(self, err: PrefetchError) -> None:
        """Log why the child's result is not used (once: not where `ready` has said it)."""
        if self._ready is not False:  # else `ready` has said why (or the landmarker will)
            logger.warning("%s; detecting in this process", err)

    def close(self) -> None:
        """End the child (where it still runs) and reap it; close the pipe. Safe to call again."""
        self._reap()

    def _reap(self) -> None:
        """End the child (where it still runs), reap it and close the pipe (what `close` does here;
        a video's `close` also removes the scratch files it was not asked for)."""
        if self._stream is None:
            return
        self._stream.close()
        self._stream = None
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)

    def __enter__(self) -> "_ChildJob":
        return self

    def __exit__(self, kind: Optional[type], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        self.close()


class FolderPrefetch(_ChildJob):
    """`detect_folder` of one folder running in a forked child."""

    what = "photo landmarks prefetch"

    def __init__(self, pid: int, stream: BinaryIO, folder: Path, select: Selection) -> None:
        super().__init__(pid, stream)
        self.folder = folder
        self.select = select

    @classmethod
    def start(cls, folder: str | Path, backend: str,
              select: Selection = "largest") -> Optional["FolderPrefetch"]:
        """Fork a child that detects ``folder`` with ``backend`` and ``select``; None where this cannot
        be done safely (not Linux, torch already imported, a backend other than dlib, no such folder)."""
        folder = Path(folder)
        backend = DEFAULT_BACKEND if backend == "auto" else backend
        if backend not in PREFETCH_BACKENDS or not sys.platform.startswith("linux") or not folder.is_dir():
            return None
        forked = _fork(lambda stream: _child_detection(folder, backend, select, stream))
        return None if forked is None else cls(*forked, folder, select)

    def result(self, folder: str | Path, select: Selection) -> FolderFaces:
        """The child's `FolderFaces` for ``folder`` and ``select`` (waits for it; its log records are
        replayed here). The child is reaped after.

        Raises:
            PrefetchError: the child failed or died, or detected another folder or selection.
        """
        if Path(folder) != self.folder or select != self.select:
            self.close()
            raise PrefetchError(f"{self.what}: detected {self.folder} ({self.select}), "
                                f"asked for {folder} ({select})")
        return self._result("faces")

    def faces(self, folder: str | Path, landmarker: Any, select: Selection) -> FolderFaces:
        """`detect_folder(folder, landmarker, select)`: the child's result, else (a warning logged)
        detected here."""
        try:
            return self.result(folder, select)
        except PrefetchError as err:
            self._warn(err)
        return detect_folder(folder, landmarker, select)


def _scan_key(video: str | Path, backend: str, source_frames: SourceFrames, select: Selection,
              landmark_filter: Optional[OneEuroParams]) -> tuple:
    """What a video scan was made with, comparable (frame numbers as a tuple of ints)."""
    frames = source_frames if isinstance(source_frames, int) else tuple(int(i) for i in source_frames)
    return Path(video), backend, frames, select, landmark_filter


class VideoPrefetch(_ChildJob):
    """`utils.landmarks.scan.scan_landmarks` of one video running in a forked child, its candidates
    the frames (whole, with their landmarks) that `choose_frames` picks."""

    what = "video landmarks prefetch"
    progress_desc = "landmarks (video)"

    def __init__(self, pid: int, stream: BinaryIO, video: Path, backend: str, source_frames: SourceFrames,
                 select: Selection, landmark_filter: Optional[OneEuroParams], scratch: Path) -> None:
        super().__init__(pid, stream)
        self.asked = _scan_key(video, backend, source_frames, select, landmark_filter)
        self.scratch: Optional[Path] = scratch  # the child's scratch files; the scan's once handed over

    @classmethod
    def start(cls, video: str | Path, backend: str, source_frames: SourceFrames = 8,
              select: Selection = "largest",
              landmark_filter: Optional[OneEuroParams] = OneEuroParams()) -> Optional["VideoPrefetch"]:
        """Fork a child that scans ``video`` with ``backend`` (`scan_landmarks`' other arguments); None
        where this cannot be done safely (not Linux, torch already imported, a backend that needs
        torch, no such file)."""
        video = Path(video)
        if (backend not in VIDEO_PREFETCH_BACKENDS or not sys.platform.startswith("linux")
                or not video.is_file()):
            return None
        scratch = Path(tempfile.mkdtemp(prefix="inorig_scan_"))
        forked = _fork(lambda stream: _child_scan(video, backend, select, stream, source_frames,
                                                  landmark_filter, scratch))
        if forked is None:
            shutil.rmtree(scratch, ignore_errors=True)
            return None
        return cls(*forked, video, backend, source_frames, select, landmark_filter, scratch)

    def scan(self, video: str | Path, backend: str, source_frames: SourceFrames, select: Selection,
             landmark_filter: Optional[OneEuroParams]) -> Optional[VideoScan]:
        """The child's `VideoScan` of ``video`` made as these arguments say (waits for it; its log
        records are replayed here), or None (a warning logged) where the child failed or died, or
        scanned otherwise: the caller then scans the video itself. The child is reaped after."""
        asked = _scan_key(video, backend, source_frames, select, landmark_filter)
        if asked != self.asked:
            self.close()
            logger.warning("%s: scanned %s, asked for %s; scanning in this process", self.what, self.asked,
                           asked)
            return None
        try:
            scan: VideoScan = self._result("scan")
        except PrefetchError as err:
            self._warn(err)
            return None
        scan.scratch, self.scratch = self.scratch, None  # removed when the caller closes the scan
        return scan

    def close(self) -> None:
        """End and reap the child; remove its scratch files unless its scan was handed over."""
        self._reap()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
            self.scratch = None


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
