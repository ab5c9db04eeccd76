"""What every landmark backend shares: the `Face` record, box and error types, the backend protocol.

Landmarks are (68, 2) (x, y) = (column, row) in original-image pixels, pixel centres at integer
coordinates, iBUG / Multi-PIE order (the order of the face models' landmark indices).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

__all__ = ["N_LANDMARKS", "OFFLINE_ENV", "BACKENDS", "DEFAULT_BACKEND", "DEFAULT_VIDEO_BACKEND", "PIXEL_CONVENTION", "Box", "LandmarkError",
           "BackendUnavailableError", "FaceNotFoundError", "Face", "offline", "check_box", "LandmarkBackend"]

N_LANDMARKS = 68
OFFLINE_ENV = "INORIG_OFFLINE"
#: The landmark backends, offline ones first (`utils.landmarks.detect.FaceLandmarker`).
BACKENDS = ("dlib", "mediapipe", "face_alignment")
#: The backend the demo, the command lines and the pipelines use for photos unless told otherwise.
#: It never downloads anything (face_alignment would). dlib, by the numbers: rigs of one person from
#: two frame sets differ 0.27 of two people's with dlib, 0.37 with MediaPipe (docs/benchmarks.md).
DEFAULT_BACKEND = "dlib"
#: The backend that tracks videos unless told otherwise: MediaPipe's mesh (dense points and irises:
#: expressions correlate 0.90 with the truth vs dlib's 0.73, and the gaze is tracked; docs/benchmarks.md,
#: "Expression fidelity"). Where its package is missing the demo falls back to `DEFAULT_BACKEND`.
DEFAULT_VIDEO_BACKEND = "mediapipe"
#: Where a pixel's centre is, as every landmark file states it (docs/conventions.md, "Pixels").
PIXEL_CONVENTION = ("(x, y) = (column, row) in pixels of the image named; pixel centres at integer coordinates: "
                    "pixel (row i, column j) covers x in [j - 0.5, j + 0.5], y in [i - 0.5, i + 0.5]")
Box = tuple[float, float, float, float]


class LandmarkError(ValueError):
    """Bad input to the landmarker (image, box, option); the message names the argument."""


class BackendUnavailableError(LandmarkError):
    """A landmark backend cannot be constructed here (missing package or model weights)."""


class FaceNotFoundError(LandmarkError):
    """The backend finds no face in the given box (MediaPipe's mesh checks; dlib always answers)."""


@dataclass(frozen=True, eq=False)
class Face:
    """One detected face.

    Attributes:
        bbox: (x0, y0, x1, y1) box the landmarks were predicted in, original-image pixels.
        landmarks: (68, 2) float64 (x, y) in original-image pixels, iBUG order.
        confidence: detector score where the backend gives one (dlib HOG: SVM margin, ~0-3;
            SFD, MediaPipe: probability); None when the face was tracked rather than detected.
        dense: (478, 2) float64 MediaPipe face-mesh points (x, y), original-image pixels, for
            backend ``'mediapipe'`` (`utils.landmarks.mesh`); None for the other backends.
    """

    bbox: Box
    landmarks: np.ndarray
    confidence: float | None = None
    dense: np.ndarray | None = None

    @property
    def area(self) -> float:
        """Box area in pixels^2."""
        x0, y0, x1, y1 = self.bbox
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


def offline() -> bool:
    """Whether downloads are forbidden (``INORIG_OFFLINE`` set to 1/true/yes)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def check_box(box: Sequence[float], name: str = "bbox") -> Box:
    """Validate an (x0, y0, x1, y1) box with x1 > x0 and y1 > y0."""
    values = tuple(float(v) for v in box)
    if len(values) != 4 or not np.isfinite(values).all() or values[2] <= values[0] or \
            values[3] <= values[1]:
        raise LandmarkError(f"{name}: expected (x0, y0, x1, y1) with x1 > x0 and y1 > y0, got "
                            f"{box}")
    return values  # type: ignore[return-value]


class LandmarkBackend(Protocol):
    name: str

    def detect_boxes(self, image: np.ndarray, face_px: float | None = None, full: bool = False
                     ) -> list[tuple[Box, float | None]]: ...

    def landmarks(self, image: np.ndarray, box: Box) -> np.ndarray: ...
