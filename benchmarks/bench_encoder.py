"""x264's speed presets on the video job's kind of frames: encoding CPU, file size and quality (issue 20).

    .venv/bin/python -m benchmarks.bench_encoder [VIDEO ...] [--frames 250] [--presets veryfast superfast ultrafast]

Each video's first ``--frames`` frames (default: ``../shared/data/real/videos/d6.mp4``; the session 21
figures used the job's own three output videos, ``<out>/videos/*.mp4`` of a 250-frame run) are decoded
once, then written with `utils.io.video_writer.VideoWriter` at its default CRF with each preset, one
encoder at a time. Prints a markdown table: the encoders' CPU time (user + system of the ffmpeg
processes, from the children's resource usage), the files' total size, and each video's PSNR of the
decoded frames against the frames written.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np

from benchmarks.bench_eos import children_cpu
from utils.io.video import VideoReader
from utils.io.video_writer import X264_PRESETS, VideoWriter, h264_available

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEO = ROOT.parent / "shared" / "data" / "real" / "videos" / "d6.mp4"


def read_frames(path: Path, count: int) -> List[np.ndarray]:
    """The first ``count`` frames of ``path``, RGB."""
    frames = []
    with VideoReader(path) as reader:
        for frame in reader:
            frames.append(frame.copy())
            if len(frames) == count:
                break
    return frames


def psnr(written: Sequence[np.ndarray], decoded: Sequence[np.ndarray]) -> float:
    """Peak signal-to-noise ratio (dB, 8-bit) of ``decoded`` against ``written``, over all frames."""
    mse = np.mean([np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2) for a, b in zip(written, decoded)])
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("videos", nargs="*", type=Path, default=[DEFAULT_VIDEO])
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--presets", nargs="+", default=["veryfast", "superfast", "ultrafast"], choices=X264_PRESETS)
    args = parser.parse_args(argv)
    if not h264_available():
        raise SystemExit("imageio-ffmpeg's ffmpeg binary is not installed: no H.264 to measure")
    clips = [read_frames(path, args.frames) for path in args.videos]
    print(f"{len(clips)} video(s), {sum(len(c) for c in clips)} frames of "
          f"{clips[0][0].shape[1]} x {clips[0][0].shape[0]}\n")
    print("| x264 preset | encoding CPU (s) | files (MB) | PSNR per video (dB) |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench_encoder_") as work:
        for preset in args.presets:
            cpu, size, quality = 0.0, 0, []
            for k, frames in enumerate(clips):
                path = Path(work) / f"{preset}_{k}.mp4"
                before = children_cpu()
                with VideoWriter(path, 30.0, codec="h264", preset=preset) as writer:
                    for frame in frames:
                        writer.write(frame)
                cpu += children_cpu() - before
                size += path.stat().st_size
                quality.append(psnr(frames, read_frames(path, len(frames))))
            print(f"| {preset} | {cpu:.2f} | {size / 1e6:.2f} | {' / '.join(f'{q:.1f}' for q in quality)} |")


if __name__ == "__main__":
    main()
