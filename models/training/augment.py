"""Photometric augmentations for training on synthetic renders: narrow the gap to real photos.

Synthetic crops (`utils.synthetic`) are clean: sharp, noise-free, never compressed, never covered
by hands or hair, and their landmarks are exact. Real photos are none of these. `augment_images`
applies, each with its own probability and in the order a camera would, occluders (the scene),
colour jitter (white balance, exposure, tone curve), Gaussian blur (focus, motion), pixel noise
(the sensor) and JPEG re-encoding (the file). `augment_landmarks` gives exact landmarks the error
of a detector: per-point Gaussian noise, a bias per point shared by all images of one subject (a
detector's systematic error on that face), and optional extra noise on the jawline, where
detectors disagree most.

All randomness comes from the ``numpy.random.Generator`` passed in: the same generator state gives
the same output. With every probability and noise level at zero (`AugmentConfig.identity`) both
functions return their input unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Tuple

import cv2
import numpy as np

from utils.synthetic.scene import sample_background

__all__ = [
    "AugmentConfig",
    "OCCLUDER_KINDS",
    "augment_images",
    "augment_landmarks",
    "occluder_mask",
    "jitter_colour",
    "jpeg_roundtrip",
]

#: Occluder shapes: flat-coloured ellipses and rectangles, and textured patches (a procedural
#: texture from `utils.synthetic.scene.sample_background` inside an ellipse or a rectangle).
OCCLUDER_KINDS: Tuple[str, ...] = ("ellipse", "rectangle", "texture")

# Where occluders go, as (row, column) ranges of their centre in fractions of the crop: the lower
# face (hands, scarves, microphones) and the two sides (hair, hands on cheeks). A 1.2x crop around
# the 68 landmarks has the chin near row 0.9 and the cheeks near columns 0.1 and 0.9.
_OCCLUDER_PLACES = (((0.65, 0.95), (0.25, 0.75)),
                    ((0.2, 0.9), (0.0, 0.25)),
                    ((0.2, 0.9), (0.75, 1.0)))
_JAWLINE = slice(0, 17)


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges of the augmentations (ranges are (low, high), drawn uniformly).

    Attributes:
        occluder_probability: chance that an image gets one occluder.
        occluder_coverage: fraction of the crop an occluder covers.
        occluder_face_probability: chance that the occluder sits over the lower face or a side
            (else anywhere in the crop).
        colour_probability: chance of colour jitter (all of the factors below at once).
        brightness: multiplicative brightness factor in [1 - b, 1 + b].
        contrast: contrast factor in [1 - c, 1 + c] (about the image's mean grey).
        saturation: saturation factor in [1 - s, 1 + s] (about each pixel's grey).
        channel_gain: per-channel gain in [1 - g, 1 + g] (white balance).
        gamma: exponent range of the tone curve ``x ** gamma``.
        blur_probability: chance of a Gaussian blur.
        blur_sigma: blur standard deviation, pixels.
        noise_probability: chance of Gaussian pixel noise.
        noise_std: noise standard deviation, fraction of the [0, 1] intensity range.
        jpeg_probability: chance of JPEG re-encoding.
        jpeg_quality: JPEG quality range (OpenCV, 0-100).
        landmark_noise: standard deviation of the per-point Gaussian landmark noise, pixels.
        landmark_bias: largest per-point bias, pixels (drawn uniformly in a disc, once per call:
            the images of one call are one subject's).
        jawline_noise: extra standard deviation on the 17 jawline points 0-16, pixels.
    """

    occluder_probability: float = 0.3
    occluder_coverage: Tuple[float, float] = (0.02, 0.15)
    occluder_face_probability: float = 0.8
    colour_probability: float = 0.8
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.3
    channel_gain: float = 0.1
    gamma: Tuple[float, float] = (0.8, 1.25)
    blur_probability: float = 0.3
    blur_sigma: Tuple[float, float] = (0.3, 1.5)
    noise_probability: float = 0.5
    noise_std: Tuple[float, float] = (0.0, 0.03)
    jpeg_probability: float = 0.5
    jpeg_quality: Tuple[int, int] = (30, 90)
    landmark_noise: float = 1.0
    landmark_bias: float = 1.0
    jawline_noise: float = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("probability") and not 0.0 <= value <= 1.0:
                raise ValueError(f"AugmentConfig.{f.name}: expected a probability in [0, 1], "
                                 f"got {value}")
            if isinstance(value, tuple) and not (len(value) == 2 and 0 <= value[0] <= value[1]):
                raise ValueError(f"AugmentConfig.{f.name}: expected a range (low, high) with "
                                 f"0 <= low <= high, got {value}")
            if not isinstance(value, tuple) and value < 0:
                raise ValueError(f"AugmentConfig.{f.name}: expected a non-negative value, "
                                 f"got {value}")
        if self.occluder_coverage[1] > 0.3:
            raise ValueError(f"AugmentConfig.occluder_coverage: at most 0.3 of the crop (so that "
                             f"an occluder fits inside it), got {self.occluder_coverage}")
        if self.jpeg_quality[1] > 100:
            raise ValueError(f"AugmentConfig.jpeg_quality: expected values in [0, 100], got "
                             f"{self.jpeg_quality}")

    @classmethod
    def identity(cls) -> "AugmentConfig":
        """A configuration that changes nothing (every probability and noise level zero)."""
        zero = {f.name: 0.0 for f in fields(cls)
                if f.name.endswith("probability") or f.name.startswith(("landmark", "jawline"))}
        return replace(cls(), **zero)


def _uniform(rng: np.random.Generator, bounds: Tuple[float, float]) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def occluder_mask(height: int, width: int, rng: np.random.Generator, config: AugmentConfig,
                  kind: str = "ellipse") -> np.ndarray:
    """Where one random occluder of shape ``kind`` covers a crop: (height, width) bool.

    The shape (a rotated ellipse, or a rectangle for ``"rectangle"``) covers a fraction of the crop
    drawn from ``config.occluder_coverage``; it lies wholly inside the crop, centred over the lower
    face or a side with probability ``config.occluder_face_probability``, else anywhere.
    """
    if kind not in OCCLUDER_KINDS:
        raise ValueError(f"kind: expected one of {OCCLUDER_KINDS}, got {kind!r}")
    area = _uniform(rng, config.occluder_coverage) * height * width
    aspect = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
    ellipse = kind == "ellipse" or (kind == "texture" and rng.random() < 0.5)
    # Semi-axes (a along the columns, b along the rows) of the shape with this area.
    a = np.sqrt(area * aspect / (np.pi if ellipse else 4.0))
    b = a / aspect
    angle = _uniform(rng, (0.0, 180.0)) if ellipse else 0.0
    # Half extents of the (rotated) shape's bounding box keep it inside the crop.
    reach_u = float(np.hypot(a * np.cos(np.radians(angle)), b * np.sin(np.radians(angle))))
    reach_v = float(np.hypot(a * np.sin(np.radians(angle)), b * np.cos(np.radians(angle))))
    if rng.random() < config.occluder_face_probability:
        rows, cols = _OCCLUDER_PLACES[int(rng.integers(len(_OCCLUDER_PLACES)))]
    else:
        rows, cols = (0.0, 1.0), (0.0, 1.0)
    v = float(np.clip(_uniform(rng, rows) * (height - 1), reach_v, height - 1 - reach_v))
    u = float(np.clip(_uniform(rng, cols) * (width - 1), reach_u, width - 1 - reach_u))
    mask = np.zeros((height, width), np.uint8)
    if ellipse:
        # cv2 takes fixed-point coordinates: 4 fractional bits keep sub-pixel sizes.
        s = 16
        cv2.ellipse(mask, (round(u * s), round(v * s)), (round(a * s), round(b * s)), angle,
                    0, 360, 1, thickness=-1, shift=4)
    else:
        r0, r1 = round(v - b), round(v + b)
        c0, c1 = round(u - a), round(u + a)
        mask[max(r0, 0):r1, max(c0, 0):c1] = 1
    return mask.astype(bool)


def _paint_occluder(image: np.ndarray, rng: np.random.Generator,
                    config: AugmentConfig) -> np.ndarray:
    """One occluder of a random kind painted over an (H, W, 3) float image in [0, 1]."""
    height, width = image.shape[:2]
    kind = OCCLUDER_KINDS[int(rng.integers(len(OCCLUDER_KINDS)))]
    mask = occluder_mask(height, width, rng, config, kind)
    if kind == "texture":
        texture, _ = sample_background(rng, max(height, width))
        fill = texture[:height, :width].astype(np.float32) / 255.0
    else:
        fill = np.broadcast_to(rng.random(3).astype(np.float32), image.shape)
    out = image.copy()
    out[mask] = fill[mask]
    return out


def jitter_colour(image: np.ndarray, rng: np.random.Generator,
                  config: AugmentConfig) -> np.ndarray:
    """Random per-channel gain, brightness, contrast, saturation and gamma of an (H, W, 3) float
    image in [0, 1]; the result is clipped to [0, 1]."""
    gain = 1.0 + rng.uniform(-config.channel_gain, config.channel_gain, size=3)
    brightness = 1.0 + _uniform(rng, (-config.brightness, config.brightness))
    contrast = 1.0 + _uniform(rng, (-config.contrast, config.contrast))
    saturation = 1.0 + _uniform(rng, (-config.saturation, config.saturation))
    gamma = _uniform(rng, config.gamma)
    out = image * (gain * brightness).astype(np.float32)
    out = (out - out.mean()) * contrast + out.mean()
    grey = out @ np.array([0.299, 0.587, 0.114], np.float32)
    out = grey[..., None] + (out - grey[..., None]) * saturation
    return np.clip(out, 0.0, 1.0) ** np.float32(gamma)


def jpeg_roundtrip(image: np.ndarray, quality: int) -> np.ndarray:
    """An (H, W, 3) uint8 RGB image JPEG-encoded at ``quality`` (0-100) and decoded again."""
    ok, data = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError(f"OpenCV could not JPEG-encode an image of shape {image.shape}")
    return cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _augment_one(image: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    # Every decision is drawn whether or not it fires, so one image's draws do not depend on
    # which augmentations the previous ones got.
    occlude, colour, blur, noise, jpeg = rng.random(5) < (
        config.occluder_probability, config.colour_probability, config.blur_probability,
        config.noise_probability, config.jpeg_probability)
    if not (occlude or colour or blur or noise or jpeg):
        return image.copy()
    out = image.astype(np.float32) / 255.0
    if occlude:
        out = _paint_occluder(out, rng, config)
    if colour:
        out = jitter_colour(out, rng, config)
    if blur:
        out = cv2.GaussianBlur(out, (0, 0), _uniform(rng, config.blur_sigma))
    if noise:
        std = _uniform(rng, config.noise_std)
        out = out + rng.normal(0.0, std, size=out.shape).astype(np.float32)
    result = np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)
    if jpeg:
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        result = jpeg_roundtrip(result, quality)
    return result


def augment_images(images: np.ndarray, rng: np.random.Generator,
                   config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Augment each image independently (occluder, colour, blur, noise, JPEG, in that order).

    Args:
        images: uint8 RGB crops.
        rng: the source of randomness (deterministic given its state).
        config: probabilities and ranges.

    Shape:
        - images: (G, H, W, 3) uint8
        - output: (G, H, W, 3) uint8
    """
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images: expected a uint8 array of shape (G, H, W, 3), got "
                         f"{images.dtype} {tuple(images.shape)}")
    if len(images) == 0:
        return images.copy()
    return np.stack([_augment_one(image, rng, config) for image in images])


def augment_landmarks(landmarks: np.ndarray, rng: np.random.Generator,
                      config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """Detector-like error on exact landmarks of the G images of one subject.

    Adds per point and image N(0, ``landmark_noise``), plus a bias per point shared by the G images
    (uniform in a disc of radius ``landmark_bias``), plus N(0, ``jawline_noise``) on points 0-16.

    Shape:
        - landmarks: (G, 68, 2) pixels (u, v)
        - output: (G, 68, 2), same dtype (float64 for integer input)
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"landmarks: expected shape (G, 68, 2), got {tuple(landmarks.shape)}")
    dtype = landmarks.dtype if np.issubdtype(landmarks.dtype, np.floating) else np.float64
    noise = rng.normal(0.0, 1.0, size=landmarks.shape) * config.landmark_noise
    radius = config.landmark_bias * np.sqrt(rng.random(68))
    direction = rng.uniform(0.0, 2.0 * np.pi, size=68)
    noise += (radius[:, None] * np.stack([np.cos(direction), np.sin(direction)], axis=1))[None]
    noise[:, _JAWLINE] += rng.normal(0.0, 1.0, size=noise[:, _JAWLINE].shape) * config.jawline_noise
    return (landmarks + noise).astype(dtype)
