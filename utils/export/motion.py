"""Per-frame motion ready for export: invalid frames held, head rotations as continuous quaternions.

Hold rule (documented for every exporter): a frame is *good* when the tracker fitted it (``valid``
and ``detected``) and its expression and rotation are finite. Every other frame takes the values of
the last good frame before it; frames before the first good one take the first good frame's values.
A tracking without any good frame cannot drive anything and raises `ExportError`.

Head rotation: the tracked ``R = Rz(roll) Ry(yaw) Rx(pitch)`` maps object space to camera space.
glTF's axes are ours (+y up, +z towards the viewer) and its default camera looks along -z like ours,
so ``R`` is used as it is as the glTF node rotation: a viewer in front of the scene sees the head
turned as the video's camera saw it (yaw +0.3 rad turns the nose towards +x).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from core.camera import euler_to_matrix
from core.camera import matrix_to_quaternion as quaternion_wxyz
from utils.export.errors import ExportError
from utils.io.tracking import TrackingData

logger = logging.getLogger(__name__)

__all__ = ["HeldMotion", "hold_invalid", "matrix_to_quaternion", "continuous_quaternions", "head_quaternions"]


@dataclass
class HeldMotion:
    """Tracking values with invalid frames held (see the module's hold rule).

    Shapes: expression (N, K) float32, rotation (N, 3) float32 Euler radians, gaze_left /
    gaze_right (N, 2) float32 or None, good (N,) bool (the frames that were not held).
    """

    expression: np.ndarray
    rotation: np.ndarray
    good: np.ndarray
    gaze_left: Optional[np.ndarray] = None
    gaze_right: Optional[np.ndarray] = None


def _source_index(good: np.ndarray) -> np.ndarray:
    """Shape: good (N,) bool -> (N,) index of the frame whose values each frame takes."""
    index = np.where(good, np.arange(len(good)), -1)
    index = np.maximum.accumulate(index)
    index[index < 0] = int(np.argmax(good))
    return index


def _hold_gaze(gaze: Optional[np.ndarray], good: np.ndarray) -> Optional[np.ndarray]:
    if gaze is None:
        return None
    ok = good & np.isfinite(gaze).all(axis=1)
    if not ok.any():
        return np.zeros_like(gaze, dtype=np.float32)
    return gaze[_source_index(ok)].astype(np.float32)


def hold_invalid(tracking: TrackingData) -> HeldMotion:
    """Apply the hold rule to a tracking.

    Raises:
        ExportError: no frame of the tracking is good (names the file).
    """
    good = (tracking.valid & tracking.detected & np.isfinite(tracking.expression).all(axis=1)
            & np.isfinite(tracking.rotation).all(axis=1))
    if not good.any():
        raise ExportError(f"tracking {tracking.path or '(in memory)'}: none of its {tracking.n_frames} frames has a "
                          f"tracked face with finite values; nothing to export")
    held = int((~good).sum())
    if held:
        logger.info("tracking %s: %d of %d frames without a tracked face hold the last tracked values",
                    tracking.path, held, tracking.n_frames)
    index = _source_index(good)
    return HeldMotion(expression=tracking.expression[index].astype(np.float32),
                      rotation=tracking.rotation[index].astype(np.float32), good=good,
                      gaze_left=_hold_gaze(tracking.gaze_left, good),
                      gaze_right=_hold_gaze(tracking.gaze_right, good))


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternions ``(x, y, z, w)`` (glTF's order) of rotation matrices
    (`core.camera.matrix_to_quaternion`, reordered).

    Shape:
        R (N, 3, 3) -> (N, 4) float64.
    """
    R = np.asarray(R, np.float64)
    if R.ndim != 3 or R.shape[1:] != (3, 3):
        raise ValueError(f"R must be (N, 3, 3), got {R.shape}")
    q = quaternion_wxyz(torch.from_numpy(R)).numpy()
    return q[:, [1, 2, 3, 0]] / np.linalg.norm(q, axis=1, keepdims=True)


def continuous_quaternions(q: np.ndarray) -> np.ndarray:
    """Flip signs so consecutive quaternions have a non-negative dot product (the first has w >= 0).

    ``q`` and ``-q`` are the same rotation; interpolating between keys of opposite sign takes the
    long way round, so animation keys must keep one sign from frame to frame.

    Shape:
        q (N, 4) -> (N, 4).
    """
    q = np.asarray(q, np.float64)
    if len(q) == 0:
        return q.copy()
    step = np.ones(len(q))
    step[1:] = np.where(np.einsum("ij,ij->i", q[1:], q[:-1]) < 0, -1.0, 1.0)
    step[0] = -1.0 if q[0, 3] < 0 else 1.0
    return q * np.cumprod(step)[:, None]


def head_quaternions(rotation: np.ndarray) -> np.ndarray:
    """glTF node rotations ``(x, y, z, w)`` of tracked Euler angles, sign-continuous over frames.

    Shape:
        rotation (N, 3) Euler ``(pitch, yaw, roll)`` radians -> (N, 4) float32.
    """
    rotation = np.asarray(rotation)
    if rotation.ndim != 2 or rotation.shape[1] != 3:
        raise ValueError(f"rotation must be (N, 3), got {rotation.shape}")
    R = euler_to_matrix(torch.from_numpy(rotation.astype(np.float64))).numpy()
    return continuous_quaternions(matrix_to_quaternion(R)).astype(np.float32)
