"""Reading photos from disk: one image, or every image of a folder, as uint8 RGB arrays.

EXIF orientation is applied (phones store portrait photos as rotated landscape pixels plus a tag),
so landmarks are found on the image as a person sees it. A file that cannot be decoded gives an
`ImageReadError` naming it; reading a folder reports such files one by one and goes on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageReadError(ValueError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


@dataclass(frozen=True)
class ImageItem:
    """One entry of an image folder: the decoded image, or the error that stopped it."""

    path: Path
    image: np.ndarray | None
    error: ImageReadError | None = None


def read_image(path: str | Path) -> np.ndarray:
    """Decode an image file into an (H, W, 3) uint8 RGB array, EXIF orientation applied.

    Grey, palette, 16-bit and alpha images are converted to 8-bit RGB (alpha is dropped).

    Raises:
        ImageReadError: the file does not exist, is not an image, or is truncated/corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such image file")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            rgb = np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(f"{path}: cannot decode image (corrupt, truncated or not an "
                             f"image): {exc}") from exc
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def list_images(folder: str | Path) -> list[Path]:
    """Image files (jpg/jpeg/png/bmp/webp, any letter case) directly in ``folder``, sorted by name.

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
