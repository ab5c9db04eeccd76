"""Benchmark: video landmarks with tracking (speed), and what the One Euro filter does (jitter).

For each video: frames per second of the whole pipeline (decode + track + filter), full-frame
detections needed, per-frame detection / landmark / optical-flow times, and the landmark
track's mean frame-to-frame motion and acceleration before and after filtering, with the
filtered track's mean distance from the per-frame landmarks (its lag). A second table times
detection alone on every frame (what tracking saves), and the mean distance between the tracked
landmarks and those from a fresh detection on every frame.

Usage:
    python -m benchmarks.bench_landmarks [VIDEO ...] [--frames N]
(default: every .mp4 in ../shared/data/real/videos relative to the repository root)
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

from utils.io.video import VideoReader  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402
from utils.landmarks.filters import OneEuroParams, mean_deviation, mean_motion  # noqa: E402
from utils.landmarks.tracking import track_video  # noqa: E402

VIDEOS = REPO.parent / "shared" / "data" / "real" / "videos"


def mean_acceleration(track: np.ndarray) -> float:
    """Mean second difference (px/frame^2) of a (T, N, 2) track: jitter shows up here."""
    return float(np.nanmean(np.linalg.norm(np.diff(track, n=2, axis=0), axis=-1)))


def bench_tracking(path: Path, landmarker: FaceLandmarker, max_frames: int | None) -> dict:
    """Run the tracked, filtered pipeline over one video and collect its figures."""
    raw, filtered, detect, landmark, flow, detected = [], [], [], [], [], 0
    start = time.perf_counter()
    for frame in track_video(path, landmarker, filter_params=OneEuroParams(),
                             max_frames=max_frames, keep_images=False):
        nan = np.full((68, 2), np.nan)
        raw.append(frame.face.landmarks if frame.face is not None else nan)
        filtered.append(frame.landmarks if frame.landmarks is not None else nan)
        detect.append(frame.detect_s)
        landmark.append(frame.landmark_s)
        flow.append(frame.flow_s)
        detected += frame.detected
    seconds = time.perf_counter() - start
    raw_a, filt_a = np.array(raw), np.array(filtered)
    return {
        "video": path.name, "frames": len(raw), "fps": len(raw) / seconds,
        "with_face": int((~np.isnan(raw_a[:, 0, 0])).sum()), "detections": detected,
        "detect_ms": 1e3 * float(np.mean(detect)), "landmark_ms": 1e3 * float(np.mean(landmark)),
        "flow_ms": 1e3 * float(np.mean(flow)),
        "motion_raw": mean_motion(raw_a), "motion_filt": mean_motion(filt_a),
        "accel_raw": mean_acceleration(raw_a), "accel_filt": mean_acceleration(filt_a),
        "deviation": mean_deviation(filt_a, raw_a), "track": raw_a,
    }


def bench_detection(path: Path, landmarker: FaceLandmarker, full_size: FaceLandmarker,
                    max_frames: int, track: np.ndarray) -> dict:
    """Time full-frame detection and landmarks separately on every frame (no tracking); also
    detection without the downscaled first pass, and how far the tracked landmarks (``track``)
    are from these per-frame ones."""
    detect, detect_full, landmark, found = [], [], [], 0
    per_frame = np.full((min(max_frames, len(track)), 68, 2), np.nan)
    with VideoReader(path) as video:
        for index, image in enumerate(video):
            if index >= max_frames:
                break
            start = time.perf_counter()
            full_size.detect_boxes(image)
            detect_full.append(time.perf_counter() - start)
            start = time.perf_counter()
            boxes = landmarker.detect_boxes(image)
            detect.append(time.perf_counter() - start)
            if boxes:
                found += 1
                start = time.perf_counter()
                face = landmarker.landmarks_in_box(image, boxes[0][0])
                landmark.append(time.perf_counter() - start)
                if index < len(per_frame):
                    per_frame[index] = face.landmarks
        size = f"{video.info.width}x{video.info.height}"
    return {"video": path.name, "size": size, "frames": len(detect), "found": found,
            "detect_ms": 1e3 * float(np.mean(detect)),
            "detect_full_ms": 1e3 * float(np.mean(detect_full)),
            "landmark_ms": 1e3 * float(np.mean(landmark)) if landmark else float("nan"),
            "tracked_vs_detected": mean_deviation(track[:len(per_frame)], per_frame)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("videos", nargs="*", type=Path)
    parser.add_argument("--frames", type=int, default=None,
                        help="frames per video for the tracking table (default: all)")
    parser.add_argument("--detect-frames", type=int, default=100,
                        help="frames per video for the detection-only table")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    videos = args.videos or sorted(VIDEOS.glob("*.mp4"))
    if not videos:
        print(f"no videos given and none in {VIDEOS}", file=sys.stderr)
        return 1
    landmarker = FaceLandmarker("dlib")

    print("Tracking (decode + track + One Euro filter), dlib backend\n")
    print("| video | frames | with face | full detections | fps | detect ms/frame | "
          "landmarks ms/frame | flow ms/frame | motion raw -> filtered (px/frame) | "
          "accel raw -> filtered (px/frame^2) | filtered - raw (px) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    tracks = {}
    for path in videos:
        r = bench_tracking(path, landmarker, args.frames)
        tracks[path] = r["track"]
        print(f"| {r['video']} | {r['frames']} | {r['with_face']} | {r['detections']} | "
              f"{r['fps']:.0f} | {r['detect_ms']:.2f} | {r['landmark_ms']:.2f} | "
              f"{r['flow_ms']:.2f} | {r['motion_raw']:.2f} -> {r['motion_filt']:.2f} | "
              f"{r['accel_raw']:.2f} -> {r['accel_filt']:.2f} | {r['deviation']:.2f} |")

    print(f"\nDetection alone on every frame (first {args.detect_frames} frames), dlib HOG\n")
    print("| video | size | frames | face found | detect ms/frame (first pass at 384 px) | "
          "detect ms/frame (full size) | landmarks ms/frame | tracked - per-frame (px) |")
    print("|---|---|---|---|---|---|---|---|")
    full_size = FaceLandmarker("dlib", detect_max_side=1 << 16)
    for path in videos:
        r = bench_detection(path, landmarker, full_size, args.detect_frames, tracks[path])
        print(f"| {r['video']} | {r['size']} | {r['frames']} | {r['found']} | "
              f"{r['detect_ms']:.2f} | {r['detect_full_ms']:.2f} | {r['landmark_ms']:.2f} | "
              f"{r['tracked_vs_detected']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
