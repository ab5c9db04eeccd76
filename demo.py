"""Riggable 3D face reconstruction demo: edit the paths below (or pass flags) and run it.

    python demo.py                                   # the defaults below
    python demo.py --rig-dir photos/ --video clip.mp4 --out out/me
    python demo.py --target-rig other/rig/rig.npz    # drive another person's rig

1. Builds the rig of the person in ``rig_img_dir``: ``<out>/rig/rig.npz``, ``<out>/mesh/*.obj``
   (object space, the model's vertex order), ``<out>/params/*.json``, ``<out>/visualization/*.png``.
2. Builds a rig of the person in ``src_vid_path`` from a few of its frames, tracks the video with
   it (expression, head pose and lighting per frame) and drives the photos' rig (or
   ``--target-rig``) with the tracked expressions: ``<out>/videos/input_clip.mp4``,
   ``output_recon.mp4`` (the tracked mesh over the video), ``output_exptrans.mp4`` (the retargeted
   rig), ``tracking.npz`` (per-frame parameters) and ``source_rig.npz``.
3. Prints a summary: images used / skipped, frames tracked / flagged, time per stage, outputs.

Without ``../shared`` (a fresh machine) the default inputs are a synthetic subject that the
project renders itself into ``examples/generated/synthetic/`` (its photos and a short video).
"""
from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall shared CPUs

REPO_ROOT = Path(__file__).resolve().parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data" / "real"
SYNTHETIC_DIR = REPO_ROOT / "examples" / "generated" / "synthetic"
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")

# ---- Edit these, as in the original release ----------------------------------------------------
rig_img_dir = SHARED_DATA / "rig_case1"  # photos of one person that build the rig
src_vid_path = SHARED_DATA / "videos"  # video that drives the rig (a folder: its first video, sorted)
out_dir = REPO_ROOT / "out" / "demo"  # outputs: <out>/rig, mesh, params, visualization, videos
model_kind = "ict"  # face model: ict (open), bfm2009 or face3d (licensed files in external/)
# -------------------------------------------------------------------------------------------------

logger = logging.getLogger("demo")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rig-dir", type=Path, default=None, help=f"folder of photos that build the rig (default {rig_img_dir})")
    p.add_argument("--video", type=Path, default=None,
                   help=f"video that drives the rig, or a folder: its first video (default {src_vid_path})")
    p.add_argument("--out", type=Path, default=out_dir, help="output folder")
    p.add_argument("--model", choices=["ict", "bfm2009", "face3d"], default=model_kind, help="face model kind")
    p.add_argument("--model-path", type=Path, default=None, help="face model folder (default: under external/)")
    p.add_argument("--target-rig", type=Path, default=None,
                   help="rig.npz driven by the video (default: the rig built from the photos)")
    p.add_argument("--max-frames", type=int, default=None, help="track at most this many video frames")
    p.add_argument("--max-images", type=int, default=None, help="use at most this many rig images")
    p.add_argument("--source-frames", type=int, default=8, help="video frames that build the video person's rig")
    p.add_argument("--retarget-pose", choices=["source", "frontal"], default="source",
                   help="head pose of the retargeted rig: the video's, or fixed frontal")
    p.add_argument("--retarget-light", choices=["source", "frontal"], default="source",
                   help="lighting of the retargeted rig: the video frame's, or a fixed frontal light")
    p.add_argument("--no-photometric", action="store_true", help="landmarks only (faster, less accurate)")
    p.add_argument("--synthetic", action="store_true", help="run on the synthetic subject even where ../shared exists")
    p.add_argument("--synthetic-frames", type=int, default=60, help="length of the synthetic video")
    p.add_argument("--device", default="cpu", help="torch device (the classical solver path runs on the CPU)")
    p.add_argument("--weights", type=Path, default=None,
                   help="network weights (e.g. net_weights/inorig_ict.pth): build the rigs with the network "
                        "instead of the classical solver")
    args = p.parse_args(argv)
    for name in ("max_frames", "max_images", "source_frames", "synthetic_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    return args


def first_video(path: Path) -> Path:
    """``path`` itself, or the first video (sorted by name) of a folder."""
    if path.is_dir():
        videos = sorted(p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if not videos:
            raise FileNotFoundError(f"video folder {path} holds no video ({', '.join(VIDEO_SUFFIXES)})")
        return videos[0]
    return path


def existing_synthetic_inputs(n_frames: int):
    """The synthetic subject rendered by an earlier run (same video length), or None."""
    import numpy as np

    from utils.synthetic.clip import SyntheticInputs

    made = SyntheticInputs.at(SYNTHETIC_DIR)
    try:
        with np.load(made.truth) as truth:
            ok = len(truth["expression"]) == n_frames
    except (OSError, ValueError, KeyError):
        return None
    return made if ok and made.video.is_file() and any(made.rig_dir.glob("*.png")) else None


def resolve_inputs(args, model, timings: Dict[str, float]) -> Tuple[Path, Path]:
    """The rig folder and the video: flags, else the editable defaults, else the synthetic subject."""
    rig_dir = args.rig_dir or rig_img_dir
    video = args.video or src_vid_path
    need_rig = args.synthetic or (args.rig_dir is None and not Path(rig_dir).is_dir())
    need_video = args.synthetic or (args.video is None and not Path(video).exists())
    if need_rig or need_video:
        from utils.synthetic.clip import write_synthetic_inputs

        start = time.perf_counter()
        made = existing_synthetic_inputs(args.synthetic_frames)
        if made is None:
            logger.info("default inputs absent (or --synthetic): rendering a synthetic subject into %s", SYNTHETIC_DIR)
            made = write_synthetic_inputs(model, SYNTHETIC_DIR, n_images=8, n_frames=args.synthetic_frames)
            timings["synthetic inputs"] = time.perf_counter() - start
        else:
            logger.info("default inputs absent (or --synthetic): using the synthetic subject in %s", SYNTHETIC_DIR)
        rig_dir = made.rig_dir if need_rig else rig_dir
        video = made.video if need_video else video
    return Path(rig_dir), first_video(Path(video))


def check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: CUDA is not available here; use --device cpu")
    logger.warning("--device %s: only the network (--weights) runs there; fitting, tracking and rendering run "
                   "on the CPU", device)


def print_summary(rows: List[Tuple[str, str]]) -> None:
    width = max(len(r[0]) for r in rows)
    print("\n".join(f"{a:<{width}}  {b}" for a, b in rows))


def summary_rows(rig_run, video_run, timings: Dict[str, float], outputs: Dict[str, Path]) -> List[Tuple[str, str]]:
    """The end-of-run table: images used / skipped, frames tracked / flagged, timings, outputs."""
    rows: List[Tuple[str, str]] = []
    if rig_run is not None:
        rows += [("images used", str(len(rig_run.used))), ("images skipped", str(len(rig_run.skipped)))]
        rows += [(f"  skipped {name}", why) for name, why in rig_run.skipped.items()]
        if rig_run.landmark_error:
            mean = sum(rig_run.landmark_error.values()) / len(rig_run.landmark_error)
            rows.append(("rig landmark error (px, mean)", f"{mean:.2f}"))
    if video_run is not None:
        rows += [("frames tracked", str(video_run.tracked)), ("frames flagged (no face)", str(video_run.flagged))]
        rows.append(("tracking landmark error", f"{100 * video_run.mean_error:.2f}% of the eye distance"))
        fit = video_run.timings.get("tracking (fit + lighting)")
        if fit and video_run.frames:
            rows.append(("tracking speed (fit + lighting)", f"{video_run.frames / fit:.1f} frames/s"))
    rows += [(f"time: {stage}", f"{sec:.2f} s") for stage, sec in timings.items()]
    rows += [(f"output: {name}", str(path)) for name, path in outputs.items()]
    return rows


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    timings: Dict[str, float] = {}
    outputs: Dict[str, Path] = {}
    from core.face_model.load import load_face_model
    from core.face_model.model import FaceModelError
    from core.rig.rig import Rig, RigFileError
    from utils.get_face_model import DEFAULT_PATHS, prepare_ict

    try:
        check_device(args.device)
    except ValueError as err:
        logger.error("%s", err)
        return 1
    start = time.perf_counter()
    path = args.model_path or DEFAULT_PATHS[args.model]
    try:
        if args.model == "ict":
            path = prepare_ict(path)
        model = load_face_model(args.model, path)
    except FaceModelError as err:
        logger.error("%s", err)
        return 1
    print(model.summary())
    fit_model = model.region("face") if "face" in model.regions and args.model == "ict" else model
    timings["face model"] = time.perf_counter() - start

    target = None
    if args.target_rig is not None:
        try:
            target = Rig.load(args.target_rig, expect_model=fit_model.name, expect_vertices=fit_model.n_vertices)
        except RigFileError as err:
            logger.error("--target-rig: %s", err)
            return 1
    try:
        rig_dir, video = resolve_inputs(args, model, timings)
    except FileNotFoundError as err:
        logger.error("%s", err)
        return 1

    from core.rig.builder import RigBuildConfig
    from utils.landmarks.detect import FaceLandmarker
    from utils.pipelines.rig import RigInputError, build_rig_from_folder

    landmarker = FaceLandmarker("auto")
    config = RigBuildConfig(photometric=not args.no_photometric)
    builder = None
    if args.weights is not None:
        try:
            builder = network_builder(args.weights, fit_model, args.device, timings)
        except ValueError as err:
            logger.error("--weights: %s", err)
            return 1
    try:
        rig_run = build_rig_from_folder(rig_dir, args.out, fit_model, landmarker=landmarker,
                                        max_images=args.max_images, config=config, builder=builder)
    except RigInputError as err:
        logger.error("%s", err)
        return 1
    timings.update({f"rig: {stage}": sec for stage, sec in rig_run.timings.items()})
    outputs.update(rig_run.outputs)
    code, video_run = run_video(args, video, fit_model, target or rig_run.result.rig, landmarker, config,
                                timings, outputs, builder)
    timings["total"] = time.perf_counter() - started
    print_summary(summary_rows(rig_run, video_run, timings, outputs))
    return code


def network_builder(weights: Path, fit_model, device: str, timings: Dict[str, float]):
    """The network's rig builder from a weights file (raises ValueError naming the file)."""
    import torch

    from models.weights import load_network

    start = time.perf_counter()
    net = load_network(weights, fit_model.to(dtype=torch.float32), device=device)
    timings["network weights"] = time.perf_counter() - start
    logger.info("rigs built by the network %s (trained: %s)", weights, net.training_info.get("command", "?"))
    return net.build_rig


def run_video(args, video: Path, fit_model, target, landmarker, config, timings: Dict[str, float],
              outputs: Dict[str, Path], builder=None) -> Tuple[int, Optional[object]]:
    """Landmarks of the video (one pass), the video person's rig from its frames, tracking and
    retargeting; (exit code, `TrackingRun`)."""
    import torch

    from core.rig.retarget import RetargetError
    from utils.io.video import VideoReadError
    from utils.pipelines.video import VideoInputError, scan_video, source_rig_from_video, track_and_retarget

    torch.set_num_threads(1)  # per-frame problems are small: a second thread only adds overhead
    try:
        scan = scan_video(video, landmarker, source_frames=args.source_frames)
    except VideoReadError as err:
        logger.error("%s (the rig outputs above are complete)", err)
        return 1, None
    with scan:
        timings.update({f"video: {stage}": sec for stage, sec in scan.timings.items()})
        start = time.perf_counter()
        try:
            source, frames = source_rig_from_video(scan, fit_model, source_frames=args.source_frames, config=config,
                                                   builder=builder, detector=landmarker.backend)
        except (VideoReadError, VideoInputError) as err:
            logger.error("%s (the rig outputs above are complete)", err)
            return 1, None
        outputs["source_rig"] = source.save(args.out / "videos" / "source_rig.npz")
        timings["video: source rig"] = time.perf_counter() - start
        logger.info("video person's rig from frames %s of %s", frames, video)
        try:
            run = track_and_retarget(video, args.out, source, fit_model, target, landmarker, scan=scan,
                                     max_frames=args.max_frames, pose=args.retarget_pose, light=args.retarget_light)
        except (VideoReadError, RetargetError) as err:
            logger.error("%s (the rig outputs above are complete)", err)
            return 1, None
    for stage, sec in run.timings.items():
        timings[f"video: {stage}"] = timings.get(f"video: {stage}", 0.0) + sec
    outputs.update(run.outputs)
    if run.error:
        logger.error("%s: tracked the %d frames read before the error; outputs hold those", run.error, run.frames)
        return 1, run
    return 0, run


if __name__ == "__main__":
    from utils.process import exit_now

    exit_now(main())  # outputs are written and closed by now: skip the interpreter's ~1 s teardown
