"""Landmarks on consecutive frames, detecting faces only when tracking needs it; `track_video`
streams a video's frames with their tracked, filtered landmarks.

Detection is the expensive step (dlib HOG: ~10-20 ms on a 512 px frame; landmarks: ~1 ms). A
`FaceTracker` detects on the first frame and whenever tracking is lost; otherwise it reuses the
previous frame's box, moved and scaled with the face (a similarity fitted to the Lucas-Kanade
optical flow of the previous landmarks, ~1 ms). The box follows the image, not the landmarks,
so landmark errors do not feed back into it; every ``verify_every`` frames a cheap detection
restricted to the region around the face puts it back on the detector's box (bounding the flow's
drift) or finds the face gone.

Tracking is lost when the optical flow fails, when the new landmarks no longer fit the box (the
face left it), leave the frame or collapse, or when the region check finds no face.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from utils.io.images import check_image
from utils.io.video import VideoReader
from utils.landmarks.base import Box, Face, FaceNotFoundError
from utils.landmarks.detect import FaceLandmarker
from utils.landmarks.filters import OneEuroFilter, OneEuroParams

__all__ = ["TrackedFace", "box_iou", "FaceTracker", "VideoFrame", "LandmarkStream", "track_video"]

logger = logging.getLogger(__name__)


# Landmarks that move rigidly with the head (nose, eye corners): the flow that carries the box.
_RIGID = np.r_[27:36, 36, 39, 42, 45]


@dataclass(frozen=True, eq=False)
class TrackedFace:
    """One frame's result.

    Attributes:
        face: the face with landmarks, or None where no face was found.
        detected: whether a full-frame detection ran on this frame.
        detect_s: seconds spent detecting (full-frame or region check) on this frame.
        landmark_s: seconds spent predicting landmarks on this frame.
        flow_s: seconds spent on optical flow (box motion and tracking check) on this frame.
    """

    face: Face | None
    detected: bool
    detect_s: float
    landmark_s: float
    flow_s: float = 0.0


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class FaceTracker:
    """Per-frame landmarks with detection only on the first frame and when tracking is lost.

    Args:
        landmarker: the `FaceLandmarker` that detects and predicts.
        verify_every: every this many tracked frames, run a region-restricted detection around
            the face: the box snaps back to the detector's, or tracking is lost (0: never).
        min_iou: tracking is lost when the landmarks' own bounding box overlaps their box's
            (the detector-box-sized square around them, as on the detection frame) by less.
        min_face_px: tracking is lost when the landmarks span less than this (pixels).
    """

    def __init__(self, landmarker: FaceLandmarker, *, verify_every: int = 10,
                 min_iou: float = 0.5, min_face_px: float = 16.0) -> None:
        if verify_every < 0:
            raise ValueError(f"verify_every: expected >= 0, got {verify_every}")
        self.landmarker = landmarker
        self.verify_every = verify_every
        self.min_iou = min_iou
        self.min_face_px = min_face_px
        self.reset()

    def reset(self) -> None:
        """Forget the tracked face: the next frame is detected afresh."""
        self._box: Box | None = None
        self._landmarks: np.ndarray | None = None
        self._gray: np.ndarray | None = None
        self._fit: np.ndarray | None = None  # landmark bounds -> box: (dx0, dy0, dx1, dy1) / span
        self._since_check = 0

    def _set_fit(self, box: Box, landmarks: np.ndarray) -> None:
        lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
        span = float((hi - lo).max())
        self._fit = (np.asarray(box) - np.concatenate([lo, hi])) / span

    def _fits(self, landmarks: np.ndarray, box: Box, shape: tuple[int, ...]) -> bool:
        """Landmarks sit in ``box`` as on the detection frame, inside the image, big enough."""
        assert self._fit is not None
        lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
        span = float((hi - lo).max())
        expected = tuple(np.concatenate([lo, hi]) + self._fit * span)
        centre = (lo + hi) / 2
        inside = 0 <= centre[0] < shape[1] and 0 <= centre[1] < shape[0]
        return inside and span >= self.min_face_px and box_iou(expected, box) >= self.min_iou

    def _flow_box(self, gray: np.ndarray) -> Box | None:
        """The previous box moved by the face's optical flow into ``gray``; None when lost."""
        assert self._landmarks is not None and self._gray is not None and self._box is not None
        points = self._landmarks[_RIGID].astype(np.float32).reshape(-1, 1, 2)
        moved, status, _ = cv2.calcOpticalFlowPyrLK(self._gray, gray, points, None,
                                                    winSize=(21, 21), maxLevel=3)
        ok = status.ravel() == 1
        if ok.sum() < len(points) // 2:
            return None
        span = float(np.ptp(self._landmarks, axis=0).max())
        M, inliers = cv2.estimateAffinePartial2D(points[ok], moved[ok], method=cv2.RANSAC,
                                                 ransacReprojThreshold=max(2.0, 0.03 * span))
        if M is None or inliers.sum() < len(points) // 2:
            return None
        x0, y0, x1, y1 = self._box
        centre = M[:, :2] @ np.array([(x0 + x1) / 2, (y0 + y1) / 2]) + M[:, 2]
        half = np.array([x1 - x0, y1 - y0]) / 2 * np.sqrt(abs(np.linalg.det(M[:, :2])))
        return (centre[0] - half[0], centre[1] - half[1], centre[0] + half[0],
                centre[1] + half[1])

    def _verify(self, image: np.ndarray, box: Box) -> Box | None:
        """Region-restricted detection around ``box``: the detector's box there, or None."""
        found = self.landmarker.detect_boxes(image, region=box)
        return max(found, key=lambda f: box_iou(f[0], box))[0] if found else None

    def _track(self, image: np.ndarray, gray: np.ndarray) -> tuple[Face | None, float, float,
                                                                   float]:
        """Landmarks in the previous box moved by the optical flow; face None when lost."""
        start = time.perf_counter()
        box = self._flow_box(gray)
        flow_s = time.perf_counter() - start
        detect_s = landmark_s = 0.0
        if box is not None and self.verify_every and self._since_check >= self.verify_every:
            start = time.perf_counter()
            box = self._verify(image, box)
            detect_s = time.perf_counter() - start
            self._since_check = 0
        face = None
        if box is not None:
            start = time.perf_counter()
            try:
                face = self.landmarker.landmarks_in_box(image, box)
            except FaceNotFoundError:  # a backend that checks (mediapipe): lost
                face = None
            landmark_s = time.perf_counter() - start
            if face is not None and not self._fits(face.landmarks, box, image.shape):
                face = None
        return face, detect_s, landmark_s, flow_s

    def update(self, image_rgb: np.ndarray) -> TrackedFace:
        """Landmarks of the (largest) face in this frame, tracked from the previous one."""
        image = check_image(image_rgb)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        detect_s = landmark_s = flow_s = 0.0
        if self._box is not None:
            face, detect_s, landmark_s, flow_s = self._track(image, gray)
            if face is not None:
                self._box, self._landmarks, self._gray = face.bbox, face.landmarks, gray
                self._since_check += 1
                return TrackedFace(face, False, detect_s, landmark_s, flow_s)
            self.reset()
        start = time.perf_counter()
        found = self.landmarker.detect_boxes(image)
        detect_s += time.perf_counter() - start
        if not found:
            return TrackedFace(None, True, detect_s, landmark_s, flow_s)
        box, score = found[0]
        start = time.perf_counter()
        try:
            face = self.landmarker.landmarks_in_box(image, box, score)
        except FaceNotFoundError:
            return TrackedFace(None, True, detect_s, landmark_s + time.perf_counter() - start, flow_s)
        landmark_s += time.perf_counter() - start
        self._set_fit(box, face.landmarks)
        self._box, self._landmarks, self._gray = face.bbox, face.landmarks, gray
        return TrackedFace(face, True, detect_s, landmark_s, flow_s)


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


class LandmarkStream:
    """Per-frame tracked, filtered landmarks of one video, fed its frames in order.

    The state of a `FaceTracker` and a One Euro filter: a pipeline can feed some frames, do other
    work, and go on with the next frame exactly as one uninterrupted pass would (the video
    pipeline's scan hands its landmarks on to tracking this way, each frame landmarked once).

    Args:
        landmarker: detections and landmarks.
        filter_params: One Euro settings, or None to leave landmarks unfiltered.
        verify_every: see `FaceTracker`.
    """

    def __init__(self, landmarker: FaceLandmarker, *, filter_params: OneEuroParams | None = OneEuroParams(),
                 verify_every: int = 10) -> None:
        self.tracker = FaceTracker(landmarker, verify_every=verify_every)
        self.smoother = OneEuroFilter(filter_params) if filter_params is not None else None
        self.missing = 0

    def __call__(self, index: int, image: np.ndarray, time_s: float, keep_image: bool = True) -> VideoFrame:
        """The landmarks of the next frame (a frame without a face restarts the filter)."""
        result = self.tracker.update(image)
        landmarks = None
        if result.face is None:
            self.missing += 1
            logger.debug("frame %d: no face found", index)
            if self.smoother is not None:
                self.smoother.reset()
        else:
            landmarks = (self.smoother(result.face.landmarks, time_s) if self.smoother is not None
                         else result.face.landmarks)
        return VideoFrame(index, time_s, image if keep_image else None, result.face, landmarks,
                          result.detected, result.detect_s, result.landmark_s, result.flow_s)


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

    Example (a clip without a face: every frame flagged):
        >>> import tempfile
        >>> from utils.io.video_writer import VideoWriter
        >>> path = Path(tempfile.mkdtemp()) / "clip.mp4"
        >>> with VideoWriter(path, fps=25) as writer:
        ...     for k in range(3):
        ...         writer.write(np.full((120, 160, 3), 90, np.uint8))
        >>> with VideoReader(path) as video:
        ...     [frame.landmarks for frame in track_video(video)]
        [None, None, None]
    """
    stream = LandmarkStream(landmarker or FaceLandmarker("dlib"), filter_params=filter_params,
                            verify_every=verify_every)
    owned = not isinstance(source, VideoReader)
    video = VideoReader(source) if owned else source
    try:
        info = video.info
        logger.info("%s: %dx%d at %.3f fps, %d frames", info.path, info.width, info.height,
                    info.fps, info.frame_count)
        for index, image in enumerate(video):
            if max_frames is not None and index >= max_frames:
                break
            yield stream(index, image, index / info.fps, keep_image=keep_images)
    finally:
        if owned:
            video.close()
    if stream.missing:
        logger.warning("%s: no face found on %d frames", info.path, stream.missing)


