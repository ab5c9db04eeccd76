"""Face detection and 68-point landmarks, with an offline backend that works everywhere.

One interface, `FaceLandmarker(backend=...)`, over three backends (`utils.landmarks.base.BACKENDS`):

- ``'dlib'``: dlib's HOG frontal detector (or its CNN detector) and the 68-point shape predictor
  shipped in the PyPI package face-recognition-models. Offline; the default
  (`utils.landmarks.base.DEFAULT_BACKEND`).
- ``'mediapipe'``: MediaPipe's face detector and 478-point face mesh from the models bundled in
  the mediapipe wheel (offline, Apache-2.0; `utils.landmarks.mesh`). The 68 points are derived from
  the mesh by calibrated weights, and ``Face.dense`` holds the mesh itself.
- ``'face_alignment'``: the face-alignment package (2D FAN + SFD detector) that the original
  release used. Its weights download on first use; where they are not in the torch hub cache and
  downloads are not allowed (environment variable ``INORIG_OFFLINE=1``) or fail, constructing it
  raises `BackendUnavailableError` (one line: which files are missing and where they go).
- ``'auto'``: the default backend (kept for older code; it never downloads).

A backend's package is imported only when that backend is chosen, so the default run never
touches face-alignment or mediapipe (nor their warnings).

Photos (`detect` with ``search="full"``, `detect_folder`) are searched at the image's own scale
(capped at `FULL_MAX_SIDE`), so every face the detector can see is found, and the landmarks of a
chosen face are predicted again at a scale that suits it (`FaceLandmarker.at_face_scale`): a face
in a wide group photo gets the same landmarks as the same face cropped alone. Video frames use the
cheaper ``search="fast"``.

Landmarks are (68, 2) (x, y) = (column, row) in original-image pixels, pixel centres at integer
coordinates, iBUG / Multi-PIE order (the order of the face models' landmark indices).

Command line: ``python -m utils.landmarks DIR --out OUTDIR`` writes ``landmarks.json`` (every face
of every image) and, with ``--overlays``, one overlay PNG per image.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Literal, Optional, Sequence, Union

import cv2
import numpy as np

from core.user_cache import kept, user_cache_dir
from utils.io.images import check_image, iter_image_folder, list_images
from utils.landmarks.base import (BACKENDS, DEFAULT_BACKEND, N_LANDMARKS, OFFLINE_ENV,
                                  BackendUnavailableError, Box, Face, FaceNotFoundError, LandmarkBackend,
                                  LandmarkError, check_box, offline)
from utils.landmarks.shape_predictor import load_shape_predictor

if TYPE_CHECKING:  # torch is imported where it is used: detecting photos needs none of it (prefetch)
    import torch

logger = logging.getLogger(__name__)
Backend = Literal["auto", "dlib", "face_alignment", "mediapipe"]
#: Which face of an image: by rule, or the N-th counted from the left (0-based, box centres).
Selection = Union[Literal["largest", "confident", "central"], int]
SELECTION_RULES = ("largest", "central", "confident")
Search = Literal["fast", "full"]

# dlib's HOG detector scans an 80x80 window: faces much smaller are missed, much larger cost time.
_HOG_FACE_PX = 110.0
#: ``search="full"``: photos are searched at their own scale up to this longest side (faces of at
#: least ~80 / FULL_MAX_SIDE of the side are found; emma.jpg, 3913 px: 2 of its 2 frontal faces).
FULL_MAX_SIDE = 2048
#: A chosen face is landmarked again with its box this many pixels wide (dlib). Swept over 160-440
#: (docs/benchmarks.md, "Faces in wide and group photos"): 300 gives a face beside another face the
#: landmarks it gets alone (rig_case1: mean 1.3 %, max 2.2 % of the eye distance, was up to 21 %)
#: and keeps the synthetic renders' accuracy (NME 5.3 %, was 5.6 %).
FACE_SCALE_PX = 300.0
#: dlib's HOG detector scans an image pyramid, each level 5/6 the size of the one above
#: (``pyramid_down(6)``); its boxes are this many pixels wide on the level they are found on.
_HOG_BOX_PX = 73
#: `FaceLandmarker.at_face_scale` takes a box found again around the face where it overlaps the
#: expected one by more than this (intersection over union).
_RESCAN_IOU = 0.3
#: ... so the pyramid levels whose boxes are too small for that (a box of side a inside one of side
#: s overlaps it by at most (a / s)^2) need not be scanned: they held three quarters of its cost.
#: Level 5 here (boxes of 73 * 1.2^k px; level 4's overlap a 300 px box by at most 0.25).
RESCAN_FROM_LEVEL = max(0, math.ceil(math.log(math.sqrt(_RESCAN_IOU) * FACE_SCALE_PX / _HOG_BOX_PX)
                                     / math.log(6 / 5)))


def _resize(image: np.ndarray, scale: float) -> np.ndarray:
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interp)


@functools.lru_cache(maxsize=2)
def _dlib_models(detector: str) -> tuple[Any, Any, Any]:
    """dlib, its 68-point shape predictor and a face detector, loaded once per process (the
    predictor file is ~100 MB)."""
    try:
        import dlib
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend 'dlib': needs the packages dlib-bin and face-recognition-models "
            f"({exc})") from exc
    predictor = shape_predictor(dlib, face_recognition_model("shape_predictor_68_face_landmarks.dat"))
    if detector == "cnn":
        return dlib, predictor, dlib.cnn_face_detection_model_v1(
            face_recognition_model("mmod_human_face_detector.dat"))
    return dlib, predictor, frontal_face_detector(dlib)


def frontal_face_detector(dlib: Any, cache_dir: Optional[Path] = None) -> Any:
    """dlib's HOG frontal face detector, read from a copy saved in ``cache_dir`` (default
    `user_cache_dir`) and saved there on first use.

    Why: ``dlib.get_frontal_face_detector`` builds it by parsing its text form, 0.2 s of every
    photo job's start-up; dlib reads its own saved binary form in about 1 ms, and the two detect
    the same boxes with the same scores (tested). The file is named by dlib's version; an
    unreadable one is replaced, and where nothing can be written the detector is built each time.
    """
    try:
        path = Path(cache_dir or user_cache_dir()) / f"dlib-{dlib.__version__}-frontal_face_detector.svm"
    except RuntimeError:  # no home folder to keep it in
        return dlib.get_frontal_face_detector()
    return kept(path, lambda p: dlib.fhog_object_detector(str(p)), dlib.get_frontal_face_detector,
                lambda detector, partial: detector.save(str(partial)), "face detector",
                errors=(RuntimeError,))


def shape_predictor(dlib: Any, path: str, cache_dir: Optional[Path] = None
                    ) -> Callable[[np.ndarray, tuple[int, int, int, int]], np.ndarray]:
    """dlib's shape predictor in ``path`` as a function (image, box (left, top, right, bottom) in
    whole pixels) -> (L, 2) float64 landmark pixels: the project's copy of it
    (`utils.landmarks.shape_predictor`: the same landmarks, its arrays mapped from ``cache_dir`` in
    milliseconds where dlib parses the file in 0.45 s), or dlib's own where that cannot be had (the
    compiled reader not built, a file it does not read: logged)."""
    try:
        return load_shape_predictor(path, cache_dir)
    except (ImportError, ValueError, OSError) as exc:
        logger.info("dlib's own shape predictor for %s (%s)", path, exc)
    theirs = dlib.shape_predictor(path)
    return lambda image, box: np.array([(p.x, p.y) for p in theirs(image, dlib.rectangle(*box)).parts()],
                                       dtype=np.float64)


def face_recognition_model(name: str) -> str:
    """Path of a model file shipped in the face-recognition-models package, found without importing
    the package (its import loads pkg_resources: 0.13 s of every start-up)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailableError("backend 'dlib': needs the packages dlib-bin and face-recognition-models "
                                      "(face_recognition_models is not installed)")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / name
    if not path.is_file():
        raise BackendUnavailableError(f"backend 'dlib': face-recognition-models has no {path}")
    return str(path)


class _DlibBackend:
    """dlib HOG (or CNN) detector + 68-point shape predictor from face-recognition-models."""

    name = "dlib"

    def __init__(self, detector: str = "hog", detect_max_side: int = 384,
                 upsample_max_side: int = 320) -> None:
        self._dlib, self._predictor, self._detector = _dlib_models(detector)
        self._cnn = detector == "cnn"
        self._pyramid = self._dlib.pyramid_down(6)  # the HOG detector's own
        self.detect_max_side = detect_max_side
        self.upsample_max_side = upsample_max_side

    def _scales(self, image: np.ndarray, face_px: float | None, full: bool = False) -> list[float]:
        """Image scales to try in turn: the cheapest that should find the face first (``full``:
        the image's own scale, capped at `FULL_MAX_SIDE`, so that every face is found)."""
        if face_px is not None:
            return [float(np.clip(_HOG_FACE_PX / face_px, 0.05, 2.0))]
        side = max(image.shape[:2])
        if side <= self.upsample_max_side:
            # Small image: faces may be below the 80 px HOG window, and the detector's boxes
            # (which the shape predictor was trained on) are finer at 2x.
            return [2.0]
        if full:
            return [min(1.0, FULL_MAX_SIDE / side)]
        first = min(1.0, self.detect_max_side / side)
        return [first] if first == 1.0 else [first, 1.0]

    def _run(self, image: np.ndarray) -> list[tuple[Box, float]]:
        if self._cnn:
            pairs = ((d.rect, d.confidence) for d in self._detector(image, 0))
        else:
            rects, scores, _ = self._detector.run(image, 0, 0.0)
            pairs = zip(rects, scores)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in pairs]

    def _run_from_level(self, image: np.ndarray, level: int) -> list[tuple[Box, float]]:
        """`_run`'s boxes found on pyramid level ``level`` and the smaller ones only, in the same
        pixels: the detector scans the image's ``level``-th pyramid level (made as it makes it).

        dlib returns a box found on level j of what it scans as ``rect_up(box, j)``, rounded once;
        the box itself (an integer `_HOG_BOX_PX` square) comes back by ``rect_down`` and goes up all
        ``level + j`` levels, as the whole scan maps it. A box that does not come back as such a
        square (another detector or another dlib's mapping) makes this the whole scan instead.
        """
        if self._cnn or level <= 0:
            return self._run(image)
        small = image
        for _ in range(level):
            small = self._pyramid(small)
        rects, scores, _ = self._detector.run(small, 0, 0.0)
        found = []
        for rect, score in zip(rects, scores):
            j = max(0, round(math.log(max(rect.width(), 1) / _HOG_BOX_PX) / math.log(6 / 5)))
            box = self._pyramid.rect_down(rect, j)
            if box.width() != _HOG_BOX_PX or box.height() != _HOG_BOX_PX or self._pyramid.rect_up(box, j) != rect:
                return self._run(image)
            up = self._pyramid.rect_up(box, level + j)
            found.append(((up.left(), up.top(), up.right(), up.bottom()), float(score)))
        return found

    def detect_boxes(self, image: np.ndarray, face_px: float | None = None, full: bool = False
                     ) -> list[tuple[Box, float | None]]:
        for scale in self._scales(image, face_px, full):
            found = self._run(image if scale == 1.0 else _resize(image, scale))
            if found:
                # pixel centres at integers: u = (u' + 0.5) / scale - 0.5
                return [(tuple((v + 0.5) / scale - 0.5 for v in box), score)  # type: ignore
                        for box, score in found]
        return []

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        return self._predictor(image, tuple(int(round(v)) for v in box))

    def at_face_scale(self, image: np.ndarray, box: Box) -> tuple[Box, np.ndarray]:
        """Box and landmarks of the face in ``box``, detected and predicted again on a window of
        two box sides around it (padded black outside the image) resized so that the box is
        `FACE_SCALE_PX` wide: the detector's box, which the shape predictor was trained on, is
        then as good as for the face alone, whatever the image's size or the face's place in it.
        Only the pyramid levels that can hold a box of about that width are scanned
        (`RESCAN_FROM_LEVEL`): the same box and landmarks in 40 % of the time (10 vs 25 ms a face here).
        """
        window = FaceWindow.around(box, image.shape, FACE_SCALE_PX)
        crop = window.cut(image)
        scaled = window.to_window(np.asarray(box, dtype=np.float64).reshape(2, 2)).ravel()
        found = [b for b, _ in self._run_from_level(crop, RESCAN_FROM_LEVEL)]
        near = [b for b in found if _iou(b, tuple(scaled)) > _RESCAN_IOU]
        chosen = tuple(scaled) if not near else max(near, key=lambda b: _iou(b, tuple(scaled)))
        points = self.landmarks(crop, chosen)  # type: ignore[arg-type]
        back = window.to_image(np.asarray(chosen, dtype=np.float64).reshape(2, 2)).ravel()
        return tuple(float(v) for v in back), window.to_image(points)  # type: ignore[return-value]


def _iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class FaceWindow:
    """A square window of an image around a face, resized: pixel maps between the two frames.

    Pixel centres at integers in both: ``x_window = (x_image - x0 + 0.5) * scale - 0.5``.

    Attributes:
        x0, y0: the window's top-left pixel in the image (may lie outside it: padded).
        side: the window's side in image pixels. size: its side after resizing.
    """

    x0: int
    y0: int
    side: int
    size: int

    @classmethod
    def around(cls, box: Box, shape: tuple[int, ...], face_px: float) -> "FaceWindow":
        """Two box sides around ``box``'s centre, resized so that the box is ``face_px`` wide."""
        x0, y0, x1, y1 = box
        side = max(x1 - x0, y1 - y0, 1.0)
        half = int(np.ceil(side))
        cx, cy = int(round((x0 + x1) / 2)), int(round((y0 + y1) / 2))
        return cls(cx - half, cy - half, 2 * half + 1, max(8, int(round((2 * half + 1) * face_px / side))))

    @property
    def scale(self) -> float:
        """Window pixels per image pixel."""
        return self.size / self.side

    def cut(self, image: np.ndarray) -> np.ndarray:
        """The window of ``image``, black outside it, resized to ``size`` x ``size``."""
        h, w = image.shape[:2]
        r0, c0, r1, c1 = self.y0, self.x0, self.y0 + self.side, self.x0 + self.side
        inside = image[max(0, r0):min(h, r1), max(0, c0):min(w, c1)]
        pads = (max(0, -r0), max(0, r1 - h), max(0, -c0), max(0, c1 - w))
        if any(pads):
            inside = cv2.copyMakeBorder(np.ascontiguousarray(inside), *pads, cv2.BORDER_CONSTANT,
                                        value=(0, 0, 0))
        return np.ascontiguousarray(_resize(np.ascontiguousarray(inside), self.scale))

    def to_window(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) image pixels -> window pixels."""
        return (points - [self.x0, self.y0] + 0.5) * self.scale - 0.5

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) window pixels -> image pixels."""
        return (points + 0.5) / self.scale - 0.5 + [self.x0, self.y0]


def face_alignment_weight_files() -> list[Path]:
    """Where face-alignment caches the 2D-FAN and SFD weights (the torch hub checkpoints dir)."""
    import torch.hub
    from face_alignment.api import models_urls as fan_urls
    from face_alignment.detection.sfd.sfd_detector import models_urls as sfd_urls

    cache = Path(torch.hub.get_dir()) / "checkpoints"
    return [cache / url.rsplit("/", 1)[-1] for url in (fan_urls["2DFAN-4"], sfd_urls["s3fd"])]


class _FaceAlignmentBackend:
    """The face-alignment package's 2D FAN with its SFD detector, as the original used it."""

    name = "face_alignment"

    def __init__(self, device: str | None = None) -> None:
        try:
            import face_alignment
            import torch
        except ImportError as exc:
            raise BackendUnavailableError(
                f"backend 'face_alignment': the face-alignment package is not installed ({exc}); "
                f"use backend='dlib' (offline)") from exc
        weights = face_alignment_weight_files()
        missing = [p for p in weights if not p.is_file()]
        if missing and offline():
            raise BackendUnavailableError(self._missing_message(missing, "downloads are off ("
                                                                f"{OFFLINE_ENV}=1)"))
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        kwargs = {"device": device, "flip_input": False}
        if "compile" in inspect.signature(face_alignment.FaceAlignment).parameters:
            kwargs["compile"] = False
        try:
            self._fa = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **kwargs)
        except Exception as exc:  # the package raises URLError/OSError/RuntimeError alike
            if not missing:
                raise
            raise BackendUnavailableError(self._missing_message(
                missing, f"the download failed: {exc}")) from exc

    @staticmethod
    def _missing_message(missing: list[Path], why: str) -> str:
        return (f"backend 'face_alignment': model weights are missing and {why}. They would be "
                f"cached in {missing[0].parent} as {', '.join(p.name for p in missing)}. Put the "
                f"files there, allow downloads, or use backend='dlib' (offline, always available).")

    def detect_boxes(self, image: np.ndarray, face_px: float | None = None, full: bool = False
                     ) -> list[tuple[Box, float | None]]:
        found = self._fa.face_detector.detect_from_image(image.copy())
        return [(tuple(float(v) for v in d[:4]), float(d[4])) for d in found]  # type: ignore

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        # float64: face-alignment's crop() cannot put a numpy float32 scale into a torch tensor
        det = [np.array([*box, 1.0], dtype=np.float64)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            points = self._fa.get_landmarks_from_image(image, detected_faces=det)
        return np.asarray(points[0][:, :2], dtype=np.float64)


def _make_backend(backend: str, device: str | None, detector: str,
                  detect_max_side: int) -> LandmarkBackend:
    if detector not in ("hog", "cnn"):
        raise LandmarkError(f"detector: expected 'hog' or 'cnn', got {detector!r}")
    if backend == "dlib":
        return _DlibBackend(detector=detector, detect_max_side=detect_max_side)
    if backend == "face_alignment":
        return _FaceAlignmentBackend(device=device)
    if backend == "mediapipe":
        from utils.landmarks.mesh import MediaPipeBackend  # imports mediapipe only now

        return MediaPipeBackend()
    if backend == "auto":
        return _make_backend(DEFAULT_BACKEND, device, detector, detect_max_side)
    names = ", ".join(repr(b) for b in BACKENDS)
    raise LandmarkError(f"backend: expected one of {names} (or 'auto', the default "
                        f"{DEFAULT_BACKEND!r}), got {backend!r}")


class FaceLandmarker:
    """Faces in, 68 landmarks out.

    Args:
        backend: ``'dlib'``, ``'mediapipe'`` (also fills ``Face.dense``) or ``'face_alignment'``;
            default `utils.landmarks.base.DEFAULT_BACKEND` (``'auto'`` means the same).
        device: torch device for face_alignment (default: cuda where available, else cpu).
        detector: dlib detector, ``'hog'`` (fast) or ``'cnn'`` (slower, more robust).
        detect_max_side: dlib detects on a copy downscaled to this longest side first and
            retries at full size only where that finds no face. Images of at most 320 px are
            upsampled 2x instead (their faces may be below HOG's 80 px window, and its boxes,
            which the shape predictor was trained on, are finer there).

    Example:
        >>> lm = FaceLandmarker(backend="dlib")
        >>> lm.detect(np.zeros((64, 64, 3), np.uint8))
        []
    """

    def __init__(self, backend: Backend = DEFAULT_BACKEND, *, device: str | None = None,
                 detector: str = "hog", detect_max_side: int = 384) -> None:
        self._backend = _make_backend(backend, device, detector, detect_max_side)

    @property
    def backend(self) -> str:
        """The backend in use: ``'dlib'``, ``'face_alignment'`` or ``'mediapipe'``."""
        return self._backend.name

    def landmark_weights(self, landmarks: torch.Tensor) -> torch.Tensor | None:
        """Weights of this backend's detections (G, 68, 2) from its measured noise: (G, 68), or
        None where no noise profile is shipped (`utils.landmarks.noise.detector_weights`: dlib's
        jawline ~0.6 of an inner point, and all ~0.26 of what a 1.5 px detector would get).
        Fitters take them as landmark confidence."""
        import torch

        from utils.landmarks.noise import detector_weights

        return detector_weights(self.backend, torch.as_tensor(landmarks))

    def detect_boxes(self, image_rgb: np.ndarray, region: Box | None = None, search: Search = "fast"
                     ) -> list[tuple[Box, float | None]]:
        """Face boxes (and scores), largest first; no landmarks.

        Args:
            image_rgb: (H, W, 3) uint8.
            region: search only around this box (a tracked face): the box grown 2x, clipped to
                the image, at a scale that suits a face of this size. Much cheaper.
            search: ``'fast'`` (dlib: a downscaled copy first, full size only where it finds
                nothing: video frames) or ``'full'`` (the image's own scale up to
                `FULL_MAX_SIDE`: every face of a group photo the detector can see).
        """
        image = check_image(image_rgb)
        if search not in ("fast", "full"):
            raise LandmarkError(f"search: expected 'fast' or 'full', got {search!r}")
        if region is None:
            found = self._backend.detect_boxes(image, full=search == "full")
        else:
            x0, y0, x1, y1 = check_box(region, "region")
            cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0)
            h, w = image.shape[:2]
            c0, r0 = max(0, int(cx - side)), max(0, int(cy - side))
            c1, r1 = min(w, int(np.ceil(cx + side)) + 1), min(h, int(np.ceil(cy + side)) + 1)
            if c1 - c0 < 2 or r1 - r0 < 2:
                return []
            found = self._backend.detect_boxes(image[r0:r1, c0:c1], face_px=side)
            found = [((b[0] + c0, b[1] + r0, b[2] + c0, b[3] + r0), s) for b, s in found]
        return sorted(found, key=lambda f: -(f[0][2] - f[0][0]) * (f[0][3] - f[0][1]))

    def landmarks_in_box(self, image_rgb: np.ndarray, bbox: Box,
                         confidence: float | None = None) -> Face:
        """68 landmarks of the face in ``bbox`` (x0, y0, x1, y1), without detection.

        Raises:
            FaceNotFoundError: the backend finds no face there (mediapipe only).
        """
        image = check_image(image_rgb)
        box = check_box(bbox)
        dense = None
        if hasattr(self._backend, "landmarks_dense"):
            points, dense = self._backend.landmarks_dense(image, box)
        else:
            points = self._backend.landmarks(image, box)
        if points.shape != (N_LANDMARKS, 2):
            raise LandmarkError(f"backend {self.backend}: expected ({N_LANDMARKS}, 2) landmarks, "
                                f"got {points.shape}")
        return Face(bbox=box, landmarks=points, confidence=confidence, dense=dense)

    def at_face_scale(self, image_rgb: np.ndarray, face: Face) -> Face:
        """``face`` landmarked again at a scale that suits it (dlib: `FACE_SCALE_PX`, see
        ``_DlibBackend.at_face_scale``); the other backends already predict on a crop scaled to
        the face (MediaPipe: 384 px, face-alignment: 256 px) and return ``face`` unchanged."""
        if not hasattr(self._backend, "at_face_scale"):
            return face
        box, points = self._backend.at_face_scale(check_image(image_rgb), face.bbox)
        return Face(bbox=box, landmarks=points, confidence=face.confidence, dense=face.dense)

    def detect(self, image_rgb: np.ndarray, search: Search = "fast", face_scale: bool = False) -> list[Face]:
        """Every face of an (H, W, 3) uint8 RGB image with its landmarks, largest first.

        An image without a face gives an empty list; a detection the landmark stage rejects
        (`FaceNotFoundError`) is left out.

        Args:
            search: see `detect_boxes` (``'full'`` for photos with several faces).
            face_scale: landmark each face again at a scale that suits it (`at_face_scale`).
        """
        image = check_image(image_rgb)
        faces = []
        for box, score in self.detect_boxes(image, search=search):
            try:
                face = self.landmarks_in_box(image, box, score)
            except FaceNotFoundError as exc:
                logger.debug("%s", exc)
                continue
            faces.append(self.at_face_scale(image, face) if face_scale else face)
        return faces


def parse_selection(text: str) -> Selection:
    """``'largest'``, ``'central'``, ``'confident'`` or a face number (``'0'``, ``'1'``, ...) -> `Selection`.

    Raises:
        LandmarkError: anything else (the message lists what is accepted).
    """
    value = str(text).strip().lower()
    if value in SELECTION_RULES:
        return value  # type: ignore[return-value]
    if value.isdigit():
        return int(value)
    raise LandmarkError(f"face: expected {', '.join(SELECTION_RULES)} or a face number from the left "
                        f"(0, 1, ...), got {text!r}")


def left_to_right(faces: Sequence[Face]) -> list[Face]:
    """Faces ordered by their box centre from the left: the numbering of ``--face N``."""
    return sorted(faces, key=lambda f: (f.bbox[0] + f.bbox[2]) / 2)


def select_face(faces: Sequence[Face], image_shape: tuple[int, ...],
                select: Selection = "largest") -> Face:
    """Pick one face: the ``'largest'`` box, the most ``'confident'``, the most ``'central'``, or
    the face numbered ``select`` from the left (an int, 0-based, `left_to_right`).

    Raises:
        LandmarkError: no faces, an unknown rule, or a face number the image does not have.
    """
    if not faces:
        raise LandmarkError("faces: no face to select from")
    if isinstance(select, (int, np.integer)) and not isinstance(select, bool):
        ordered = left_to_right(faces)
        if not 0 <= select < len(ordered):
            raise LandmarkError(f"face {select} asked for, but the image has {len(ordered)} face(s) "
                                f"(numbered 0-{len(ordered) - 1} from the left)")
        return ordered[int(select)]
    if select == "largest":
        return max(faces, key=lambda f: f.area)
    if select == "confident":
        return max(faces, key=lambda f: -np.inf if f.confidence is None else f.confidence)
    if select == "central":
        centre = np.array([image_shape[1] - 1, image_shape[0] - 1]) / 2
        return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
    raise LandmarkError(f"select: expected 'largest', 'confident', 'central' or a face number, "
                        f"got {select!r}")


def select_box(boxes: Sequence[tuple[Box, float | None]], image_shape: tuple[int, ...],
               select: Selection = "largest") -> tuple[Box, float | None] | None:
    """`select_face`'s rule on detections without landmarks (box centres stand in for the
    landmarks); None where there is no box or no face of that number."""
    if not boxes:
        return None
    faces = [Face(box, np.tile([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2], (N_LANDMARKS, 1)), score)
             for box, score in boxes]
    try:
        chosen = select_face(faces, image_shape, select)
    except LandmarkError:
        return None
    return boxes[faces.index(chosen)]


@dataclass(frozen=True)
class FaceChoice:
    """Which face of an image was taken, and why (for the summary and the landmark file).

    Attributes:
        faces_found: how many faces the detector found. chosen: the chosen face's number from the
        left (0-based). rule: the selection asked for. bbox: its box in pixels of the photo.
    """

    faces_found: int
    chosen: int
    rule: str
    bbox: Box


@dataclass
class FolderFaces:
    """Faces found in an image folder: one per usable image, which one was chosen, and why other
    images were skipped."""

    faces: list[tuple[Path, np.ndarray, Face]] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)
    choices: dict[Path, FaceChoice] = field(default_factory=dict)
    all_faces: dict[Path, list[Face]] = field(default_factory=dict)
    sizes: dict[Path, tuple[int, int]] = field(default_factory=dict)


def detect_folder(folder: str | Path, landmarker: FaceLandmarker,
                  select: Selection = "largest", face_scale: bool = True,
                  progress: bool = True) -> FolderFaces:
    """One face per image of ``folder`` (sorted by name); unreadable or faceless images skipped.

    Every image is searched at its own scale (``search="full"``); with several faces, ``select``
    picks one and the choice is logged and kept in ``choices``. The chosen face is landmarked again
    at a scale that suits it (``face_scale``, `FaceLandmarker.at_face_scale`). ``all_faces`` holds
    every face found per image, left to right (before the re-landmarking), ``sizes`` every decoded
    image's (width, height).
    """
    from utils.progress import progress_bar

    result = FolderFaces()
    rule = str(select)
    items = iter_image_folder(folder)
    for item in progress_bar(items, total=len(list_images(folder)), desc="landmarks (photos)", unit="image",
                             enabled=progress):
        if item.image is None:
            result.skipped[item.path] = str(item.error)
            continue
        faces = left_to_right(landmarker.detect(item.image, search="full"))
        result.all_faces[item.path] = faces
        result.sizes[item.path] = (int(item.image.shape[1]), int(item.image.shape[0]))
        if not faces:
            logger.warning("%s: no face found, skipped", item.path)
            result.skipped[item.path] = "no face found"
            continue
        try:
            face = select_face(faces, item.image.shape, select)
        except LandmarkError as exc:
            logger.warning("%s: %s, skipped", item.path, exc)
            result.skipped[item.path] = str(exc)
            continue
        index = faces.index(face)
        if face_scale:
            face = landmarker.at_face_scale(item.image, face)
        result.choices[item.path] = FaceChoice(len(faces), index, rule, tuple(float(v) for v in face.bbox))
        if len(faces) > 1:
            logger.info("%s: %d faces, took face %d from the left (%s; box %s, photo pixels)", item.path,
                        len(faces), index, rule if isinstance(select, str) else "asked for",
                        tuple(round(v, 1) for v in face.bbox))
        result.faces.append((item.path, item.image, face))
    return result
