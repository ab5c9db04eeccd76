"""eos vs our rig building, both run as a user runs them, on the same photos (issue 20).

    .venv/bin/python -m benchmarks.bench_eos [--repeats 3] [--eos-python /work/tools/eos-venv/bin/python]
    .venv/bin/python -m benchmarks.bench_eos --profile          # where our whole process spends its time

Both sides run as subprocesses, whole process from a cold interpreter start, one at a time:
- eos (`benchmarks/eos_fit.py` in eos's own virtual environment, ``--eos-python`` or ``$EOS_PYTHON``;
  skipped with a message where it is absent): dlib's 68 landmarks, then eos's landmark fit of shape,
  pose and expression blendshapes with its contour handling, one image at a time; its "rig" is the
  mean of its shape coefficients over the images.
- ours (`our_command`, the one place that says how our side is run): ``demo.py --no-video`` on the
  folder, the photos -> rig job as a user runs it (the textured whole-head rig, meshes, parameters,
  pictures, rig.glb), writing all its outputs to a temporary folder.

Inputs: ../shared/data/real/rig_case1 (14 photos of one person) and, per shared video, 16 frames
spread over the clip written as JPEG (quality 95) to a temporary folder (a "16-photo" case).

Measures, per side:
- whole-process wall time, median of ``--repeats`` runs (the sides alternate; the 1-minute load
  average before each run is printed), and per-stage times where the side reports them (median),
  with "start-up and exit" = wall time - what the process timed itself;
- CPU time (user + system) of each whole process, its child processes included (ours forks a
  landmark child), median; ours divided by the usable cores is the least wall time its work allows;
- landmark error: mean distance between the fitted model's 68 landmarks projected into the image
  and dlib's detections, over the outer-eye-corner distance (iBUG 37 and 46), each side against
  the detections it fitted (the eos side detects as our landmarker's first pass does; ours may
  re-landmark a face at a scale that suits it, so the two sets can differ: their mean and largest
  difference are printed); all 68 points and the inner 51 (18-68);
- identity consistency on the videos: rigs (neutral shapes) from two disjoint sets of 8 frames
  (alternate frames of the 16) of one person differ by X mm (mean vertex distance after
  similarity alignment, within each method's own model: ICT face region, 9,409 vertices; SFM,
  3,448 vertices), divided by the mean distance between the first sets' rigs of different people
  (the ratio; lower is better), as `benchmarks/rig_eval.identity_consistency` does.

Prints markdown tables (recorded in docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]


import numpy as np  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "real"
DEFAULT_EOS_PYTHON = Path("/work/tools/eos-venv/bin/python")
EOS_SCRIPT = ROOT / "benchmarks" / "eos_fit.py"
FRAMES_PER_VIDEO = 16
JPEG_QUALITY = 95

def our_command(folder: Path, out_dir: Path, python: str = sys.executable, tree: Path = ROOT) -> List[str]:
    """The command line of our side on ``folder``, writing its outputs under ``out_dir``: the demo's
    rig-only stage, as a user runs it (the textured whole-head rig, meshes, parameters, pictures,
    rig.glb), of the checkout at ``tree`` (another version's for `benchmarks.bench_ab`); its stage
    timings are read from ``out_dir/summary.json``."""
    return [python, str(tree / "demo.py"), "--no-video", "--quiet", "--rig-dir", str(folder), "--out", str(out_dir)]


def eos_command(eos_python: Path, folder: Path, out_json: Path) -> List[str]:
    """The command line of the eos side on ``folder``, writing its JSON result to ``out_json``."""
    return [str(eos_python), str(EOS_SCRIPT), str(folder), "--out", str(out_json)]


@dataclass
class SideRun:
    """One whole-process run of one side on one case."""

    wall: float
    load: float
    timings: Dict[str, float] = field(default_factory=dict)
    total: Optional[float] = None  # what the process timed itself (from its first line of code)
    cpu: Optional[float] = None  # CPU seconds, user + system, its child processes included
    neutral: Optional[np.ndarray] = None  # (V, 3) mm
    detections: Dict[str, np.ndarray] = field(default_factory=dict)  # per image stem: (68, 2)
    fitted: Dict[str, np.ndarray] = field(default_factory=dict)  # per image stem: (68, 2)


def load_average() -> float:
    """The 1-minute load average."""
    return os.getloadavg()[0]


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's ended and waited-for children and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def job_environment(**extra: str) -> Dict[str, str]:
    """The environment a measured job runs in: this one as a user's shell has it, unbuffered, no
    progress bars, plus ``extra``. Python writes and reads the project's bytecode cache, as it does
    by default: this project's development machines set ``PYTHONDONTWRITEBYTECODE``, which makes
    every run compile the project's modules again (about 0.07 s of a rig job's start-up)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **extra)
    return env


class Timed(NamedTuple):
    """One finished run: wall seconds and CPU seconds (user + system, its child processes included)."""

    wall: float
    cpu: float


def run_timed(command: Sequence[str], log: Path, cwd: Path = ROOT) -> Timed:
    """Run ``command`` to the end in `job_environment` (its output discarded, stderr to ``log``), in
    ``cwd``; a failure raises. Its CPU time is `children_cpu`'s growth meanwhile."""
    env = job_environment()
    with open(log, "w") as err:
        cpu, start = children_cpu(), time.perf_counter()
        done = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        wall, cpu = time.perf_counter() - start, children_cpu() - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{command[0]} ... exited with {done.returncode}; see {log}:\n"
                           + log.read_text()[-2000:])
    return Timed(wall, cpu)


def run_ours(folder: Path, work: Path, tag: str) -> SideRun:
    """Our side on ``folder``, outputs under ``work/tag``; parses its timings and outputs."""
    from core.rig.rig import Rig
    from utils.pipelines.summary import stage_timings

    out = work / tag
    if out.exists():
        shutil.rmtree(out)
    load = load_average()
    timed = run_timed(our_command(folder, out), work / f"{tag}.log")
    result = SideRun(wall=timed.wall, load=load, cpu=timed.cpu)
    summary = out / "summary.json"
    if summary.is_file():
        result.timings, result.total = stage_timings(json.loads(summary.read_text()))
    rigs = sorted(out.rglob("rig.npz"))
    if not rigs:
        raise RuntimeError(f"our side wrote no rig.npz under {out}")
    result.neutral = Rig.load(rigs[0]).neutral.double().numpy()
    for params in sorted(out.rglob("params/*.json")):
        p = json.loads(params.read_text())
        result.detections[p["image"]] = np.asarray(p["landmarks_detected"], dtype=np.float64)
        result.fitted[p["image"]] = np.asarray(p["landmarks_2d"], dtype=np.float64)
    shutil.rmtree(out)  # outputs are large (meshes, visualizations); only the figures are kept
    return result


def run_eos(eos_python: Path, folder: Path, work: Path, tag: str) -> SideRun:
    """The eos side on ``folder``; parses its JSON result."""
    out = work / f"{tag}.json"
    load = load_average()
    timed = run_timed(eos_command(eos_python, folder, out), work / f"{tag}.log")
    data = json.loads(out.read_text())
    result = SideRun(wall=timed.wall, load=load, cpu=timed.cpu, timings=data["timings"], total=data["total"])
    if data["neutral"] is not None:
        result.neutral = np.asarray(data["neutral"]["vertices"], dtype=np.float64)
    for image in data["images"]:
        stem = Path(image["file"]).stem
        result.detections[stem] = np.asarray(image["detected"], dtype=np.float64)
        result.fitted[stem] = np.asarray(image["fitted"], dtype=np.float64)
    return result


def landmark_errors(fitted: Dict[str, np.ndarray], detections: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Per image both have: (68,) distances between fitted and detected points / outer-eye-corner distance."""
    errors = {}
    for stem in sorted(set(fitted) & set(detections)):
        d = detections[stem]
        errors[stem] = np.linalg.norm(fitted[stem] - d, axis=1) / np.linalg.norm(d[36] - d[45])
    return errors


def aligned_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Mean vertex distance (mm) after similarity alignment of ``a`` onto ``b`` ((V, 3) each)."""
    import torch

    from core.metrics import aligned_mesh_error

    return float(aligned_mesh_error(torch.from_numpy(a)[None], torch.from_numpy(b)[None]))


def video_frames(path: Path, count: int) -> Dict[int, np.ndarray]:
    """``count`` frames spread evenly over the clip (first to last), by index, RGB."""
    from utils.io.video import VideoReader

    with VideoReader(path) as reader:
        n = max(reader.info.frame_count or 0, count)
    wanted = set(np.linspace(0, n - 1, count).round().astype(int).tolist())
    frames = {}
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                frames[i] = frame
            if i >= max(wanted):
                break
    return frames


def write_video_cases(videos: Sequence[Path], work: Path) -> Dict[str, Tuple[Path, Path, Path]]:
    """Per video stem: folders of its 16 frames, of the even-position 8 and of the odd-position 8 (JPEG)."""
    import cv2

    cases = {}
    for video in videos:
        frames = video_frames(video, FRAMES_PER_VIDEO)
        folders = tuple(work / "frames" / video.stem / name for name in ("all", "set_a", "set_b"))
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        for k, (index, frame) in enumerate(sorted(frames.items())):
            data = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1].tobytes()
            for folder in (folders[0], folders[1 + k % 2]):
                (folder / f"{video.stem}_{index:05d}.jpg").write_bytes(data)
        cases[video.stem] = folders  # type: ignore[assignment]
    return cases


def median_timings(runs: Sequence[SideRun]) -> Dict[str, float]:
    """Per stage, the median over runs; plus start-up and exit (wall - self-timed total)."""
    stages: Dict[str, float] = {}
    for name in runs[0].timings:
        stages[name] = statistics.median(r.timings.get(name, float("nan")) for r in runs)
    if all(r.total is not None for r in runs):
        stages["start-up and exit (wall - self-timed)"] = statistics.median(r.wall - r.total for r in runs)
    return stages


def fmt_runs(runs: Sequence[SideRun]) -> str:
    """'median (all runs; load averages)'."""
    walls = ", ".join(f"{r.wall:.1f}" for r in runs)
    loads = ", ".join(f"{r.load:.2f}" for r in runs)
    return f"**{statistics.median(r.wall for r in runs):.2f}** ({walls}; load {loads})"


def check_detections(ours: SideRun, eos: SideRun) -> str:
    """How far apart the two sides' detections are, on images both used."""
    common = sorted(set(ours.detections) & set(eos.detections))
    if not common:
        return "no image in common"
    diff = [np.linalg.norm(ours.detections[s] - eos.detections[s], axis=1) for s in common]
    only = sorted(set(ours.detections) ^ set(eos.detections))
    return (f"{len(common)} images in common; differ from ours by {np.mean(diff):.2f} px mean, "
            f"{max(float(d.max()) for d in diff):.2f} px at most") + (
        f"; used by one side only: {', '.join(only)}" if only else "")


def benchmark(args: argparse.Namespace) -> None:
    """The comparison: timings, landmark errors and identity consistency, printed as tables."""
    eos_python = args.eos_python
    has_eos = eos_python.is_file()
    if not has_eos:
        print(f"(eos side skipped: {eos_python} absent; install eos-py into its own venv, see benchmarks/eos_fit.py, "
              f"or pass --eos-python / set EOS_PYTHON)")
    work = Path(tempfile.mkdtemp(prefix="bench_eos_"))
    try:
        cases: Dict[str, Path] = {}
        if (SHARED / "rig_case1").is_dir() and "rig_case1" in args.cases:
            cases["rig_case1"] = SHARED / "rig_case1"
        videos = [v for v in sorted((SHARED / "videos").glob("*.mp4")) if v.stem in args.cases or "videos" in args.cases]
        video_sets = write_video_cases(videos, work) if videos else {}
        for stem, (all16, _, _) in video_sets.items():
            cases[f"{stem} (16 frames)"] = all16
        if not cases:
            print(f"(nothing to run: no inputs under {SHARED})")
            return
        sides = ["ours"] + (["eos"] if has_eos else [])
        runs: Dict[Tuple[str, str], List[SideRun]] = {(c, s): [] for c in cases for s in sides}
        for case, folder in cases.items():
            for k in range(args.repeats):
                for side in sides:  # alternate, so slow spells of the shared machine hit both
                    tag = f"{side}_{case.split()[0]}_{k}"
                    r = run_ours(folder, work, tag) if side == "ours" else run_eos(eos_python, folder, work, tag)
                    runs[(case, side)].append(r)
                    print(f"  {case} {side} run {k + 1}: {r.wall:.2f} s (load {r.load:.2f})", file=sys.stderr)

        identity: Dict[str, Tuple[Dict[str, float], List[float]]] = {}
        if not args.skip_identity and len(video_sets) >= 2:
            for side in sides:
                rigs = {}
                for stem, (_, set_a, set_b) in video_sets.items():
                    pair = []
                    for name, folder in (("a", set_a), ("b", set_b)):
                        tag = f"{side}_{stem}_{name}"
                        r = run_ours(folder, work, tag) if side == "ours" else run_eos(eos_python, folder, work, tag)
                        pair.append(r.neutral)
                    rigs[stem] = pair
                within = {stem: aligned_distance(a, b) for stem, (a, b) in rigs.items()}
                names = list(rigs)
                between = [aligned_distance(rigs[p][0], rigs[q][0]) for i, p in enumerate(names) for q in names[i + 1:]]
                identity[side] = (within, between)
        print_tables(cases, sides, runs, identity)
    finally:
        if args.keep:
            print(f"(work folder kept: {work})")
        else:
            shutil.rmtree(work, ignore_errors=True)


def print_tables(cases: Dict[str, Path], sides: Sequence[str], runs: Dict[Tuple[str, str], List[SideRun]],
                 identity: Dict[str, Tuple[Dict[str, float], List[float]]]) -> None:
    """The summary table, then times per stage, landmark errors per case and identity distances."""
    from core.cpus import usable_cores

    # landmark errors, each side against the detections it fitted
    errors: Dict[Tuple[str, str], Dict[str, np.ndarray]] = {}
    for case in cases:
        for side in sides:
            errors[(case, side)] = landmark_errors(runs[(case, side)][0].fitted, runs[(case, side)][0].detections)

    def mean_error(side: str, which: Sequence[str], points: slice = slice(None)) -> float:
        values = [e[points].mean() for c in which for e in errors[(c, side)].values()]
        return 100 * float(np.mean(values)) if values else float("nan")

    video_cases = [c for c in cases if c != "rig_case1"]
    print("\n### eos vs ours: whole process, same inputs\n")
    header = ["side"]
    if "rig_case1" in cases:
        header += ["rig_case1 time (s)", "rig_case1 landmark error (%)"]
    if video_cases:
        header += ["16 video frames: time (s, mean over videos)", "videos landmark error (%)"]
    header += ["identity ratio (same / different; mm)"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for side in sides:
        row = [side]
        if "rig_case1" in cases:
            row += [f"{statistics.median(r.wall for r in runs[('rig_case1', side)]):.2f}",
                    f"{mean_error(side, ['rig_case1']):.2f}"]
        if video_cases:
            row += [f"{np.mean([statistics.median(r.wall for r in runs[(c, side)]) for c in video_cases]):.2f}",
                    f"{mean_error(side, video_cases):.2f}"]
        if side in identity:
            within, between = identity[side]
            row.append(f"**{np.mean(list(within.values())) / np.mean(between):.2f}** "
                       f"({np.mean(list(within.values())):.2f} / {np.mean(between):.2f})")
        else:
            row.append("-")
        print("| " + " | ".join(row) + " |")

    print("\n### Whole-process wall time: median (runs; 1-minute load average before each)\n")
    print("| case | " + " | ".join(f"{s} (s)" for s in sides) + " |")
    print("|---|" + "---|" * len(sides))
    for case in cases:
        print(f"| {case} | " + " | ".join(fmt_runs(runs[(case, s)]) for s in sides) + " |")

    print("\n### Whole-process CPU time (user + system, child processes included): median; the least "
          "wall time it allows on this machine's cores\n")
    cores = usable_cores() or os.cpu_count() or 1
    print("| case | " + " | ".join(f"{s} (CPU s)" for s in sides) + f" | ours: CPU / {cores} cores (s) |")
    print("|---|" + "---|" * (len(sides) + 1))
    for case in cases:
        medians = {s: statistics.median(r.cpu for r in runs[(case, s)]) for s in sides}
        print(f"| {case} | " + " | ".join(f"{medians[s]:.2f}" for s in sides) + f" | {medians['ours'] / cores:.2f} |")

    for side in sides:
        print(f"\n### {side}: seconds per stage (median over runs)\n")
        stage_rows = {case: median_timings(runs[(case, side)]) for case in cases}
        names = list(dict.fromkeys(n for st in stage_rows.values() for n in st))
        print("| case | " + " | ".join(names) + " | wall |")
        print("|---|" + "---|" * (len(names) + 1))
        for case, st in stage_rows.items():
            print(f"| {case} | " + " | ".join(f"{st.get(n, float('nan')):.2f}" for n in names)
                  + f" | {statistics.median(r.wall for r in runs[(case, side)]):.2f} |")

    print("\n### Landmark error / outer-eye-corner distance (%), each side against the dlib detections it fitted\n")
    print("| case | side | images | mean (68) | max (68) | mean (inner 51) | detections |")
    print("|---|---|---|---|---|---|---|")
    for case in cases:
        for side in sides:
            e = errors[(case, side)]
            if not e:
                continue
            per_image = np.array([v.mean() for v in e.values()])
            agree = "its own" if side == "ours" else check_detections(runs[(case, "ours")][0], runs[(case, side)][0])
            print(f"| {case} | {side} | {len(e)} | {100 * per_image.mean():.2f} | {100 * per_image.max():.2f} | "
                  f"{100 * np.mean([v[17:].mean() for v in e.values()]):.2f} | {agree} |")

    if identity:
        print("\n### Identity consistency (aligned neutral shapes, mm; 8 frames per rig, alternate frames of 16)\n")
        print("| video | " + " | ".join(identity) + " |")
        print("|---|" + "---|" * len(identity))
        stems = list(next(iter(identity.values()))[0])
        for stem in stems:
            print(f"| {stem} (same person, two frame sets) | "
                  + " | ".join(f"{identity[s][0][stem]:.2f}" for s in identity) + " |")
        print("| mean, same person | " + " | ".join(f"{np.mean(list(w.values())):.2f}" for w, _ in identity.values()) + " |")
        print("| mean, different people (first sets, all pairs) | "
              + " | ".join(f"{np.mean(b):.2f}" for _, b in identity.values()) + " |")
        print("| **ratio** | " + " | ".join(f"**{np.mean(list(w.values())) / np.mean(b):.2f}**"
                                        for w, b in identity.values()) + " |")


def _with_interpreter_options(command: List[str], options: Sequence[str]) -> List[str]:
    """``command`` (python, a script, its arguments) with ``options`` for the interpreter."""
    return [command[0], *options, *command[1:]]


def _profiled(command: List[str], stats: Path, work: Path) -> List[str]:
    """``command`` (python, a script, its arguments) under cProfile, the statistics written to
    ``stats`` by an exit handler: the demo ends with `utils.process.exit_now` (exit handlers, then no
    interpreter teardown), so ``-m cProfile -o`` would never get the script's return to write them."""
    wrapper = work / "profiled.py"
    wrapper.write_text("import atexit, cProfile, runpy, sys\n"
                       "profile = cProfile.Profile()\n"
                       f"atexit.register(profile.dump_stats, {str(stats)!r})\n"
                       "script, sys.argv = sys.argv[1], sys.argv[1:]\n"
                       "profile.enable()\n"
                       "runpy.run_path(script, run_name='__main__')\n")
    return [command[0], str(wrapper), *command[1:]]


def import_costs(log: str) -> Tuple[Dict[str, float], Dict[str, Tuple[float, int]]]:
    """From ``-X importtime`` output: cumulative seconds of each top-level import, and per root
    package (``torch``, ``core``, ...) the seconds of its modules' own code and their number."""
    top: Dict[str, float] = {}
    packages: Dict[str, Tuple[float, int]] = {}
    for line in log.splitlines():
        # "import time: self [us] | cumulative | imported package", nesting by two-space indents
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        own, cumulative, name = line[len("import time:"):].split("|")
        module = name.strip()
        if not name.startswith("  "):
            top[module] = top.get(module, 0.0) + int(cumulative) / 1e6
        root = module.split(".")[0]
        seconds, count = packages.get(root, (0.0, 0))
        packages[root] = (seconds + int(own) / 1e6, count + 1)
    return top, packages


def profile(args: argparse.Namespace) -> None:
    """Our side on rig_case1 (or ``--profile-folder``): one run with ``-X importtime`` (the run's
    own stages, interpreter start-up, the slowest top-level imports), one under cProfile (the
    functions that take the time)."""
    import pstats

    from utils.pipelines.summary import stage_timings

    folder = args.profile_folder or SHARED / "rig_case1"
    work = Path(tempfile.mkdtemp(prefix="bench_eos_profile_"))
    try:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        bare_start = time.perf_counter() - start
        load = load_average()
        wall = run_timed(_with_interpreter_options(our_command(folder, work / "out"), ["-X", "importtime"]),
                         work / "importtime.log").wall
        summary = work / "out" / "summary.json"
        reported = None
        if summary.is_file():
            timings, total = stage_timings(json.loads(summary.read_text()))
            reported = {"total": total, "timings": timings}
        print(f"\n### Our whole process on {folder.name} (with -X importtime; load average {load:.2f})\n")
        print("| stage | s |")
        print("|---|---|")
        print(f"| (bare interpreter start-up and exit, `python -c pass`, separate run) | {bare_start:.2f} |")
        if reported is not None:
            for name, seconds in reported["timings"].items():
                print(f"| {name} | {seconds:.2f} |")
            print(f"| not timed by the run (interpreter start-up, exit) | {wall - reported['total']:.2f} |")
        print(f"| **wall time** | **{wall:.2f}** |")
        top, packages = import_costs((work / "importtime.log").read_text())
        print(f"\n### Import time by package (-X importtime: own module code of all its modules; total "
              f"{sum(t for t, _ in packages.values()):.2f} s)\n")
        print("| package | s | modules |")
        print("|---|---|---|")
        for name, (seconds, count) in sorted(packages.items(), key=lambda kv: -kv[1][0])[:args.top]:
            print(f"| {name} | {seconds:.2f} | {count} |")
        print("\nTop-level imports (an import started outside any other; lazy imports inside the run show "
              "here too), cumulative:\n")
        print("| module | s |")
        print("|---|---|")
        for name, seconds in sorted(top.items(), key=lambda kv: -kv[1])[:args.top]:
            print(f"| {name} | {seconds:.2f} |")

        if args.no_cprofile:
            return
        shutil.rmtree(work / "out", ignore_errors=True)
        stats_file = work / "our_side.prof"
        load = load_average()
        wall = run_timed(_profiled(our_command(folder, work / "out"), stats_file, work), work / "cprofile.log").wall
        stats = pstats.Stats(str(stats_file))
        rows = []
        for (filename, line, name), (_, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
            where = Path(filename)
            label = f"{where.relative_to(ROOT)}:{line} {name}" if where.is_relative_to(ROOT) else f"{where.name}:{line} {name}"
            rows.append((label, calls, tottime, cumtime, where.is_relative_to(ROOT)))
        print(f"\n### Under cProfile (wall {wall:.1f} s, profiler overhead included; load average {load:.2f})\n")
        print(f"Project functions by cumulative time (top {args.top}):\n")
        print("| function | calls | cumulative (s) | own (s) |")
        print("|---|---|---|---|")
        for label, calls, tottime, cumtime, _ in sorted((r for r in rows if r[4]), key=lambda r: -r[3])[:args.top]:
            print(f"| {label} | {calls} | {cumtime:.2f} | {tottime:.2f} |")
        print(f"\nAll functions by own time (top {args.top}):\n")
        print("| function | calls | own (s) | cumulative (s) |")
        print("|---|---|---|---|")
        for label, calls, tottime, cumtime, _ in sorted(rows, key=lambda r: -r[2])[:args.top]:
            print(f"| {label} | {calls} | {tottime:.2f} | {cumtime:.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Optional[Sequence[str]] = None) -> None:
    """Command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eos-python", type=Path, default=Path(os.environ.get("EOS_PYTHON", DEFAULT_EOS_PYTHON)),
                        help=f"python of eos's venv (default $EOS_PYTHON or {DEFAULT_EOS_PYTHON})")
    parser.add_argument("--repeats", type=int, default=3, help="whole-process runs per side and case (median)")
    parser.add_argument("--cases", nargs="+", default=["rig_case1", "videos"],
                        help="rig_case1, videos (all shared videos) or video stems (d0 d3 ...)")
    parser.add_argument("--skip-identity", action="store_true", help="no identity-consistency runs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (frames, logs, eos JSON)")
    parser.add_argument("--profile", action="store_true", help="profile our side's whole process instead")
    parser.add_argument("--profile-folder", type=Path, default=None, help="photos for --profile (default rig_case1)")
    parser.add_argument("--top", type=int, default=15, help="rows of each --profile listing")
    parser.add_argument("--no-cprofile", action="store_true", help="--profile without its cProfile run")
    args = parser.parse_args(argv)
    if args.profile:
        profile(args)
    else:
        benchmark(args)


if __name__ == "__main__":
    main()
