"""Checks of a run's inputs before any work: each failure is one `InputError` naming the path and
the problem, raised within a second or two, before anything is written.

- `check_output_dir`: the output folder can be created and written.
- `check_photo_folder`: a folder with at least one image file that opens.
- `check_video`: a video that opens and has a frame (a folder: its first video by name).
- `check_rig_file`: a rig file that loads and was built on the face model in use.
- `check_file`: any other file that must exist (e.g. network weights).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import List, Optional, Union

from PIL import Image, UnidentifiedImageError

from core.rig.rig import Rig, RigFileError
from utils.io.images import HEIF_EXTENSIONS, IMAGE_EXTENSIONS, ImageReadError, list_images, read_image
from utils.io.video import VideoInfo, VideoReader, VideoReadError

__all__ = ["InputError", "VIDEO_SUFFIXES", "first_video", "check_output_dir", "check_photo_folder",
           "check_video", "check_rig_file", "check_file"]

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
_ZIP_SIGNATURE = b"PK\x03\x04"


class InputError(ValueError):
    """An input of a run is missing or unusable; the message names the path and the problem."""


def first_video(path: Union[str, Path]) -> Path:
    """``path`` itself, or the first video (sorted by name) of a folder.

    Raises:
        InputError: a folder without a video.
    """
    path = Path(path)
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise InputError(f"video folder {path} holds no video ({', '.join(VIDEO_SUFFIXES)})")
        return videos[0]
    return path


def check_output_dir(path: Union[str, Path]) -> Path:
    """Create ``path`` (and its parents) if needed and check that a file can be written there.

    Raises:
        InputError: it cannot be created (a file in the way, no permission, a read-only or
            virtual file system such as /proc) or written.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".inorig_write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise InputError(f"--out {path}: cannot create or write the folder ({err.strerror or err})") from None
    return path


def _opens(path: Path) -> Optional[str]:
    """None where the image's header reads, else why not (decoding happens later, per image)."""
    if path.suffix.lower() in HEIF_EXTENSIONS:
        try:
            read_image(path)
        except ImageReadError as err:
            return str(err)
        return None
    try:
        with Image.open(path) as im:
            im.size
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        return f"{path.name}: not a readable image ({err})"
    return None


def check_photo_folder(path: Union[str, Path]) -> List[Path]:
    """The image files of a photo folder, checked to hold at least one that opens.

    Files that do not open are logged here and skipped (with the reason) when the rig is built.

    Raises:
        InputError: no such folder, no image files in it, or none of them opens.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"photo folder {path}: no such folder")
    if not path.is_dir():
        raise InputError(f"photo folder {path}: is a file, not a folder of photos")
    files = list_images(path)
    if not files:
        raise InputError(f"photo folder {path}: holds no image files ({', '.join(IMAGE_EXTENSIONS)})")
    problems = {p: why for p in files if (why := _opens(p)) is not None}
    for why in problems.values():
        logger.warning("%s (skipped)", why)
    if len(problems) == len(files):
        first = next(iter(problems.values()))
        raise InputError(f"photo folder {path}: none of its {len(files)} image files opens ({first})")
    return [p for p in files if p not in problems]


def check_video(path: Union[str, Path]) -> VideoInfo:
    """The video's container information, checked to open and to give a first frame.

    Raises:
        InputError: no such file, not a video, a truncated container, or no frame.
    """
    path = first_video(path)
    if not path.exists():
        raise InputError(f"video {path}: no such file")
    try:
        with VideoReader(path) as reader:
            info = reader.info
            first = next(iter(reader), None)
    except VideoReadError as err:
        raise InputError(f"video {err}") from None
    if first is None:
        raise InputError(f"video {path}: opens but gives no frame (empty or corrupt)")
    return info


def check_rig_file(path: Union[str, Path], model: Optional[str] = None,
                   n_vertices: Optional[int] = None) -> Rig:
    """Load a rig file, checked to be a rig of face model ``model`` with ``n_vertices`` vertices.

    Raises:
        InputError: no such file, not an .npz archive, not a rig, or a rig of another face model.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"rig file {path}: no such file")
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _ZIP_SIGNATURE:
        kind = "empty" if not head else "something else"
        raise InputError(f"rig file {path}: not a rig.npz (an .npz archive written by this project; "
                         f"this file is {kind})")
    try:
        return Rig.load(path, expect_model=model, expect_vertices=n_vertices)
    except RigFileError as err:
        raise InputError(str(err)) from None


def check_file(path: Union[str, Path], what: str) -> Path:
    """``path`` exists and is a file.

    Raises:
        InputError: it does not, naming ``what`` it was meant to be.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{what} {path}: no such file")
    return path
