"""``tracking.npz``: the per-frame results of tracking a video, written as frames come and read back.

`TrackingRecorder` writes it (rows streamed to scratch files, so memory stays flat whatever the
video's length); `load_tracking` is the one reader of the format: it accepts every version this
project has written and checks keys and shapes at the boundary, so that exporters and tools work on
a `TrackingData` and never on raw npz keys.

Format versions: 1 (no ``format_version`` key; up to 0.6) holds the 2-D pixel offset of the
weak-perspective pose under ``translation``; 2 names it ``trans2d`` (the name the fitters use) and
adds ``format_version``, ``model`` and ``n_vertices`` (the tracked rig's face model and size).

Per-frame conventions (docs/conventions.md): ``rotation`` are Euler angles ``(pitch, yaw, roll)`` in
radians with ``R = Rz(roll) @ Ry(yaw) @ Rx(pitch)`` mapping object space to camera space; ``scale``
pixels per mm and ``trans2d`` pixels of the video frame (weak perspective: ``u = scale * (R X).x +
tx``, ``v = -scale * (R X).y + ty``); ``detected`` marks frames whose parameters were fitted to that
frame, ``valid`` frames that have parameters at all.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
import torch

from core.camera import euler_to_matrix
from core.rig.tracker import FrameTrack

__all__ = ["TRACKING_FORMAT_VERSION", "SUPPORTED_FORMAT_VERSIONS", "TrackingData", "TrackingFileError",
           "TrackingRecorder", "load_tracking"]

#: The version `TrackingRecorder` writes.
TRACKING_FORMAT_VERSION = 2

logger = logging.getLogger(__name__)

#: Versions `load_tracking` reads: 1 (no ``format_version`` key, ``translation``), 2 (``trans2d``).
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


class TrackingRecorder:
    """Per-frame tracking arrays, streamed to scratch files as frames come, then one ``tracking.npz``.

    Rows go to one raw file per array in a scratch folder (so memory stays flat however long the
    video); `save` gathers them into the npz (numpy writes memory-mapped arrays in chunks) and
    removes the scratch folder. Where any frame has a gaze (`FrameTrack.gaze`, from iris points),
    the file also holds ``gaze_left`` / ``gaze_right`` (N, 2) eye ``(yaw, pitch)`` radians in the
    convention `load_tracking` documents, NaN on the frames without one.
    """

    _ROWS = {"expression": None, "rotation": (3,), "scale": (), "trans2d": (2,), "sh": (9, 3),
             "landmarks_2d": (68, 2), "landmarks_detected": (68, 2), "detected": (), "valid": (), "error": (),
             "gaze": (2, 2)}

    def __init__(self, n_expression: int) -> None:
        self.shapes = {k: ((n_expression,) if v is None else v) for k, v in self._ROWS.items()}
        self.dtypes = {k: (np.bool_ if k in ("detected", "valid") else np.float32) for k in self._ROWS}
        self._scratch = Path(tempfile.mkdtemp(prefix="inorig_tracking_"))
        self._files = {k: open(self._scratch / f"{k}.bin", "wb") for k in self._ROWS}
        self.frames = 0
        self.gazed = 0

    def add(self, track: FrameTrack) -> None:
        """Append one frame (NaN where a value does not exist: no lighting, no landmarks)."""
        values = {
            "expression": track.expression, "rotation": track.rotation, "scale": track.scale,
            "trans2d": track.trans2d, "sh": track.sh, "landmarks_2d": track.landmarks_2d,
            "landmarks_detected": track.landmarks, "detected": track.detected, "valid": track.valid,
            "error": track.error, "gaze": getattr(track, "gaze", None),
        }
        self.gazed += int(values["gaze"] is not None)
        for k, v in values.items():
            row = np.full(self.shapes[k], np.nan, self.dtypes[k]) if v is None else \
                np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=self.dtypes[k])
            self._files[k].write(np.ascontiguousarray(row).tobytes())
        self.frames += 1

    def save(self, path: Path, fps: float, expression_names: List[str], model: Optional[str] = None,
             n_vertices: Optional[int] = None) -> Path:
        """Write ``tracking.npz`` (format `TRACKING_FORMAT_VERSION`; keys listed in README.md, with
        the frame rate, conventions and units, and the tracked rig's face model and vertex count)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for f in self._files.values():
            f.close()
        n = self.frames
        arrays = {k: (np.memmap(self._scratch / f"{k}.bin", dtype=self.dtypes[k], mode="r", shape=(n, *shape))
                      if n else np.zeros((0, *shape), self.dtypes[k])) for k, shape in self.shapes.items()}
        gaze = arrays.pop("gaze")
        if self.gazed:  # eyes (left, right) -> the reader's gaze_left / gaze_right rows
            arrays["gaze_left"], arrays["gaze_right"] = np.array(gaze[:, 0]), np.array(gaze[:, 1])
        del gaze
        rotation = torch.from_numpy(np.array(arrays["rotation"]))
        rig = {} if model is None else {"model": np.array(model)}
        if n_vertices is not None:
            rig["n_vertices"] = np.array(n_vertices)
        np.savez(path, **arrays, rotation_matrix=euler_to_matrix(rotation).numpy(), frame_index=np.arange(n),
                 fps=np.array(fps), expression_names=np.array(expression_names), **rig,
                 format_version=np.array(TRACKING_FORMAT_VERSION),
                 camera=np.array("weak_perspective: u = scale * (R X).x + tx, v = -scale * (R X).y + ty"),
                 units=np.array("rotation: Euler (pitch, yaw, roll) radians, R = Rz Ry Rx; scale: pixels per mm; "
                                "trans2d, landmarks: pixels of the video frame (pixel centres at integers); "
                                "sh: camera-space SH lighting (9 x RGB); error: fraction of the eye distance; "
                                "gaze_left, gaze_right: eye (yaw, pitch) radians, yaw + towards the face's left "
                                "(+x), pitch + down, NaN where not tracked"))
        del arrays
        shutil.rmtree(self._scratch, ignore_errors=True)
        return path
