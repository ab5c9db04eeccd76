"""Streaming video reading: frames one at a time as (H, W, 3) uint8 RGB arrays.

Frames are decoded one at a time (OpenCV's FFmpeg backend), so memory stays bounded whatever the
length. The container's frame count is checked at the end: a truncated or corrupt file yields
every frame that could be decoded and then raises `VideoReadError` saying how many were read.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

# FFmpeg's own messages ("moov atom not found", ...) would go to stderr beside the VideoReadError
# that says the same in one line; quiet unless the user sets the level (before the first capture).
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np

logger = logging.getLogger(__name__)


class VideoReadError(ValueError):
    """A video file is missing, unreadable, truncated or corrupt; the message names the file."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says: frame rate, frame size, and frame count (0 where unknown)."""

    path: Path
    fps: float
    width: int
    height: int
    frame_count: int


class VideoReader:
    """Iterate over a video's frames as (H, W, 3) uint8 RGB arrays, one at a time.

    Use as a context manager or call `close`. Iterating reads from the current position to the
    end once; at the end, fewer frames than the container announces raises `VideoReadError`
    (after the frames that could be read have been yielded).

    Example:
        >>> import tempfile
        >>> from utils.io.video_writer import VideoWriter
        >>> path = Path(tempfile.mkdtemp()) / "clip.mp4"
        >>> with VideoWriter(path, fps=25) as writer:
        ...     for k in range(3):
        ...         writer.write(np.full((48, 64, 3), 60 * k, np.uint8))
        >>> with VideoReader(path) as video:
        ...     print(video.info.fps, video.info.width, video.info.height, video.info.frame_count)
        ...     print([int(frame.mean().round(-1)) for frame in video])
        25.0 64 48 3
        [0, 60, 120]
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise VideoReadError(f"{path}: no such video file")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            raise VideoReadError(f"{path}: cannot open video (not a video, or corrupt/truncated "
                                 f"container, e.g. an mp4 cut before its index)")
        get = self._capture.get
        self.info = VideoInfo(path=path, fps=float(get(cv2.CAP_PROP_FPS)),
                              width=int(get(cv2.CAP_PROP_FRAME_WIDTH)),
                              height=int(get(cv2.CAP_PROP_FRAME_HEIGHT)),
                              frame_count=max(0, int(get(cv2.CAP_PROP_FRAME_COUNT))))
        if self.info.fps <= 0 or self.info.width <= 0 or self.info.height <= 0:
            self.close()
            raise VideoReadError(f"{path}: video stream reports no frame rate or size "
                                 f"(fps {self.info.fps}, size {self.info.width}x"
                                 f"{self.info.height})")

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the decoder."""
        self._capture.release()

    def __iter__(self) -> Iterator[np.ndarray]:
        read = 0
        while True:
            ok, frame = self._capture.read()
            if not ok:
                break
            read += 1
            yield cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
        expected = self.info.frame_count
        # one frame of slack: some containers only estimate the count from duration x fps
        if read == 0 or read < expected - 1:
            raise VideoReadError(
                f"{self.info.path}: video ended after {read} of {expected or 'unknown'} frames: "
                f"the file is truncated or corrupt")
