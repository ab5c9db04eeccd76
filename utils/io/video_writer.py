"""Streaming video writing: one frame at a time, H.264 where available, else MPEG-4 via OpenCV.

Frames are (H, W, 3) uint8 RGB arrays, all of one size, handed over as they are produced, so
memory stays bounded whatever the video's length. H.264 (libx264, yuv420p: every player reads
it) goes through the ffmpeg binary that imageio-ffmpeg ships; yuv420p needs even sides, so an
odd-sized frame gets its last row / column repeated. Without that binary, OpenCV's ``mp4v``
encoder is used. Use as a context manager (or call `close`): the file is complete only then.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Union

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["VideoWriteError", "VideoWriter", "h264_available", "X264_PRESETS"]

#: x264's speed presets, quickest first (``-preset``): a quicker one spends less CPU per frame on the
#: same constant rate factor, for a larger file.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")


class VideoWriteError(ValueError):
    """A video cannot be written (bad frame, no encoder); the message names the file."""


def h264_available() -> bool:
    """Whether imageio-ffmpeg's ffmpeg binary (with libx264) can be found."""
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError):
        return False
    return True


class VideoWriter:
    """Write RGB frames to a video file as they come.

    Args:
        path: output file (``.mp4``); parent folders are created.
        fps: frame rate.
        codec: ``"h264"``, ``"mp4v"`` or ``"auto"`` (H.264 when available, else mp4v).
        quality: H.264 constant rate factor (lower = better; 18 is visually lossless-ish).
        preset: x264's speed preset (`X264_PRESETS`).

    Example:
        >>> import tempfile
        >>> with VideoWriter(Path(tempfile.mkdtemp()) / "out.mp4", fps=25) as writer:
        ...     for k in range(4):
        ...         writer.write(np.zeros((48, 64, 3), np.uint8))
        >>> writer.frames
        4
    """

    def __init__(self, path: Union[str, Path], fps: float, codec: str = "auto", quality: int = 20,
                 preset: str = "veryfast") -> None:
        if codec not in ("auto", "h264", "mp4v"):
            raise ValueError(f"codec: expected 'auto', 'h264' or 'mp4v', got {codec!r}")
        if preset not in X264_PRESETS:
            raise ValueError(f"preset: expected one of {', '.join(X264_PRESETS)}, got {preset!r}")
        if not fps > 0:
            raise VideoWriteError(f"{path}: frame rate must be positive, got {fps}")
        self.path = Path(path)
        self.fps = float(fps)
        self.quality = int(quality)
        self.preset = preset
        if codec == "auto":
            codec = "h264" if h264_available() else "mp4v"
        elif codec == "h264" and not h264_available():
            raise VideoWriteError(f"{self.path}: H.264 needs the ffmpeg binary of imageio-ffmpeg, not found")
        self.codec = codec
        self.frames = 0
        self._size: Optional[tuple] = None
        self._sink = None
        self._closed = False

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _open(self, height: int, width: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.codec == "h264":
            import imageio_ffmpeg

            self._sink = imageio_ffmpeg.write_frames(
                str(self.path), (width + width % 2, height + height % 2), fps=self.fps, codec="libx264",
                pix_fmt_in="rgb24", pix_fmt_out="yuv420p", macro_block_size=2, quality=None,
                output_params=["-crf", str(self.quality), "-preset", self.preset])
            self._sink.send(None)
        else:
            import cv2

            self._sink = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, (width, height))
            if not self._sink.isOpened():
                raise VideoWriteError(f"{self.path}: OpenCV cannot open an mp4v writer")
        self._size = (height, width)
        logger.debug("%s: writing %dx%d at %.3f fps with %s", self.path, width, height, self.fps, self.codec)

    def write(self, frame: np.ndarray) -> None:
        """Append one (H, W, 3) uint8 RGB frame (the first frame fixes the size)."""
        if self._closed:
            raise VideoWriteError(f"{self.path}: writer already closed")
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            desc = f"{frame.shape} {frame.dtype}" if isinstance(frame, np.ndarray) else type(frame).__name__
            raise VideoWriteError(f"{self.path}: frames must be (H, W, 3) uint8 RGB arrays, got {desc}")
        if self._sink is None:
            self._open(*frame.shape[:2])
        if frame.shape[:2] != self._size:
            raise VideoWriteError(f"{self.path}: frame {self.frames} is {frame.shape[1]}x{frame.shape[0]}, "
                                  f"the video is {self._size[1]}x{self._size[0]}")
        if self.codec == "h264":
            h, w = self._size
            if h % 2 or w % 2:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            self._sink.send(np.ascontiguousarray(frame))
        else:
            import cv2

            self._sink.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file (idempotent). A writer that got no frame writes no file."""
        if self._closed:
            return
        self._closed = True
        if self._sink is None:
            return
        if self.codec == "h264":
            self._sink.close()
        else:
            self._sink.release()
