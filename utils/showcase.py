"""Pictures of what the project does, for docs/: photos -> rig -> retargeted video frames.

    python -m utils.showcase [--out docs/pictures] [--synthetic] [--video d3.mp4] [--frames 120]

Builds the rig of the example photos (``examples/photos``: frames of LivePortrait's d3, MIT) or,
with ``--synthetic``, of a synthetic subject the project renders itself, makes it a textured
whole head, tracks a video with the video person's own rig and drives the photos' rig with it,
then writes:

- ``photos_to_rig.png``: photos | the fitted face over them | the textured head in each photo's
  fitted pose and light;
- ``rig_views.png``: the textured head under a neutral light, turned and with expressions (smile,
  open jaw, blink, gaze turned);
- ``retargeting.png``: video frames | the tracked face over them | the photos' person performing them;
- ``texture.png``: the texture atlas.
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from core.camera import WeakPerspective
from core.face_model.load import load_face_model
from core.rig.retarget import RigRenderer, frontal_pose
from core.rig.rig import Rig
from utils.crop import crop_batch
from utils.io.images import to_uint8
from utils.io.tracking import TrackingData, load_tracking
from utils.io.video import VideoReader
from utils.landmarks.base import DEFAULT_BACKEND, DEFAULT_VIDEO_BACKEND, LandmarkError
from utils.landmarks.detect import FaceLandmarker
from utils.paths import EXAMPLES_DIR, REPO_ROOT
from utils.pipelines.appearance import head_rig, textured_rig
from utils.pipelines.rig import build_rig_from_folder
from utils.pipelines.video import scan_video, source_rig_from_video, track_and_retarget
from utils.visualization import FitOverlay, image_grid, save_png

__all__ = ["photos_to_rig", "rig_views", "retargeting", "main"]

logger = logging.getLogger(__name__)

_TILE = 224
_BACKGROUND = 0.16


def _resize(image: np.ndarray, size: int = _TILE) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    k = size / max(h, w)
    return cv2.resize(image, (round(w * k), round(h * k)), interpolation=cv2.INTER_AREA)


def photos_to_rig(rig: Rig, run, count: int = 4) -> np.ndarray:
    """Photos | the fit over them (grey face, eyes and mouth from the parts) | the textured head in
    their fitted pose and light (a picture, (H, W, 3) uint8)."""
    images, _ = crop_batch(run.crops)
    result = run.result
    overlay = FitOverlay(rig)
    renderer = RigRenderer(rig)
    pick = np.linspace(0, len(run.crops) - 1, min(count, len(run.crops))).round().astype(int)
    tiles, labels = [], []
    for i in pick:
        photo = run.crops[i].image
        pose = result.pose[int(i)]
        expression = result.params["expression"][int(i)]
        fitted = overlay(photo, expression, pose)
        render = renderer(rig.head_vertices(expression[None]), pose, images[int(i):int(i) + 1],
                          None if result.sh is None else result.sh[int(i):int(i) + 1])
        tiles += [_resize(photo), _resize(fitted), _resize(to_uint8(render[0]))]
        labels += ["photo", "fitted face", "rig, photo's pose + light"]
    return image_grid(tiles, ncols=3, labels=labels)


def rig_views(rig: Rig, size: int = 288) -> np.ndarray:
    """The textured head under a neutral light: turned, and with a few expressions and a gaze."""
    names = rig.expression_names

    def weights(**named: float) -> torch.Tensor:
        e = torch.zeros(1, rig.n_expression)
        for name, value in named.items():
            if name in names:
                e[0, names.index(name)] = value
        return e

    views = [("front", weights(), None, 0.0), ("three-quarter", weights(), None, 0.6), ("profile", weights(), None, 1.4),
             ("smile", weights(mouthSmile_L=0.9, mouthSmile_R=0.9, cheekSquint_L=0.4, cheekSquint_R=0.4), None, 0.25),
             ("jaw open", weights(jawOpen=0.45, mouthLowerDown_L=0.3, mouthLowerDown_R=0.3), None, 0.25),
             ("blink", weights(eyeBlink_L=1.0, eyeBlink_R=1.0), None, 0.25),
             ("gaze to their left", weights(), torch.tensor([[[0.35, 0.0], [0.35, 0.0]]]), 0.0),
             ("brows up", weights(browInnerUp_L=0.8, browInnerUp_R=0.8, browOuterUp_L=0.7, browOuterUp_R=0.7), None, 0.0)]
    renderer = RigRenderer(rig)
    rest = rig.head_vertices(torch.zeros(1, rig.n_expression))[0]
    if rig.parts is not None and rig.parts.neck_cut is not None:
        rest = rest[rest[:, 1] > rig.parts.neck_cut + 20.0]  # frame the head, not the shoulders
    base = frontal_pose(rest, size, size, fill=0.9)
    background = torch.full((1, 3, size, size), _BACKGROUND)
    tiles, labels = [], []
    for label, e, gaze, yaw in views:
        pose = WeakPerspective(torch.tensor([[0.05, yaw, 0.0]]), base.scale, base.trans2d)
        tiles.append(to_uint8(renderer(rig.head_vertices(e, gaze), pose, background)[0]))
        labels.append(label)
    return image_grid(tiles, ncols=4, labels=labels)


#: What the retargeting picture shows: (label, the tracked curve's weights); gaze by the eyes' yaw.
SHOWCASE_ACTIONS = (("blink", ("eyeBlink_L", "eyeBlink_R")), ("jaw open", ("jawOpen",)),
                    ("smile", ("mouthSmile_L", "mouthSmile_R")), ("gaze", ()), ("brows up", ("browInnerUp_L",
                    "browInnerUp_R", "browOuterUp_L", "browOuterUp_R")), ("pucker", ("mouthPucker",)))


def showcase_frames(tracking: TrackingData, count: int = 4, apart: int = 8) -> Dict[int, str]:
    """The frames that show the tracked actions best: for each action of `SHOWCASE_ACTIONS` in turn,
    the frame where it is strongest (at least 0.3, or 8 degrees of gaze), ``apart`` frames from those
    taken; then evenly spaced frames up to ``count``. Returns {frame: label}."""
    names = list(tracking.expression_names)
    expression = np.asarray(tracking.expression)
    chosen: Dict[int, str] = {}
    for label, shapes in SHOWCASE_ACTIONS:
        if len(chosen) >= count:
            break
        if shapes:
            ids = [names.index(s) for s in shapes if s in names]
            curve, least = (expression[:, ids].mean(1) if ids else np.zeros(len(expression))), 0.3
        elif tracking.gaze_left is not None:
            curve, least = np.degrees(np.abs(np.asarray(tracking.gaze_left)[:, 0])), 8.0
        else:
            continue
        curve = np.where(np.asarray(tracking.detected), curve, -np.inf)
        for i in np.argsort(-curve):
            if curve[i] < least:
                break
            if all(abs(int(i) - j) >= apart for j in chosen):
                chosen[int(i)] = label
                break
    for i in np.linspace(len(expression) // 8, len(expression) - 1, count).round().astype(int):
        if len(chosen) >= count:
            break
        if all(abs(int(i) - j) >= apart for j in chosen):
            chosen[int(i)] = "tracked"
    return dict(sorted(chosen.items()))


def retargeting(video: Path, target: Rig, face, model, landmarker: FaceLandmarker, frames: int,
                count: int = 4) -> np.ndarray:
    """Video frames | the tracked face over them | the target performing them: frames of the demo's
    own videos (`utils.pipelines.video.track_and_retarget`: the video's pose, neutral light)."""
    work = Path(tempfile.mkdtemp(prefix="inorig_showcase_video_"))
    scan = scan_video(video, landmarker, source_frames=8)
    with scan:
        source, _ = source_rig_from_video(scan, face, source_frames=8, detector=landmarker.backend)
        track_and_retarget(video, work, head_rig(source, model), face, target, landmarker, scan=scan,
                           max_frames=frames, export=False)
    wanted = showcase_frames(load_tracking(work / "videos" / "tracking.npz"), count)
    readers = [VideoReader(work / "videos" / f"{name}.mp4") for name in ("input_clip", "output_recon", "output_exptrans")]
    tiles, labels = [], []
    try:
        for i, views in enumerate(zip(*readers)):
            if i in wanted:
                tiles += [_resize(v) for v in views]
                labels += [f"frame {i}: {wanted[i]}", "tracked face", "photos' person, retargeted"]
    finally:
        for reader in readers:
            reader.close()
    return image_grid(tiles, ncols=3, labels=labels)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "docs" / "pictures", help="output folder")
    parser.add_argument("--synthetic", action="store_true", help="a synthetic subject instead of the examples")
    parser.add_argument("--photos", type=Path, default=EXAMPLES_DIR / "photos", help="photos of the rig's person")
    parser.add_argument("--video", type=Path, default=EXAMPLES_DIR / "driver.mp4", help="the driving video")
    parser.add_argument("--frames", type=int, default=150, help="frames tracked")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    model = load_face_model("ict", REPO_ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    landmarker = FaceLandmarker(DEFAULT_BACKEND)
    try:
        video_landmarker = FaceLandmarker(DEFAULT_VIDEO_BACKEND)
    except LandmarkError:
        video_landmarker = landmarker
    photos, video = args.photos, args.video
    work = Path(tempfile.mkdtemp(prefix="inorig_showcase_"))
    if args.synthetic or not photos.is_dir() or not video.is_file():
        from utils.synthetic.clip import write_synthetic_inputs

        made = write_synthetic_inputs(model, work / "synthetic", n_images=8, n_frames=args.frames)
        photos, video = made.rig_dir, made.video
    run = build_rig_from_folder(photos, work / "rig", face, landmarker=landmarker, visualize=False)
    rig = textured_rig(run, model).rig
    args.out.mkdir(parents=True, exist_ok=True)
    written: List[Path] = [
        save_png(args.out / "photos_to_rig.png", photos_to_rig(rig, run)),
        save_png(args.out / "rig_views.png", rig_views(rig)),
        save_png(args.out / "retargeting.png", retargeting(video, rig, face, model, video_landmarker, args.frames)),
        save_png(args.out / "texture.png", _resize(to_uint8(rig.texture.permute(2, 0, 1)), 768)),
    ]
    print("\n".join(str(p) for p in written))
    if os.environ.get("INORIG_KEEP_SHOWCASE") is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
