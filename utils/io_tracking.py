"""Read ``videos/tracking.npz`` (written by `utils.video_pipeline.TrackingRecorder.save`) in one place.

`load_tracking` is the only reader of the file format: it accepts the current layout (no
``format_version`` key = version 1, the 2-D pixel offset under ``translation``) and the planned one
(``format_version`` 2, the offset under ``trans2d``, optional gaze), and checks keys and shapes at
the boundary, so that exporters and tools work on a `TrackingData` and never on raw npz keys.

Per-frame conventions (docs/conventions.md): ``rotation`` are Euler angles ``(pitch, yaw, roll)`` in
radians with ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` mapping object space to camera space; ``scale``
pixels per mm and ``trans2d`` pixels of the weak-perspective camera; ``detected`` marks frames whose
parameters were fitted to that frame, ``valid`` frames that have parameters at all.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["TrackingData", "TrackingFileError", "load_tracking", "SUPPORTED_FORMAT_VERSIONS"]

#: Versions this reader understands: 1 = today's files (no ``format_version`` key), 2 = ``trans2d``.
SUPPORTED_FORMAT_VERSIONS = (1, 2)
_REQUIRED = ("expression", "rotation", "scale", "detected", "valid", "fps", "expression_names")
_TRANSLATION_KEYS = ("trans2d", "translation")
_GAZE_KEYS = ("gaze_left", "gaze_right")


class TrackingFileError(ValueError):
    """A tracking file is missing, corrupt, of an unknown version, or has missing or ill-shaped arrays."""


@dataclass
class TrackingData:
    """Per-frame tracking of one video.

    Attributes:
        expression: (N, K) float32 expression weights, in ``expression_names`` order.
        rotation: (N, 3) float32 Euler ``(pitch, yaw, roll)``, radians, object -> camera.
        scale: (N,) float32 pixels per mm.
        trans2d: (N, 2) float32 pixels.
        detected: (N,) bool, fitted to that frame. valid: (N,) bool, has parameters.
        fps: frames per second of the video.
        expression_names: K names.
        format_version: the file's version (1 when the file has no ``format_version`` key).
        gaze_left, gaze_right: (N, 2) float32 eye ``(yaw, pitch)`` in radians, the head's convention
            (yaw + turns the gaze towards +x, the face's own left; pitch + down), or None (not tracked).
        model: the face model the tracked rig was built on, or None when the file does not say.
        n_vertices: vertex count of the tracked rig, or None when the file does not say.
        path: the file it was read from, or None.
    """

    expression: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    trans2d: np.ndarray
    detected: np.ndarray
    valid: np.ndarray
    fps: float
    expression_names: List[str]
    format_version: int = 1
    gaze_left: Optional[np.ndarray] = None
    gaze_right: Optional[np.ndarray] = None
    model: Optional[str] = None
    n_vertices: Optional[int] = None
    path: Optional[Path] = None

    @property
    def n_frames(self) -> int:
        return int(self.expression.shape[0])

    @property
    def n_expression(self) -> int:
        return int(self.expression.shape[1])

    @property
    def times(self) -> np.ndarray:
        """Shape: (N,) seconds of each frame, ``i / fps``."""
        return np.arange(self.n_frames, dtype=np.float64) / self.fps


def _read_npz(path: Path) -> dict:
    if not path.is_file():
        raise TrackingFileError(f"tracking file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # zip / header / pickle errors of a corrupt file
        raise TrackingFileError(f"tracking file {path} is corrupt or not an .npz file ({err})") from err


def _version(path: Path, arrays: dict) -> int:
    if "format_version" not in arrays:
        return 1
    raw = arrays["format_version"]
    try:
        version = int(raw)
    except (TypeError, ValueError) as err:
        raise TrackingFileError(f"tracking file {path}: format_version {raw!r} is not an integer") from err
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise TrackingFileError(f"tracking file {path} has format_version {version}; this reader knows "
                                f"{', '.join(map(str, SUPPORTED_FORMAT_VERSIONS))} (written by a newer version?)")
    return version


def _shaped(path: Path, arrays: dict, key: str, shape: tuple, dtype: type) -> np.ndarray:
    """``arrays[key]`` checked against ``shape`` (None = any size) and cast to ``dtype``."""
    value = np.asarray(arrays[key])
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ("," if len(shape) == 1 else "") + ")"
        raise TrackingFileError(f"tracking file {path}: {key} must be {want}, got {value.shape}")
    return value.astype(dtype, copy=False)


def _fps(raw: np.ndarray) -> float:
    """The frame rate as a float, NaN when it is not one number."""
    raw = np.asarray(raw)
    try:
        return float(raw.reshape(-1)[0]) if raw.size == 1 else float("nan")
    except (TypeError, ValueError):
        return float("nan")


def load_tracking(path: Union[str, Path]) -> TrackingData:
    """Read a ``tracking.npz`` of any supported format version.

    Raises:
        TrackingFileError: the file is missing or corrupt, has an unknown ``format_version``, lacks a
            key, has arrays of the wrong shape or disagreeing frame counts, no frames, or a bad fps.

    Shape:
        See `TrackingData` (N frames, K expressions).
    """
    path = Path(path)
    arrays = _read_npz(path)
    version = _version(path, arrays)
    missing = [k for k in _REQUIRED if k not in arrays]
    if not any(k in arrays for k in _TRANSLATION_KEYS):
        missing.append(" or ".join(_TRANSLATION_KEYS))
    if missing:
        raise TrackingFileError(f"tracking file {path} lacks {', '.join(missing)}: not a tracking file of this project")
    names = [str(n) for n in np.atleast_1d(arrays["expression_names"])]
    expression = _shaped(path, arrays, "expression", (None, len(names)), np.float32)
    n = expression.shape[0]
    if n == 0:
        raise TrackingFileError(f"tracking file {path} has no frames")
    fps = _fps(arrays["fps"])
    if not np.isfinite(fps) or fps <= 0:
        raise TrackingFileError(f"tracking file {path}: fps must be a positive number, got {arrays['fps']!r}")
    translation_key = next(k for k in _TRANSLATION_KEYS if k in arrays)
    gaze = {k: _shaped(path, arrays, k, (n, 2), np.float32) if k in arrays else None for k in _GAZE_KEYS}
    data = TrackingData(
        expression=expression,
        rotation=_shaped(path, arrays, "rotation", (n, 3), np.float32),
        scale=_shaped(path, arrays, "scale", (n,), np.float32),
        trans2d=_shaped(path, arrays, translation_key, (n, 2), np.float32),
        detected=_shaped(path, arrays, "detected", (n,), bool),
        valid=_shaped(path, arrays, "valid", (n,), bool),
        fps=fps, expression_names=names, format_version=version,
        gaze_left=gaze["gaze_left"], gaze_right=gaze["gaze_right"],
        model=str(arrays["model"]) if "model" in arrays else None,
        n_vertices=int(arrays["n_vertices"]) if "n_vertices" in arrays else None,
        path=path)
    logger.debug("read %s: %d frames at %.3f fps, %d expressions (format %d)", path, n, fps, len(names), version)
    return data
