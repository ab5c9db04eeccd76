"""A video in; tracking, retargeting and videos out (files under an output folder), streaming.

1. `source_rig_from_video`: the video's person gets a rig from a few of its frames spread over head
   yaw (as the original caches a few video frames of the person): landmarks on the first frames,
   crops kept for a bounded set of candidates, `core.rig.builder.build_rig` on the chosen ones.
2. `track_and_retarget`: frame by frame, landmarks (`utils.landmarks.tracking.track_video`) -> the source rig
   tracked (`core.rig.tracker`) -> the target rig driven by the frame's expression
   (`core.rig.retarget`) -> ``videos/input_clip.mp4``, ``videos/output_recon.mp4`` (the tracked mesh
   over the frame), ``videos/output_exptrans.mp4`` (the retargeted target) written as frames come,
   and ``videos/tracking.npz`` (per-frame arrays, streamed to scratch files, gathered at the end).

A truncated video keeps every frame that could be read: the videos are closed, the arrays written,
and the error is reported in the run (``TrackingRun.error``).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Literal, Optional

import cv2
import numpy as np
import torch
from tqdm import tqdm

from core.camera import euler_to_matrix, weak_perspective_screen
from core.face_model.model import MorphableModel
from core.rig.builder import RigBuildConfig, RigBuildResult, build_rig
from core.rig.retarget import expression_map, face_window, frontal_pose, render_rig
from core.rig.rig import Rig
from core.rig.tracker import FrameTrack, RigTracker, TrackerConfig
from utils.crop import crop_batch, crop_face
from utils.io.images import to_uint8
from utils.io.tracking import TrackingRecorder
from utils.io.video import VideoReader, VideoReadError
from utils.io.video_writer import VideoWriter
from utils.landmarks.detect import FaceLandmarker
from utils.landmarks.filters import OneEuroParams
from utils.landmarks.tracking import track_video
from utils.visualization import overlay_mesh

__all__ = ["VideoInputError", "TrackingRun", "source_rig_from_video", "track_and_retarget", "yaw_proxy"]

logger = logging.getLogger(__name__)

PoseMode = Literal["source", "frontal"]
LightMode = Literal["source", "frontal"]
_BACKGROUND = 0.16  # grey level behind the retargeted face


class VideoInputError(ValueError):
    """The video cannot drive anything (unreadable, or no face in it); the message names the file."""


@dataclass
class TrackingRun:
    """What a tracking run did: frame counts, timings per stage (s), outputs, and any error."""

    frames: int = 0
    tracked: int = 0
    flagged: int = 0
    timings: Dict[str, float] = field(default_factory=dict)
    outputs: Dict[str, Path] = field(default_factory=dict)
    error: Optional[str] = None
    mean_error: float = float("nan")

    def add_time(self, stage: str, seconds: float) -> None:
        self.timings[stage] = self.timings.get(stage, 0.0) + seconds


def yaw_proxy(landmarks: np.ndarray) -> float:
    """Signed head-turn proxy from 2D landmarks: nose tip offset from the eyes' midpoint / eye distance."""
    eyes = landmarks[36] - landmarks[45]
    mid = (landmarks[36] + landmarks[45]) / 2
    return float(np.dot(landmarks[30] - mid, eyes) / max(float(np.dot(eyes, eyes)), 1e-9))


def source_rig_from_video(video: Path, model: MorphableModel, landmarker: FaceLandmarker, n_frames: int = 8,
                          scan_frames: int = 300, config: RigBuildConfig = RigBuildConfig(),
                          builder: Optional[Callable[[torch.Tensor, torch.Tensor], RigBuildResult]] = None
                          ) -> tuple:
    """A rig of the video's person from ``n_frames`` of its first ``scan_frames`` frames.

    ``builder`` (crops, landmarks) -> `RigBuildResult` replaces the classical solver (e.g. the
    network's ``INORig.build_rig``).

    Candidates are kept at regular intervals (at most ``4 * n_frames`` crops in memory); the chosen
    ones spread over the head-yaw proxy (`yaw_proxy`), extremes included.

    Returns:
        (`Rig`, list of the chosen frame indices).

    Raises:
        VideoInputError: no face in the scanned frames. `VideoReadError`: unreadable video.
    """
    with VideoReader(video) as reader:
        total = reader.info.frame_count or scan_frames
        scan = min(scan_frames, total)
        every = max(1, scan // (4 * n_frames))
        candidates = []
        try:
            for frame in track_video(reader, landmarker, max_frames=scan):
                if frame.landmarks is not None and frame.index % every == 0:
                    crop = crop_face(frame.image, frame.landmarks)
                    candidates.append((yaw_proxy(frame.landmarks), frame.index, crop))
        except VideoReadError as err:
            if not candidates:
                raise
            logger.warning("%s (using the frames read before it)", err)
    if not candidates:
        raise VideoInputError(f"{video}: no face found in its first {scan} frames, nothing to track")
    candidates.sort(key=lambda c: c[0])
    pick = np.unique(np.linspace(0, len(candidates) - 1, min(n_frames, len(candidates))).round().astype(int))
    chosen = [candidates[i] for i in pick]
    images, landmarks = crop_batch([c[2] for c in chosen])
    if builder is None:
        result = build_rig(model, images.to(model.dtype), landmarks.to(model.dtype), config=config,
                           confidence=landmarker.landmark_weights(landmarks))
    else:
        result = builder(images, landmarks)
    indices = sorted(int(c[1]) for c in chosen)
    logger.info("source rig from frames %s of %s (landmark error %.2f px)", indices, video,
                float(result.reprojection_error.mean()))
    return result.rig, indices


def _recon_frame(image: np.ndarray, track: FrameTrack, rig: Rig, triangles: torch.Tensor) -> np.ndarray:
    """The tracked mesh over the frame (only where the frame was fitted)."""
    if not track.detected:
        out = image.copy()
        cv2.putText(out, "no face", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 64, 64), 2, cv2.LINE_AA)
        return out
    verts = rig.vertices(track.expression[None])
    screen = weak_perspective_screen(verts, euler_to_matrix(track.rotation[None]), track.scale[None],
                                     track.trans2d[None])[0]
    h, w = image.shape[:2]
    box = face_window(screen, h, w)
    if box is None:
        return image
    x0, y0, x1, y1 = box
    out = image.copy()
    out[y0:y1, x0:x1] = overlay_mesh(np.ascontiguousarray(image[y0:y1, x0:x1]),
                                     screen - torch.tensor([x0, y0, 0.0], dtype=screen.dtype), triangles)
    return out


class _Retargeter:
    """Renders the target rig driven by the source's tracked expressions."""

    def __init__(self, source: Rig, target: Rig, pose: PoseMode, light: LightMode, size: tuple) -> None:
        self.target = target
        self.index = expression_map(source.expression_names, target.expression_names)
        self.pose, self.light = pose, light
        self.background = torch.full((1, 3, *size), _BACKGROUND)
        self.frontal = frontal_pose(target.neutral, *size)

    def __call__(self, track: FrameTrack) -> np.ndarray:
        expression = track.expression[None] if self.index is None else track.expression[None][:, self.index]
        if not track.valid or self.pose == "frontal":
            rotation, scale, trans = self.frontal
        else:
            rotation, scale, trans = track.rotation, track.scale, track.trans2d
        sh = track.sh[None] if (self.light == "source" and track.sh is not None) else None
        verts = self.target.vertices(expression)
        image = render_rig(self.target, verts, rotation[None], scale[None], trans[None], self.background, sh)
        return to_uint8(image[0])


def track_and_retarget(video: Path, out_dir: Path, source: Rig, template: MorphableModel, target: Rig,
                       landmarker: FaceLandmarker, *, max_frames: Optional[int] = None,
                       tracker_config: TrackerConfig = TrackerConfig(),
                       landmark_filter: Optional[OneEuroParams] = OneEuroParams(),
                       pose: PoseMode = "source", light: LightMode = "source") -> TrackingRun:
    """Track ``video`` with the source rig and drive the target rig; write ``out_dir/videos/*``.

    Args:
        video: the source video.
        out_dir: output folder (``videos/`` is created in it).
        source: the video person's rig (tracked). template: the model region both rigs are over.
        target: the rig driven by the source's expressions.
        landmarker: landmarks per frame.
        max_frames: stop after this many frames.
        tracker_config: see `TrackerConfig`.
        landmark_filter: One Euro filter of the landmarks (None: raw).
        pose, light: the retargeted render's head pose and lighting, the source frame's or frontal.

    Raises:
        VideoReadError: the video cannot be opened (a truncated one is reported in ``error``).
    """
    run = TrackingRun()
    videos = Path(out_dir) / "videos"
    tracker = RigTracker(source, template, tracker_config)
    recorder = TrackingRecorder(source.n_expression)
    reader = VideoReader(video)
    info = reader.info
    size = (info.height, info.width)
    retargeter = _Retargeter(source, target, pose, light, size)
    paths = {name: videos / f"{name}.mp4" for name in ("input_clip", "output_recon", "output_exptrans")}
    writers = {name: VideoWriter(path, info.fps) for name, path in paths.items()}
    total = min(info.frame_count, max_frames) if max_frames and info.frame_count else (max_frames or info.frame_count)
    errors = []
    clock = time.perf_counter()
    try:
        frames = track_video(reader, landmarker, filter_params=landmark_filter, max_frames=max_frames)
        for frame in tqdm(frames, total=total or None, desc="tracking video", unit="frame", disable=None):
            landmark_s = frame.detect_s + frame.landmark_s + frame.flow_s
            run.add_time("decoding", time.perf_counter() - clock - landmark_s)
            run.add_time("landmarks", landmark_s)
            start = time.perf_counter()
            track = tracker.step(frame.landmarks, frame.image)
            run.add_time("tracking (fit + lighting)", time.perf_counter() - start)
            recorder.add(track)
            run.frames += 1
            run.tracked += int(track.detected)
            if track.detected:
                errors.append(track.error)
            start = time.perf_counter()
            recon = _recon_frame(frame.image, track, source, source.triangles)
            exptrans = retargeter(track)
            run.add_time("rendering", time.perf_counter() - start)
            start = time.perf_counter()
            writers["input_clip"].write(frame.image)
            writers["output_recon"].write(recon)
            writers["output_exptrans"].write(exptrans)
            run.add_time("writing videos", time.perf_counter() - start)
            clock = time.perf_counter()
    except VideoReadError as err:  # truncated or corrupt: keep what was read
        run.error = str(err)
    finally:
        start = time.perf_counter()
        for writer in writers.values():
            writer.close()
        run.outputs.update({name: p for name, p in paths.items() if writers[name].frames})
        run.outputs["tracking"] = recorder.save(videos / "tracking.npz", info.fps, source.expression_names)
        run.add_time("writing videos", time.perf_counter() - start)
        reader.close()
    run.flagged = run.frames - run.tracked
    run.mean_error = float(np.mean(errors)) if errors else float("nan")
    if run.flagged:
        logger.warning("%s: %d of %d frames without a (trackable) face: parameters carried over, flagged",
                       video, run.flagged, run.frames)
    return run
