"""Face detection and 68-point landmarks, with an offline backend that works everywhere.

One interface, `FaceLandmarker(backend=...)`, over two backends:

- ``'dlib'``: dlib's HOG frontal detector (or its CNN detector) and the 68-point shape predictor
  shipped in the PyPI package face-recognition-models. Offline; the default.
- ``'face_alignment'``: the face-alignment package (2D FAN + SFD detector) that the original
  release used. Its weights download on first use; where they are not in the torch hub cache and
  downloads are not allowed (environment variable ``INORIG_OFFLINE=1``), constructing it raises
  `BackendUnavailableError`.
- ``'mediapipe'``: MediaPipe's face detector and 478-point face mesh from the models bundled in
  the mediapipe wheel (offline, Apache-2.0; `utils.landmarks.mesh`). The 68 points are derived from
  the mesh by calibrated weights, and ``Face.dense`` holds the mesh itself.
- ``'auto'``: face_alignment where it can be had, else dlib with one warning.

Landmarks are (68, 2) (x, y) = (column, row) in original-image pixels, pixel centres at integer
coordinates, iBUG / Multi-PIE order (the order of the face models' landmark indices).

Command line: ``python -m utils.landmarks DIR --out OUTDIR`` writes one overlay PNG per image.
"""
from __future__ import annotations

import functools
import importlib.util
import inspect
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import cv2
import numpy as np
import torch

from utils.io.images import check_image, iter_image_folder
from utils.landmarks.base import (N_LANDMARKS, OFFLINE_ENV, BackendUnavailableError, Box, Face,
                                  FaceNotFoundError, LandmarkBackend, LandmarkError, check_box, offline)
from utils.landmarks.noise import detector_weights

logger = logging.getLogger(__name__)
Backend = Literal["auto", "dlib", "face_alignment", "mediapipe"]
Selection = Literal["largest", "confident", "central"]

# dlib's HOG detector scans an 80x80 window: faces much smaller are missed, much larger cost time.
_HOG_FACE_PX = 110.0


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
    predictor = dlib.shape_predictor(_face_recognition_model("shape_predictor_68_face_landmarks.dat"))
    if detector == "cnn":
        return dlib, predictor, dlib.cnn_face_detection_model_v1(
            _face_recognition_model("mmod_human_face_detector.dat"))
    return dlib, predictor, dlib.get_frontal_face_detector()


def _face_recognition_model(name: str) -> str:
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
        self.detect_max_side = detect_max_side
        self.upsample_max_side = upsample_max_side

    def _scales(self, image: np.ndarray, face_px: float | None) -> list[float]:
        """Image scales to try in turn: the cheapest that should find the face first."""
        if face_px is not None:
            return [float(np.clip(_HOG_FACE_PX / face_px, 0.05, 2.0))]
        side = max(image.shape[:2])
        if side <= self.upsample_max_side:
            # Small image: faces may be below the 80 px HOG window, and the detector's boxes
            # (which the shape predictor was trained on) are finer at 2x.
            return [2.0]
        first = min(1.0, self.detect_max_side / side)
        return [first] if first == 1.0 else [first, 1.0]

    def _run(self, image: np.ndarray) -> list[tuple[Box, float]]:
        if self._cnn:
            pairs = ((d.rect, d.confidence) for d in self._detector(image, 0))
        else:
            rects, scores, _ = self._detector.run(image, 0, 0.0)
            pairs = zip(rects, scores)
        return [((r.left(), r.top(), r.right(), r.bottom()), float(s)) for r, s in pairs]

    def detect_boxes(self, image: np.ndarray, face_px: float | None = None
                     ) -> list[tuple[Box, float | None]]:
        for scale in self._scales(image, face_px):
            found = self._run(image if scale == 1.0 else _resize(image, scale))
            if found:
                # pixel centres at integers: u = (u' + 0.5) / scale - 0.5
                return [(tuple((v + 0.5) / scale - 0.5 for v in box), score)  # type: ignore
                        for box, score in found]
        return []

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._predictor(image, rect)
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


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

    def detect_boxes(self, image: np.ndarray, face_px: float | None = None
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
        try:
            return _FaceAlignmentBackend(device=device)
        except BackendUnavailableError as exc:
            warnings.warn(f"{exc} Falling back to backend='dlib'.", stacklevel=3)
            return _DlibBackend(detector=detector, detect_max_side=detect_max_side)
    raise LandmarkError(f"backend: expected 'auto', 'dlib', 'face_alignment' or 'mediapipe', got "
                        f"{backend!r}")


class FaceLandmarker:
    """Faces in, 68 landmarks out.

    Args:
        backend: ``'auto'`` (face_alignment where its weights can be had, else dlib with one
            warning), ``'dlib'``, ``'face_alignment'`` or ``'mediapipe'`` (also fills
            ``Face.dense``).
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

    def __init__(self, backend: Backend = "auto", *, device: str | None = None,
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
        return detector_weights(self.backend, torch.as_tensor(landmarks))

    def detect_boxes(self, image_rgb: np.ndarray, region: Box | None = None
                     ) -> list[tuple[Box, float | None]]:
        """Face boxes (and scores), largest first; no landmarks.

        Args:
            image_rgb: (H, W, 3) uint8.
            region: search only around this box (a tracked face): the box grown 2x, clipped to
                the image, at a scale that suits a face of this size. Much cheaper.
        """
        image = check_image(image_rgb)
        if region is None:
            found = self._backend.detect_boxes(image)
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

    def detect(self, image_rgb: np.ndarray) -> list[Face]:
        """Every face of an (H, W, 3) uint8 RGB image with its landmarks, largest first.

        An image without a face gives an empty list; a detection the landmark stage rejects
        (`FaceNotFoundError`) is left out.
        """
        image = check_image(image_rgb)
        faces = []
        for box, score in self.detect_boxes(image):
            try:
                faces.append(self.landmarks_in_box(image, box, score))
            except FaceNotFoundError as exc:
                logger.debug("%s", exc)
        return faces


def select_face(faces: Sequence[Face], image_shape: tuple[int, ...],
                select: Selection = "largest") -> Face:
    """Pick one face: the ``'largest'`` box, the most ``'confident'``, or the most ``'central'``."""
    if not faces:
        raise LandmarkError("faces: no face to select from")
    if select == "largest":
        return max(faces, key=lambda f: f.area)
    if select == "confident":
        return max(faces, key=lambda f: -np.inf if f.confidence is None else f.confidence)
    if select == "central":
        centre = np.array([image_shape[1] - 1, image_shape[0] - 1]) / 2
        return min(faces, key=lambda f: float(np.linalg.norm(f.landmarks.mean(0) - centre)))
    raise LandmarkError(f"select: expected 'largest', 'confident' or 'central', got {select!r}")


@dataclass
class FolderFaces:
    """Faces found in an image folder: one per usable image, and why others were skipped."""

    faces: list[tuple[Path, np.ndarray, Face]] = field(default_factory=list)
    skipped: dict[Path, str] = field(default_factory=dict)


def detect_folder(folder: str | Path, landmarker: FaceLandmarker,
                  select: Selection = "largest") -> FolderFaces:
    """One face per image of ``folder`` (sorted by name); unreadable or faceless images skipped.

    With several faces in an image, ``select`` picks one and the choice is logged.
    """
    result = FolderFaces()
    for item in iter_image_folder(folder):
        if item.image is None:
            result.skipped[item.path] = str(item.error)
            continue
        faces = landmarker.detect(item.image)
        if not faces:
            logger.warning("%s: no face found, skipped", item.path)
            result.skipped[item.path] = "no face found"
            continue
        face = select_face(faces, item.image.shape, select)
        if len(faces) > 1:
            logger.info("%s: %d faces, took the %s one (box %s)", item.path, len(faces), select,
                        tuple(round(v, 1) for v in face.bbox))
        result.faces.append((item.path, item.image, face))
    return result
