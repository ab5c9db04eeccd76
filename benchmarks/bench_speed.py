"""Whole-process speed of driving a rig with a video (issue 20): fixed cost, throughput, memory.

    .venv/bin/python -m benchmarks.bench_speed [--frames 50 250] [--repeats 3] [--memory-frames 1000] [--cold]

The job as a user runs it, one cold subprocess per run (`video_command`, the one place that says
how): ``demo.py --target-rig R --video V``: the face model and the target rig are loaded, the video
is scanned (every frame decoded and landmarked once, MediaPipe's mesh by default), the video
person's rig is built from 8 of its frames (a whole head), every frame is tracked and retargeted
onto the target rig, and the videos (the input clip, the tracked face over it, the retargeted
textured head) are rendered and written with ``tracking.npz`` and the exports; stage times come
from the run's ``summary.json``.

Inputs: clips of the first N frames of ``../shared/data/real/videos/d6.mp4`` (480x480, 30 fps),
written once to a temporary folder (H.264); the target rig is built once from ``rig_case1``
(``demo.py --no-video``: a textured whole head).

Measures, per clip length (median of ``--repeats`` runs, the sides of nothing alternating, the
1-minute load average before each run printed): wall time, frames per second, the process's own
stage times, and its peak resident memory (``wait4``'s ``ru_maxrss``). From two lengths: the fixed
cost (wall time at zero frames, by a straight line through the medians) and the throughput (frames
per second beyond it). ``--memory-frames`` adds one run on a longer clip (memory flat in video
length?). ``--cold`` adds one run as the first after installation: an empty bytecode cache
(``PYTHONPYCACHEPREFIX`` in a fresh folder), no saved face detector (``XDG_CACHE_HOME`` likewise)
and a face model folder without its parsed cache. Every run's environment is
`benchmarks.bench_eos.job_environment`'s (bytecode cached as Python does by default).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from benchmarks.bench_eos import job_environment

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "real"
SOURCE_VIDEO = SHARED / "videos" / "d6.mp4"

def video_command(model_dir: Path, video: Path, target_rig: Path, out_dir: Path,
                  python: str = sys.executable) -> List[str]:
    """The command line of the video job as a user runs it: ``demo.py --target-rig R --video V``
    (no photo rig built; the video scanned once, its person's rig from 8 frames, every frame tracked
    and retargeted, the videos, ``tracking.npz`` and the exports written); outputs under ``out_dir``."""
    return [python, str(ROOT / "demo.py"), "--quiet", "--model-path", str(model_dir), "--target-rig", str(target_rig),
            "--video", str(video), "--out", str(out_dir)]


def rig_command(model_dir: Path, folder: Path, out_dir: Path, python: str = sys.executable) -> List[str]:
    """The photos -> rig job as a user runs it (``demo.py --no-video``), writing its outputs under ``out_dir``."""
    return [python, str(ROOT / "demo.py"), "--quiet", "--model-path", str(model_dir), "--no-video",
            "--rig-dir", str(folder), "--out", str(out_dir)]


@dataclass
class Run:
    """One whole-process run: wall seconds, load before it, peak RSS (MB), the process's own timings."""

    wall: float
    load: float
    peak_mb: float
    timings: Dict[str, float] = field(default_factory=dict)
    total: Optional[float] = None
    frames: int = 0


def run_measured(command: Sequence[str], log: Path, env: Optional[Dict[str, str]] = None) -> Run:
    """Run ``command`` to the end; wall time and peak resident memory from ``wait4``."""
    from utils.pipelines.summary import stage_timings

    environment = job_environment(**(env or {}))
    load = os.getloadavg()[0]
    with open(log, "w") as err:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, env=environment, cwd=ROOT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{command[0]} ... exited with {process.returncode}; see {log}:\n" + log.read_text()[-2000:])
    run = Run(wall=wall, load=load, peak_mb=usage.ru_maxrss / 1024.0)
    summary = Path(command[command.index("--out") + 1]) / "summary.json"
    if summary.is_file():  # the demo's own record: stage times and frames tracked
        reported = json.loads(summary.read_text())
        run.timings, run.total = stage_timings(reported)
        run.frames = int((reported.get("video") or {}).get("frames_tracked") or 0)
    return run


def make_clip(source: Path, frames: int, path: Path) -> Path:
    """The first ``frames`` frames of ``source`` as an H.264 clip at ``path``."""
    from utils.io.video import VideoReader
    from utils.io.video_writer import VideoWriter

    with VideoReader(source) as reader:
        writer = VideoWriter(path, reader.info.fps)
        for i, frame in enumerate(reader):
            if i >= frames:
                break
            writer.write(frame)
        writer.close()
    return path


def build_target_rig(model_dir: Path, work: Path) -> Path:
    """The rig of ``rig_case1`` (the target the video drives), built once as a user builds it."""
    run_measured(rig_command(model_dir, SHARED / "rig_case1", work / "target"), work / "target.log")
    return work / "target" / "rig" / "rig.npz"


def cold_model_copy(model_dir: Path, work: Path) -> Path:
    """A copy of the face model folder without its parsed cache (as right after installation)."""
    copy = work / "cold_model" / model_dir.name
    shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns(".inorig_cache"), symlinks=False)
    return copy


def summarize(frames: int, runs: Sequence[Run]) -> str:
    walls = [r.wall for r in runs]
    wall = statistics.median(walls)
    loads = ", ".join(f"{r.load:.2f}" for r in runs)
    return (f"| {frames} | **{wall:.2f}** ({', '.join(f'{w:.1f}' for w in walls)}; load {loads}) | "
            f"**{frames / wall:.1f}** | {max(r.peak_mb for r in runs):.0f} |")


def stage_table(results: Dict[int, List[Run]]) -> None:
    names: List[str] = []
    for runs in results.values():
        for name in runs[0].timings:
            if name not in names:
                names.append(name)
    print("\n| stage (s, median) | " + " | ".join(f"{n} frames" for n in results) + " |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = [statistics.median(r.timings.get(name, float("nan")) for r in runs) for runs in results.values()]
        print(f"| {name} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")
    cells = [statistics.median(r.wall - (r.total or r.wall) for r in runs) for runs in results.values()]
    print("| start-up and exit (wall - self-timed) | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, nargs="+", default=[50, 250], help="clip lengths (frames)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-frames", type=int, default=None, help="one more run on a clip this long")
    parser.add_argument("--cold", action="store_true", help="one rig run and one video run as the first after install")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    if not SOURCE_VIDEO.is_file() or not (SHARED / "rig_case1").is_dir():
        print(f"(skipped: {SOURCE_VIDEO} or {SHARED / 'rig_case1'} absent)")
        return
    from utils.get_face_model import DEFAULT_PATHS, prepare_ict

    model_dir = prepare_ict(DEFAULT_PATHS["ict"])
    work = Path(tempfile.mkdtemp(prefix="bench_speed_"))
    try:
        target = build_target_rig(model_dir, work)
        lengths = sorted(set(args.frames))
        clips = {n: make_clip(SOURCE_VIDEO, n, work / f"clip_{n}.mp4") for n in lengths}
        results: Dict[int, List[Run]] = {n: [] for n in lengths}
        for k in range(args.repeats):
            for n in lengths:
                run = run_measured(video_command(model_dir, clips[n], target, work / f"out_{n}_{k}"),
                                   work / f"video_{n}_{k}.log")
                shutil.rmtree(work / f"out_{n}_{k}", ignore_errors=True)
                results[n].append(run)
                print(f"  {n} frames run {k + 1}: {run.wall:.2f} s (load {run.load:.2f}, peak {run.peak_mb:.0f} MB)",
                      file=sys.stderr)
        print(f"\n### Driving a rig with a video: {SOURCE_VIDEO.name}, whole process ({args.repeats} runs)\n")
        print("| frames | wall (s): median (runs; load) | frames/s | peak RSS (MB) |")
        print("|---|---|---|---|")
        for n in lengths:
            print(summarize(n, results[n]))
        if len(lengths) >= 2:
            a, b = lengths[0], lengths[-1]
            wa, wb = (statistics.median(r.wall for r in results[n]) for n in (a, b))
            per_frame = (wb - wa) / (b - a)
            print(f"\nFixed cost {wa - a * per_frame:.2f} s; throughput beyond it {1.0 / per_frame:.1f} frames/s "
                  f"({1000 * per_frame:.1f} ms per frame), from the medians at {a} and {b} frames.")
        stage_table(results)
        if args.memory_frames:
            n = args.memory_frames
            clip = make_clip(SOURCE_VIDEO, n, work / f"clip_{n}.mp4")
            run = run_measured(video_command(model_dir, clip, target, work / "out_memory"), work / "memory.log")
            print(f"\nMemory: {n} frames ({run.frames} tracked): peak RSS {run.peak_mb:.0f} MB, wall {run.wall:.1f} s "
                  f"({run.frames / run.wall:.1f} frames/s, load {run.load:.2f}); at {lengths[-1]} frames: "
                  f"{max(r.peak_mb for r in results[lengths[-1]]):.0f} MB.")
        if args.cold:
            # No bytecode, no saved face detector, the face model not yet parsed.
            cold_env = {"PYTHONPYCACHEPREFIX": str(work / "pycache_rig"), "XDG_CACHE_HOME": str(work / "cache_rig")}
            cold_model = cold_model_copy(model_dir, work)
            rig = run_measured(rig_command(cold_model, SHARED / "rig_case1", work / "cold_rig"), work / "cold_rig.log",
                               cold_env)
            warm = run_measured(rig_command(model_dir, SHARED / "rig_case1", work / "warm_rig"), work / "warm_rig.log")
            shutil.rmtree(cold_model / ".inorig_cache", ignore_errors=True)  # cold again for the video job
            n = lengths[-1]
            video = run_measured(video_command(cold_model, clips[n], target, work / "cold_video"),
                                 work / "cold_video.log", {"PYTHONPYCACHEPREFIX": str(work / "pycache_video"),
                                                           "XDG_CACHE_HOME": str(work / "cache_video")})
            print(f"\nFirst run after installation (no bytecode cache, no saved face detector, face model not yet "
                  f"parsed): rig_case1 {rig.wall:.2f} s (load {rig.load:.2f}; the next run {warm.wall:.2f} s, load "
                  f"{warm.load:.2f}); {n}-frame video {video.wall:.2f} s (load {video.load:.2f}).")
    finally:
        if args.keep:
            print(f"(work folder kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
