"""Re-make the example inputs from the development data in ../shared (run once by the maintainers):

    python examples/make_examples.py

- ``examples/photos/``: 6 frames of LivePortrait's driving video ``d3.mp4`` (one person, head turns
  and expressions), 512x512 JPEG: the photos the demo builds its rig from.
- ``examples/driver.mp4``: the first 150 frames (5 s at 30 fps: a rest, then faces pulled) of LivePortrait's ``d6.mp4``,
  480x480 H.264: the video that drives the rig.

Both videos are driving examples of https://github.com/KwaiVGI/LivePortrait (assets/examples/driving/),
MIT licence (``examples/LICENSE-LivePortrait.txt``).
"""
from __future__ import annotations

import sys

from PIL import Image

from utils.io.video import VideoReader
from utils.io.video_writer import VideoWriter
from utils.paths import EXAMPLES_DIR, SHARED_DATA_DIR

PHOTO_VIDEO, PHOTO_FRAMES = "d3.mp4", (0, 50, 151, 202, 303, 353)
DRIVER_VIDEO, DRIVER_START, DRIVER_FRAMES = "d6.mp4", 0, 150


def main() -> int:
    videos = SHARED_DATA_DIR / "real" / "videos"
    if not videos.is_dir():
        print(f"error: {videos}: the development data is not here", file=sys.stderr)
        return 1
    photos = EXAMPLES_DIR / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    with VideoReader(videos / PHOTO_VIDEO) as reader:
        for index, frame in enumerate(reader):
            if index in PHOTO_FRAMES:
                Image.fromarray(frame).save(photos / f"d3_frame{index:03d}.jpg", quality=88)
            if index >= max(PHOTO_FRAMES):
                break
    with VideoReader(videos / DRIVER_VIDEO) as reader, VideoWriter(EXAMPLES_DIR / "driver.mp4", reader.info.fps,
                                                                   quality=25) as writer:
        for index, frame in enumerate(reader):
            if index >= DRIVER_START + DRIVER_FRAMES:
                break
            if index >= DRIVER_START:
                writer.write(frame)
    size = sum(p.stat().st_size for p in EXAMPLES_DIR.rglob("*") if p.is_file() and "generated" not in p.parts)
    print(f"examples written to {EXAMPLES_DIR} ({size / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
