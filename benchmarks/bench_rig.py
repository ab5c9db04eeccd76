"""Rig building: accuracy on synthetic subjects and real photos, identity consistency, speed.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_rig [--subjects 20] [--images 8]

Prints markdown tables (recorded in docs/benchmarks.md, "Rig building (issue 5)"):
1. Synthetic (ICT, generator of utils/synthetic.py, seeds 1000+): rig neutral-shape error and per-image
   mesh error after similarity alignment (face region, mm, mean over vertices) next to the model's
   mean face (the do-nothing baseline), with ground-truth landmarks + 1.5 px noise and with the real
   landmarker's detections on the renders.
2. Real photos (../shared/data/real/rig_case1): projected-vs-detected landmark error / outer-eye-corner
   distance, and time per stage.
3. Identity consistency on real video: rigs from two disjoint sets of 8 frames of one video vs rigs
   of two different people (aligned neutral shapes, mm); with ``--identity-orders K``, again with
   each set's frames in K orders, for the ratio's spread under float rounding.

The protocols (synthetic cases, crops, video frame sets) are shared with bench_network.py
(`benchmarks/rig_eval.py`).
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import logging
import os
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Callable, List, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.rig_eval import (  # noqa: E402
    SHARED,
    SOURCE_DETECTOR,
    SOURCES,
    detector_weighted,
    identity_consistency,
    print_synthetic_table,
    synthetic_cases,
    synthetic_row,
    timed,
    video_frame_sets,
)
from core.face_model.load import load_face_model  # noqa: E402
from core.metrics import normalized_landmark_error  # noqa: E402
from core.rig.builder import RigBuildConfig, build_rig  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402


def synthetic(model, face, subjects: int, images: int, config: RigBuildConfig, landmarker) -> None:
    builders = {s: detector_weighted(partial(build_rig, face, config=config), SOURCE_DETECTOR[s]) for s in SOURCES}
    rows = {(source,): [] for source in SOURCES}
    for case in synthetic_cases(model, face, subjects, images, landmarker):
        for source, (crops, lms, _) in case.inputs.items():
            rows[(source,)].append(synthetic_row(case, source, *timed(builders[source], crops, lms)))
    print(f"\n### Synthetic: {subjects} subjects x {images} images (ICT face region, mm)\n")
    print_synthetic_table(rows, ["landmarks"], subjects * images)


def real_photos(face, config: RigBuildConfig, landmarker) -> None:
    from utils.pipelines.rig import build_rig_from_folder

    folder = SHARED / "rig_case1"
    if not folder.is_dir():
        print(f"\n(real photos skipped: {folder} absent)")
        return
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        run = build_rig_from_folder(folder, Path(out), face, landmarker=landmarker, config=config)
        total = time.perf_counter() - start
    res = run.result
    detected = torch.from_numpy(np.stack([c.landmarks_crop for c in run.crops])).float()
    nme = normalized_landmark_error(res.landmarks_2d, detected)
    print(f"\n### Real photos: {folder.name}, {len(run.used)} images\n")
    print("| landmark error / eye distance (mean) | max | " + " | ".join(f"{k} (s)" for k in run.timings) + " | total (s) |")
    print("|---|---|" + "---|" * len(run.timings) + "---|")
    print(f"| {100 * float(nme.mean()):.2f}% | {100 * float(nme.max()):.2f}% | "
          + " | ".join(f"{v:.2f}" for v in run.timings.values()) + f" | {total:.2f} |")


def _orders(count: int) -> List[Tuple[str, Callable[[list], list]]]:
    """The first ``count`` frame orders of `video_consistency`'s repeats: as given, reversed, rotated
    by one, then shuffles with seeds 0, 1, ..."""
    def shuffled(seed: int) -> Callable[[list], list]:
        return lambda crops: [crops[i] for i in np.random.default_rng(seed).permutation(len(crops))]

    fixed = [("as given", lambda c: list(c)), ("reversed", lambda c: list(c)[::-1]),
             ("rotated by one", lambda c: list(c[1:]) + list(c[:1]))]
    return (fixed + [(f"shuffle {k}", shuffled(k)) for k in range(max(0, count - len(fixed)))])[:count]


def video_consistency(face, config: RigBuildConfig, landmarker, orders: int = 1) -> None:
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    if len(videos) < 2:
        print("\n(identity consistency skipped: fewer than two videos in ../shared)")
        return
    builder = detector_weighted(partial(build_rig, face, config=config), landmarker.backend)
    sets = video_frame_sets(videos, landmarker)
    within, between = identity_consistency(builder, sets)
    print("\n### Identity consistency on real video (aligned neutral shapes, mm; 8 frames per rig, "
          "alternate frames of 16 spread over the clip)\n")
    print("| video | same video, two frame sets |")
    print("|---|---|")
    for k, v in within.items():
        print(f"| {k} | {v:.2f} |")
    print(f"\nDifferent people (first sets, all pairs): mean {np.mean(between):.2f} mm, min {np.min(between):.2f} mm; "
          f"ratio mean(same) / mean(different) = {np.mean(list(within.values())) / np.mean(between):.2f} "
          f"(target < 0.33)")
    if orders > 1:
        # The rigs move with float rounding (the optimiser stops short of convergence), and so does
        # the ratio: the same frames in other orders show its spread.
        print("\n| frames' order | " + " | ".join(sets) + " | different people | ratio |")
        print("|---|" + "---|" * (len(sets) + 2))
        ratios = []
        for i, (name, order) in enumerate(_orders(orders)):
            same, other = (within, between) if i == 0 else identity_consistency(
                builder, {k: (order(a), order(b)) for k, (a, b) in sets.items()})
            ratios.append(np.mean(list(same.values())) / np.mean(other))
            print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in same.values())
                  + f" | {np.mean(other):.2f} | {ratios[-1]:.3f} |")
        print(f"\nRatio over {len(ratios)} orders: mean {np.mean(ratios):.3f}, "
              f"from {min(ratios):.3f} to {max(ratios):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "real", "video"])
    parser.add_argument("--identity-orders", type=int, default=1, metavar="K",
                        help="also build the identity-consistency rigs with each set's frames in K orders "
                             "(as given, reversed, rotated, shuffles) and print the ratio's spread")
    parser.add_argument("--sigma", type=float, default=None, help="override RigBuildConfig.landmark_sigma")
    parser.add_argument("--contour-weight", type=float, default=None, help="override RigBuildConfig.contour_weight")
    parser.add_argument("--huber", type=float, default=None, help="override RigBuildConfig.landmark_huber")
    parser.add_argument("--shading", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="override ShadingConfig fields, e.g. iterations=45 carry_memory=False")
    parser.add_argument("--landmarks", default="dlib", choices=["dlib", "mediapipe"],
                        help="landmark backend of the real-photo and video rows (the synthetic rows compare "
                             "ground truth and dlib)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    overrides = {"landmark_sigma": args.sigma, "contour_weight": args.contour_weight,
                 "landmark_huber": args.huber}
    config = RigBuildConfig(**{k: v for k, v in overrides.items() if v is not None})
    if args.shading:
        fields = {k: ast.literal_eval(v) for k, v in (item.split("=", 1) for item in args.shading)}
        config = dataclasses.replace(config, shading=dataclasses.replace(config.shading, **fields))
    print(f"config: {config}")
    landmarker = FaceLandmarker(args.landmarks)
    if "synthetic" not in args.skip:
        synthetic(model, face, args.subjects, args.images, config, FaceLandmarker("dlib"))
    if "real" not in args.skip:
        real_photos(face, config, landmarker)
    if "video" not in args.skip:
        video_consistency(face, config, landmarker, args.identity_orders)


if __name__ == "__main__":
    main()
