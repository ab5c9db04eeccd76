"""MediaPipe's face mesh (468 points + 10 iris points) as an offline landmark backend.

The models are the ones bundled in the ``mediapipe`` wheel (0.10.14, Apache-2.0): the BlazeFace
detectors ``face_detection_full_range_sparse.tflite`` / ``face_detection_short_range.tflite`` and
the attention mesh ``face_landmark_with_attention.tflite`` (478 points: 468 surface points, then
the centre and four rim points of each iris). Nothing is downloaded. The package is imported only
when this backend is constructed; where it is missing, `BackendUnavailableError` says so in one
line. The wheel declares dependencies the project does not want (opencv-contrib-python, whose
``cv2`` would overwrite opencv-python's, and jax); it is installed with ``--no-deps`` next to the
few it needs (``requirements_mediapipe.txt``).

Pipeline (`MediaPipeMesh`):

1. Faces are found on the whole image by MediaPipe's detectors, the full-range model first (it
   finds faces down to ~1/20 of the image side, e.g. small faces in 1080p frames), the
   short-range one where it finds nothing.
2. Each face is cut out as a square of ``crop_scale`` x the box side, resampled so the face has
   about the mesh model's input size (192 px: ``crop_size`` 384 for the default 2x margin), and
   MediaPipe's face-mesh graph runs on that crop (static-image mode, refined eyes, lips, irises).
3. Its normalized points are taken back to original-image pixels.

Points are (x, y) = (column, row) in original-image pixels with pixel centres at integer
coordinates (docs/conventions.md): MediaPipe's normalized ``x`` spans the image from its left
edge (0) to its right edge (1), so ``u = x * width - 0.5``.

The points are tied to the ICT face region by `MeshCorrespondence` (``net_weights/
landmark_mesh_mediapipe.npz``, made by ``calibrate_mesh.py``): a surface point (triangle and
barycentric weights) per mesh point, its measured noise spread, contour and iris flags, and the
(68, 478) weights that give iBUG's 68 points as convex combinations of mesh points.

Licences: MediaPipe and its models are Apache-2.0. (dlib's 68-point predictor, the other offline
backend, was trained on iBUG 300-W, whose annotations are for non-commercial use.)
"""
from __future__ import annotations

import atexit
import logging
import os
import sys
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Optional, Sequence, Union

import cv2
import numpy as np

from utils.landmarks.base import N_LANDMARKS, BackendUnavailableError, Box, FaceNotFoundError, LandmarkError
from utils.paths import NET_WEIGHTS_DIR

if TYPE_CHECKING:  # torch only where the points are computed: a video scan's child process runs without it
    from torch import Tensor

__all__ = ["MESH_POINTS", "SURFACE_POINTS", "IRIS_CENTRES", "MEDIAPIPE_VERSION", "CORRESPONDENCE_PATH",
           "MeshCorrespondenceError", "MeshCorrespondence", "load_mesh_correspondence",
           "save_mesh_correspondence", "MeshFace", "MediaPipeMesh", "MediaPipeBackend"]

logger = logging.getLogger(__name__)

MESH_POINTS = 478  # 468 surface points + 2 x (iris centre, 4 iris rim points)
SURFACE_POINTS = 468
IRIS_CENTRES = (468, 473)  # the image-left iris (the subject's right eye) first on frontal faces
MEDIAPIPE_VERSION = "0.10.14"  # the wheel whose bundled models the correspondence was calibrated on
CORRESPONDENCE_PATH = NET_WEIGHTS_DIR / "landmark_mesh_mediapipe.npz"
MESH_INPUT_PX = 192  # side of the attention mesh model's input
_DETECTORS = {"full": 1, "short": 0}  # MediaPipe's model_selection


class MeshCorrespondenceError(ValueError):
    """A mesh correspondence file is missing or malformed (the message names the file)."""


@dataclass(frozen=True)
class MeshCorrespondence:
    """Where MediaPipe's 478 points sit on the face model, and how they give iBUG's 68.

    Attributes:
        triangle: (478, 3) int64 vertex ids of the face region (model ``region('face')``).
        barycentric: (478, 3) float32 weights on ``triangle`` (rows sum to 1).
        vertex: (478,) int64 the face-region vertex nearest the calibrated point.
        sigma: (478,) float32 robust noise spread of each point around it, eye distances
            (`utils.landmark_noise.landmark_spread`; contour points measured at fixed vertices).
        contour: (478,) bool points on the face outline, which slide with the pose (like dlib's
            jawline): their fixed surface point is only right near a frontal view.
        iris: (478,) bool the 10 iris points (they follow the gaze, not the face surface).
        ibug_weights: (68, 478) float32 convex weights: ``landmarks = ibug_weights @ dense``.
        n_vertices: vertex count of the model region the ids refer to.
        model: name of that region (``"ict/face"``).
    """

    triangle: np.ndarray
    barycentric: np.ndarray
    vertex: np.ndarray
    sigma: np.ndarray
    contour: np.ndarray
    iris: np.ndarray
    ibug_weights: np.ndarray
    n_vertices: int
    model: str

    @property
    def tied(self) -> np.ndarray:
        """(478,) bool points fixed on the face surface: neither contour nor iris."""
        return ~(self.contour | self.iris)

    def points(self, vertices: Tensor) -> Tensor:
        """The calibrated surface points of each mesh point on face-region meshes.

        Shape: vertices (B, V, 3) with V = ``n_vertices`` -> (B, 478, 3).
        """
        if vertices.dim() != 3 or vertices.shape[1:] != (self.n_vertices, 3):
            raise ValueError(f"vertices: expected (B, {self.n_vertices}, 3), got {tuple(vertices.shape)}")
        import torch

        tri = torch.as_tensor(self.triangle, device=vertices.device)
        bary = torch.as_tensor(self.barycentric, dtype=vertices.dtype, device=vertices.device)
        return (vertices[:, tri] * bary[None, :, :, None]).sum(2)

    def to_ibug(self, dense: np.ndarray) -> np.ndarray:
        """iBUG's 68 points from mesh points.

        Shape: dense (..., 478, 2) -> (..., 68, 2), same dtype.
        """
        dense = np.asarray(dense)
        if dense.shape[-2:] != (MESH_POINTS, 2):
            raise ValueError(f"dense: expected (..., {MESH_POINTS}, 2), got {dense.shape}")
        return np.einsum("ji,...ic->...jc", self.ibug_weights.astype(dense.dtype), dense)


_ARRAYS = {"triangle": ((MESH_POINTS, 3), np.integer), "barycentric": ((MESH_POINTS, 3), np.floating),
           "vertex": ((MESH_POINTS,), np.integer), "sigma": ((MESH_POINTS,), np.floating),
           "contour": ((MESH_POINTS,), np.bool_), "iris": ((MESH_POINTS,), np.bool_),
           "ibug_weights": ((N_LANDMARKS, MESH_POINTS), np.floating)}


def save_mesh_correspondence(path: Union[str, Path], correspondence: MeshCorrespondence) -> Path:
    """Write a correspondence file (``.npz``, the arrays of `MeshCorrespondence`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    c = correspondence
    np.savez(path, triangle=c.triangle.astype(np.int64), barycentric=c.barycentric.astype(np.float32),
             vertex=c.vertex.astype(np.int64), sigma=c.sigma.astype(np.float32), contour=c.contour.astype(bool),
             iris=c.iris.astype(bool), ibug_weights=c.ibug_weights.astype(np.float32),
             n_vertices=np.int64(c.n_vertices), model=np.array(c.model))
    return path


def load_mesh_correspondence(path: Union[str, Path, None] = None) -> MeshCorrespondence:
    """Read a correspondence file (default: the shipped ``net_weights/landmark_mesh_mediapipe.npz``).

    Raises:
        MeshCorrespondenceError: the file is missing or unreadable, lacks an array, or an array has
            the wrong shape, type or values (ids out of range, weights not summing to 1).
    """
    path = Path(path) if path is not None else CORRESPONDENCE_PATH
    if not path.is_file():
        raise MeshCorrespondenceError(f"{path}: mesh correspondence file not found (make it with calibrate_mesh.py)")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise MeshCorrespondenceError(f"{path}: not a readable mesh correspondence file (.npz): {err}") from err
    missing = [n for n in (*_ARRAYS, "n_vertices", "model") if n not in arrays]
    if missing:
        raise MeshCorrespondenceError(f"{path}: mesh correspondence file lacks {', '.join(missing)}")
    for name, (shape, kind) in _ARRAYS.items():
        a = arrays[name]
        if a.shape != shape or not np.issubdtype(a.dtype, kind):
            raise MeshCorrespondenceError(f"{path}: '{name}' must be {kind.__name__} {shape}, got "
                                          f"{a.dtype} {a.shape}")
    n = int(arrays["n_vertices"])
    if arrays["triangle"].min() < 0 or arrays["triangle"].max() >= n or arrays["vertex"].max() >= n:
        raise MeshCorrespondenceError(f"{path}: vertex ids outside 0..{n - 1}")
    for name in ("barycentric", "ibug_weights"):
        if not np.allclose(arrays[name].sum(-1), 1.0, atol=1e-3) or not np.isfinite(arrays[name]).all():
            raise MeshCorrespondenceError(f"{path}: the rows of '{name}' must be finite and sum to 1")
    if not (arrays["sigma"] > 0).all():
        raise MeshCorrespondenceError(f"{path}: 'sigma' must be positive")
    return MeshCorrespondence(n_vertices=n, model=str(arrays["model"]),
                              **{name: arrays[name] for name in _ARRAYS})


#: Start-up notes MediaPipe's C++ layers write straight to file descriptor 2 (absl, TFLite), from
#: their own threads, where Python's warnings filters cannot reach them.
_NATIVE_NOISE = (b"inference_feedback_manager", b"absl::InitializeLog", b"gl_context", b"Created TensorFlow Lite")
_stderr_filter: Optional[threading.Thread] = None


def _filter_native_stderr() -> None:
    """From now on, pass the process's stderr (file descriptor 2) through a thread that drops the
    lines of `_NATIVE_NOISE` and forwards every other line; undone at exit, after the last line."""
    global _stderr_filter
    if _stderr_filter is not None:
        return
    sys.stderr.flush()
    read, write = os.pipe()
    original = os.dup(2)
    os.dup2(write, 2)
    os.close(write)

    def forward() -> None:
        with os.fdopen(read, "rb") as lines:
            for line in lines:
                if not any(noise in line for noise in _NATIVE_NOISE):
                    os.write(original, line)

    def restore() -> None:
        sys.stderr.flush()
        os.dup2(original, 2)  # closes the pipe's last writer: the thread reads to its end
        _stderr_filter.join(timeout=2.0)

    _stderr_filter = threading.Thread(target=forward, name="mediapipe-stderr-filter", daemon=True)
    _stderr_filter.start()
    atexit.register(restore)


def _import_mediapipe() -> ModuleType:
    """The mediapipe package, imported on first use with its C++ logging kept quiet."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import mediapipe
    except ImportError as exc:
        raise BackendUnavailableError(
            f"backend 'mediapipe': needs the mediapipe package ({exc}); install it with "
            f"'pip install --no-deps -r requirements_mediapipe.txt'") from exc
    return mediapipe


@dataclass(frozen=True, eq=False)
class MeshFace:
    """One face found by `MediaPipeMesh`.

    Attributes:
        bbox: (x0, y0, x1, y1) detector box, original-image pixels.
        dense: (478, 2) float64 mesh points (x, y), original-image pixels.
        confidence: the detector's score in [0, 1].
    """

    bbox: Box
    dense: np.ndarray
    confidence: float | None


def _boxes_iou(a: Box, b: Box) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


class MediaPipeMesh:
    """MediaPipe's face detectors and face mesh on original-image pixels (no 68-point mapping).

    Args:
        detectors: detector models tried in turn until one finds a face: ``"full"`` (full-range
            sparse, small and distant faces) and / or ``"short"`` (short-range, faces filling
            the frame).
        min_score: detector score threshold.
        crop_scale: side of the square crop the mesh runs on, in box sides.
        crop_size: side of that crop after resampling, pixels (384 with the 2x margin: the face
            at about the mesh model's 192 px input).

    Example (``detect`` returns the faces largest first, each with ``dense`` (478, 2) points):
        >>> mesh = MediaPipeMesh()
        >>> mesh.detect(np.zeros((128, 128, 3), np.uint8))
        []
    """

    def __init__(self, detectors: Sequence[str] = ("full", "short"), min_score: float = 0.5,
                 crop_scale: float = 2.0, crop_size: int = 384) -> None:
        unknown = [d for d in detectors if d not in _DETECTORS]
        if not detectors or unknown:
            raise LandmarkError(f"detectors: expected some of {tuple(_DETECTORS)}, got {tuple(detectors)}")
        if not 0.0 < min_score < 1.0 or crop_scale < 1.0 or crop_size < 64:
            raise LandmarkError(f"min_score in (0, 1), crop_scale >= 1 and crop_size >= 64 expected, got "
                                f"{min_score}, {crop_scale}, {crop_size}")
        mp = _import_mediapipe()
        if mp.__version__ != MEDIAPIPE_VERSION:
            logger.warning("mediapipe %s installed; the mesh correspondence was calibrated with %s",
                           mp.__version__, MEDIAPIPE_VERSION)
        solutions = mp.solutions
        self.detector_names = tuple(detectors)
        _filter_native_stderr()
        self._detectors = {name: solutions.face_detection.FaceDetection(
            min_detection_confidence=min_score, model_selection=_DETECTORS[name]) for name in detectors}
        self._mesh = solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=2,
                                                  refine_landmarks=True, min_detection_confidence=min_score)
        self.crop_scale, self.crop_size = float(crop_scale), int(crop_size)

    def close(self) -> None:
        """Release the MediaPipe graphs."""
        for graph in (*self._detectors.values(), self._mesh):
            graph.close()

    @staticmethod
    def _process(graph: Any, image: np.ndarray) -> Any:
        with warnings.catch_warnings():  # protobuf's deprecation warning on every call
            warnings.simplefilter("ignore")
            return graph.process(image)

    def detect_boxes(self, image: np.ndarray, order: Sequence[str] | None = None
                     ) -> list[tuple[Box, float]]:
        """Face boxes and scores from the first detector (of ``order``) that finds any.

        Overlapping boxes (IoU > 0.3) keep the best score. Boxes are in pixel-centre coordinates.

        Shape: image (H, W, 3) uint8 RGB.
        """
        h, w = image.shape[:2]
        for name in order or self.detector_names:
            result = self._process(self._detectors[name], image)
            found: list[tuple[Box, float]] = []
            for det in result.detections or []:
                b = det.location_data.relative_bounding_box
                box = (b.xmin * w - 0.5, b.ymin * h - 0.5, (b.xmin + b.width) * w - 0.5,
                       (b.ymin + b.height) * h - 0.5)
                if box[2] > box[0] and box[3] > box[1]:
                    found.append((box, float(det.score[0])))
            kept: list[tuple[Box, float]] = []
            for box, score in sorted(found, key=lambda f: -f[1]):
                if all(_boxes_iou(box, k[0]) <= 0.3 for k in kept):
                    kept.append((box, score))
            if kept:
                return kept
        return []

    def _crop(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, float, float, float]:
        """Square crop around ``box`` resampled to ``crop_size``: (crop, left, top, side) with the
        region's first pixel at original (left, top) and ``side`` original pixels across."""
        x0, y0, x1, y1 = box
        side = max(2, int(round(self.crop_scale * max(x1 - x0, y1 - y0))))
        left = int(round((x0 + x1) / 2 - (side - 1) / 2))
        top = int(round((y0 + y1) / 2 - (side - 1) / 2))
        h, w = image.shape[:2]
        region = np.zeros((side, side, 3), np.uint8)
        c0, r0, c1, r1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
        if c1 > c0 and r1 > r0:
            region[r0 - top:r1 - top, c0 - left:c1 - left] = image[r0:r1, c0:c1]
        interp = cv2.INTER_AREA if side > self.crop_size else cv2.INTER_LINEAR
        crop = cv2.resize(region, (self.crop_size, self.crop_size), interpolation=interp)
        return crop, float(left), float(top), float(side)

    def mesh(self, image: np.ndarray, box: Box) -> np.ndarray:
        """The 478 mesh points of the face in ``box``.

        Raises:
            FaceNotFoundError: the mesh graph finds no face in the crop around ``box``.

        Shape: image (H, W, 3) uint8 RGB -> (478, 2) float64 original-image pixels.
        """
        crop, left, top, side = self._crop(image, box)
        result = self._process(self._mesh, crop)
        if not result.multi_face_landmarks:
            raise FaceNotFoundError(f"bbox {tuple(round(v, 1) for v in box)}: MediaPipe's mesh found no face there")
        meshes = [np.array([(p.x, p.y) for p in face.landmark], dtype=np.float64)
                  for face in result.multi_face_landmarks]
        best = min(meshes, key=lambda m: float(np.linalg.norm(m[:SURFACE_POINTS].mean(0) - 0.5)))
        if best.shape != (MESH_POINTS, 2):
            raise LandmarkError(f"MediaPipe's mesh gave {best.shape[0]} points, expected {MESH_POINTS}")
        # normalized crop -> crop pixel centres (x S - 0.5) -> region pixels (x side / S) -> image
        return best * side - 0.5 + np.array([left, top])

    def detect(self, image: np.ndarray) -> list[MeshFace]:
        """Every face with its mesh, largest box first; faces whose mesh fails are left out.

        Shape: image (H, W, 3) uint8 RGB.
        """
        faces = []
        for box, score in self.detect_boxes(image):
            try:
                faces.append(MeshFace(box, self.mesh(image, box), score))
            except FaceNotFoundError as exc:
                logger.debug("%s", exc)
        return sorted(faces, key=lambda f: -(f.bbox[2] - f.bbox[0]) * (f.bbox[3] - f.bbox[1]))


class MediaPipeBackend:
    """`utils.landmarks.FaceLandmarker` backend ``'mediapipe'``: 68 iBUG points derived from the
    mesh by the calibrated weights of ``correspondence``, plus the mesh itself (``Face.dense``).

    Args:
        correspondence: the correspondence file (default: the shipped one).
        **kwargs: `MediaPipeMesh` settings.
    """

    name = "mediapipe"

    def __init__(self, correspondence: Union[str, Path, None] = None, **kwargs: Any) -> None:
        self.correspondence = load_mesh_correspondence(correspondence)
        self._mesh = MediaPipeMesh(**kwargs)

    def detect_boxes(self, image: np.ndarray, face_px: float | None = None, full: bool = False
                     ) -> list[tuple[Box, float | None]]:
        """Boxes and scores; a region search (``face_px`` given: a crop around a known face)
        tries the short-range detector first. ``full`` changes nothing (both detectors search the
        whole image)."""
        order = None if face_px is None else sorted(self._mesh.detector_names, key=lambda n: n != "short")
        return list(self._mesh.detect_boxes(image, order))

    def landmarks_dense(self, image: np.ndarray, box: Box) -> tuple[np.ndarray, np.ndarray]:
        """(68, 2) iBUG points and (478, 2) mesh points of the face in ``box``, float64 pixels."""
        dense = self._mesh.mesh(image, box)
        return self.correspondence.to_ibug(dense), dense

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray:
        """(68, 2) iBUG points of the face in ``box``."""
        return self.landmarks_dense(image, box)[0]
