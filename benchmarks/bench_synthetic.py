"""Benchmark of the synthetic data generator: time per image, and how the real landmarker sees it.

    .venv/bin/python -m benchmarks.bench_synthetic --subjects 20 --images 8

Prints two tables (markdown):

- generation time (in memory, ICT full model, 256x256 crops): the one-off preparation of a
  ``SyntheticGenerator`` and the time per image of ``generator.subject(n)`` for 8 images and for
  1 image per subject (the on-the-fly training case), with and without 2x supersampling; medians
  over repeats, since the 2-core machine is shared. Then the per-subject procedural albedo and
  writing to disk.
- the dlib landmarker (``utils.landmarks.detect.FaceLandmarker(backend='dlib')``) on the default
  renders of ``--subjects`` x ``--images``: detection rate and mean landmark error against the
  ground truth (all 68 points, and the 51 inner points 17-67), normalised by the outer-eye-corner
  distance, by absolute yaw.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from core.face_model.load import load_face_model  # noqa: E402
from utils.get_face_model import ICT_DIR  # noqa: E402
from utils.synthetic.files import write_subject  # noqa: E402
from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator  # noqa: E402
from utils.synthetic.skin_albedo import SkinAlbedoSampler  # noqa: E402

YAW_BINS_DEG = (0.0, 15.0, 30.0, 45.0, 60.0)


def normalised_error(detected: np.ndarray, truth: np.ndarray, points: slice = slice(None)) -> float:
    """Mean point error over ``points`` divided by the outer-eye-corner distance (36-45)."""
    return float(np.linalg.norm(detected[points] - truth[points], axis=1).mean()
                 / np.linalg.norm(truth[36] - truth[45]))


def timing_table(model, repeats: int) -> None:
    start = time.perf_counter()
    SyntheticGenerator(model)
    setup = time.perf_counter() - start
    print(f"\nSyntheticGenerator(model) preparation: {1000 * setup:.0f} ms (once per model)\n")
    print("| supersample | images per subject() call | ms per image (median) |")
    print("|---|---|---|")
    for supersample in (2, 1):
        generator = SyntheticGenerator(model, SyntheticConfig(supersample=supersample))
        generator.subject(1, seed=10 ** 6)                      # warm-up
        for batch in (8, 1):
            seconds = median_seconds(lambda r: generator.subject(batch, seed=(7, r)), repeats)
            print(f"| {supersample} | {batch} | {1000 * seconds / batch:.0f} |")

    sampler = SkinAlbedoSampler(model)
    albedo = median_seconds(lambda r: sampler(np.random.default_rng(r)), repeats)
    print(f"\nprocedural albedo (per subject): {1000 * albedo:.0f} ms")
    subject = SyntheticGenerator(model).subject(8, seed=1)
    with tempfile.TemporaryDirectory() as tmp:
        for obj in (True, False):
            seconds = median_seconds(lambda r: write_subject(subject, Path(tmp) / str(r), obj),
                                     repeats)
            print(f"write_subject, obj={obj}: {1000 * seconds / 8:.0f} ms per image")


def median_seconds(run, repeats: int) -> float:
    """Median wall time of ``run(r)`` over ``r = 0 .. repeats - 1``."""
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        run(r)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def detection_table(model, n_subjects: int, n_images: int, seed: int) -> None:
    from utils.landmarks.detect import FaceLandmarker

    generator = SyntheticGenerator(model)
    landmarker = FaceLandmarker(backend="dlib")
    yaw, found, errors, inner = [], [], [], []
    for i in range(n_subjects):
        subject = generator.subject(n_images, seed=(seed, i))
        for k in range(n_images):
            truth = subject.landmarks[k].astype(np.float64)
            faces = landmarker.detect(subject.images[k])
            best = min(faces, key=lambda f: normalised_error(f.landmarks, truth), default=None)
            error = np.inf if best is None else normalised_error(best.landmarks, truth)
            yaw.append(abs(np.degrees(subject.rotation[k, 1])))
            found.append(error < 0.5)          # this face, not a spurious box elsewhere
            errors.append(error)
            inner.append(np.inf if best is None else
                         normalised_error(best.landmarks, truth, slice(17, 68)))
    yaw, found, errors, inner = map(np.array, (yaw, found, errors, inner))
    print(f"\ndlib on {len(yaw)} renders ({n_subjects} subjects x {n_images}, seed {seed})\n")
    print("| abs(yaw) deg | images | detected | NME 68 pts (% eye dist) | NME inner 51 pts |")
    print("|---|---|---|---|---|")
    bins = [(lo, hi) for lo, hi in zip(YAW_BINS_DEG[:-1], YAW_BINS_DEG[1:])] + [(0.0, 61.0)]
    for lo, hi in bins:
        sel = (yaw >= lo) & (yaw < hi if hi < 61 else yaw <= 60.0)
        ok = sel & found
        label = "all" if hi == 61.0 else f"{lo:.0f}-{hi:.0f}"
        rate = 100 * found[sel].mean() if sel.any() else float("nan")
        nme = 100 * errors[ok].mean() if ok.any() else float("nan")
        nme_inner = 100 * inner[ok].mean() if ok.any() else float("nan")
        print(f"| {label} | {sel.sum()} | {rate:.0f}% | {nme:.2f} | {nme_inner:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats")
    parser.add_argument("--model-dir", type=Path, default=ICT_DIR)
    parser.add_argument("--no-detect", action="store_true", help="time the generator only")
    args = parser.parse_args(argv)

    model = load_face_model("ict", args.model_dir)
    print(f"torch threads: {torch.get_num_threads()}")
    timing_table(model, args.repeats)
    if not args.no_detect:
        detection_table(model, args.subjects, args.images, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
