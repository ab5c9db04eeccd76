"""Drawing landmarks and boxes on images, for overlays that a person checks by eye."""

from __future__ import annotations

from typing import Sequence

import cv2
import numpy as np

from utils.io.images import check_image

_SHIFT = 4  # cv2 fixed-point bits: draw at 1/16 px precision
_ONE = 1 << _SHIFT


def draw_landmarks(image_rgb: np.ndarray, landmarks: np.ndarray,
                   color: tuple[int, int, int] = (0, 255, 0), radius: int = 2) -> np.ndarray:
    """A copy of ``image_rgb`` with a filled dot at each landmark (sub-pixel positioned).

    Args:
        image_rgb: (H, W, 3) uint8 image; left unchanged.
        landmarks: (N, 2) (x, y) pixel coordinates, pixel centres at integers (e.g. 68 points).
            NaN points are not drawn.
        color: RGB colour of the dots.
        radius: dot radius in pixels.
    """
    out = check_image(image_rgb).copy()
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"landmarks: expected shape (N, 2), got {points.shape}")
    for x, y in points[np.isfinite(points).all(axis=1)]:
        cv2.circle(out, (int(round(x * _ONE)), int(round(y * _ONE))), int(radius * _ONE),
                   tuple(int(c) for c in color), thickness=-1, lineType=cv2.LINE_AA,
                   shift=_SHIFT)
    return out


def draw_bbox(image_rgb: np.ndarray, bbox: Sequence[float],
              color: tuple[int, int, int] = (255, 0, 0), thickness: int = 2) -> np.ndarray:
    """A copy of ``image_rgb`` with the box ``bbox`` = (x0, y0, x1, y1) outlined."""
    out = check_image(image_rgb).copy()
    if len(bbox) != 4:
        raise ValueError(f"bbox: expected (x0, y0, x1, y1), got {bbox}")
    x0, y0, x1, y1 = (int(round(float(v) * _ONE)) for v in bbox)
    cv2.rectangle(out, (x0, y0), (x1, y1), tuple(int(c) for c in color), thickness,
                  lineType=cv2.LINE_AA, shift=_SHIFT)
    return out
