"""A video in; tracking, retargeting and videos out (files under an output folder), streaming.

One pass of landmarks, then the rest:

1. `scan_video`: every frame decoded once and landmarked once (tracked, filtered,
   `utils.landmarks.tracking.LandmarkStream`; `utils.landmarks.scan`); the landmarks go to a
   scratch file (memory stays flat whatever the video's length), and face crops of a bounded set of
   candidate frames spread over the whole video are kept for the source rig. The demo runs this
   pass in a child process while it starts up (`utils.landmarks.prefetch.VideoPrefetch`).
2. `source_rig_from_video`: the video's person gets a rig from a few of those frames spread over
   head yaw (as the original caches a few video frames of the person), or from frames chosen by
   number.
3. `track_and_retarget`: frame by frame (decoded again, the scan's landmarks reused) -> the source
   rig tracked (`core.rig.tracker`) -> the target rig driven by the frame's expression
   (`core.rig.retarget`) -> ``videos/input_clip.mp4``, ``videos/output_recon.mp4`` (the tracked mesh
   over the frame), ``videos/output_exptrans.mp4`` (the retargeted target) written as frames come,
   ``videos/tracking.npz`` (`utils.io.tracking`), and for 3D tools (`utils.export`)
   ``videos/animation.glb`` (the target rig animated by the tracked weights and head rotation) and
   ``videos/animation_arkit.csv`` (the tracked weights as a Live Link Face CSV). Two worker threads
   render and write each frame while the next one is tracked (a queue of a few frames between
   them): one the overlay (with the input clip), one the retargeted face, so that on two cores the
   rendering, which costs about twice the tracking, is not one thread's queue.

``max_frames`` limits tracking only: the scan reads the whole video, so the source rig's frames are
spread over all of it. With several people in view, ``face`` chooses whom to follow
(`utils.landmarks.tracking.FaceTracker`: the same person after a lost face, chosen afresh after a cut).

A truncated video keeps every frame that could be read: the videos are closed, the arrays written,
and the error is reported (``VideoScan.error``, ``TrackingRun.error``).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Literal, Optional, Tuple, Union

import cv2
import numpy as np
import torch

from core.cpus import single_thread
from core.face_model.model import MorphableModel
from core.rig.builder import RigBuildConfig
from core.rig.retarget import RigRenderer, expression_map, frontal_pose, white_balanced
from core.rig.rig import Rig
from core.rig.tracker import DenseTies, FrameTrack, RigTracker, TrackerConfig
from utils.background import BackgroundWorker
from utils.crop import crop_batch, crop_face
from utils.export.errors import ExportError
from utils.export.outputs import export_animation, export_live_link_csv
from utils.io.images import to_uint8
from utils.io.tracking import TrackingFileError, TrackingRecorder, load_tracking
from utils.io.video import VideoReader, VideoReadError
from utils.io.video_writer import VideoWriter
from utils.landmarks.detect import FaceLandmarker, Selection
from utils.landmarks.filters import OneEuroParams
from utils.landmarks.mesh import load_mesh_correspondence
from utils.landmarks.prefetch import VideoPrefetch
from utils.landmarks.scan import Candidate, SourceFrames, VideoScan, choose_frames, scan_landmarks, yaw_proxy
from utils.landmarks.tracking import LandmarkStream
from utils.pipelines.builders import RigBuilder, classical_builder
from utils.progress import progress_bar
from utils.visualization import FitOverlay

__all__ = ["VideoInputError", "VideoScan", "TrackingRun", "scan_video", "source_rig_from_video",
           "track_and_retarget", "yaw_proxy"]

logger = logging.getLogger(__name__)

PoseMode = Literal["source", "frontal"]
LightMode = Literal["source", "frontal"]
_BACKGROUND = 0.16  # grey level behind the retargeted face
#: x264's preset for the job's three videos: against `VideoWriter`'s default (veryfast), 28 % less
#: encoding CPU (0.8 of 2.9 s for three 250-frame 480 x 480 videos, about 0.5 s of the whole job) at
#: the same quality (PSNR 42.1-42.9 against 41.8-42.3 dB at CRF 20), in files 1.8 times as large
#: (2.3 instead of 1.3 MB for the three; docs/benchmarks.md, "Speed, session 21").
OUTPUT_PRESET = "superfast"


class VideoInputError(ValueError):
    """The video cannot drive anything (unreadable, or no face in it); the message names the file."""


@dataclass
class TrackingRun:
    """What a tracking run did: frame counts, the frames without a face (``flagged_frames``),
    timings per stage (s), outputs, and any error."""

    frames: int = 0
    tracked: int = 0
    flagged: int = 0
    flagged_frames: List[int] = field(default_factory=list)
    timings: Dict[str, float] = field(default_factory=dict)
    outputs: Dict[str, Path] = field(default_factory=dict)
    error: Optional[str] = None
    mean_error: float = float("nan")
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add_time(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage`` (safe from the rendering threads)."""
        with self._lock:
            self.timings[stage] = self.timings.get(stage, 0.0) + seconds


def scan_video(video: Union[str, Path], landmarker: FaceLandmarker, *, source_frames: SourceFrames = 8,
               landmark_filter: Optional[OneEuroParams] = OneEuroParams(), face: Selection = "largest",
               prefetched: Optional[VideoPrefetch] = None) -> VideoScan:
    """Landmarks of every frame of ``video`` (each frame decoded and landmarked once) and face crops
    of candidate frames for the source rig (`utils.landmarks.scan.scan_landmarks`).

    Args:
        video: the video file.
        landmarker: detections and landmarks.
        source_frames: how many frames will build the video person's rig (candidates are kept at
            regular intervals over the whole video), or the frame numbers to use (only those are kept).
        landmark_filter: One Euro filter of the landmarks (None: raw).
        face: whom to follow where several people are in view (`utils.landmarks.tracking.FaceTracker`).
        prefetched: the same scan running in a child process since start-up
            (`utils.landmarks.prefetch.VideoPrefetch`): its result is taken (its candidates are the
            frames `choose_frames` picks), else (a warning logged) the video is scanned here.

    Raises:
        VideoReadError: the video cannot be opened (a truncated one is scanned up to the error,
            reported in ``error``).
    """
    if prefetched is not None:
        scan = prefetched.scan(video, landmarker.backend, source_frames, face, landmark_filter)
        if scan is not None:
            scan.candidates = [(yaw, index, crop_face(image, landmarks))
                               for yaw, index, (image, landmarks) in scan.candidates]
            return scan
    return scan_landmarks(video, landmarker, source_frames=source_frames, landmark_filter=landmark_filter,
                          face=face, keep=crop_face)


def _choose(scan: VideoScan, source_frames: SourceFrames) -> List[Candidate]:
    """The source rig's frames (`choose_frames`); a frame number asked for without a face is an error."""
    if not isinstance(source_frames, int):
        found = {c[1] for c in scan.candidates}
        absent = [i for i in source_frames if int(i) not in found]
        if absent:
            raise VideoInputError(f"{scan.path}: no face in source frame(s) {absent} (of {scan.frames} frames)")
    return choose_frames(scan.candidates, source_frames)


def source_rig_from_video(scan: VideoScan, model: MorphableModel, *, source_frames: SourceFrames = 8,
                          config: RigBuildConfig = RigBuildConfig(), builder: Optional[RigBuilder] = None,
                          detector: Optional[str] = None) -> Tuple[Rig, List[int]]:
    """A rig of the video's person from ``source_frames`` of a scanned video.

    Args:
        scan: the video's `scan_video` (made with the same ``source_frames``).
        model: the face model region to fit.
        source_frames: how many frames (spread over head yaw, `yaw_proxy`), or which frame numbers.
        config: the classical builder's settings (unused with ``builder``).
        builder: replaces the classical solver (e.g. the network's ``INORig.build_rig``).
        detector: the landmark backend, whose noise profile weights the classical fit.

    Returns:
        (`Rig`, the chosen frame numbers, sorted).

    Raises:
        VideoInputError: no face in the scanned frames (or in a frame asked for).
    """
    if scan.frames == 0 and scan.error:
        raise VideoReadError(scan.error)
    if not scan.candidates:
        raise VideoInputError(f"{scan.path}: no face found in its {scan.frames} frames, nothing to track")
    chosen = _choose(scan, source_frames)
    images, landmarks = crop_batch([c[2] for c in chosen])
    with single_thread():  # many small tensor operations: a second thread only waits (core.cpus)
        result = (builder or classical_builder(model, config, detector))(images, landmarks)
    indices = sorted(int(c[1]) for c in chosen)
    logger.info("source rig from frames %s of %s (landmark error %.2f crop px)", indices, scan.path,
                float(result.reprojection_error.mean()))
    return result.rig, indices


def _recon_frame(image: np.ndarray, track: FrameTrack, overlay: FitOverlay) -> np.ndarray:
    """The tracked face (the tracker's own mesh, `FrameTrack.vertices`, with the rig's parts in the eye
    and mouth openings; `utils.visualization.FitOverlay`) over the frame, where fitted."""
    if not track.detected:
        out = image.copy()
        cv2.putText(out, "no face", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 64, 64), 2, cv2.LINE_AA)
        return out
    return overlay(image, track.expression, track.pose, _gaze(track), track.vertices)


def _gaze(track: FrameTrack) -> Optional[torch.Tensor]:
    """The frame's tracked gaze (2, 2) [left, right] x (yaw, pitch) radians, where the tracker gives one."""
    gaze = getattr(track, "gaze", None)
    return None if gaze is None else torch.as_tensor(gaze).reshape(2, 2)


class _Retargeter:
    """Renders the target rig (its whole head where it has parts) driven by the source's tracked
    expressions and gaze; the video's light has its colour cast taken out."""

    def __init__(self, source: Rig, target: Rig, pose: PoseMode, light: LightMode, size: tuple) -> None:
        self.target = target
        self.index = expression_map(source.expression_names, target.expression_names)
        self.pose, self.light = pose, light
        self.background = torch.full((1, 3, *size), _BACKGROUND)
        self.frontal = frontal_pose(target.neutral, *size)
        self.renderer = RigRenderer(target)

    def __call__(self, track: FrameTrack) -> np.ndarray:
        expression = track.expression[None] if self.index is None else track.expression[None][:, self.index]
        pose = self.frontal if not track.valid or self.pose == "frontal" else track.pose
        sh = white_balanced(track.sh[None]) if (self.light == "source" and track.sh is not None) else None
        gaze = _gaze(track)
        vertices = self.target.head_vertices(expression, None if gaze is None else gaze[None])
        image = self.renderer(vertices, pose, self.background, sh)
        return to_uint8(image[0])


def _calibrate_rest(tracker: RigTracker, scan: VideoScan, count: int) -> None:
    """The tracker's rest face from ``count`` scanned frames with a face, spread over the video."""
    found = [i for i in range(scan.frames) if scan.landmarks[i] is not None]
    if not found:
        return
    pick = [found[int(k)] for k in np.unique(np.linspace(0, len(found) - 1, min(count, len(found))).round())]
    dense = None if scan.dense is None else [scan.dense[i] for i in pick]
    tracker.calibrate_rest([scan.landmarks[i] for i in pick], dense)


def _export_animation(run: TrackingRun, tracking_file: Path, target: Rig, target_source: Optional[Union[str, Path]],
                      videos: Path, written: Dict[str, Path]) -> None:
    """``animation.glb`` (the target driven by the tracking) and ``animation_arkit.csv`` into
    ``written``; an export that fails is logged and left out (the tracking and videos are written)."""
    start = time.perf_counter()
    try:
        tracking = load_tracking(tracking_file)
        written["animation_glb"] = export_animation(target, tracking, videos / "animation.glb", source=target_source)
        written["animation_csv"] = export_live_link_csv(tracking, videos / "animation_arkit.csv")
    except (ExportError, TrackingFileError) as err:
        logger.error("animation exports not written: %s", err)
    run.add_time("writing exports", time.perf_counter() - start)


def track_and_retarget(video: Union[str, Path], out_dir: Path, source: Rig, template: MorphableModel,
                       target: Rig, landmarker: Optional[FaceLandmarker] = None, *,
                       scan: Optional[VideoScan] = None, max_frames: Optional[int] = None,
                       tracker_config: TrackerConfig = TrackerConfig(),
                       landmark_filter: Optional[OneEuroParams] = OneEuroParams(),
                       pose: PoseMode = "source", light: LightMode = "frontal", face: Selection = "largest",
                       export: bool = True, target_source: Optional[Union[str, Path]] = None,
                       rest_frames: int = 240, overlay_alpha: float = 0.6) -> TrackingRun:
    """Track ``video`` with the source rig and drive the target rig; write ``out_dir/videos/*``.

    Args:
        video: the source video.
        out_dir: output folder (``videos/`` is created in it).
        source: the video person's rig (tracked). template: the model region both rigs are over.
        target: the rig driven by the source's expressions.
        landmarker: landmarks of the frames the scan did not cover (all of them without a scan).
        scan: the video's `scan_video`: its landmarks are used (each frame landmarked once).
        max_frames: track at most this many frames.
        tracker_config: see `TrackerConfig`.
        landmark_filter: One Euro filter of the landmarks computed here (None: raw).
        pose, light: the retargeted render's head pose and lighting, the source frame's (its light
            white-balanced) or frontal (a neutral light, the default: the target's own colours).
        face: whom to follow in frames the scan did not cover (see `scan_video`).
        export: also write ``videos/animation.glb`` and ``videos/animation_arkit.csv`` (`utils.export`).
        target_source: the target rig's file, named in export messages.
        rest_frames: frames of the scan, spread over the video, on which the tracker calibrates the
            person's rest face (`RigTracker.calibrate_rest`; 0 or no scan: none).
        overlay_alpha: opacity of the tracked face over the video in ``output_recon.mp4``.

    Raises:
        VideoReadError: the video cannot be opened (a truncated one is reported in ``error``).
        ValueError: neither a scan nor a landmarker.
    """
    if scan is None and landmarker is None:
        raise ValueError("track_and_retarget: needs the video's scan or a landmarker")
    run = TrackingRun()
    videos = Path(out_dir) / "videos"
    with_dense = (scan.dense is not None) if scan is not None else (landmarker.backend == "mediapipe")
    ties = DenseTies.from_correspondence(load_mesh_correspondence()) if with_dense else None
    tracker = RigTracker(source, template, tracker_config, dense=ties)
    if scan is not None and rest_frames > 0:
        start = time.perf_counter()
        _calibrate_rest(tracker, scan, rest_frames)
        run.add_time("rest face", time.perf_counter() - start)
    recorder = TrackingRecorder(source.n_expression)
    reader = VideoReader(video)
    info = reader.info
    retargeter = _Retargeter(source, target, pose, light, (info.height, info.width))
    overlay = FitOverlay(source, overlay_alpha)
    stream = (None if landmarker is None
              else LandmarkStream(landmarker, filter_params=landmark_filter, face=face))
    scanned = 0 if scan is None else scan.frames
    paths = {name: videos / f"{name}.mp4" for name in ("input_clip", "output_recon", "output_exptrans")}
    writers = {name: VideoWriter(path, info.fps, preset=OUTPUT_PRESET) for name, path in paths.items()}
    total = min(info.frame_count, max_frames) if max_frames and info.frame_count else (max_frames or info.frame_count)
    errors = []

    def overlay_and_write(image: np.ndarray, track: FrameTrack) -> None:
        start = time.perf_counter()
        recon = _recon_frame(image, track, overlay)
        run.add_time("rendering", time.perf_counter() - start)
        start = time.perf_counter()
        writers["input_clip"].write(image)
        writers["output_recon"].write(recon)
        run.add_time("writing videos", time.perf_counter() - start)

    def retarget_and_write(track: FrameTrack) -> None:
        start = time.perf_counter()
        exptrans = retargeter(track)
        run.add_time("rendering", time.perf_counter() - start)
        start = time.perf_counter()
        writers["output_exptrans"].write(exptrans)
        run.add_time("writing videos", time.perf_counter() - start)

    # each writer is fed by one worker, in frame order; frame i is rendered while frame i + 1 is tracked
    workers = (BackgroundWorker("overlay-and-write"), BackgroundWorker("retarget-and-write"))
    clock = time.perf_counter()
    try:
        for index, image in enumerate(progress_bar(reader, total=total or None, desc="tracking video",
                                                   unit="frame")):
            if max_frames is not None and index >= max_frames:
                break
            start = time.perf_counter()
            run.add_time("decoding", start - clock)
            dense = None
            if index < scanned:
                landmarks = scan.landmarks[index]
                dense = None if scan.dense is None else scan.dense[index]
            elif stream is not None:
                frame = stream(index, image, index / info.fps, keep_image=False)
                landmarks, dense = frame.landmarks, (None if frame.face is None else frame.face.dense)
                run.add_time("landmarks", time.perf_counter() - start)
            else:
                break  # the scan ended at a read error; without a landmarker nothing more to track
            start = time.perf_counter()
            track = tracker.step(landmarks, image, dense=dense)
            run.add_time("tracking (fit + lighting)", time.perf_counter() - start)
            recorder.add(track)
            run.frames += 1
            run.tracked += int(track.detected)
            if track.detected:
                errors.append(track.error)
            else:
                run.flagged_frames.append(index)
            workers[0].submit(overlay_and_write, image, track)
            workers[1].submit(retarget_and_write, track)
            clock = time.perf_counter()
    except VideoReadError as err:  # truncated or corrupt: keep what was read
        run.error = str(err)
    finally:
        failed = next((err for err in [w.close(raise_error=False) for w in workers] if err is not None), None)
        run.add_time("waiting for rendering and writing", sum(w.waited for w in workers))
        start = time.perf_counter()
        tracking = recorder.save(videos / "tracking.npz", info.fps, source.expression_names,
                                 model=source.model, n_vertices=source.n_vertices)
        exported: Dict[str, Path] = {}
        # The exports read tracking.npz on a worker thread while the video encoders finish their files.
        with BackgroundWorker("exports", depth=1) as exporter:
            if failed is None and export and run.frames:
                exporter.submit(_export_animation, run, tracking, target, target_source, videos, exported)
            for writer in writers.values():
                writer.close()
            run.outputs.update({name: p for name, p in paths.items() if writers[name].frames})
            run.outputs["tracking"] = tracking
            run.add_time("writing videos", time.perf_counter() - start)
            reader.close()
        run.outputs.update(exported)  # after the videos: the summary lists them in a fixed order
    if failed is not None:
        raise failed
    if run.error is None and scan is not None and scan.error and max_frames is None:
        run.error = scan.error
    run.flagged = run.frames - run.tracked
    run.mean_error = float(np.mean(errors)) if errors else float("nan")
    if run.flagged:
        logger.warning("%s: %d of %d frames without a (trackable) face: parameters carried over, flagged",
                       video, run.flagged, run.frames)
    return run
