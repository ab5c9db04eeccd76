"""The network (issue 7) vs the classical rig builder, side by side on the same inputs.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_network [--weights net_weights/inorig_ict.pth]
        [--subjects 20] [--images 8] [--videos d0 d3 d6 d12] [--skip-real]

Methods: ``classical`` (`core.rig.builder.build_rig`, default `RigBuildConfig`), ``regression``
(``INORig.build_rig(solve_steps=False)``: the network's regressed start only) and ``full``
(``INORig.build_rig()``: regression + in-network optimization). Prints markdown tables:

1. Held-out synthetic subjects (ICT, `utils.synthetic`, int seeds 1000+; training uses seed lists),
   ground-truth landmarks + 1.5 px noise and dlib detections on the renders: rig neutral error and
   per-image mesh error (face region, aligned, mm) next to the mean face, seconds per rig (the
   build call only).
2. Retargeting on the same subjects: subject s's estimated expressions drive subject s+1's rig
   (same method), vs the model with s+1's identity and s's true expressions (aligned, mm).
3. Real photos (../shared/data/real/rig_case1): landmark error / outer-eye-corner distance.
4. Identity consistency on the real videos: two rigs from disjoint sets of 8 frames per video vs
   rigs of different people (aligned neutral shapes, mm).
5. Seconds per frame for one frame (G = 1), over the 16 frames of the first video.

The protocols are shared with bench_rig.py (`benchmarks/rig_eval.py`).
"""
from __future__ import annotations

import argparse
import logging
import os
from functools import partial
from pathlib import Path
from typing import Dict, List, Optional

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.rig_eval import (  # noqa: E402
    SHARED,
    SOURCE_DETECTOR,
    SOURCES,
    Builder,
    RetargetPairs,
    crop_batch,
    detector_weighted,
    folder_crops,
    identity_consistency,
    print_synthetic_table,
    synthetic_cases,
    synthetic_row,
    timed,
    video_frame_sets,
)
from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from core.metrics import normalized_landmark_error  # noqa: E402
from core.rig.builder import build_rig  # noqa: E402
from models.inorig import INORig  # noqa: E402
from models.weights import NetworkWeightsError, load_network  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402

logger = logging.getLogger("bench_network")


def method_builders(face: MorphableModel, net: INORig, detector: Optional[str]) -> Dict[str, Builder]:
    """The three compared methods as ``builder(images, landmarks) -> RigBuildResult`` for landmarks of
    ``detector`` (None: ground truth): the classical solver weights them by its noise profile as
    the pipelines do; the network takes them as it was trained."""
    return {"classical": detector_weighted(partial(build_rig, face), detector),
            "regression": partial(net.build_rig, solve_steps=False), "full": net.build_rig}


def synthetic(model: MorphableModel, face: MorphableModel, builders: Dict[str, Dict[str, Builder]],
              subjects: int, images: int, landmarker: FaceLandmarker) -> None:
    """``builders``: landmark source -> method -> builder."""
    rows = {(m, source): [] for source in SOURCES for m in builders[source]}
    pairs = {key: RetargetPairs(face) for key in rows}
    for case in synthetic_cases(model, face, subjects, images, landmarker):
        subj = case.subject
        for source, (crops, lms, idx) in case.inputs.items():
            for m, builder in builders[source].items():
                result, seconds = timed(builder, crops, lms)
                rows[(m, source)].append(synthetic_row(case, source, result, seconds))
                pairs[(m, source)].add(result.rig, subj.identity, result.params["expression"], subj.expression[idx])
    print(f"\n### Held-out synthetic subjects: {subjects} subjects x {images} images (ICT face region, mm)\n")
    print_synthetic_table(rows, ["method", "landmarks"], subjects * images)
    if subjects < 2:
        print("\n(retargeting skipped: needs at least two --subjects)")
        return
    print("\n### Retargeting on synthetic subjects (expressions of subject s drive the rig of s+1, same method; "
          "aligned per-image mesh error vs the truth, mm)\n")
    print("| method | landmarks | pairs | retargeting error | mean-face baseline | ratio |")
    print("|---|---|---|---|---|---|")
    for (m, source), p in pairs.items():
        errors = np.asarray(p.close())
        if len(errors):
            err, base = errors.mean(0)
            print(f"| {m} | {source} | {len(errors)} | {err:.2f} | {base:.2f} | {err / base:.2f} |")


def real_photos(builders: Dict[str, Builder], landmarker: FaceLandmarker) -> None:
    folder = SHARED / "rig_case1"
    if not folder.is_dir():
        print(f"\n(real photos skipped: {folder} absent)")
        return
    images, lms = crop_batch(folder_crops(folder, landmarker))
    print(f"\n### Real photos: {folder.name}, {len(images)} images (dlib landmarks)\n")
    print("| method | landmark error / eye distance (mean) | max | s per rig |")
    print("|---|---|---|---|")
    for m, builder in builders.items():
        result, seconds = timed(builder, images, lms)
        nme = normalized_landmark_error(result.landmarks_2d, lms)
        print(f"| {m} | {100 * float(nme.mean()):.2f}% | {100 * float(nme.max()):.2f}% | {seconds:.2f} |")


def video_paths(names: List[str]) -> Optional[List[Path]]:
    """The named videos of ../shared (None where the folder is absent).

    Raises:
        ValueError: a named video is missing.
    """
    folder = SHARED / "videos"
    if not folder.is_dir():
        return None
    paths = [folder / f"{n}.mp4" for n in names]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"no such video file(s): {', '.join(missing)}")
    return paths


def videos_section(builders: Dict[str, Builder], paths: Optional[List[Path]], landmarker: FaceLandmarker) -> None:
    if paths is None:
        print(f"\n(identity consistency and time per frame skipped: {SHARED / 'videos'} absent)")
        return
    sets = video_frame_sets(paths, landmarker)
    if len(paths) >= 2:
        results = {m: identity_consistency(builder, sets) for m, builder in builders.items()}
        print("\n### Identity consistency on real video (aligned neutral shapes, mm; 8 frames per rig, "
              "alternate frames of 16 spread over the clip)\n")
        print("| video | " + " | ".join(builders) + " |")
        print("|---|" + "---|" * len(builders))
        for name in sets:
            print(f"| {name} (same video, two frame sets) | "
                  + " | ".join(f"{results[m][0][name]:.2f}" for m in builders) + " |")
        same = {m: np.mean(list(w.values())) for m, (w, _) in results.items()}
        different = {m: np.mean(b) for m, (_, b) in results.items()}
        print("| mean, same video | " + " | ".join(f"{same[m]:.2f}" for m in builders) + " |")
        print("| mean, different people (first sets, all pairs) | "
              + " | ".join(f"{different[m]:.2f}" for m in builders) + " |")
        print("| ratio mean(same) / mean(different) | "
              + " | ".join(f"{same[m] / different[m]:.2f}" for m in builders) + " |")
    else:
        print("\n(identity consistency skipped: needs at least two --videos)")
    first = paths[0].stem
    images, lms = crop_batch([*sets[first][0], *sets[first][1]])
    print(f"\n### Time per frame: one frame (G = 1) at a time, {len(images)} frames of {first}\n")
    print("| method | s per frame (mean) | max |")
    print("|---|---|---|")
    for m, builder in builders.items():
        seconds = [timed(builder, images[i:i + 1], lms[i:i + 1])[1] for i in range(len(images))]
        print(f"| {m} | {np.mean(seconds):.3f} | {np.max(seconds):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=ROOT / "net_weights" / "inorig_ict.pth",
                        help="network weights file (models/weights.py format)")
    parser.add_argument("--subjects", type=int, default=20, help="held-out synthetic subjects")
    parser.add_argument("--images", type=int, default=8, help="images per synthetic subject")
    parser.add_argument("--videos", nargs="+", default=["d0", "d3", "d6", "d12"],
                        help="video names in ../shared/data/real/videos (first one: time per frame)")
    parser.add_argument("--skip-real", action="store_true", help="synthetic sections only")
    args = parser.parse_args()
    if args.subjects < 1 or args.images < 1:
        parser.error(f"--subjects and --images must be at least 1, got {args.subjects} and {args.images}")
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    try:
        net = load_network(args.weights, face, device="cpu")
        logger.info("network %s: %s", args.weights, net.training_info.get("command", "no training record"))
        videos = None if args.skip_real else video_paths(args.videos)
    except NetworkWeightsError as exc:
        parser.error(f"--weights: {exc}")
    except ValueError as exc:
        parser.error(f"--videos: {exc}")
    print(f"weights: {args.weights}")
    landmarker = FaceLandmarker("dlib")
    by_source = {s: method_builders(face, net, SOURCE_DETECTOR[s]) for s in SOURCES}
    synthetic(model, face, by_source, args.subjects, args.images, landmarker)
    if args.skip_real:
        return
    detected = method_builders(face, net, landmarker.backend)
    real_photos(detected, landmarker)
    videos_section(detected, videos, landmarker)


if __name__ == "__main__":
    main()
