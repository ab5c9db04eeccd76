"""dlib's shape predictor (an ensemble of regression trees, Kazemi and Sullivan 2014) as arrays read
from dlib's own ``.dat`` file and kept in the user cache, run by a compiled pass
(`utils.landmarks._dlib_format.predict`).

Why: ``dlib.shape_predictor`` parses its 100 MB file (the 68-point model of face-recognition-models)
in about 0.45 s, which every photo and video job paid before its first landmark; the same arrays
map from the cache in a few milliseconds (then 1 ms a face to predict, dlib 1.4 ms). The
prediction is dlib's (the same cascade, feature pixels, splits and leaf sums, in the same float32
order), so it gives dlib's landmarks: the tests compare the two on photos, noise and a predictor
dlib trains.

How a prediction runs (dlib's ``shape_predictor::operator()``): the shape starts at the model's
mean shape in the box's unit square; at each cascade level the similarity that maps the mean shape
onto the current one places the level's feature pixels (offsets from anchor landmarks), their
intensities ((R + G + B) / 3, 0 outside the image) are read, each tree walks down by comparing the
differences of two intensities with its thresholds, and the leaves' shape updates are added in turn.
"""
from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Tuple

import numpy as np

from core.user_cache import kept, user_cache_dir

try:  # the reader and the prediction, compiled (setup.py builds them)
    from utils.landmarks import _dlib_format
except ImportError:
    _dlib_format = None

logger = logging.getLogger(__name__)

__all__ = ["ShapePredictor", "read_dlib_predictor", "load_shape_predictor"]

#: The arrays of a predictor, as `utils.landmarks._dlib_format.read_shape_predictor` returns them.
_FIELDS = ("initial", "splits", "thresholds", "leaves", "anchors", "deltas")
_DTYPES = ("float32", "int32", "float32", "float32", "int32", "float32")
#: Bump when the cached arrays' layout changes (the cache folder is named by it).
_CACHE_LAYOUT = 1
#: The cache folder's name hashes this many bytes from each end of the file.
_HASHED_BYTES = 1 << 20


@dataclass(frozen=True, eq=False)
class ShapePredictor:
    """A dlib shape predictor as arrays (C cascade levels of T trees of S splits; L landmarks;
    F feature pixels per level).

    Attributes:
        initial: (2L,) float32, the mean shape (x0, y0, x1, ...) in the box's unit square.
        splits: (C, T, S, 2) int32, the two feature pixels each split compares.
        thresholds: (C, T, S) float32: a tree goes left where their difference exceeds it.
        leaves: (C, T, S + 1, 2L) float32, the shape updates at the leaves.
        anchors: (C, F) int32, the landmark each feature pixel hangs from.
        deltas: (C, F, 2) float32, its offset from it in the mean shape's frame.
    """

    initial: np.ndarray
    splits: np.ndarray
    thresholds: np.ndarray
    leaves: np.ndarray
    anchors: np.ndarray
    deltas: np.ndarray

    @property
    def n_landmarks(self) -> int:
        return self.initial.shape[0] // 2

    def __call__(self, image: np.ndarray, box: Tuple[int, int, int, int]) -> np.ndarray:
        """The landmarks of the face in ``box`` (left, top, right, bottom; integers, dlib's
        rectangle) of ``image`` ((H, W, 3) RGB or (H, W) grey, uint8): (L, 2) float64 pixel
        coordinates, whole numbers as dlib returns them."""
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
            raise ValueError(f"ShapePredictor: expected an (H, W, 3) or (H, W) uint8 image, got "
                             f"{image.shape} {image.dtype}")
        left, top, right, bottom = (int(v) for v in box)
        pixels = image if image.ndim == 3 else image[:, :, None]
        points = _compiled().predict(np.ascontiguousarray(pixels), left, top, right, bottom, *self._arrays)
        return points.astype(np.float64)

    @functools.cached_property
    def _arrays(self) -> Tuple[np.ndarray, ...]:
        """The arrays as plain contiguous ndarrays (views of the mapped files: no copy)."""
        return tuple(np.ascontiguousarray(np.asarray(getattr(self, name))) for name in _FIELDS)


def _compiled() -> Any:
    """`utils.landmarks._dlib_format`.

    Raises:
        ImportError: it is not built (``make install`` builds it).
    """
    if _dlib_format is None:
        raise ImportError("utils.landmarks._dlib_format is not built (make install)")
    return _dlib_format


def read_dlib_predictor(path: str | Path) -> ShapePredictor:
    """A dlib shape predictor file (``.dat``) read into arrays (0.2 s for the 100 MB 68-point model).

    Raises:
        ValueError: the file is not a dlib shape predictor (the message names it).
        OSError: it cannot be read.
    """
    reader = _compiled()
    data = Path(path).read_bytes()
    try:
        return _check(ShapePredictor(**reader.read_shape_predictor(data)))
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _cache_folder(path: Path, cache_dir: Optional[Path]) -> Path:
    """Where ``path``'s arrays are kept: named by the file's name, size and a hash of its first and
    last MiB (the same folder for the same file in every installation, read in about a millisecond)."""
    size = path.stat().st_size
    digest = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        digest.update(f.read(_HASHED_BYTES))
        f.seek(max(0, size - _HASHED_BYTES))
        digest.update(f.read(_HASHED_BYTES))
    return Path(cache_dir or user_cache_dir()) / f"{path.stem}-{size}-{digest.hexdigest()}-v{_CACHE_LAYOUT}"


def _check(predictor: ShapePredictor) -> ShapePredictor:
    """``predictor`` where its arrays fit together (as `read_shape_predictor` makes them).

    Raises:
        ValueError: they do not.
    """
    c, t, s, _ = predictor.splits.shape
    size = predictor.initial.shape[0]
    f = predictor.anchors.shape[1]
    if (predictor.thresholds.shape != (c, t, s) or predictor.leaves.shape != (c, t, s + 1, size)
            or predictor.anchors.shape != (c, f) or predictor.deltas.shape != (c, f, 2)
            or [a.dtype for a in (predictor.initial, predictor.splits, predictor.thresholds, predictor.leaves,
                                  predictor.anchors, predictor.deltas)] != [np.dtype(d) for d in _DTYPES]):
        raise ValueError("its arrays do not fit together")
    return predictor


def load_shape_predictor(path: str | Path, cache_dir: Optional[Path] = None) -> ShapePredictor:
    """The shape predictor in dlib's file ``path``, its arrays mapped from ``cache_dir`` (default
    `user_cache_dir`) where an earlier call saved them, else read from the file and saved there
    (65 MB for the 68-point model; one folder per distinct file, never removed by this code).

    An unreadable cached copy is read again from the file and replaced; where nothing can be
    written the file is read each time.

    Raises:
        ImportError: the compiled reader (`utils.landmarks._dlib_format`) is not built.
        ValueError, OSError: as `read_dlib_predictor`.
    """
    _compiled()  # the predictions need it too
    path = Path(path)
    try:
        folder = _cache_folder(path, cache_dir)
    except RuntimeError:  # no home folder to keep it in
        return read_dlib_predictor(path)
    return kept(folder, _mapped, lambda: read_dlib_predictor(path), _save, "shape predictor")


def _mapped(folder: Path) -> ShapePredictor:
    """The arrays `_save` wrote to ``folder``, mapped (read on first touch)."""
    return _check(ShapePredictor(**{name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
                                    for name in _FIELDS}))


def _save(predictor: ShapePredictor, folder: Path) -> None:
    """``predictor``'s arrays as ``.npy`` files in ``folder`` (made here)."""
    folder.mkdir()
    for name in _FIELDS:
        np.save(folder / f"{name}.npy", getattr(predictor, name), allow_pickle=False)
