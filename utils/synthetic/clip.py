"""Synthetic demo inputs with ground truth: a subject's photos and a video of the same subject.

The photos are a `utils.synthetic` subject's crops. The video shows that subject with smoothly
varying expressions (keyframes drawn by `utils.synthetic.scene.sample_expression`, eased in and
out) and head pose (slow yaw / pitch / roll sways), with a still stretch in the middle (for jitter
measurements), one SH lighting and background, rendered per vertex (albedo x SH shading, as the
generator and the fitting model it) through `core.render`. Deterministic given the seed.

    python -m utils.synthetic.clip --out examples/generated/synthetic --frames 60

writes ``rig_images/image_XX.png``, ``video.mp4`` and ``truth.npz`` (per-frame ``expression``,
``rotation`` (Euler), ``scale``, ``trans2d``, ``sh``, ``landmarks``; the subject's ``identity``,
``expression_names``, ``fps``).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence

import numpy as np
import torch

from core.camera import euler_to_matrix, transform_points, weak_perspective_screen
from core.face_model.model import MorphableModel
from core.mesh import vertex_normals
from core.render.rasterize import rasterize
from utils.io.images import to_float
from utils.synthetic.generator import (DEFAULT_RENDER_REGIONS, SyntheticGenerator, SyntheticSubject,
                                       region_triangles, shade_and_resolve, supersampled_screen)
from utils.synthetic.scene import expose, sample_background, sample_expression, sample_sh
from utils.synthetic.skin_albedo import SkinAlbedoSampler

logger = logging.getLogger(__name__)

__all__ = ["ClipTruth", "clip_parameters", "ClipRenderer", "SyntheticInputs", "write_synthetic_inputs", "main"]


@dataclass
class ClipTruth:
    """Per-frame ground truth of a synthetic clip (numpy, first axis T frames).

    ``expression`` (T, K); ``rotation`` (T, 3) Euler (pitch, yaw, roll) radians; ``scale`` (T,) pixels per
    mm; ``trans2d`` (T, 2) pixels; ``sh`` (9, 3) (one light for the clip); ``landmarks``
    (T, 68, 2) projected model landmarks (filled by `ClipRenderer`); ``still`` (start, stop) frames
    where neither head nor expression moves; ``fps``; ``gaze`` (T, 2, 2) per eye (left, right)
    ``(yaw, pitch)`` radians (`core.fitting.gaze`), the eyeballs' rotation, or None (eyes ahead).
    """

    expression: np.ndarray
    rotation: np.ndarray
    scale: np.ndarray
    trans2d: np.ndarray
    sh: np.ndarray
    still: tuple
    fps: float
    landmarks: Optional[np.ndarray] = None
    gaze: Optional[np.ndarray] = None

    @property
    def n_frames(self) -> int:
        return int(self.expression.shape[0])


def _ease(x: np.ndarray) -> np.ndarray:
    return x * x * (3.0 - 2.0 * x)


def clip_parameters(names: Sequence[str], n_frames: int, size: int, seed: int = 0, fps: float = 25.0,
                    face_px: float = 0.55, keyframe_every: int = 12, bounded: bool = True) -> ClipTruth:
    """Smooth expression and pose trajectories for a clip (no rendering).

    Expressions: a keyframe every ``keyframe_every`` frames (every other one neutral), eased.
    Pose: yaw up to +-25 degrees, pitch +-8, roll +-5, slow sines. Over the middle fifth of the clip
    (``still``) neither pose nor expression changes.
    Camera: the face's width is about ``face_px`` of the frame, drifting by a few pixels.
    """
    if n_frames < 1 or size < 16:
        raise ValueError(f"n_frames >= 1 and size >= 16 expected, got {n_frames}, {size}")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    # Clip time stops over the still stretch: pose and expression hold there.
    still = (int(0.4 * n_frames), int(0.6 * n_frames))
    clock = np.arange(n_frames, dtype=np.float64)
    clock[still[0]:still[1]] = still[0]
    clock[still[1]:] -= still[1] - still[0]
    n_keys = int(clock[-1]) // keyframe_every + 2
    keys = np.stack([sample_expression(names, rng, bounded, neutral_probability=0.0)[0] if k % 2 else
                     np.zeros(len(names)) for k in range(n_keys)])
    t = clock / keyframe_every
    k0 = np.floor(t).astype(int)
    w = _ease(t - k0)[:, None]
    expression = (1 - w) * keys[k0] + w * keys[k0 + 1]

    phase = clock * 2 * math.pi / max(n_frames, 2)
    offsets = rng.uniform(0, 2 * math.pi, size=3)
    angles = np.stack([math.radians(8) * np.sin(1.3 * phase + offsets[0]),
                       math.radians(25) * np.sin(phase + offsets[1]),
                       math.radians(5) * np.sin(0.7 * phase + offsets[2])], 1)
    scale = np.full(n_frames, face_px * size / 140.0)  # a face is ~140 mm wide
    drift = np.stack([np.sin(0.5 * phase), np.cos(0.4 * phase) - 1], 1) * 0.02 * size
    translation = (size - 1) / 2 + drift
    translation[:, 1] += 0.04 * size
    sh = sample_sh(rng)
    return ClipTruth(expression=expression.astype(np.float32), rotation=angles.astype(np.float32),
                     scale=scale.astype(np.float32), trans2d=translation.astype(np.float32),
                     sh=np.asarray(sh, np.float32), still=still, fps=fps)


class ClipRenderer:
    """Renders video frames of a synthetic subject (the full model: face, head, eyes, mouth).

    The face region takes the subject's albedo, the rest of the head its nearest face vertex's;
    eyes, teeth and lashes a procedural albedo of the same skin tone. Where the clip has a gaze
    (``ClipTruth.gaze``) the eyeball meshes turn about the centres of their bounding boxes (the
    rotation centres of `core.fitting.gaze.EyeModel`); the eyeLook* weights, which move only the
    lids in ICT-FaceKit, are the clip's to set (`utils.synthetic.actions` sets both).

    Args:
        model: the full face model the subject was drawn from.
        subject: the subject (its identity and albedo).
        supersample: render at this many times the resolution and average (anti-aliasing).
    """

    def __init__(self, model: MorphableModel, subject: SyntheticSubject, supersample: int = 2,
                 seed: int = 0) -> None:
        self.model = model.to(device="cpu", dtype=torch.float32)
        self.supersample = int(supersample)
        self.triangles = region_triangles(self.model, DEFAULT_RENDER_REGIONS)
        self.identity = torch.as_tensor(subject.identity, dtype=torch.float32)[None]
        face_ids = torch.as_tensor(subject.vertex_ids).long()
        face_albedo = torch.as_tensor(subject.albedo, dtype=torch.float32)
        tone = face_albedo.median(0).values.numpy()
        albedo = SkinAlbedoSampler(self.model)(np.random.default_rng(seed), skin_tone=tone)
        albedo[face_ids] = face_albedo
        # The rest of the head continues the face's colours (hair, skin) from its nearest face vertex.
        head = self.model.regions.get("head_and_neck")
        if head is not None and len(head):
            nearest = torch.cdist(self.model.neutral[head], self.model.neutral[face_ids]).argmin(1)
            albedo[head] = face_albedo[nearest]
        self.albedo = albedo
        self.luminance = float((face_albedo @ torch.tensor([0.299, 0.587, 0.114])).median())
        self.eyeballs = [self.model.regions[r] for r in ("eyeball_left", "eyeball_right")
                         if r in self.model.regions and len(self.model.regions[r])]

    def turn_eyes(self, verts: torch.Tensor, gaze: np.ndarray) -> torch.Tensor:
        """Eyeball vertices of a mesh turned by a gaze (eyes (left, right)); the rest unchanged.

        Shape: verts (1, V, 3) object space; gaze (2, 2) (yaw, pitch) radians -> (1, V, 3).
        """
        if len(self.eyeballs) != 2:
            return verts
        out = verts.clone()
        for ids, (yaw, pitch) in zip(self.eyeballs, np.asarray(gaze, np.float64)):
            points = verts[0, ids]
            centre = 0.5 * (points.min(0).values + points.max(0).values)
            R = euler_to_matrix(torch.tensor([[pitch, yaw, 0.0]], dtype=verts.dtype))[0]
            out[0, ids] = (points - centre) @ R.T + centre
        return out

    def frames(self, truth: ClipTruth, size: int, background: Optional[np.ndarray] = None,
               seed: int = 0, noise: float = 0.01) -> Iterator[np.ndarray]:
        """Yield the clip's (size, size, 3) uint8 frames; fills ``truth.landmarks`` as it goes.

        ``noise`` is the standard deviation of per-frame pixel noise (sensor noise: even a still
        stretch is not the same image twice, as in a real video).
        """
        rng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
        if background is None:
            background = sample_background(rng, size)[0]
        bg = to_float(background)
        sh = torch.as_tensor(expose(truth.sh, self.luminance, 0.5), dtype=torch.float32)[None]
        truth.landmarks = np.zeros((truth.n_frames, 68, 2), np.float32)
        ss = self.supersample
        for i in range(truth.n_frames):
            verts = self.model.vertices(self.identity, torch.as_tensor(truth.expression[i:i + 1]))
            if truth.gaze is not None:
                verts = self.turn_eyes(verts, truth.gaze[i])
            R = euler_to_matrix(torch.as_tensor(truth.rotation[i:i + 1]))
            screen = weak_perspective_screen(verts, R, torch.as_tensor(truth.scale[i:i + 1]),
                                             torch.as_tensor(truth.trans2d[i:i + 1]))
            truth.landmarks[i] = screen[0, self.model.landmark_indices, :2].numpy()
            fragments = rasterize(supersampled_screen(screen, ss), self.triangles, size * ss, size * ss,
                                  cull_backfaces=True)
            normals = vertex_normals(transform_points(verts, R), self.triangles)
            colour, cover = shade_and_resolve(fragments, self.triangles, self.albedo[None], normals, sh, ss)
            image = colour + (1 - cover[:, None]) * bg + torch.as_tensor(rng.normal(0.0, noise, (1, 3, size, size)),
                                                               dtype=torch.float32)
            yield (image[0].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


@dataclass
class SyntheticInputs:
    """Where `write_synthetic_inputs` put things."""

    rig_dir: Path
    video: Path
    truth: Path

    @classmethod
    def at(cls, folder: Path) -> "SyntheticInputs":
        """The layout under ``folder``: ``rig_images/``, ``video.mp4``, ``truth.npz``."""
        folder = Path(folder)
        return cls(folder / "rig_images", folder / "video.mp4", folder / "truth.npz")


def write_synthetic_inputs(model: MorphableModel, folder: Path, n_images: int = 8, n_frames: int = 60,
                           size: int = 256, seed: int = 0, fps: float = 25.0) -> SyntheticInputs:
    """Write a synthetic subject's photos, a video of it and the video's ground truth.

    Args:
        model: the full face model (ICT).
        folder: output folder (created): ``rig_images/``, ``video.mp4``, ``truth.npz``.
        n_images: photos of the subject (rig images).
        n_frames, size, fps: the video's length, frame side and rate.
        seed: everything is deterministic given it.
    """
    from PIL import Image

    from utils.io.video_writer import VideoWriter

    out = SyntheticInputs.at(folder)
    out.rig_dir.mkdir(parents=True, exist_ok=True)
    subject = SyntheticGenerator(model).subject(n_images, seed=seed)
    for k, image in enumerate(subject.images):
        Image.fromarray(image).save(out.rig_dir / f"image_{k:02d}.png")
    truth = clip_parameters(model.expression_names, n_frames, size, seed=seed, fps=fps,
                            bounded=model.expression_range is not None)
    renderer = ClipRenderer(model, subject, seed=seed)
    with VideoWriter(out.video, fps) as writer:
        for frame in renderer.frames(truth, size, seed=seed):
            writer.write(frame)
    np.savez(out.truth, expression=truth.expression, rotation=truth.rotation, scale=truth.scale,
             trans2d=truth.trans2d, sh=truth.sh, landmarks=truth.landmarks, still=np.array(truth.still),
             fps=np.array(fps), identity=subject.identity, expression_names=np.array(model.expression_names))
    logger.info("synthetic inputs in %s: %d photos, %d frames of %dx%d", folder, n_images, n_frames, size, size)
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """CLI: ``python -m utils.synthetic.clip --out DIR [--images 8] [--frames 60] [--size 256]``."""
    from core.face_model.load import load_face_model
    from utils.get_face_model import DEFAULT_PATHS

    parser = argparse.ArgumentParser(prog="python -m utils.synthetic.clip", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    model = load_face_model("ict", DEFAULT_PATHS["ict"])
    out = write_synthetic_inputs(model, args.out, args.images, args.frames, args.size, args.seed)
    print(out.rig_dir, out.video, out.truth)
    return 0


if __name__ == "__main__":
    sys.exit(main())
