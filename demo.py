"""Riggable 3D face reconstruction demo: photos of a person -> their face rig; a video -> it drives the rig.

    python demo.py                                        # the example photos and video in examples/
    python demo.py --rig-dir photos/ --out out/me --no-video          # only build the rig of photos/
    python demo.py --rig-dir photos/ --video clip.mp4 --out out/me    # build it, then drive it with clip.mp4
    python demo.py --target-rig out/me/rig/rig.npz --video clip.mp4   # drive an existing rig (no photo rig)
    python demo.py --synthetic                            # a subject rendered by the project itself

What it writes under --out (default out/demo):
  rig/rig.npz, rig/rig.glb          the photos' rig (glTF 2.0 with ARKit-named morph targets, metres)
  mesh/*.obj, params/*.json         per-photo meshes (mm, the model's vertex order) and parameters
  visualization/*.jpg               photo | fitted mesh over it | geometry
  videos/input_clip.mp4, output_recon.mp4 (tracked mesh over the video), output_exptrans.mp4 (the driven
  rig), tracking.npz (per-frame parameters), source_rig.npz (the video person's rig), animation.glb (the
  driven rig animated), animation_arkit.csv (Live Link Face CSV of the tracked weights)
  summary.json                      what was done: images used / skipped / flagged, the face taken per
                                    image, frames flagged, timings, versions, every file written

Frames: the video person's rig is built from --source-frames frames spread over the whole video (or the
frame numbers given); --max-frames limits only how many frames are tracked and rendered.
Every input is checked before any work; a bad one stops the run with one line naming it (exit 1;
a wrong flag exits 2).
"""
from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Tuple, Union

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch: spinning OpenMP threads stall shared CPUs

REPO_ROOT = Path(__file__).resolve().parent
EXAMPLES = REPO_ROOT / "examples"
SYNTHETIC_DIR = EXAMPLES / "generated" / "synthetic"

# ---- Edit these, as in the original release ----------------------------------------------------
rig_img_dir = EXAMPLES / "photos"  # photos of one person that build the rig
src_vid_path = EXAMPLES / "driver.mp4"  # video that drives the rig (a folder: its first video by name)
out_dir = REPO_ROOT / "out" / "demo"  # outputs: <out>/rig, mesh, params, visualization, videos
model_kind = "ict"  # face model: ict (open), bfm2009 or face3d (licensed files in external/)
# -------------------------------------------------------------------------------------------------

logger = logging.getLogger("demo")

if TYPE_CHECKING:
    from utils.landmarks.prefetch import FolderPrefetch, VideoPrefetch


class DemoError(Exception):
    """A user-facing failure: logged as one line, exit code 1."""


def source_frames_arg(text: str) -> Union[int, List[int]]:
    """``--source-frames``: a count (``8``) or frame numbers (``0,40,80``)."""
    parts = [t for t in text.replace(" ", "").split(",") if t]
    if not parts or not all(t.isdigit() for t in parts):
        raise argparse.ArgumentTypeError(f"expected a count (e.g. 8) or frame numbers (e.g. 0,40,80), got {text!r}")
    if len(parts) == 1 and "," not in text:
        count = int(parts[0])
        if count < 1:
            raise argparse.ArgumentTypeError(f"expected at least 1 frame, got {count}")
        return count
    return sorted({int(t) for t in parts})


def face_arg(text: str):
    """``--face``: largest, central, confident or a face number from the left."""
    from utils.landmarks.base import LandmarkError
    from utils.landmarks.detect import parse_selection

    try:
        return parse_selection(text)
    except LandmarkError as err:
        raise argparse.ArgumentTypeError(str(err).removeprefix("face: ")) from None


def build_parser() -> argparse.ArgumentParser:
    from utils.landmarks.base import BACKENDS, DEFAULT_BACKEND, DEFAULT_VIDEO_BACKEND

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    stages = p.add_argument_group("what to run (default: build the photos' rig, then drive it with the video)")
    stages.add_argument("--no-video", action="store_true", help="only build the rig from the photos")
    stages.add_argument("--target-rig", type=Path, default=None, metavar="RIG.npz",
                        help="drive this existing rig with the video; no rig is built from photos")
    inputs = p.add_argument_group("inputs")
    inputs.add_argument("--rig-dir", type=Path, default=None, metavar="DIR",
                        help=f"folder of photos of one person (default {rig_img_dir.relative_to(REPO_ROOT)})")
    inputs.add_argument("--video", type=Path, default=None,
                        help=f"video that drives the rig, or a folder: its first video by name "
                             f"(default {src_vid_path.relative_to(REPO_ROOT)})")
    inputs.add_argument("--synthetic", action="store_true",
                        help="use a subject rendered by the project (photos and a video) instead of the examples")
    inputs.add_argument("--synthetic-frames", type=int, default=60, help="length of the synthetic video (frames)")
    p.add_argument("--out", type=Path, default=out_dir, help="output folder (default out/demo)")
    faces = p.add_argument_group("faces and landmarks")
    faces.add_argument("--landmarks", choices=BACKENDS, default=DEFAULT_BACKEND,
                       help=f"landmark detector of the photos (default {DEFAULT_BACKEND}: offline, no download; "
                            f"face_alignment needs its weights in the torch hub cache)")
    faces.add_argument("--video-landmarks", choices=BACKENDS, default=None,
                       help=f"landmark detector of the video (default {DEFAULT_VIDEO_BACKEND}: dense points and "
                            f"irises, so expressions read better and the gaze is tracked; {DEFAULT_BACKEND} where "
                            f"its package is missing)")
    faces.add_argument("--face", type=face_arg, default="largest", metavar="{largest,central,confident,N}",
                       help="which face where a photo or the video shows several: the largest, the most central, "
                            "the most confident, or the N-th from the left (from 0). In the video the chosen "
                            "person is followed, and chosen again after a cut (default largest)")
    faces.add_argument("--keep-outliers", action="store_true",
                       help="keep photos whose landmark fit is far worse than the others' in the rig (default: "
                            "flag them and build the rig without them)")
    frames = p.add_argument_group("frames and images")
    frames.add_argument("--source-frames", type=source_frames_arg, default=None, metavar="N|F1,F2,...",
                        help="video frames that build the video person's rig: a count, spread over the whole "
                             "video's head turns (default 8), or frame numbers from 0 (e.g. 0,40,80)")
    frames.add_argument("--max-frames", type=int, default=None,
                        help="track and render at most this many frames from the start (the source rig's frames "
                             "still come from the whole video)")
    frames.add_argument("--max-images", type=int, default=None, help="use at most this many photos (by name)")
    fitting = p.add_argument_group("fitting and rendering")
    fitting.add_argument("--no-photometric", action="store_true",
                         help="fit landmarks only (several times faster, less detailed)")
    fitting.add_argument("--weights", type=Path, default=None,
                         help="network weights (e.g. net_weights/inorig_ict.pth): build the rigs with the network "
                              "instead of the classical solver")
    fitting.add_argument("--device", default="cpu", help="torch device of the network (--weights)")
    fitting.add_argument("--rest-frames", type=int, default=240, metavar="N",
                         help="frames spread over the video on which the person's rest face is found: the "
                              "zero of the tracked expressions (default 240; 0 = none, for a clip that "
                              "never rests: its least expressive frames would be taken for rest)")
    fitting.add_argument("--retarget-pose", choices=["source", "frontal"], default="source",
                         help="head pose of the driven rig in output_exptrans.mp4: the video's, or fixed frontal")
    fitting.add_argument("--retarget-light", choices=["source", "frontal"], default="frontal",
                         help="lighting of the driven rig: a neutral frontal light showing the rig's own colours "
                              "(default), or the video frame's, white-balanced")
    fitting.add_argument("--model", choices=["ict", "bfm2009", "face3d"], default=model_kind, help="face model")
    fitting.add_argument("--model-path", type=Path, default=None, help="face model folder (default: under external/)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="no progress bars or log lines; print only errors and where the summary is")
    return p


def parse_args(argv=None) -> argparse.Namespace:
    p = build_parser()
    args = p.parse_args(argv)
    for name in ("max_frames", "max_images", "synthetic_frames"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.rest_frames < 0:
        p.error(f"--rest-frames must be 0 (none) or more, got {args.rest_frames}")
    if args.no_video:
        clashes = [flag for flag, value in (("--video", args.video), ("--target-rig", args.target_rig),
                                            ("--max-frames", args.max_frames), ("--source-frames", args.source_frames))
                   if value is not None]
        if clashes:
            p.error(f"--no-video builds only the photos' rig; {', '.join(clashes)} would need the video")
    if args.target_rig is not None and (args.rig_dir is not None or args.max_images is not None):
        p.error("--target-rig drives an existing rig and builds none from photos: leave out --rig-dir/--max-images "
                "(or leave out --target-rig to build the photos' rig and drive it)")
    if args.source_frames is None:
        args.source_frames = 8
    return args


# ---- inputs --------------------------------------------------------------------------------------


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


def synthetic_inputs(model, n_frames: int, timings: Dict[str, float]):
    """The synthetic subject (rendered once into examples/generated/synthetic/, then reused)."""
    from utils.synthetic.clip import write_synthetic_inputs

    made = existing_synthetic_inputs(n_frames)
    if made is None:
        start = time.perf_counter()
        logger.info("--synthetic: rendering a synthetic subject into %s", SYNTHETIC_DIR)
        made = write_synthetic_inputs(model, SYNTHETIC_DIR, n_images=8, n_frames=n_frames)
        timings["synthetic inputs"] = time.perf_counter() - start
    else:
        logger.info("--synthetic: using the synthetic subject in %s", SYNTHETIC_DIR)
    return made


def check_inputs(args) -> Tuple[Optional[Path], Optional[Path]]:
    """The photo folder and the video the run will use, the target rig and the weights file, each
    checked on its own (before the model loads). Raises `InputError`."""
    from utils.pipelines.inputs import (
        check_file,
        check_photo_folder,
        check_rig_file,
        check_video,
        first_video,
    )

    build_rig = args.target_rig is None
    use_video = not args.no_video
    rig_dir = (args.rig_dir or rig_img_dir) if build_rig and not args.synthetic else None
    video = (args.video or src_vid_path) if use_video and not (args.synthetic and args.video is None) else None
    if rig_dir is not None:
        check_photo_folder(rig_dir)
    if video is not None:
        video = first_video(video)
        check_video(video)
    if args.target_rig is not None:
        check_rig_file(args.target_rig)
    if args.weights is not None:
        check_file(args.weights, "--weights")
    return (Path(rig_dir) if rig_dir else None), (Path(video) if video else None)


def check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise DemoError(f"--device {device}: CUDA is not available here; use --device cpu")
    logger.warning("--device %s: only the network (--weights) runs there; fitting, tracking and rendering run "
                   "on the CPU", device)


def network_builder(weights: Path, fit_model, device: str, timings: Dict[str, float]):
    """The network's rig builder from a weights file (raises ValueError naming the file)."""
    import torch

    from models.weights import load_network

    start = time.perf_counter()
    net = load_network(weights, fit_model.to(dtype=torch.float32), device=device)
    timings["network weights"] = time.perf_counter() - start
    logger.info("rigs built by the network %s (trained: %s)", weights, net.training_info.get("command", "?"))
    return net.build_rig


def photo_prefetch(args) -> contextlib.AbstractContextManager:
    """The photos' landmarks detected in a child process while this one imports torch and loads the
    face model (`utils.landmarks.prefetch`): a context that ends the child, entered as the prefetch or
    None where the run fits no photos of a folder, uses another backend, or cannot fork. Call it
    before torch is imported."""
    from utils.landmarks.prefetch import FolderPrefetch

    if args.target_rig is not None or args.synthetic:
        return contextlib.nullcontext()
    prefetch = FolderPrefetch.start(args.rig_dir or rig_img_dir, args.landmarks, args.face)
    return contextlib.nullcontext() if prefetch is None else prefetch


def video_prefetch(args) -> contextlib.AbstractContextManager:
    """The video's landmarks scanned in a child process while this one starts up, as `photo_prefetch`:
    entered as the `VideoPrefetch` or None where the run tracks no video file or cannot fork. Call it
    before torch is imported. (A run that also fits photos takes both results before any rig is built:
    the scan first, so that a video that cannot drive anything stops the run at once.)"""
    from utils.landmarks.base import DEFAULT_VIDEO_BACKEND
    from utils.landmarks.prefetch import VideoPrefetch

    if args.no_video or args.synthetic:
        return contextlib.nullcontext()
    prefetch = VideoPrefetch.start(args.video or src_vid_path, args.video_landmarks or DEFAULT_VIDEO_BACKEND,
                                   args.source_frames, args.face)
    return contextlib.nullcontext() if prefetch is None else prefetch


# ---- the run -------------------------------------------------------------------------------------


class Run:
    """One demo run: its inputs, what it computed so far and where it wrote."""

    def __init__(self, args, prefetch: Optional[FolderPrefetch] = None,
                 video_job: Optional[VideoPrefetch] = None) -> None:
        self.args = args
        self.prefetch = prefetch  # the photos' landmarks detected in a child process (`photo_prefetch`)
        self.video_job = video_job  # the video's landmarks scanned in a child process (`video_prefetch`)
        self.started = time.perf_counter()
        self.wall_start = time.time()
        self.timings: Dict[str, float] = {}
        self.outputs: Dict[str, Path] = {}
        self.rig_dir: Optional[Path] = None
        self.video: Optional[Path] = None
        self.backend: Optional[str] = None
        self.rig_run = None
        self.video_run = None
        self.driven: Optional[str] = None
        self.source_frames: Optional[List[int]] = None
        self.cuts: List[int] = []
        self.created_out = False
        self.video_landmarker = None
        self.model = None  # the full face model: the rigs' heads and parts come from it

    def prepare(self):
        """Every input checked and loaded (face model, target rig, weights, landmarker) before any
        work. Returns (fit model, target rig or None, landmarker, builder or None)."""
        from core.face_model.load import load_face_model
        from core.face_model.model import FaceModelError
        from utils.get_face_model import DEFAULT_PATHS, prepare_ict
        from utils.pipelines.inputs import check_output_dir, check_rig_file

        args = self.args
        self.rig_dir, self.video = check_inputs(args)
        check_device(args.device)
        start = time.perf_counter()
        path = args.model_path or DEFAULT_PATHS[args.model]
        try:
            if args.model == "ict":
                path = prepare_ict(path)
            model = load_face_model(args.model, path)
        except FaceModelError as err:
            raise DemoError(str(err)) from None
        if not args.quiet:
            print(model.summary())
        fit_model = model.region("face") if "face" in model.regions and args.model == "ict" else model
        self.model = model
        self.timings["face model"] = time.perf_counter() - start
        target = None
        if args.target_rig is not None:
            target = check_rig_file(args.target_rig, fit_model.name, fit_model.n_vertices)
            self.driven = str(args.target_rig)
        builder = None
        if args.weights is not None:
            try:
                builder = network_builder(args.weights, fit_model, args.device, self.timings)
            except ValueError as err:
                raise DemoError(f"--weights: {err}") from None
        # The photos' landmarker only where photos are fitted (dlib's predictor takes 0.5 s to load).
        landmarker = self.photo_landmarker() if args.target_rig is None else None
        self.backend = None if landmarker is None else landmarker.backend
        self.video_landmarker = self.video_landmarks(landmarker) if self.video is not None or args.synthetic else None
        self.created_out = not args.out.exists()
        check_output_dir(args.out)  # last: nothing is created before every other input passed
        if args.synthetic:
            made = synthetic_inputs(model, args.synthetic_frames, self.timings)
            self.rig_dir = made.rig_dir if args.target_rig is None else None
            self.video = self.video if (args.video is not None or args.no_video) else made.video
        return fit_model, target, landmarker, builder

    def whole_heads(self) -> bool:
        """Whether rigs get the model's head and parts (eyes, teeth, mouth) and a texture: ICT."""
        return self.args.model == "ict"

    def photo_landmarker(self):
        """The photos' landmarker (``--landmarks``); where the photos are detected in a child process
        that could make it, one that loads its models only if this process detects itself."""
        from utils.landmarks.base import LandmarkError
        from utils.landmarks.detect import FaceLandmarker
        from utils.landmarks.prefetch import DeferredLandmarker

        if self.prefetch is not None and not self.prefetch.ready():
            self.prefetch = None  # the child could not make one (this process says why) or died
        if self.prefetch is not None:
            return DeferredLandmarker(self.args.landmarks)
        try:
            return FaceLandmarker(self.args.landmarks)
        except LandmarkError as err:
            raise DemoError(f"--landmarks {self.args.landmarks}: {err}") from None

    def video_landmarks(self, photos):
        """The video's landmarker: ``--video-landmarks``, else `DEFAULT_VIDEO_BACKEND` where it can be
        had, else the photos' one (made here when no photos are fitted)."""
        from utils.landmarks.base import DEFAULT_VIDEO_BACKEND, LandmarkError
        from utils.landmarks.detect import FaceLandmarker
        from utils.landmarks.prefetch import DeferredLandmarker

        backend = self.args.video_landmarks or DEFAULT_VIDEO_BACKEND
        if self.video_job is not None and not self.video_job.ready():
            self.video_job = None  # the child could not make one (made here below, or a fallback) or died
        if photos is not None and backend == photos.backend:
            return photos
        if self.video_job is not None:
            return DeferredLandmarker(backend)  # loads its models only if this process detects
        try:
            return FaceLandmarker(backend)
        except LandmarkError as err:
            if self.args.video_landmarks:
                raise DemoError(f"--video-landmarks {backend}: {err}") from None
            fallback = photos if photos is not None else self.photo_landmarker()
            logger.info("video landmarks by %s (%s)", fallback.backend, err)
            return fallback

    def build_rig(self, fit_model, landmarker, config, builder):
        """The photos' rig (rig/, mesh/, params/, visualization/), as a textured whole head."""
        from utils.background import FILES_NICE, BackgroundWorker
        from utils.pipelines.appearance import write_appearance
        from utils.pipelines.rig import RigInputError, build_rig_from_folder

        heads = self.whole_heads()
        # The face rig's files are written on a worker thread while the whole head and its texture
        # are made; the whole head's rig.npz is queued after them (the face rig's only where the
        # whole head cannot be made: `write_appearance`).
        with BackgroundWorker("rig-outputs", nice=FILES_NICE) as writer:
            try:
                self.rig_run = build_rig_from_folder(self.rig_dir, self.args.out, fit_model, landmarker=landmarker,
                                                     max_images=self.args.max_images, config=config,
                                                     builder=builder, face=self.args.face,
                                                     drop_outliers=not self.args.keep_outliers, export=not heads,
                                                     save_rig=not heads, prefetched=self.prefetch, writer=writer)
            except RigInputError as err:
                raise DemoError(str(err)) from None
            self.driven = self.driven or str(self.rig_run.outputs["rig"])
            made = write_appearance(self.rig_run, self.model, self.args.out, writer=writer) if heads else None
        # Read once the files are written: the worker leaves rig.glb out where its export failed.
        self.outputs.update(self.rig_run.outputs)
        self.timings.update({f"rig: {stage}": sec for stage, sec in self.rig_run.timings.items()})
        self.timings["rig: waiting for the files"] = writer.waited
        if made is None:
            return self.rig_run.result.rig
        self.timings.update({f"rig: {stage}": sec for stage, sec in made.timings.items()})
        self.outputs.update(made.outputs)
        return made.rig

    def scan(self, landmarker):
        """One pass of landmarks over the whole video, before any rig is built: a truncated or
        corrupt video, or one without a face, stops the run here (`DemoError`)."""
        import torch

        from utils.io.video import VideoReadError
        from utils.pipelines.video import scan_video

        args = self.args
        torch.set_num_threads(1)  # per-frame problems are small: a second thread only adds overhead
        if self.video_job is not None and self.whole_heads():
            # What the rigs' whole heads need (scipy's spatial and image modules: ~0.2 s of imports),
            # imported while the child scans rather than after.
            import utils.pipelines.appearance  # noqa: F401
        try:
            scan = scan_video(self.video, landmarker, source_frames=args.source_frames, face=args.face,
                              prefetched=self.video_job)
        except VideoReadError as err:
            raise DemoError(str(err)) from None
        if scan.error:
            scan.close()
            raise DemoError(f"{scan.error} (re-encode the video, or cut it before the damage)")
        if not scan.candidates:
            scan.close()
            asked = "" if isinstance(args.source_frames, int) else f" in frames {args.source_frames}"
            raise DemoError(f"video {self.video}: no face found{asked} (of {scan.frames} frames): nothing to track")
        self.cuts = scan.cuts
        self.timings.update({f"video: {stage}": sec for stage, sec in scan.timings.items()})
        return scan

    def drive(self, fit_model, target, landmarker, config, builder, scan) -> None:
        """The video person's rig from its frames, tracking and retargeting (the scan's landmarks)."""
        from core.rig.retarget import RetargetError
        from utils.io.video import VideoReadError
        from utils.pipelines.video import VideoInputError, source_rig_from_video, track_and_retarget

        args, video = self.args, self.video
        start = time.perf_counter()
        try:
            source, self.source_frames = source_rig_from_video(
                scan, fit_model, source_frames=args.source_frames, config=config, builder=builder,
                detector=landmarker.backend)
        except (VideoReadError, VideoInputError) as err:
            raise DemoError(str(err)) from None
        if self.whole_heads():
            from utils.pipelines.appearance import head_rig

            source, target = head_rig(source, self.model), head_rig(target, self.model)
        from utils.background import FILES_NICE, BackgroundWorker

        path = args.out / "videos" / "source_rig.npz"
        # The compressed archive is written on a worker thread while the rest face is calibrated on one core.
        with BackgroundWorker("save-source-rig", depth=1, nice=FILES_NICE) as saver:
            saver.submit(source.save, path)
            self.timings["video: source rig"] = time.perf_counter() - start
            try:
                run = track_and_retarget(video, args.out, source, fit_model, target, landmarker, scan=scan,
                                         max_frames=args.max_frames, pose=args.retarget_pose,
                                         light=args.retarget_light, face=args.face, target_source=self.driven,
                                         rest_frames=args.rest_frames)
            except (VideoReadError, RetargetError) as err:
                raise DemoError(str(err)) from None
        self.outputs["source_rig"] = path
        self.video_run = run
        for stage, sec in run.timings.items():
            self.timings[f"video: {stage}"] = self.timings.get(f"video: {stage}", 0.0) + sec
        self.outputs.update(run.outputs)
        if run.error:
            raise DemoError(f"{run.error}: tracked the {run.frames} frames read before it; the outputs hold those")

    def summary(self, error: Optional[str]) -> Dict[str, Any]:
        """Write ``summary.json`` (where the output folder exists) and return it."""
        self.timings["total"] = time.perf_counter() - self.started
        from utils.pipelines.summary import summary_document, write_summary

        args = self.args
        inputs = {"photos": None if self.rig_dir is None else str(self.rig_dir),
                  "video": None if self.video is None else str(self.video),
                  "target_rig": None if args.target_rig is None else str(args.target_rig),
                  "landmarks": self.backend,
                  "video_landmarks": None if self.video_landmarker is None else self.video_landmarker.backend,
                  "face": str(args.face), "photometric": not args.no_photometric,
                  "builder": f"network {args.weights}" if args.weights else "classical solver"}
        command = ["demo.py", *(sys.argv[1:] if args.argv is None else args.argv)]
        doc = summary_document(command=command, inputs=inputs, out=args.out, driven=self.driven, error=error,
                               rig_run=self.rig_run, video_run=self.video_run, source_frames=self.source_frames,
                               cuts=self.cuts, timings=self.timings, outputs=self.outputs, since=self.wall_start)
        if args.out.is_dir():
            write_summary(doc, args.out / "summary.json")
        return doc


def main(argv=None) -> int:
    args = parse_args(argv)
    args.argv = None if argv is None else list(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.quiet:
        logging.getLogger().setLevel(logging.WARNING)
    from utils.process import collection_after_imports, keep_freed_memory

    keep_freed_memory()  # freed arrays reused, not faulted in again (`utils.process`)
    # No garbage collection while torch and the pipelines are imported (`utils.process`).
    # the prefetches fork before torch is imported: a fork is safe only then
    with collection_after_imports() as imported, photo_prefetch(args) as prefetch, \
            video_prefetch(args) as video_job:
        return run_demo(args, prefetch, imported, video_job)


def run_demo(args, prefetch: Optional[FolderPrefetch] = None, imported: Callable[[], None] = lambda: None,
             video_job: Optional[VideoPrefetch] = None) -> int:
    """The whole run of parsed ``args`` (``prefetch``: the photos' landmarks, `photo_prefetch`;
    ``imported``: called once torch and the face model are loaded, `collection_after_imports`;
    ``video_job``: the video's landmarks, `video_prefetch`)."""
    from utils.pipelines.inputs import InputError
    from utils.progress import set_progress

    set_progress(not args.quiet)
    run = Run(args, prefetch, video_job)
    try:
        fit_model, target, landmarker, builder = run.prepare()
        imported()
        scan = run.scan(run.video_landmarker) if run.video is not None else None
    except (InputError, DemoError) as err:
        logger.error("%s", err)
        if run.created_out and args.out.is_dir() and not any(args.out.iterdir()):
            args.out.rmdir()  # refused before any work: leave no trace
        return 1
    from core.rig.builder import RigBuildConfig

    config = RigBuildConfig(photometric=not args.no_photometric)
    error = None
    try:
        with scan if scan is not None else contextlib.nullcontext():
            if target is None:
                target = run.build_rig(fit_model, landmarker, config, builder)
            if scan is not None:
                run.drive(fit_model, target, run.video_landmarker, config, builder, scan)
    except DemoError as err:
        error = str(err)
        logger.error("%s (the outputs written before it are kept)", err)
    doc = run.summary(error)
    if args.quiet:
        print(f"{len(doc['files'])} files written under {args.out}; what was done: {args.out / 'summary.json'}")
    else:
        from utils.pipelines.summary import format_rows, summary_rows

        print(format_rows(summary_rows(doc)))
    return 1 if error else 0


if __name__ == "__main__":
    status = main()
    from utils.process import exit_now

    exit_now(status)  # outputs are written and closed by now: skip the interpreter's ~1 s teardown
