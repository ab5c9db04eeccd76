"""Square face crops around landmarks, as the original: what the network sees of each photo.

The crop is the landmarks' bounding square grown by ``scale`` (1.2) and resized to ``size``
(256) pixels. A 2x3 similarity transform maps crop pixels to original-image pixels (and its
inverse back), so landmarks, projections and renders move between the two frames exactly.

Pixel centres are at integer coordinates in both frames: crop pixel u_c covers
[u_c - 0.5, u_c + 0.5], and the crop's outer edges (-0.5 and size - 0.5) fall on the square's
edges in the original image.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch

from core.camera import WeakPerspective, apply_similarity_2d, invert_similarity_2d, square_frame
from utils.io.images import check_image, to_float_batch

CROP_SCALE = 1.2
CROP_SIZE = 256


def crop_transform(landmarks: torch.Tensor, scale: float = CROP_SCALE,
                   size: int = CROP_SIZE) -> torch.Tensor:
    """Similarity transforms crop pixels -> original pixels for square crops around landmarks.

    The square is `core.camera.square_frame`'s: centred on the landmarks' bounding box, with side
    ``scale`` times the box's longer side, not rotated.

    Args:
        landmarks: (x, y) points in original-image pixels.
        scale: square side over the landmarks' longer extent.
        size: crop side in pixels.

    Returns:
        ``M`` with ``image_xy = apply_similarity_2d(crop_xy, M)``.

    Shape:
        - landmarks: (B, N, 2)
        - output: (B, 2, 3), dtype and device of landmarks

    Example:
        >>> lm = torch.tensor([[[10.0, 20.0], [110.0, 70.0]]])
        >>> crop_transform(lm, scale=1.0, size=100)
        tensor([[[ 1.0000,  0.0000, 10.5000],
                 [ 0.0000,  1.0000, -4.5000]]])
    """
    if scale <= 0 or size < 1:
        raise ValueError(f"scale, size: expected scale > 0 and size >= 1, got {scale}, {size}")
    step, offset = square_frame(landmarks, scale, size)
    zero = torch.zeros_like(step)
    return torch.stack([torch.stack([step, zero, offset[:, 0]], -1),
                        torch.stack([zero, step, offset[:, 1]], -1)], dim=1)


def _as_points(points: np.ndarray, name: str) -> torch.Tensor:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"{name}: expected shape (N, 2), got {array.shape}")
    return torch.from_numpy(array)[None]


def _map_points(points: np.ndarray, M: np.ndarray) -> np.ndarray:
    """(N, 2) numpy points through a (2, 3) transform, in float64."""
    return apply_similarity_2d(_as_points(points, "points"),
                               torch.from_numpy(np.asarray(M, np.float64))[None])[0].numpy()


@dataclass(frozen=True, eq=False)
class FaceCrop:
    """A face crop and the transforms between it and the original image.

    Attributes:
        image: (size, size, 3) uint8 crop.
        crop_to_image: (2, 3) float64, crop pixels -> original pixels.
        image_to_crop: (2, 3) float64, its inverse.
        landmarks_image: (N, 2) landmarks in original pixels.
        landmarks_crop: (N, 2) the same landmarks in crop pixels.
    """

    image: np.ndarray
    crop_to_image: np.ndarray
    image_to_crop: np.ndarray
    landmarks_image: np.ndarray
    landmarks_crop: np.ndarray

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) crop pixel coordinates -> original-image pixel coordinates."""
        return _map_points(points, self.crop_to_image)

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) original-image pixel coordinates -> crop pixel coordinates."""
        return _map_points(points, self.image_to_crop)

    def pose_in_image(self, pose: WeakPerspective) -> WeakPerspective:
        """A pose fitted in the crop's pixels, seen in the original image's (a scale and a shift,
        so weak perspective stays exact)."""
        m = torch.as_tensor(self.crop_to_image, dtype=pose.scale.dtype)
        return pose.reframed(m[0, 0], m[:, 2])


def _warp(image: np.ndarray, image_to_crop: np.ndarray, size: int) -> np.ndarray:
    """Resample the crop; a large shrink first area-averages so that the crop does not alias."""
    shrink = 1.0 / float(np.hypot(*image_to_crop[0, :2]))  # original pixels per crop pixel
    if shrink > 2.0:
        h, w = image.shape[:2]
        small = cv2.resize(image, (max(1, round(w / shrink)), max(1, round(h / shrink))),
                           interpolation=cv2.INTER_AREA)
        sx, sy = small.shape[1] / w, small.shape[0] / h
        # original -> small pixels: u_s = (u + 0.5) * sx - 0.5, so crop = A (small -> original)
        small_to_image = np.array([[1 / sx, 0, 0.5 / sx - 0.5], [0, 1 / sy, 0.5 / sy - 0.5],
                                   [0, 0, 1]])
        image_to_crop = image_to_crop @ small_to_image
        image = small
    return cv2.warpAffine(image, image_to_crop, (size, size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def crop_face(image_rgb: np.ndarray, landmarks: np.ndarray, scale: float = CROP_SCALE,
              size: int = CROP_SIZE) -> FaceCrop:
    """Square crop of ``image_rgb`` around ``landmarks`` (see `crop_transform`), black outside.

    Args:
        image_rgb: (H, W, 3) uint8.
        landmarks: (N, 2) (x, y) in original pixels, e.g. a `Face`'s 68 landmarks.
        scale: square side over the landmarks' longer extent.
        size: crop side in pixels.
    """
    image_rgb = check_image(image_rgb)
    points = _as_points(landmarks, "landmarks")
    crop_to_image = crop_transform(points, scale, size)
    image_to_crop = invert_similarity_2d(crop_to_image)
    return FaceCrop(
        image=_warp(image_rgb, image_to_crop[0].numpy(), size),
        crop_to_image=crop_to_image[0].numpy(),
        image_to_crop=image_to_crop[0].numpy(),
        landmarks_image=points[0].numpy().copy(),
        landmarks_crop=apply_similarity_2d(points, image_to_crop)[0].numpy(),
    )


def crop_batch(crops: Sequence[FaceCrop]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crops as the solver's and network's inputs.

    Shape:
        -> images (G, 3, S, S) float in [0, 1], landmarks (G, 68, 2) crop pixels.
    """
    if not crops:
        raise ValueError("crop_batch: no crops")
    images = to_float_batch(np.stack([c.image for c in crops]))
    landmarks = torch.from_numpy(np.stack([c.landmarks_crop for c in crops])).float()
    return images, landmarks
