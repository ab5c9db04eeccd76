"""One pass of landmarks over a video: every frame decoded once and landmarked once.

The landmarks go to a scratch file (`LandmarkLog`: memory stays flat whatever the video's length),
and what ``keep`` makes of a bounded set of candidate frames spread over the whole video is kept for
the video person's rig (`utils.pipelines.video.scan_video` keeps face crops). The frames that rig
is built from are chosen among them by head yaw (`choose_frames`).

This module does not import torch, so that a child process forked before torch is imported can
scan a video while its parent starts up (`utils.landmarks.prefetch.VideoPrefetch`).
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from utils.io.video import VideoInfo, VideoReader, VideoReadError
from utils.landmarks.detect import FaceLandmarker, Selection
from utils.landmarks.filters import OneEuroParams
from utils.landmarks.mesh import MESH_POINTS
from utils.landmarks.tracking import LandmarkStream

__all__ = ["LandmarkLog", "VideoScan", "Candidate", "scan_landmarks", "choose_frames", "yaw_proxy",
           "SourceFrames"]

logger = logging.getLogger(__name__)

#: How many frames the video person's rig is built from, or which frame numbers.
SourceFrames = Union[int, Sequence[int]]
#: (yaw proxy, frame number, what ``keep`` made of the frame) of a frame kept for the source rig.
Candidate = Tuple[float, int, Any]


class LandmarkLog:
    """Per-frame (P, 2) points (68 landmarks, or a dense mesh) in a scratch file (NaN rows: no face),
    read back by frame number. Once finished it pickles as its file (another process reads it)."""

    def __init__(self, points: int = 68, scratch: Optional[Path] = None) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="inorig_landmarks_", dir=scratch))
        self._path = self._folder / "landmarks.bin"
        self._file = open(self._path, "wb")
        self._rows: Optional[np.ndarray] = None
        self.points = points
        self.count = 0

    def append(self, landmarks: Optional[np.ndarray]) -> None:
        row = (np.full((self.points, 2), np.nan) if landmarks is None
               else np.asarray(landmarks, dtype=np.float64))
        self._file.write(np.ascontiguousarray(row).tobytes())
        self.count += 1

    def finish(self) -> None:
        """No more rows: map the file for reading."""
        self._file.close()
        if self.count:
            self._rows = np.memmap(self._path, dtype=np.float64, mode="r", shape=(self.count, self.points, 2))

    def __getitem__(self, index: int) -> Optional[np.ndarray]:
        if self._rows is None or index >= self.count:
            raise IndexError(f"frame {index}: not scanned ({self.count} frames were)")
        row = np.array(self._rows[index])
        return None if np.isnan(row).any() else row

    def close(self) -> None:
        """Remove the scratch file."""
        if not self._file.closed:
            self._file.close()
        self._rows = None
        shutil.rmtree(self._folder, ignore_errors=True)

    def __getstate__(self) -> dict:
        if not self._file.closed:
            raise ValueError("LandmarkLog: pickled before it was finished")
        return {"folder": self._folder, "points": self.points, "count": self.count}

    def __setstate__(self, state: dict) -> None:
        self._folder, self.points, self.count = state["folder"], state["points"], state["count"]
        self._path = self._folder / "landmarks.bin"
        self._file = open(self._path, "rb")  # closed at once: the rows are read through a map
        self._rows = None
        self.finish()


@dataclass
class VideoScan:
    """One pass of landmarks over a video (`scan_landmarks`): what the source rig and tracking need.

    Attributes:
        path: the video. info: what its container says (fps, size, frame count).
        frames: frames read. landmarks: per frame (68, 2) landmarks or None (``landmarks[i]``).
        candidates: (yaw proxy, frame number, what ``keep`` made of the frame: a face crop for
            `utils.pipelines.video.scan_video`) of the frames kept for the source rig.
        timings: ``decoding`` and ``landmarks`` seconds.
        error: the read error of a truncated or corrupt video (frames before it are kept), or None.
        cuts: frame numbers where a new shot began (the face was chosen afresh there).
        dense: per frame the dense mesh points (backend 'mediapipe': (478, 2), ``dense[i]``) or
            None; None when the backend has no mesh.
        scratch: a folder removed with the landmarks' files on `close` (where another process
            scanned: `utils.landmarks.prefetch.VideoPrefetch`), or None.
    """

    path: Path
    info: VideoInfo
    frames: int
    landmarks: LandmarkLog
    candidates: List[Candidate]
    timings: Dict[str, float]
    error: Optional[str] = None
    cuts: List[int] = field(default_factory=list)
    dense: Optional[LandmarkLog] = None
    scratch: Optional[Path] = None

    def close(self) -> None:
        """Remove the scratch files of the landmarks."""
        self.landmarks.close()
        if self.dense is not None:
            self.dense.close()
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)

    def __enter__(self) -> "VideoScan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def yaw_proxy(landmarks: np.ndarray) -> float:
    """Signed head-turn proxy from 2D landmarks: nose tip offset from the eyes' midpoint / eye distance."""
    eyes = landmarks[36] - landmarks[45]
    mid = (landmarks[36] + landmarks[45]) / 2
    return float(np.dot(landmarks[30] - mid, eyes) / max(float(np.dot(eyes, eyes)), 1e-9))


def _every(n_frames: int, count: int) -> int:
    """Candidate spacing: about ``4 * count`` candidates over ``n_frames`` (all frames when unknown)."""
    return max(1, n_frames // (4 * count)) if n_frames else 1


def scan_landmarks(video: Union[str, Path], landmarker: FaceLandmarker, *, source_frames: SourceFrames = 8,
                   landmark_filter: Optional[OneEuroParams] = OneEuroParams(), face: Selection = "largest",
                   keep: Callable[[np.ndarray, np.ndarray], Any] = lambda image, landmarks: image,
                   progress: bool = True, scratch: Optional[Path] = None,
                   on_frame: Optional[Callable[[int, int], None]] = None) -> VideoScan:
    """Landmarks of every frame of ``video`` and ``keep(frame, landmarks)`` of candidate frames.

    Args:
        video: the video file.
        landmarker: detections and landmarks.
        source_frames: how many frames will build the video person's rig (candidates are kept at
            regular intervals over the whole video: about four per rig frame, at most eight per
            rig frame in memory), or the frame numbers to use (only those are kept).
        landmark_filter: One Euro filter of the landmarks (None: raw).
        face: whom to follow where several people are in view (`utils.landmarks.tracking.FaceTracker`).
        keep: what is kept of a candidate frame (H, W, 3) uint8 RGB with its (68, 2) landmarks
            (default: the frame itself).
        progress: show a progress bar (`utils.progress`).
        scratch: the folder the landmarks' scratch files go in (None: the system's temporary folder).
        on_frame: called after each frame with the frames scanned so far and the container's frame
            count (0 where unknown), e.g. to report progress elsewhere.

    Raises:
        VideoReadError: the video cannot be opened (a truncated one is scanned up to the error,
            reported in ``error``).
    """
    explicit = None if isinstance(source_frames, int) else {int(i) for i in source_frames}
    count = len(explicit) if explicit is not None else int(source_frames)
    if count < 1:
        raise ValueError(f"source_frames: expected at least one frame, got {source_frames!r}")
    stream = LandmarkStream(landmarker, filter_params=landmark_filter, face=face)
    log = LandmarkLog(scratch=scratch)
    dense_log = LandmarkLog(MESH_POINTS, scratch) if landmarker.backend == "mediapipe" else None
    candidates: List[Candidate] = []
    timings = {"decoding": 0.0, "landmarks": 0.0}
    error = None
    with VideoReader(video) as reader:
        info = reader.info
        every = _every(info.frame_count, count)
        frames = iter(reader)
        if progress:
            from utils.progress import progress_bar  # tqdm: not for a child that forks before it

            frames = progress_bar(frames, total=info.frame_count or None, desc="landmarks (video)",
                                  unit="frame")
        index = 0
        clock = time.perf_counter()
        try:
            for image in frames:
                start = time.perf_counter()
                timings["decoding"] += start - clock
                frame = stream(index, image, index / info.fps, keep_image=False)
                log.append(frame.landmarks)
                if dense_log is not None:
                    dense_log.append(None if frame.landmarks is None else frame.face.dense)
                kept = index in explicit if explicit is not None else index % every == 0
                if kept and frame.landmarks is not None:
                    candidates.append((yaw_proxy(frame.landmarks), index, keep(image, frame.landmarks)))
                    if explicit is None and len(candidates) > 8 * count:  # unknown length: thin out
                        candidates, every = candidates[::2], 2 * every
                index += 1
                if on_frame is not None:
                    on_frame(index, info.frame_count)
                clock = time.perf_counter()
                timings["landmarks"] += clock - start
        except VideoReadError as err:  # truncated or corrupt: keep what was read
            error = str(err)
            logger.debug("%s (using the %d frames read before it)", err, index)  # the caller reports it
    log.finish()
    if dense_log is not None:
        dense_log.finish()
    if stream.missing:
        logger.warning("%s: no face found on %d of %d frames", video, stream.missing, index)
    return VideoScan(Path(video), info, index, log, candidates, timings, error, list(stream.cuts), dense_log)


def choose_frames(candidates: List[Candidate], source_frames: SourceFrames) -> List[Candidate]:
    """The source rig's frames among ``candidates``: ``source_frames`` of them spread over the yaw
    proxy (extremes included), or, for frame numbers, those of them (by frame number). Choosing
    again among the chosen gives them all."""
    if not isinstance(source_frames, int):
        wanted = {int(i) for i in source_frames}
        return sorted((c for c in candidates if c[1] in wanted), key=lambda c: c[1])
    ordered = sorted(candidates, key=lambda c: c[0])
    pick = np.unique(np.linspace(0, len(ordered) - 1, min(source_frames, len(ordered))).round().astype(int))
    return [ordered[i] for i in pick]
