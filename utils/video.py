"""Streaming video reading, and per-frame landmarks tracked and filtered over a video.

Frames are decoded one at a time (OpenCV's FFmpeg backend), so memory stays bounded whatever the
length. The container's frame count is checked at the end: a truncated or corrupt file yields
every frame that could be decoded and then raises `VideoReadError` saying how many were read.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from utils.filters import OneEuroFilter, OneEuroParams
from utils.landmarks import Face, FaceLandmarker
from utils.tracking import FaceTracker

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
        >>> with VideoReader("clip.mp4") as video:  # doctest: +SKIP
        ...     print(video.info.fps, video.info.width, video.info.height)
        ...     for frame in video: ...
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


@dataclass(frozen=True, eq=False)
class VideoFrame:
    """One frame with its landmarks.

    Attributes:
        index: frame number from 0.
        time_s: index / fps.
        image: (H, W, 3) uint8 RGB, or None when not kept.
        face: the per-frame face (raw landmarks), or None where no face was found.
        landmarks: (68, 2) temporally filtered landmarks, or None where no face was found.
        detected: whether a full-frame face detection ran on this frame.
        detect_s: seconds spent on detection for this frame.
        landmark_s: seconds spent on landmarks for this frame.
        flow_s: seconds spent on optical flow (tracking) for this frame.
    """

    index: int
    time_s: float
    image: np.ndarray | None
    face: Face | None
    landmarks: np.ndarray | None
    detected: bool
    detect_s: float
    landmark_s: float
    flow_s: float

    @property
    def has_face(self) -> bool:
        """Whether landmarks were found on this frame."""
        return self.face is not None


def track_video(source: str | Path | VideoReader, landmarker: FaceLandmarker | None = None, *,
                filter_params: OneEuroParams | None = OneEuroParams(),
                verify_every: int = 10, max_frames: int | None = None,
                keep_images: bool = True) -> Iterator[VideoFrame]:
    """Stream a video's frames with tracked, filtered 68-point landmarks.

    Faces are detected on the first frame and when tracking is lost (see `FaceTracker`); frames
    without a face are flagged (``face is None``), logged, and restart the filter.

    Args:
        source: video file, or an open `VideoReader` (to see its ``info`` - frame rate, size,
            frame count - before iterating; it is left open).
        landmarker: defaults to ``FaceLandmarker('dlib')``.
        filter_params: One Euro settings, or None to leave landmarks unfiltered.
        verify_every: see `FaceTracker`.
        max_frames: stop after this many frames (no truncation check then).
        keep_images: put each frame's image in the result (False saves memory downstream).

    Raises:
        VideoReadError: unreadable video (at once), or truncated/corrupt (after the frames that
            could be read).

    Example:
        >>> with VideoReader("clip.mp4") as video:  # doctest: +SKIP
        ...     print(video.info.fps, video.info.width, video.info.height)
        ...     tracks = [frame.landmarks for frame in track_video(video)]
    """
    tracker = FaceTracker(landmarker or FaceLandmarker("dlib"), verify_every=verify_every)
    smoother = OneEuroFilter(filter_params) if filter_params is not None else None
    missing = 0
    owned = not isinstance(source, VideoReader)
    video = VideoReader(source) if owned else source
    try:
        info = video.info
        logger.info("%s: %dx%d at %.3f fps, %d frames", info.path, info.width, info.height,
                    info.fps, info.frame_count)
        for index, image in enumerate(video):
            if max_frames is not None and index >= max_frames:
                break
            result = tracker.update(image)
            time_s = index / info.fps
            landmarks = None
            if result.face is None:
                missing += 1
                logger.debug("%s: frame %d: no face found", info.path, index)
                if smoother is not None:
                    smoother.reset()
            else:
                landmarks = (smoother(result.face.landmarks, time_s) if smoother is not None
                             else result.face.landmarks)
            yield VideoFrame(index, time_s, image if keep_images else None, result.face, landmarks,
                             result.detected, result.detect_s, result.landmark_s, result.flow_s)
    finally:
        if owned:
            video.close()
    if missing:
        logger.warning("%s: no face found on %d frames", info.path, missing)
