"""Benchmark: video tracking with a rig, retargeting, the whole demo, and memory over long videos.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_tracking [--pairs 5] [--memory-minutes 10]
        [--skip real demo synthetic memory]

Prints markdown tables (recorded in docs/benchmarks.md, "Tracking and retargeting (issue 6)"):
1. Real videos (../shared/data/real/videos): the video person's rig from 8 of its frames
   (`source_rig_from_video`), then every frame tracked; speed of `RigTracker.step` alone (landmark
   fit + lighting; no landmark detection, decoding, rendering or writing), projected-vs-detected
   landmark error over tracked frames / outer-eye-corner distance, and jitter (mean vertex
   acceleration, mm, of the posed mesh) on the stillest 30-frame stretch, with and without smoothing.
2. The whole demo as a user runs it: rig from 8 photos of rig_case1 + 300 frames of a 512x512 video,
   wall time with the demo's per-stage breakdown.
3. Synthetic pairs (ICT, `utils.synthetic.clip`): a source subject's 60-frame video (dlib landmarks
   on the renders) drives a target subject's rig built from 8 of its photos; retargeting error =
   the target rig driven by the tracked weights vs. the target's ground-truth mesh with the true
   weights (mm, mean over face vertices), next to baselines; jitter on the clip's still stretch.
4. Memory: a clip looped through decoding + landmarks + tracking for N minutes of video; RSS per
   minute.
"""
from __future__ import annotations

import argparse
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.camera import euler_to_matrix, weak_perspective_screen  # noqa: E402
from core.face_model.load import load_face_model  # noqa: E402
from core.fitting.landmark_geometry import LandmarkGeometry, project_landmarks  # noqa: E402
from core.metrics import aligned_mesh_error  # noqa: E402
from core.rig.builder import build_rig  # noqa: E402
from core.rig.rig import Rig  # noqa: E402
from core.rig.tracker import FrameTrack, RigTracker, TrackerConfig  # noqa: E402
from utils.io.images import to_float_batch  # noqa: E402
from utils.io.video import VideoReader  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402
from utils.landmarks.filters import OneEuroParams  # noqa: E402
from utils.landmarks.tracking import track_video  # noqa: E402
from utils.pipelines.video import source_rig_from_video  # noqa: E402
from utils.synthetic.clip import write_synthetic_inputs  # noqa: E402
from utils.synthetic.generator import SyntheticGenerator  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "real"
# Smoothing variants: (landmark One Euro filter, temporal prior weight).
VARIANTS = {
    "none (raw landmarks, no prior)": (None, 0.0),
    "landmark One Euro only": (OneEuroParams(), 0.0),
    "temporal prior only": (None, TrackerConfig().temporal_weight),
    "both (default)": (OneEuroParams(), TrackerConfig().temporal_weight),
}


def posed_meshes(rig: Rig, tracks: List[FrameTrack]) -> torch.Tensor:
    """Camera-space meshes in mm: weak-perspective screen coordinates divided by the scale."""
    expr = torch.stack([t.expression for t in tracks])
    rot = torch.stack([t.rotation for t in tracks])
    scale = torch.stack([t.scale for t in tracks])
    trans = torch.stack([t.trans2d for t in tracks])
    screen = weak_perspective_screen(rig.vertices(expr), euler_to_matrix(rot), scale, trans)
    return screen / scale[:, None, None]


def jitter_mm(meshes: torch.Tensor) -> float:
    """Mean vertex acceleration |x[t+1] - 2 x[t] + x[t-1]| (mm per frame^2)."""
    return float((meshes[2:] - 2 * meshes[1:-1] + meshes[:-2]).norm(dim=-1).mean())


def track_variants(rig: Rig, face, video: Path, landmarker, lighting_variant: str = "both (default)",
                   max_frames=None) -> Dict[str, dict]:
    """Track every frame once per smoothing variant; times `step` alone (lighting: one variant)."""
    trackers = {name: RigTracker(rig, face, TrackerConfig(temporal_weight=w, lighting=name == lighting_variant))
                for name, (_, w) in VARIANTS.items()}
    nolight = RigTracker(rig, face, TrackerConfig(lighting=False))
    filters = {name: f for name, (f, _) in VARIANTS.items()}
    from utils.landmarks.filters import OneEuroFilter

    smoothers = {name: OneEuroFilter(f) if f is not None else None for name, f in filters.items()}
    out = {name: {"tracks": [], "seconds": []} for name in VARIANTS}
    out["without lighting"] = {"tracks": [], "seconds": []}
    raw_track = []
    for frame in track_video(video, landmarker, filter_params=None, max_frames=max_frames):
        raw = None if frame.face is None else frame.face.landmarks
        raw_track.append(raw)
        for name, tracker in trackers.items():
            smoother = smoothers[name]
            lms = raw
            if smoother is not None:
                if raw is None:
                    smoother.reset()
                else:
                    lms = smoother(raw, frame.time_s)
            start = time.perf_counter()
            track = tracker.step(lms, frame.image)
            out[name]["seconds"].append(time.perf_counter() - start)
            out[name]["tracks"].append(track)
            if name == lighting_variant:
                start = time.perf_counter()
                out["without lighting"]["tracks"].append(nolight.step(lms))
                out["without lighting"]["seconds"].append(time.perf_counter() - start)
    out["raw"] = raw_track
    return out


def stillest_window(raw: list, length: int = 30) -> int:
    """Start of the window whose raw landmarks move least (mean frame-to-frame motion)."""
    motion = np.array([np.inf if a is None or b is None else float(np.linalg.norm(a - b, axis=1).mean())
                       for a, b in zip(raw[:-1], raw[1:])])
    sums = np.convolve(motion, np.ones(length - 1), mode="valid")
    return int(np.argmin(sums))


def real_videos(face, landmarker) -> None:
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    if not videos:
        print(f"\n(real videos skipped: {SHARED / 'videos'} absent)")
        return
    rows, jitter_rows = [], []
    for video in videos:
        start = time.perf_counter()
        rig, _ = source_rig_from_video(video, face, landmarker)
        rig_s = time.perf_counter() - start
        res = track_variants(rig, face, video, landmarker)
        default = res["both (default)"]
        steps = np.array(default["seconds"][1:])  # the first frame is the cold fit
        nolight = np.array(res["without lighting"]["seconds"][1:])
        errors = np.array([t.error for t in default["tracks"] if t.detected])
        n = len(default["tracks"])
        rows.append(f"| {video.name} | {n} | {len(errors)} | {rig_s:.1f} | {1 / steps.mean():.0f} | "
                    f"{1e3 * np.median(steps):.1f} | {1 / nolight.mean():.0f} | {100 * errors.mean():.2f}% | "
                    f"{100 * errors.max():.2f}% |")
        s = stillest_window(res["raw"])
        cells = []
        for name in VARIANTS:
            tracks = res[name]["tracks"][s:s + 30]
            cells.append(f"{jitter_mm(posed_meshes(rig, tracks)):.3f}" if all(t.detected for t in tracks) else "-")
        motion = np.mean([np.linalg.norm(a - b, axis=1).mean() for a, b in zip(res["raw"][s:s + 29], res["raw"][s + 1:s + 30])])
        jitter_rows.append(f"| {video.name} | {s}-{s + 29} | {motion:.2f} | " + " | ".join(cells) + " |")
        logging.info("%s done", video.name)
    print("\n### Real videos: tracking speed and landmark error\n")
    print("| video | frames | tracked | source rig (s) | fps (fit + lighting) | ms/frame (median) | "
          "fps (fit only) | landmark error / eye dist (mean) | max |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\n### Real videos: jitter on the stillest 30 frames (mean vertex acceleration, mm/frame^2, posed mesh)\n")
    print("| video | frames | raw landmark motion (px/frame) | " + " | ".join(VARIANTS) + " |")
    print("|---|---|---|" + "---|" * len(VARIANTS))
    print("\n".join(jitter_rows))


def whole_demo() -> None:
    rig_dir, video = SHARED / "rig_case1", SHARED / "videos" / "d3.mp4"
    if not rig_dir.is_dir() or not video.is_file():
        print("\n(whole demo skipped: ../shared data absent)")
        return
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, str(ROOT / "demo.py"), "--rig-dir", str(rig_dir), "--max-images", "8", "--video",
               str(video), "--max-frames", "300", "--out", out]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        print(f"\n(whole demo failed, exit {proc.returncode}):\n{proc.stderr[-2000:]}")
        return
    print(f"\n### Whole demo: rig from 8 photos ({rig_dir.name}) + 300 frames of {video.name} (512x512)\n")
    print("| stage | s |")
    print("|---|---|")
    for line in proc.stdout.splitlines():
        if line.startswith("time: ") or line.startswith("frames ") or line.startswith("tracking "):
            key, _, value = line.partition("  ")
            print(f"| {key.replace('time: ', '')} | {value.strip().removesuffix(' s')} |")
    print(f"| wall time of the process (imports, model loading included) | {wall:.1f} |")


def _truth_landmarks(face, truth, noise_px: float, rng: np.random.Generator) -> list:
    """The clip's ground-truth landmarks with the sliding jawline, plus Gaussian noise (pixels)."""
    n = len(truth["scale"])
    params = {"identity": torch.from_numpy(truth["identity"])[None].expand(n, -1),
              "expression": torch.from_numpy(truth["expression"]), "rotation": torch.from_numpy(truth["rotation"]),
              "scale": torch.from_numpy(truth["scale"]), "trans2d": torch.from_numpy(truth["trans2d"])}
    lms = project_landmarks(LandmarkGeometry(face), params, "weak", "dynamic").numpy()
    return list(lms + rng.normal(0.0, noise_px, lms.shape))


def _track_list(rig: Rig, face, landmarks: list) -> List[FrameTrack]:
    tracker = RigTracker(rig, face, TrackerConfig(lighting=False))
    return [tracker.step(lm) for lm in landmarks]


def synthetic_pairs(model, face, pairs: int, landmarker) -> None:
    generator = SyntheticGenerator(model)
    rng = np.random.default_rng(0)
    rows = {"detected (dlib), source rig from 8 video frames": [], "ground truth + 1 px noise, true source rig": []}
    jitter = {name: [] for name in VARIANTS}
    tracked_frames = total_frames = 0
    with tempfile.TemporaryDirectory() as tmp:
        for p in range(pairs):
            src = write_synthetic_inputs(model, Path(tmp) / f"pair{p}", n_images=8, n_frames=60, size=256,
                                         seed=2000 + p)
            truth = dict(np.load(src.truth))
            subject = generator.subject(8, seed=3000 + p)
            found = [(k, f[0].landmarks) for k, f in ((k, landmarker.detect(im)) for k, im in enumerate(subject.images))
                     if f]
            images = to_float_batch(subject.images[[k for k, _ in found]])
            lms = torch.from_numpy(np.stack([lm for _, lm in found])).float()
            target = build_rig(face, images, lms, confidence=landmarker.landmark_weights(lms)).rig
            true_target = Rig.from_model(face, torch.from_numpy(subject.identity), transfer=False)
            true_source = Rig.from_model(face, torch.from_numpy(truth["identity"]), transfer=False)
            expr_truth = torch.from_numpy(truth["expression"])
            truth_meshes = true_target.vertices(expr_truth)

            source, _ = source_rig_from_video(src.video, face, landmarker)
            res = track_variants(source, face, src.video, landmarker)
            cases = {"detected (dlib), source rig from 8 video frames": res["both (default)"]["tracks"],
                     "ground truth + 1 px noise, true source rig":
                         _track_list(true_source, face, _truth_landmarks(face, truth, 1.0, rng))}
            for name, tracks in cases.items():
                ok = torch.tensor([t.detected for t in tracks])
                tracked = torch.stack([t.expression for t in tracks])[ok]
                gt, true_w = truth_meshes[ok], expr_truth[ok]
                rows[name].append((
                    float(aligned_mesh_error(face.neutral[None].expand_as(gt).contiguous(), gt).mean()),
                    float(aligned_mesh_error(target.vertices(tracked), gt).mean()),
                    float(aligned_mesh_error(target.vertices(true_w), gt).mean()),
                    float(aligned_mesh_error(target.neutral[None].expand_as(gt).contiguous(), gt).mean()),
                    float((true_target.vertices(tracked) - gt).norm(dim=-1).mean()),
                    float((true_target.neutral - gt).norm(dim=-1).mean())))
            tracks = cases["detected (dlib), source rig from 8 video frames"]
            tracked_frames += sum(t.detected for t in tracks)
            total_frames += len(tracks)
            s0, s1 = (int(v) for v in truth["still"])
            for name in VARIANTS:
                window = res[name]["tracks"][s0:s1]
                if all(t.detected for t in window):
                    jitter[name].append(jitter_mm(posed_meshes(source, window)))
            logging.info("pair %d done", p)
    print(f"\n### Synthetic retargeting: {pairs} source/target pairs (60-frame 256x256 source videos; target rigs "
          "from 8 photos, dlib landmarks; ICT face region; mm, mean over vertices and frames, after similarity "
          "alignment to the ground-truth target mesh with the true weights unless noted)\n")
    print("| source landmarks | model mean face | **target rig driven by the tracked weights** | target rig with "
          "the true weights (rig error alone) | target rig neutral (no expression) | expression motion error: "
          "true target model driven by the tracked weights (not aligned) | no motion |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        a = np.asarray(r).mean(0)
        print(f"| {name} | {a[0]:.2f} | **{a[1]:.2f}** | {a[2]:.2f} | {a[3]:.2f} | {a[4]:.2f} | {a[5]:.2f} |")
    print(f"\nFrames tracked (detected landmarks): {tracked_frames} of {total_frames}.")
    print("\nJitter on the clips' still stretch (12 frames; pose and expression fixed, pixel noise per frame), "
          "mm/frame^2:\n")
    print("| " + " | ".join(VARIANTS) + " |")
    print("|" + "---|" * len(VARIANTS))
    print("| " + " | ".join(f"{np.mean(v):.3f}" if v else "-" for v in jitter.values()) + " |")


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory(face, landmarker, minutes: float) -> None:
    video = SHARED / "videos" / "d3.mp4"
    if not video.is_file():
        print("\n(memory skipped: ../shared videos absent)")
        return
    rig, _ = source_rig_from_video(video, face, landmarker)
    tracker = RigTracker(rig, face)
    from utils.io.tracking import TrackingRecorder

    recorder = TrackingRecorder(rig.n_expression)
    with VideoReader(video) as reader:
        fps = reader.info.fps
    total = int(minutes * 60 * fps)
    done, rows, start = 0, [], time.perf_counter()
    rows.append((0.0, rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 0.0))
    while done < total:
        for frame in track_video(video, landmarker, keep_images=True, max_frames=total - done):
            recorder.add(tracker.step(frame.landmarks, frame.image))
            done += 1
            if done % int(60 * fps) == 0:
                rows.append((done / fps / 60, rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                             time.perf_counter() - start))
                logging.info("memory: %.0f min of video, RSS %.0f MB", done / fps / 60, rows[-1][1])
    with tempfile.TemporaryDirectory() as tmp:
        saved = recorder.save(Path(tmp) / "tracking.npz", fps, rig.n_expression * [""])
        size_mb = saved.stat().st_size / 2 ** 20
        rows.append((float("nan"), rss_mb(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                     time.perf_counter() - start))
    print(f"\n### Memory: {video.name} looped for {minutes:g} minutes of video ({total} frames at {fps:g} fps; "
          "decoding + landmarks + tracking with lighting + per-frame arrays streamed to scratch files)\n")
    print("| video time (min) | RSS (MB) | peak RSS (MB) | elapsed (s) |")
    print("|---|---|---|---|")
    for m, rss, peak, sec in rows:
        label = f"{m:.0f}" if m == m else f"after writing tracking.npz ({size_mb:.1f} MB)"
        print(f"| {label} | {rss:.0f} | {peak:.0f} | {sec:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5, help="synthetic source/target pairs")
    parser.add_argument("--memory-minutes", type=float, default=10.0, help="video minutes for the memory run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for per-frame fits)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["real", "demo", "synthetic", "memory"])
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name in ("core", "utils"):
        logging.getLogger(name).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"load average at start: {os.getloadavg()[0]:.1f} (2 cores), torch threads {args.threads}")
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    landmarker = FaceLandmarker("dlib")
    if "real" not in args.skip:
        real_videos(face, landmarker)
    if "demo" not in args.skip:
        whole_demo()
    if "synthetic" not in args.skip:
        synthetic_pairs(model, face, args.pairs, landmarker)
    if "memory" not in args.skip:
        memory(face, landmarker, args.memory_minutes)
    print(f"\nload average at end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
