"""Appearance of the rigs (issue 19): filled renders, textures, contact of lids and lips, held-out photos.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_appearance [--frames 240] [--subjects 3]
        [--skip videos identity wrinkles contact heldout]

Prints markdown tables (recorded in docs/benchmarks.md, "Appearance (issue 19)"):
1. Real videos (../shared/data/real/videos): the rig_case1 person's rig retargeted onto each
   video's tracked expressions (the first ``--frames`` frames; renders of every 4th): the share of
   background pixels inside the filled silhouette of the render (holes: eye sockets, mouth) with
   the face-only rig as before and with the whole textured head; the colour cast of the skin
   (mean r/g and b/g of the rendered face over the texture's own) under the video's light, the
   same light white-balanced, and the neutral light; time per frame of both videos' renders (old:
   face-only rig, per-vertex colours + full-resolution overlay; new: whole head, texture + overlay
   with parts), medians over the sampled frames, interleaved.
2. Texture identity: textures from two disjoint sets of photos (rig_case1: alternate photos; each
   video: alternate frames of 16 spread over it) of one person vs of two different people: mean
   absolute RGB difference (0-255) over the face texels both saw well, raw and with each
   texture's brightness matched.
   Forehead furrows: the contrast of fine detail on the rig_case1 forehead with the photos weighted by
   how little their fitted expression moves the skin (default) and with all photos alike.
3. Contact: lid gap at eyeBlink 1 (upper-lower lid landmark distance and visible eyeball area in a
   frontal view), lip gap at jawOpen = mouthClose (inner-lip landmark distance and visible mouth
   interior area), for the mean face, the rig_case1 rig and the videos' rigs; eyeball vertices in
   front of the lid skin (frontal depth test) over every tracked frame of every video (the
   tracked person's rig and the retargeted one), and over a gaze sweep.
4. Held-out photo (synthetic, ICT generator, true landmarks + 1.5 px noise): per skin-tone group,
   a rig built from 6 photos renders the 7th in that photo's fitted pose and lighting (one
   tracker step on the held-out photo); mean absolute RGB error over the face's skin pixels,
   for the textured whole head, its per-vertex albedo, and the model's mean face.
"""
from __future__ import annotations

import argparse
import logging
import math
import os
import time
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import ndimage  # noqa: E402

from benchmarks.rig_eval import (SHARED, detector_weighted, folder_crops, mean_face, textured,  # noqa: E402
                                 video_frame_sets)
from core.camera import WeakPerspective  # noqa: E402
from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from core.render.rasterize import rasterize  # noqa: E402
from core.rig.builder import RigBuildConfig, build_rig  # noqa: E402
from core.rig.head import whole_head  # noqa: E402
from core.rig.retarget import RigRenderer, expression_map, white_balanced  # noqa: E402
from core.rig.rig import Rig  # noqa: E402
from core.rig.texture import texel_map  # noqa: E402
from core.rig.texture_fit import TextureConfig, estimate_texture  # noqa: E402
from core.rig.tracker import FrameTrack, RigTracker  # noqa: E402
from utils.crop import FaceCrop, crop_batch  # noqa: E402
from utils.io.video import VideoReader  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402
from utils.pipelines.appearance import crop_content, jawline, textured_rig  # noqa: E402
from utils.pipelines.rig import RigRun  # noqa: E402
from utils.pipelines.video import scan_video, source_rig_from_video  # noqa: E402
from utils.synthetic.generator import SyntheticGenerator  # noqa: E402
from utils.visualization import FitOverlay, overlay_mesh  # noqa: E402

BACKGROUND = 0.16
NARROW_FACE = 6706  # ICT's narrow face: vertex ids below this
EYE_LANDMARKS = ((37, 41), (38, 40), (43, 47), (44, 46))
LIP_LANDMARKS = ((61, 67), (62, 66), (63, 65))
MM_PER_PIXEL = 0.1  # frontal orthographic rasters of the contact measures


# ------------------------------------------------------------------ 1. videos
def track_video(video: Path, landmarker: FaceLandmarker, face: MorphableModel, model: MorphableModel,
                frames: int, every: int) -> Tuple[Rig, List[FrameTrack], Dict[int, np.ndarray]]:
    """The video person's whole-head rig, the tracks of the first ``frames`` frames and every ``every``-th image."""
    scan = scan_video(video, landmarker, source_frames=8)
    with scan:
        source, _ = source_rig_from_video(scan, face, source_frames=8, detector=landmarker.backend)
        tracker = RigTracker(source, face)
        tracks, images = [], {}
        with VideoReader(video) as reader:
            for i, image in enumerate(reader):
                if i >= min(frames, scan.frames):
                    break
                tracks.append(tracker.step(scan.landmarks[i], image))
                if i % every == 0:
                    images[i] = image
    return whole_head(source, model), tracks, images


def holes(image: torch.Tensor) -> Tuple[int, int]:
    """(background pixels inside the filled silhouette, pixels of the filled silhouette) of a render on BACKGROUND."""
    drawn = (image[0] != BACKGROUND).any(0).numpy()
    filled = ndimage.binary_fill_holes(drawn)
    return int((filled & ~drawn).sum()), int(filled.sum())


def _cast(image: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """(r/g, b/g) of the mean colour over the mask."""
    colour = image[0].permute(1, 2, 0).numpy()[mask].mean(0)
    return np.array([colour[0] / colour[1], colour[2] / colour[1]])


def videos(args, target: Rig, face, model, landmarker) -> Dict[str, Tuple[Rig, List[FrameTrack]]]:
    """Table 1; returns each video's (source whole-head rig, tracks) for the contact table."""
    rows, out = [], {}
    old_renderer = RigRenderer(replace(target, parts=None), target.n_vertices, textured=False)
    new_renderer = RigRenderer(target)
    reference = target.texture[:, :target.texture.shape[1] // 2].reshape(-1, 3).mean(0).numpy()
    reference = np.array([reference[0] / reference[1], reference[2] / reference[1]])
    for video in sorted((SHARED / "videos").glob("*.mp4")):
        source, tracks, images = track_video(video, landmarker, face, model, args.frames, every=4)
        out[video.stem] = (source, tracks)
        index = expression_map(source.expression_names, target.expression_names)
        overlay = FitOverlay(source)
        counts = {"old": [0, 0], "new": [0, 0]}
        times = {"old": [], "new": []}
        casts = {"video light": [], "white-balanced": [], "neutral": []}
        for i, image in images.items():
            track = tracks[i]
            if not track.valid:
                continue
            e = track.expression[None] if index is None else track.expression[None][:, index]
            h, w = image.shape[:2]
            background = torch.full((1, 3, h, w), BACKGROUND)
            sh = None if track.sh is None else track.sh[None]
            start = time.perf_counter()
            old = old_renderer(target.vertices(e), track.pose, background, sh)
            screen = track.pose.screen(track.vertices[None])[0]
            box = (slice(max(int(screen[:, 1].min()) - 2, 0), int(screen[:, 1].max()) + 3),
                   slice(max(int(screen[:, 0].min()) - 2, 0), int(screen[:, 0].max()) + 3))
            recon = image.copy()
            offset = torch.tensor([box[1].start, box[0].start, 0.0])
            recon[box] = overlay_mesh(np.ascontiguousarray(image[box]), screen - offset, source.triangles)
            middle = time.perf_counter()
            new = new_renderer(target.head_vertices(e), track.pose, background)
            overlay(image, track.expression, track.pose, face=track.vertices)
            end = time.perf_counter()
            times["old"].append(middle - start)
            times["new"].append(end - middle)
            for key, render in (("old", old), ("new", new)):
                hole, total = holes(render)
                counts[key][0] += hole
                counts[key][1] += total
            if sh is not None:
                mask = _face_mask(new_renderer, target, e, track.pose, h, w)
                for name, light in (("video light", sh), ("white-balanced", white_balanced(sh)), ("neutral", None)):
                    casts[name].append(_cast(new_renderer(target.head_vertices(e), track.pose, background, light), mask))
        cast = {k: np.mean(v, 0) - reference for k, v in casts.items() if v}
        rows.append((video.name, len(tracks), len(times["old"]), 100 * counts["old"][0] / max(counts["old"][1], 1),
                     100 * counts["new"][0] / max(counts["new"][1], 1), cast, 1000 * np.median(times["old"]),
                     1000 * np.median(times["new"])))
    print("\n### Real videos: retargeted rig_case1 head, holes and colour cast\n")
    print("| video | frames tracked | frames rendered | background inside the silhouette: face-only rig (before) "
          "| whole textured head | skin r/g, b/g minus the texture's: video light | white-balanced | neutral light "
          "| ms/frame both videos, before | after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, n, k, old, new, cast, t_old, t_new in rows:
        c = {key: f"{v[0]:+.3f}, {v[1]:+.3f}" for key, v in cast.items()}
        print(f"| {name} | {n} | {k} | {old:.2f} % | {new:.3f} % | {c.get('video light', '-')} | "
              f"{c.get('white-balanced', '-')} | {c.get('neutral', '-')} | {t_old:.1f} | {t_new:.1f} |")
    return out


def _face_mask(renderer: RigRenderer, rig: Rig, e: torch.Tensor, pose: WeakPerspective, h: int, w: int) -> np.ndarray:
    """Pixels where the narrow face (skin) of the rig is in front."""
    verts = rig.head_vertices(e)
    fragments = rasterize(pose.screen(verts), renderer.triangles, h, w, cull_backfaces=True)
    tri = fragments.tri_id[0]
    skin = (rig.head_vertex_ids < NARROW_FACE).clone()
    skin[rig.n_vertices:] = False
    return ((tri >= 0) & skin[renderer.triangles[tri.clamp(min=0)]].all(-1)).numpy()


# ------------------------------------------------------------------ 2. texture identity
def texture_distance(a: Rig, b: Rig, weights: Tuple[torch.Tensor, torch.Tensor], normalise: bool) -> float:
    """Mean |RGB| difference (0-255) over the narrow-face texels both textures saw well."""
    ta, tb = a.texture, b.texture
    both = weights[0] & weights[1]
    x, y = ta[both], tb[both]
    if normalise:
        y = y * (x.mean() / y.mean().clamp(min=1e-6))
    return float((x - y).abs().mean() * 255)


def identity(args, model, face, landmarker) -> None:
    sets: Dict[str, Tuple[List[FaceCrop], List[FaceCrop]]] = {}
    case = folder_crops(SHARED / "rig_case1", landmarker)
    sets["rig_case1"] = (case[0::2], case[1::2])
    sets.update(video_frame_sets(sorted((SHARED / "videos").glob("*.mp4")), landmarker))
    rigs, seen = {}, {}
    for name, (first, second) in sets.items():
        for k, crops in enumerate((first, second)):
            images, landmarks = crop_batch(crops)
            result = detector_weighted(partial(build_rig, face, config=RigBuildConfig()), landmarker.backend)(
                images, landmarks)
            head = whole_head(result.rig, model)
            fit = estimate_texture(head, images, result.params["expression"], result.pose, result.sh,
                                   TextureConfig(), jawline=jawline(head, model), valid=crop_content(crops))
            rigs[(name, k)] = fit.rig
            texels = texel_map(head.uvs, head.uv_triangles, fit.texture.shape[0])
            tri = texels.tri_id[0]
            narrow = (tri >= 0) & (tri < len(head.triangles))
            narrow &= (head.vertex_ids[head.triangles[tri.clamp(min=0).clamp(max=len(head.triangles) - 1)]]
                       < NARROW_FACE).all(-1)
            seen[(name, k)] = narrow & (fit.weight >= TextureConfig().seen)
    names = list(sets)
    print("\n### Texture of one person from two disjoint photo sets vs two different people\n")
    print("| | mean abs RGB difference (0-255) | brightness matched |")
    print("|---|---|---|")
    same = [(texture_distance(rigs[(n, 0)], rigs[(n, 1)], (seen[(n, 0)], seen[(n, 1)]), False),
             texture_distance(rigs[(n, 0)], rigs[(n, 1)], (seen[(n, 0)], seen[(n, 1)]), True)) for n in names]
    for n, (raw, norm) in zip(names, same):
        print(f"| {n}: set A vs set B (same person) | {raw:.1f} | {norm:.1f} |")
    other = [(texture_distance(rigs[(a, 0)], rigs[(b, 0)], (seen[(a, 0)], seen[(b, 0)]), False),
              texture_distance(rigs[(a, 0)], rigs[(b, 0)], (seen[(a, 0)], seen[(b, 0)]), True))
             for i, a in enumerate(names) for b in names[i + 1:]]
    print(f"| same person, mean of {len(same)} | {np.mean([s[0] for s in same]):.1f} | "
          f"{np.mean([s[1] for s in same]):.1f} |")
    print(f"| different people, mean of {len(other)} pairs (min) | {np.mean([o[0] for o in other]):.1f} "
          f"({min(o[0] for o in other):.1f}) | {np.mean([o[1] for o in other]):.1f} ({min(o[1] for o in other):.1f}) |")


def wrinkles(model, face, landmarker) -> None:
    """Forehead furrow contrast of the rig_case1 texture: photos weighted by how little their fitted
    expression moves the skin (the default) vs all photos alike (median and mean)."""
    crops = folder_crops(SHARED / "rig_case1", landmarker)
    images, landmarks = crop_batch(crops)
    result = detector_weighted(partial(build_rig, face, config=RigBuildConfig()), landmarker.backend)(images, landmarks)
    head = whole_head(result.rig, model)
    rest = head.neutral
    brow = float(rest[face.landmark_indices[17:27], 1].max())
    rows = []
    for label, config in (("rest-weighted median (default)", TextureConfig()),
                          ("median, all photos alike", TextureConfig(rest_mm=1e9)),
                          ("mean, all photos alike", TextureConfig(rest_mm=1e9, median=False))):
        fit = estimate_texture(head, images, result.params["expression"], result.pose, result.sh, config,
                               jawline=jawline(head, model), valid=crop_content(crops))
        texels = texel_map(head.uvs, head.uv_triangles, fit.texture.shape[0])
        tri = texels.tri_id[0]
        own = (tri >= 0) & (tri < len(head.triangles))
        corners = head.triangles[tri.clamp(min=0).clamp(max=len(head.triangles) - 1)]
        point = (rest[corners] * texels.bary[0].float()[..., None]).sum(-2)
        forehead = own & (point[..., 1] > brow + 5.0) & (head.vertex_ids[corners] < NARROW_FACE).all(-1) \
            & (fit.weight >= config.seen)
        luma = (fit.texture @ torch.tensor([0.299, 0.587, 0.114])).numpy()
        detail = luma - ndimage.gaussian_filter(luma, 8.0)
        rows.append((label, 255 * float(np.std(detail[forehead.numpy()])), int(forehead.sum())))
    print("\n### Forehead furrows in the rig_case1 texture (std of the luminance above an 8-texel blur, 0-255)\n")
    print("| photos combined by | furrow contrast | forehead texels |")
    print("|---|---|---|")
    for label, value, count in rows:
        print(f"| {label} | {value:.2f} | {count} |")


# ------------------------------------------------------------------ 3. contact
def _frontal(points: torch.Tensor, box: Tuple[float, float, float, float]) -> Tuple[torch.Tensor, int, int]:
    """Orthographic frontal screen of points (mm) over box (x0, y0, x1, y1) at MM_PER_PIXEL."""
    x0, y0, x1, y1 = box
    w, h = int((x1 - x0) / MM_PER_PIXEL), int((y1 - y0) / MM_PER_PIXEL)
    screen = torch.stack([(points[..., 0] - x0) / MM_PER_PIXEL, (y1 - points[..., 1]) / MM_PER_PIXEL,
                          points[..., 2]], -1)
    return screen, h, w


def visible(rig: Rig, verts: torch.Tensor, part_names: Sequence[str], box) -> Tuple[float, float]:
    """The named parts seen from the front through the face: (area mm^2, the tallest run in one
    column, mm: what is left of the opening)."""
    screen, h, w = _frontal(verts, box)
    triangles = rig.head_triangles.long()
    fragments = rasterize(screen[None], triangles, h, w, cull_backfaces=True)
    member = torch.zeros(rig.n_head_vertices, dtype=torch.bool)
    for name in part_names:
        member[rig.n_vertices + rig.parts.ids(name)] = True
    tri = fragments.tri_id[0]
    part = ((tri >= 0) & member[triangles[tri.clamp(min=0)]].all(-1)).numpy()
    tallest = 0
    for column in part.T:
        runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], column.astype(np.int8), [0]]))))[::2]
        tallest = max(tallest, int(runs.max()) if len(runs) else 0)
    return float(part.sum()) * MM_PER_PIXEL ** 2, tallest * MM_PER_PIXEL


def _pairs(verts: torch.Tensor, face: MorphableModel, pairs) -> float:
    lm = face.landmark_indices
    return float(np.mean([float((verts[lm[a]] - verts[lm[b]]).norm()) for a, b in pairs]))


class PokeTest:
    """Eyeball vertices outside the lid skin: along each ray from an eye's centre, the eyeball must
    end before the skin of the lids begins. A z-buffer over the directions (0.2-degree pixels)
    keeps, per direction, the skin nearest to the centre; an eyeball vertex farther out than that
    by more than ``tolerance`` mm pokes through."""

    def __init__(self, rig: Rig, tolerance: float = 0.1, degrees: float = 0.2) -> None:
        self.rig, self.tolerance, self.step = rig, tolerance, math.radians(degrees)
        rest = rig.head_vertices(torch.zeros(1, rig.n_expression))[0]
        tri = rig.triangles.long()
        self.eyes = []
        for eye, name in enumerate(("eyeball_left", "eyeball_right")):
            ids = rig.n_vertices + rig.parts.ids(name)
            centre = rig.parts.eye_centres[eye]
            reach = float((rest[ids] - centre).norm(dim=1).max()) + 8.0
            d = rest[tri] - centre
            near = (d.norm(dim=-1) < reach).all(1) & (d[..., 2] > 0).all(1)
            self.eyes.append((ids, centre, tri[near]))

    def _angles(self, d: torch.Tensor) -> torch.Tensor:
        theta = torch.atan2(d[..., 0], d[..., 2])
        phi = torch.atan2(d[..., 1], torch.sqrt(d[..., 0] ** 2 + d[..., 2] ** 2))
        return torch.stack([theta, phi], -1)

    def __call__(self, verts: torch.Tensor) -> Tuple[int, float]:
        """(eyeball vertices through the lids, the farthest out (mm)) of one head mesh."""
        count, deepest = 0, 0.0
        for ids, centre, lids in self.eyes:
            d = verts - centre
            ball = d[ids]
            ball = ball[ball[:, 2] > 0]
            angles = self._angles(d)
            lo = angles[lids].reshape(-1, 2).amin(0) - self.step
            hi = angles[lids].reshape(-1, 2).amax(0) + self.step
            w, h = int((hi[0] - lo[0]) / self.step) + 1, int((hi[1] - lo[1]) / self.step) + 1
            screen = torch.stack([(angles[:, 0] - lo[0]) / self.step, (hi[1] - angles[:, 1]) / self.step,
                                  -d.norm(dim=-1)], -1)
            fragments = rasterize(screen[None].double(), lids, h, w)
            a = self._angles(ball)
            col = ((a[:, 0] - lo[0]) / self.step).round().long()
            row = ((hi[1] - a[:, 1]) / self.step).round().long()
            inside = (col >= 0) & (col < w) & (row >= 0) & (row < h)
            col, row = col.clamp(0, w - 1), row.clamp(0, h - 1)
            skin = -fragments.depth[0][row, col].float()
            out = inside & (fragments.tri_id[0][row, col] >= 0) & (ball.norm(dim=-1) > skin + self.tolerance)
            count += int(out.sum())
            if bool(out.any()):
                deepest = max(deepest, float((ball.norm(dim=-1) - skin)[out].max()))
        return count, deepest


def contact(rigs: Dict[str, Rig], face: MorphableModel, tracked: Dict[str, Tuple[Rig, List[FrameTrack]]],
            target: Rig) -> None:
    print("\n### Contact: lids at eyeBlink 1, lips at jawOpen = mouthClose\n")
    print("Frontal view, 0.1 mm pixels: eyeball (mouth interior) seen through the face as area and as the tallest "
          "run in one pixel column (what is left of the opening, mm); and the distance of the lid (inner-lip) "
          "landmark vertices.\n")
    print("| rig | eyes open: seen (mm^2) / opening (mm) | eyeBlink 1: seen / opening | lid landmarks open -> blink 1 (mm) "
          "| jawOpen 0.3 alone: seen / opening | jawOpen = mouthClose = 0.3 | = 0.6 | inner-lip landmarks at 0.3 / 0.6 (mm) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rig in rigs.items():
        def head(**w):
            e = torch.zeros(1, rig.n_expression)
            for k, v in w.items():
                e[0, rig.expression_names.index(k)] = v
            return rig.head_vertices(e)[0]
        rest, blink = head(), head(eyeBlink_L=1.0, eyeBlink_R=1.0)
        lm = rest[face.landmark_indices[36:48]]
        eyes = (float(lm[:, 0].min()) - 8, float(lm[:, 1].min()) - 8, float(lm[:, 0].max()) + 8,
                float(lm[:, 1].max()) + 8)
        mouth_lm = rest[face.landmark_indices[48:68]]
        mouth = (float(mouth_lm[:, 0].min()) - 5, float(mouth_lm[:, 1].min()) - 15,
                 float(mouth_lm[:, 0].max()) + 5, float(mouth_lm[:, 1].max()) + 5)
        inner = ("mouth_socket", "teeth", "gums_and_tongue")
        balls = ("eyeball_left", "eyeball_right")
        lips = [head(jawOpen=w, mouthClose=w) for w in (0.3, 0.6)]
        cells = [visible(rig, v, balls, eyes) for v in (rest, blink)]
        cells += [visible(rig, v, inner, mouth) for v in (head(jawOpen=0.3), *lips)]
        text = [f"{a:.1f} / {b:.2f}" for a, b in cells]
        print(f"| {name} | {text[0]} | {text[1]} | {_pairs(rest, face, EYE_LANDMARKS):.2f} -> "
              f"{_pairs(blink, face, EYE_LANDMARKS):.2f} | {text[2]} | {text[3]} | {text[4]} | "
              f"{_pairs(lips[0], face, LIP_LANDMARKS):.2f} / {_pairs(lips[1], face, LIP_LANDMARKS):.2f} |")
    print("\n### Eyeballs through the lids (skin nearest the eye's centre along each ray, 0.2-degree pixels)\n")
    print("| rig driven | frames | frames with an eyeball vertex in front of the lid | vertices (max) | deepest (mm) |")
    print("|---|---|---|---|---|")
    poke_target = PokeTest(target)
    for video, (source, tracks) in tracked.items():
        index = expression_map(source.expression_names, target.expression_names)
        for label, rig, test in ((f"{video}: the tracked person's rig", source, PokeTest(source)),
                                 (f"{video}: retargeted rig_case1", target, poke_target)):
            frames = bad = most = 0
            deepest = 0.0
            for track in tracks:
                if not track.valid:
                    continue
                e = track.expression[None]
                if rig is target and index is not None:
                    e = e[:, index]
                count, depth = test(rig.head_vertices(e)[0])
                frames += 1
                bad += int(count > 0)
                most, deepest = max(most, count), max(deepest, depth)
            print(f"| {label} | {frames} | {bad} | {most} | {deepest:.2f} |")
    gaze = torch.linspace(-0.4, 0.4, 5)
    for name, rig in rigs.items():
        test, bad, deepest, n = PokeTest(rig), 0, 0.0, 0
        for blink in (0.0, 0.5):
            e = torch.zeros(1, rig.n_expression)
            e[0, rig.expression_names.index("eyeBlink_L")] = blink
            e[0, rig.expression_names.index("eyeBlink_R")] = blink
            for yaw in gaze:
                for pitch in gaze:
                    g = torch.tensor([[[float(yaw), float(pitch)]] * 2])
                    count, depth = test(rig.head_vertices(e, g)[0])
                    n += 1
                    bad += int(count > 0)
                    deepest = max(deepest, depth)
        print(f"| {name}: gaze sweep yaw, pitch in [-0.4, 0.4] rad, eyeBlink 0 and 0.5 | {n} | {bad} | - | {deepest:.2f} |")


# ------------------------------------------------------------------ 4. held-out photos
TONE_GROUPS = (("light", 0.55, 1.0), ("medium", 0.40, 0.55), ("dark", 0.0, 0.40))


def heldout(args, model, face) -> None:
    generator = SyntheticGenerator(model)
    rng = np.random.default_rng(0)
    groups: Dict[str, List[Tuple[float, float, float]]] = {g[0]: [] for g in TONE_GROUPS}
    mean_rig = mean_face(model, face)
    seed = 2000
    while min(len(v) for v in groups.values()) < args.subjects and seed < 2200:
        subject = generator.subject(7, seed=seed)
        seed += 1
        luminance = float(np.median(subject.albedo @ np.array([0.299, 0.587, 0.114])))
        group = next(g for g, lo, hi in TONE_GROUPS if lo <= luminance < hi)
        if len(groups[group]) >= args.subjects:
            continue
        images = torch.from_numpy(subject.images).permute(0, 3, 1, 2).float() / 255
        landmarks = torch.from_numpy(subject.landmarks).float() + torch.from_numpy(
            rng.normal(0, 1.5, subject.landmarks.shape)).float()
        result = build_rig(face, images[1:], landmarks[1:])
        crops = [FaceCrop(image=subject.images[i], crop_to_image=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                          image_to_crop=np.array([[1.0, 0, 0], [0, 1.0, 0]]),
                          landmarks_image=landmarks[i].numpy(), landmarks_crop=landmarks[i].numpy()) for i in range(1, 7)]
        head = textured_rig(RigRun(result=result, crops=crops), model).rig
        errors = []
        for rig, texture in ((head, True), (head, False), (mean_rig, True)):
            errors.append(_heldout_error(rig, face, subject, landmarks[0], texture))
        groups[group].append(tuple(errors))
        logging.info("subject %d (%s, luminance %.2f): errors %s", seed - 1, group, luminance, errors)
    print("\n### Held-out synthetic photo re-rendered (mean abs RGB error over the face's skin, 0-255)\n")
    print("| skin tone (albedo luminance) | subjects | textured whole head | its per-vertex albedo | model's mean face |")
    print("|---|---|---|---|---|")
    for name, lo, hi in TONE_GROUPS:
        rows = np.array(groups[name])
        if len(rows):
            print(f"| {name} ({lo:.2f}-{hi:.2f}) | {len(rows)} | {rows[:, 0].mean():.1f} | {rows[:, 1].mean():.1f} | "
                  f"{rows[:, 2].mean():.1f} |")


def _heldout_error(rig: Rig, face: MorphableModel, subject, landmarks: torch.Tensor, texture: bool) -> float:
    """Fit the held-out photo (one tracker step: expression, pose, SH) and render it over the photo."""
    track = RigTracker(rig, face).step(landmarks.numpy(), subject.images[0])
    photo = torch.from_numpy(subject.images[0]).permute(2, 0, 1)[None].float() / 255
    renderer = RigRenderer(rig, textured=texture)
    verts = rig.head_vertices(track.expression[None])
    render = renderer(verts, track.pose, photo, track.sh[None])
    size = photo.shape[-1]
    mask = _face_mask(renderer, rig, track.expression[None], track.pose, size, size) & subject.masks[0]
    mask = ndimage.binary_erosion(mask, iterations=2)
    return float((render - photo)[0].abs().permute(1, 2, 0).numpy()[mask].mean() * 255)


# ------------------------------------------------------------------ main
def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=240, help="frames tracked per video (all: a large number)")
    parser.add_argument("--subjects", type=int, default=3, help="synthetic subjects per skin-tone group")
    parser.add_argument("--skip", nargs="*", default=[], choices=["videos", "identity", "wrinkles", "contact", "heldout"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    landmarker = FaceLandmarker("dlib")
    print(f"load average at start: {os.getloadavg()[0]:.2f}")
    start = time.perf_counter()
    tracked: Dict[str, Tuple[Rig, List[FrameTrack]]] = {}
    target = None
    if not {"videos", "contact"} <= set(args.skip):
        target = textured(folder_crops(SHARED / "rig_case1", landmarker), model, face, landmarker.backend)
    if "videos" not in args.skip or "contact" not in args.skip:
        tracked = videos(args, target, face, model, landmarker) if "videos" not in args.skip else {}
    if "identity" not in args.skip:
        identity(args, model, face, landmarker)
    if "wrinkles" not in args.skip:
        wrinkles(model, face, landmarker)
    if "contact" not in args.skip:
        rigs = {"model mean face": mean_face(model, face), "rig_case1": target}
        rigs.update({f"{v} (video's person)": r for v, (r, _) in tracked.items()})
        contact(rigs, face, tracked, target)
    if "heldout" not in args.skip:
        heldout(args, model, face)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}; {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
