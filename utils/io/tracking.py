"""``tracking.npz``: the per-frame results of tracking a video, written as frames come and read back.
"""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import List

import numpy as np
import torch

from core.camera import euler_to_matrix
from core.rig.tracker import FrameTrack

__all__ = ["TrackingRecorder"]


class TrackingRecorder:
    """Per-frame tracking arrays, streamed to scratch files as frames come, then one ``tracking.npz``.

    Rows go to one raw file per array in a scratch folder (so memory stays flat however long the
    video); `save` gathers them into the npz (numpy writes memory-mapped arrays in chunks) and
    removes the scratch folder.
    """

    _ROWS = {"expression": None, "rotation": (3,), "scale": (), "translation": (2,), "sh": (9, 3),
             "landmarks_2d": (68, 2), "landmarks_detected": (68, 2), "detected": (), "valid": (), "error": ()}

    def __init__(self, n_expression: int) -> None:
        self.shapes = {k: ((n_expression,) if v is None else v) for k, v in self._ROWS.items()}
        self.dtypes = {k: (np.bool_ if k in ("detected", "valid") else np.float32) for k in self._ROWS}
        self._scratch = Path(tempfile.mkdtemp(prefix="inorig_tracking_"))
        self._files = {k: open(self._scratch / f"{k}.bin", "wb") for k in self._ROWS}
        self.frames = 0

    def add(self, track: FrameTrack) -> None:
        """Append one frame (NaN where a value does not exist: no lighting, no landmarks)."""
        values = {
            "expression": track.expression, "rotation": track.rotation, "scale": track.scale,
            "translation": track.trans2d, "sh": track.sh, "landmarks_2d": track.landmarks_2d,
            "landmarks_detected": track.landmarks, "detected": track.detected, "valid": track.valid,
            "error": track.error,
        }
        for k, v in values.items():
            row = np.full(self.shapes[k], np.nan, self.dtypes[k]) if v is None else \
                np.asarray(v.numpy() if isinstance(v, torch.Tensor) else v, dtype=self.dtypes[k])
            self._files[k].write(np.ascontiguousarray(row).tobytes())
        self.frames += 1

    def save(self, path: Path, fps: float, expression_names: List[str]) -> Path:
        """Write ``tracking.npz`` (keys listed in README.md, with the frame rate and conventions)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        for f in self._files.values():
            f.close()
        n = self.frames
        arrays = {k: (np.memmap(self._scratch / f"{k}.bin", dtype=self.dtypes[k], mode="r", shape=(n, *shape))
                      if n else np.zeros((0, *shape), self.dtypes[k])) for k, shape in self.shapes.items()}
        rotation = torch.from_numpy(np.array(arrays["rotation"]))
        np.savez(path, **arrays, rotation_matrix=euler_to_matrix(rotation).numpy(), frame_index=np.arange(n),
                 fps=np.array(fps), expression_names=np.array(expression_names),
                 camera=np.array("weak_perspective: u = scale * (R X).x + tx, v = -scale * (R X).y + ty"),
                 units=np.array("rotation: Euler (pitch, yaw, roll) radians, R = Rz Ry Rx; scale: pixels per mm; "
                                "translation, landmarks: pixels of the video frame"))
        del arrays
        shutil.rmtree(self._scratch, ignore_errors=True)
        return path
