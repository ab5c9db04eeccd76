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
   of two different people (aligned neutral shapes, mm).

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


def video_consistency(face, config: RigBuildConfig, landmarker) -> None:
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    if len(videos) < 2:
        print("\n(identity consistency skipped: fewer than two videos in ../shared)")
        return
    within, between = identity_consistency(detector_weighted(partial(build_rig, face, config=config),
                                                             landmarker.backend),
                                           video_frame_sets(videos, landmarker))
    print("\n### Identity consistency on real video (aligned neutral shapes, mm; 8 frames per rig, "
          "alternate frames of 16 spread over the clip)\n")
    print("| video | same video, two frame sets |")
    print("|---|---|")
    for k, v in within.items():
        print(f"| {k} | {v:.2f} |")
    print(f"\nDifferent people (first sets, all pairs): mean {np.mean(between):.2f} mm, min {np.min(between):.2f} mm; "
          f"ratio mean(same) / mean(different) = {np.mean(list(within.values())) / np.mean(between):.2f} "
          f"(target < 0.33)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--skip", nargs="*", default=[], choices=["synthetic", "real", "video"])
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
        video_consistency(face, config, landmarker)


if __name__ == "__main__":
    main()
