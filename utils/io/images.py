"""Reading photos from disk: one image, or every image of a folder, as uint8 RGB arrays.

EXIF orientation is applied (phones store portrait photos as rotated landscape pixels plus a tag),
so landmarks are found on the image as a person sees it. HEIC/HEIF photos (the iPhone default) are
read through pillow-heif, 16-bit and grey images are scaled to 8-bit RGB. A file that cannot be
decoded gives an `ImageReadError` naming it; reading a folder reports such files one by one and goes on.

In memory an image is an (H, W, 3) uint8 RGB array (`check_image`); networks and renderers take
(B, 3, H, W) float tensors in [0, 1] (`to_float_batch`, `to_float`, and back with `to_uint8`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "to_uint8", "to_float", "to_float_batch", "ImageArrayError", "check_image", "ImageReadError",
    "ImageItem", "read_image", "list_images", "iter_image_folder",
]

if TYPE_CHECKING:  # torch is imported where a tensor is made: reading photos needs none of it
    import torch


class ImageArrayError(ValueError):
    """An image array of the wrong shape or type was passed; the message names the argument."""


def check_image(image: np.ndarray, name: str = "image_rgb") -> np.ndarray:
    """Validate an (H, W, 3) uint8 RGB image and return it C-contiguous.

    Raises:
        ImageArrayError: not an (H, W, 3) array, or not uint8.
    """
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", type(image).__name__)
        raise ImageArrayError(f"{name}: expected an (H, W, 3) RGB array, got {shape}")
    if image.dtype != np.uint8:
        raise ImageArrayError(f"{name}: expected dtype uint8, got {image.dtype}")
    return np.ascontiguousarray(image)


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".heic",
                                     ".heif")
HEIF_EXTENSIONS: tuple[str, ...] = (".heic", ".heif")


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


@dataclass(frozen=True)
class ImageItem:
    """One entry of an image folder: the decoded image, or the error that stopped it."""

    path: Path
    image: np.ndarray | None
    error: ImageReadError | None = None


def _register_heif(path: Path) -> None:
    """Let Pillow open HEIC/HEIF files (pillow-heif), imported only when such a file is read."""
    try:
        import pillow_heif
    except ImportError as exc:
        raise ImageReadError(f"{path}: HEIC/HEIF photos need the package pillow-heif (pip install "
                             f"pillow-heif), or convert the photo to JPEG") from exc
    pillow_heif.register_heif_opener()


def _to_rgb8(im: Image.Image) -> np.ndarray:
    """Any Pillow image -> (H, W, 3) uint8 RGB: 16-bit and 32-bit integer greys scaled by 1/257
    (Pillow's own conversion clips them at 255), float greys taken as [0, 1], alpha dropped."""
    if im.mode.startswith("I;16") or im.mode == "I":
        values = np.asarray(im, dtype=np.float64)
        grey = values / 257.0 if values.max(initial=0) > 255 or im.mode.startswith("I;16") else values
    elif im.mode == "F":
        grey = np.asarray(im, dtype=np.float64) * 255.0
    else:
        return np.asarray(im.convert("RGB"))
    grey8 = np.clip(np.round(grey), 0, 255).astype(np.uint8)
    return np.repeat(grey8[..., None], 3, axis=2)


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Grey, palette, 16-bit (grey or colour) and alpha images are converted to 8-bit RGB (alpha is
    dropped); HEIC/HEIF photos need pillow-heif (a requirement of the project).

    Raises:
        ImageReadError: the file does not exist, is not an image, or is truncated/corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    if path.suffix.lower() in HEIF_EXTENSIONS:
        _register_heif(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = _to_rgb8(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot decode image (corrupt, truncated or not an "
                             f"image): {exc}") from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Image files (`IMAGE_EXTENSIONS`, any letter case) directly in ``folder``, sorted by name.

    Raises:
        ImageReadError: ``folder`` is not a directory.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: not a directory of images")
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def iter_image_folder(folder: str | Path) -> Iterator[ImageItem]:
    """Yield every image of ``folder`` in name order; unreadable files come with their error.

    A corrupt file is logged and yielded with ``image=None`` and its `ImageReadError`, so one
    bad file never stops the others. Images are decoded one at a time (bounded memory).
    """
    paths = list_images(folder)
    if not paths:
        logger.warning("%s: no image files (%s)", folder, ", ".join(IMAGE_EXTENSIONS))
    for path in paths:
        try:
            yield ImageItem(path, read_image(path))
        except ImageReadError as exc:
            logger.error("%s", exc)
            yield ImageItem(path, None, exc)


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """(C, H, W) float image in [0, 1] (C = 1 or 3) -> (H, W, 3) uint8."""
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image: expected shape (1 or 3, H, W), got {tuple(image.shape)}")
    arr = image.detach().expand(3, -1, -1).permute(1, 2, 0).cpu().float().numpy()
    return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)


def to_float_batch(images_rgb: np.ndarray) -> torch.Tensor:
    """A stack of uint8 RGB images as one float batch in [0, 1].

    The float conversion is done in numpy: its result is a fresh writable array that torch
    shares (no second copy, and read-only inputs such as decoded frames need no copy to be
    writable).

    Shape:
        - images_rgb: (B, H, W, 3) uint8
        - output: (B, 3, H, W) float32
    """
    if not isinstance(images_rgb, np.ndarray) or images_rgb.ndim != 4 or images_rgb.shape[3] != 3 \
            or images_rgb.dtype != np.uint8:
        desc = f"{images_rgb.shape} {images_rgb.dtype}" if isinstance(images_rgb, np.ndarray) \
            else type(images_rgb)
        raise ValueError(f"images_rgb: expected a (B, H, W, 3) uint8 RGB array, got {desc}")
    import torch

    return torch.from_numpy(images_rgb.astype(np.float32)).permute(0, 3, 1, 2).div_(255.0)


def to_float(image_rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return to_float_batch(check_image(image_rgb)[None])
