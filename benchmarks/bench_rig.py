"""Rig building: accuracy on synthetic subjects and real photos, identity consistency, speed.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/bench_rig.py [--subjects 20] [--images 8]

Prints markdown tables (recorded in docs/benchmarks.md, "Rig building (issue 5)"):
1. Synthetic (ICT, generator of utils/synthetic.py, seeds 1000+): rig neutral-shape error and per-image
   mesh error after similarity alignment (face region, mm, mean over vertices) next to the model's
   mean face (the do-nothing baseline), with ground-truth landmarks + 1.5 px noise and with the real
   landmarker's detections on the renders.
2. Real photos (../shared/data/real/rig_case1): projected-vs-detected landmark error / outer-eye-corner
   distance, and time per stage.
3. Identity consistency on real video: rigs from two disjoint sets of 8 frames of one video vs rigs
   of two different people (aligned neutral shapes, mm).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.metrics import aligned_mesh_error, normalized_landmark_error  # noqa: E402
from core.morphable_model import load_face_model  # noqa: E402
from core.residuals import LandmarkGeometry, project_landmarks  # noqa: E402
from core.rig_builder import RigBuildConfig, build_rig  # noqa: E402
from utils.crop import crop_face  # noqa: E402
from utils.landmarks import FaceLandmarker  # noqa: E402
from utils.synthetic import SyntheticGenerator  # noqa: E402
from utils.video import VideoReader  # noqa: E402
from utils.visualization import to_float_batch  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "real"


def synthetic(model, face, subjects: int, images: int, config: RigBuildConfig, landmarker) -> None:
    generator = SyntheticGenerator(model)
    geometry = LandmarkGeometry(face)
    rows = {"gt + 1.5 px noise": [], "detected (dlib)": []}
    rng = np.random.default_rng(0)
    for s in range(subjects):
        subj = generator.subject(images, seed=1000 + s)
        truth_neutral = torch.from_numpy(subj.neutral).float()[None]
        truth_meshes = torch.from_numpy(subj.vertices).float()
        base_neutral = float(aligned_mesh_error(face.neutral[None], truth_neutral))
        base_meshes = aligned_mesh_error(face.neutral[None].expand_as(truth_meshes), truth_meshes)
        # Ground-truth landmarks as a detector sees them: contour points on the silhouette (the
        # fitter's sliding-contour rule), not the fixed jaw vertices the generator projects.
        truth_params = {"identity": torch.from_numpy(subj.identity).float()[None].expand(images, -1),
                        "expression": torch.from_numpy(subj.expression).float(),
                        "rotation": torch.from_numpy(subj.angles).float(),
                        "scale": torch.from_numpy(subj.scale).float(),
                        "trans2d": torch.from_numpy(subj.translation).float()}
        contour_truth = project_landmarks(geometry, truth_params, "weak", "dynamic").numpy()
        noisy = contour_truth + rng.normal(0.0, 1.5, contour_truth.shape)
        detected, keep = [], []
        for k, image in enumerate(subj.images):
            faces = landmarker.detect(image)
            if faces:
                detected.append(faces[0].landmarks)
                keep.append(k)
        for mode, lms, idx in (("gt + 1.5 px noise", noisy, list(range(images))),
                               ("detected (dlib)", np.asarray(detected), keep)):
            if len(idx) == 0:
                continue
            start = time.perf_counter()
            res = build_rig(face, to_float_batch(subj.images[idx]), torch.from_numpy(np.asarray(lms)).float(),
                            config=config)
            seconds = time.perf_counter() - start
            rig = res.rig
            err_neutral = float(aligned_mesh_error(rig.neutral[None], truth_neutral))
            meshes = rig.vertices(res.params["expression"])
            err_meshes = aligned_mesh_error(meshes, truth_meshes[idx])
            rows[mode].append((err_neutral, base_neutral, float(err_meshes.mean()),
                               float(base_meshes[idx].mean()), len(idx), seconds))
        logging.info("subject %d done", s)
    print(f"\n### Synthetic: {subjects} subjects x {images} images (ICT face region, mm)\n")
    print("| landmarks | images used | rig neutral error | mean-face baseline | ratio | per-image mesh error "
          "| baseline | ratio | s per rig |")
    print("|---|---|---|---|---|---|---|---|---|")
    for mode, r in rows.items():
        if not r:
            continue
        a = np.asarray(r)
        print(f"| {mode} | {a[:, 4].sum():.0f}/{subjects * images} | {a[:, 0].mean():.2f} | {a[:, 1].mean():.2f} | "
              f"{a[:, 0].mean() / a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} | {a[:, 3].mean():.2f} | "
              f"{a[:, 2].mean() / a[:, 3].mean():.2f} | {a[:, 5].mean():.2f} |")


def real_photos(face, config: RigBuildConfig, landmarker) -> None:
    from utils.rig_pipeline import build_rig_from_folder

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


def _video_frames(path: Path, indices: list) -> list:
    wanted, frames = set(indices), []
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                frames.append(frame)
            if i >= max(indices):
                break
    return frames


def _rig_from_frames(face, frames: list, config: RigBuildConfig, landmarker):
    crops = []
    for frame in frames:
        faces = landmarker.detect(frame)
        if faces:
            crops.append(crop_face(frame, faces[0].landmarks))
    images = to_float_batch(np.stack([c.image for c in crops]))
    lms = torch.from_numpy(np.stack([c.landmarks_crop for c in crops])).float()
    return build_rig(face, images, lms, config=config).rig


def identity_consistency(face, config: RigBuildConfig, landmarker) -> None:
    videos = sorted((SHARED / "videos").glob("*.mp4"))
    if len(videos) < 2:
        print("\n(identity consistency skipped: fewer than two videos in ../shared)")
        return
    rigs = {}
    for path in videos:
        with VideoReader(path) as reader:
            n = reader.info.frame_count or 0
        n = max(n, 16)
        spread = np.linspace(0, n - 1, 16).round().astype(int).tolist()
        frames = _video_frames(path, spread)
        rigs[path.stem] = (_rig_from_frames(face, frames[0::2], config, landmarker),
                           _rig_from_frames(face, frames[1::2], config, landmarker))
    within = {k: float(aligned_mesh_error(a.neutral[None], b.neutral[None])) for k, (a, b) in rigs.items()}
    names = list(rigs)
    between = [float(aligned_mesh_error(rigs[p][0].neutral[None], rigs[q][0].neutral[None]))
               for i, p in enumerate(names) for q in names[i + 1:]]
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    overrides = {"landmark_sigma": args.sigma, "contour_weight": args.contour_weight,
                 "landmark_huber": args.huber}
    config = RigBuildConfig(**{k: v for k, v in overrides.items() if v is not None})
    print(f"config: {config}")
    landmarker = FaceLandmarker("dlib")
    if "synthetic" not in args.skip:
        synthetic(model, face, args.subjects, args.images, config, landmarker)
    if "real" not in args.skip:
        real_photos(face, config, landmarker)
    if "video" not in args.skip:
        identity_consistency(face, config, landmarker)


if __name__ == "__main__":
    main()
