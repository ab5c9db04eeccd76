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

With several people in view, ``face`` chooses whom to follow on a detection (largest, most central,
most confident, or the N-th from the left, `utils.landmarks.detect.select_box`). After a lost face
the tracker re-detects and takes only a face near where the followed one was last seen (for
``relocate_frames`` frames, about a second), so it does not jump to another person; then, and after
a cut (the frame changes as a whole, `is_cut`), the rule chooses afresh.
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
from utils.landmarks.detect import FaceLandmarker, Selection, select_box
from utils.landmarks.filters import OneEuroFilter, OneEuroParams

__all__ = ["TrackedFace", "box_iou", "is_cut", "FaceTracker", "VideoFrame", "LandmarkStream", "track_video"]

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
        cut: whether this frame starts a new shot (`is_cut`): the face was chosen afresh.
    """

    face: Face | None
    detected: bool
    detect_s: float
    landmark_s: float
    flow_s: float = 0.0
    cut: bool = False


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


#: Mean absolute difference (grey levels of 255) between 32x32 thumbnails of consecutive frames
#: above which the second starts a new shot. The shared videos (no cuts, 9 clips, 2,645 frames) stay
#: at or below 19.9 (d12, hand-held), most below 9 (docs/benchmarks.md); a cut to a similar-looking
#: shot can stay below it, and is then handled as motion (the tracker loses and re-detects the face).
CUT_THRESHOLD = 30.0


def _thumbnail(gray: np.ndarray) -> np.ndarray:
    return cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)


def is_cut(previous: np.ndarray, current: np.ndarray, threshold: float = CUT_THRESHOLD) -> bool:
    """Whether ``current`` starts a new shot after ``previous`` (32x32 grey thumbnails,
    `_thumbnail`): their mean absolute difference exceeds ``threshold``."""
    return float(np.abs(current - previous).mean()) > threshold


def _near(box: Box, last: Box) -> float:
    """How far ``box`` is from ``last`` (centre distance over ``last``'s side); inf when the sizes
    differ by more than 2x."""
    side, last_side = max(box[2] - box[0], box[3] - box[1]), max(last[2] - last[0], last[3] - last[1])
    if not 0.5 < side / max(last_side, 1e-9) < 2.0:
        return float("inf")
    dx = (box[0] + box[2] - last[0] - last[2]) / 2
    dy = (box[1] + box[3] - last[1] - last[3]) / 2
    return float(np.hypot(dx, dy)) / max(last_side, 1e-9)


class FaceTracker:
    """Per-frame landmarks with detection only on the first frame and when tracking is lost.

    Args:
        landmarker: the `FaceLandmarker` that detects and predicts.
        verify_every: every this many tracked frames, run a region-restricted detection around
            the face: the box snaps back to the detector's, or tracking is lost (0: never).
        min_iou: tracking is lost when the landmarks' own bounding box overlaps their box's
            (the detector-box-sized square around them, as on the detection frame) by less.
        min_face_px: tracking is lost when the landmarks span less than this (pixels).
        face: whom to follow where several faces are found (`utils.landmarks.detect.Selection`).
        relocate_frames: after a lost face, this many frames only a face near its last place is
            taken (the same person coming back), then the rule chooses again.
        cut_threshold: see `is_cut` (None: no cut detection).
    """

    def __init__(self, landmarker: FaceLandmarker, *, verify_every: int = 10,
                 min_iou: float = 0.5, min_face_px: float = 16.0, face: Selection = "largest",
                 relocate_frames: int = 25, cut_threshold: float | None = CUT_THRESHOLD) -> None:
        if verify_every < 0:
            raise ValueError(f"verify_every: expected >= 0, got {verify_every}")
        self.landmarker = landmarker
        self.verify_every = verify_every
        self.min_iou = min_iou
        self.min_face_px = min_face_px
        self.face = face
        self.relocate_frames = relocate_frames
        self.cut_threshold = cut_threshold
        self._thumb: np.ndarray | None = None
        self._last_seen: Box | None = None
        self._since_seen = 0
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

    def _choose(self, found: list[tuple[Box, float | None]], shape: tuple[int, ...]
                ) -> tuple[Box, float | None] | None:
        """The detection to follow: near the followed face's last place while it is recent,
        else by the rule ``face``."""
        if self._last_seen is not None and self._since_seen <= self.relocate_frames:
            last = self._last_seen
            near = [f for f in found if _near(f[0], last) < 1.0]
            return min(near, key=lambda f: _near(f[0], last)) if near else None
        return select_box(found, shape, self.face)

    def update(self, image_rgb: np.ndarray) -> TrackedFace:
        """Landmarks of the followed face in this frame, tracked from the previous one."""
        image = check_image(image_rgb)
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        thumb = _thumbnail(gray)
        cut = (self.cut_threshold is not None and self._thumb is not None
               and is_cut(self._thumb, thumb, self.cut_threshold))
        self._thumb = thumb
        if cut:
            logger.info("new shot (cut): choosing the face afresh")
            self.reset()
            self._last_seen = None
        detect_s = landmark_s = flow_s = 0.0
        if self._box is not None:
            face, detect_s, landmark_s, flow_s = self._track(image, gray)
            if face is not None:
                self._box, self._landmarks, self._gray = face.bbox, face.landmarks, gray
                self._last_seen, self._since_seen = face.bbox, 0
                self._since_check += 1
                return TrackedFace(face, False, detect_s, landmark_s, flow_s, cut)
            self.reset()
        self._since_seen += 1
        start = time.perf_counter()
        found = self.landmarker.detect_boxes(image)
        detect_s += time.perf_counter() - start
        chosen = self._choose(found, image.shape)
        if chosen is None:
            return TrackedFace(None, True, detect_s, landmark_s, flow_s, cut)
        box, score = chosen
        start = time.perf_counter()
        try:
            face = self.landmarker.landmarks_in_box(image, box, score)
        except FaceNotFoundError:
            return TrackedFace(None, True, detect_s, landmark_s + time.perf_counter() - start, flow_s, cut)
        landmark_s += time.perf_counter() - start
        self._set_fit(box, face.landmarks)
        self._box, self._landmarks, self._gray = face.bbox, face.landmarks, gray
        self._last_seen, self._since_seen = face.bbox, 0
        return TrackedFace(face, True, detect_s, landmark_s, flow_s, cut)


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
        cut: whether this frame starts a new shot (the face was chosen afresh).
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
    cut: bool = False

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
        verify_every, face: see `FaceTracker`.

    Attributes:
        missing: frames without a face so far. cuts: frame numbers where a new shot began.
    """

    def __init__(self, landmarker: FaceLandmarker, *, filter_params: OneEuroParams | None = OneEuroParams(),
                 verify_every: int = 10, face: Selection = "largest") -> None:
        self.tracker = FaceTracker(landmarker, verify_every=verify_every, face=face)
        self.smoother = OneEuroFilter(filter_params) if filter_params is not None else None
        self.missing = 0
        self.cuts: list[int] = []

    def __call__(self, index: int, image: np.ndarray, time_s: float, keep_image: bool = True) -> VideoFrame:
        """The landmarks of the next frame (a frame without a face restarts the filter)."""
        result = self.tracker.update(image)
        landmarks = None
        if result.cut:
            self.cuts.append(index)
            if self.smoother is not None:
                self.smoother.reset()
        if result.face is None:
            self.missing += 1
            logger.debug("frame %d: no face found", index)
            if self.smoother is not None:
                self.smoother.reset()
        else:
            landmarks = (self.smoother(result.face.landmarks, time_s) if self.smoother is not None
                         else result.face.landmarks)
        return VideoFrame(index, time_s, image if keep_image else None, result.face, landmarks,
                          result.detected, result.detect_s, result.landmark_s, result.flow_s, result.cut)


def track_video(source: str | Path | VideoReader, landmarker: FaceLandmarker | None = None, *,
                filter_params: OneEuroParams | None = OneEuroParams(),
                verify_every: int = 10, max_frames: int | None = None,
                keep_images: bool = True, face: Selection = "largest") -> Iterator[VideoFrame]:
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
        face: whom to follow where several faces are in view (see `FaceTracker`).

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
    stream = LandmarkStream(landmarker or FaceLandmarker(), filter_params=filter_params,
                            verify_every=verify_every, face=face)
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


