"""Benchmark: Levenberg-Marquardt iterations and landmark fits on the ICT face model (CPU).

Times (median of repeats, after a warm-up):
- one LM iteration of the landmark problem (68 landmarks + identity / expression priors, ICT
  expression box, weak perspective; from the closed-form pose of the mean face, 10 iterations
  in fixed mode), images independent, for a batch of B images;
- one LM iteration of the same problem for one person's G images with a shared identity
  (per-group variables, Schur complement), the layout rig building uses;
- a whole coarse-to-fine `fit_landmarks` for B images, and a tracking-style warm-started fit of
  one frame with the identity held (what video needs at 30 fps).

Usage:
    python -m benchmarks.bench_solver [--model-dir external/ICT-FaceKit] [--repeats 5]
"""
from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]

from core.face_model.load import load_face_model  # noqa: E402
from core.fitting.fit_landmarks import LandmarkFitConfig, fit_landmarks, init_pose_weak  # noqa: E402
from core.fitting.landmark_geometry import (  # noqa: E402
    LandmarkGeometry,
    landmark_points,
    project_landmarks,
)
from core.fitting.residuals import expression_bounds, landmark_block, prior_block  # noqa: E402
from core.fitting.solver import SolverConfig, solve  # noqa: E402
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D  # noqa: E402

ITERATIONS = 10


def subjects(geometry: LandmarkGeometry, n: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """Random faces with yaw in +-45 degrees (as the fitting tests draw them)."""
    g = torch.Generator().manual_seed(seed)
    return {
        IDENTITY: torch.randn(n, geometry.n_identity, generator=g),
        EXPRESSION: torch.rand(n, geometry.n_expression, generator=g)
        * (torch.rand(n, geometry.n_expression, generator=g) < 0.15),
        ROTATION: torch.stack([0.3 * (torch.rand(n, generator=g) * 2 - 1),
                               0.785 * (torch.rand(n, generator=g) * 2 - 1),
                               0.2 * (torch.rand(n, generator=g) * 2 - 1)], -1),
        SCALE: 1.0 + 0.3 * torch.rand(n, generator=g),
        TRANS2D: 128 + 6 * torch.randn(n, 2, generator=g),
    }


def start(geometry: LandmarkGeometry, targets: torch.Tensor) -> Dict[str, torch.Tensor]:
    """Zero codes and the closed-form pose of the mean face (where `fit_landmarks` starts)."""
    n = targets.shape[0]
    params = {IDENTITY: torch.zeros(n, geometry.n_identity),
              EXPRESSION: torch.zeros(n, geometry.n_expression)}
    points = landmark_points(geometry.points(params[IDENTITY], params[EXPRESSION]),
                             geometry.default_correspondence(n))
    params.update(init_pose_weak(points, targets))
    return params


def timed(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of ``fn`` in milliseconds (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def bench_iterations(geometry: LandmarkGeometry, n: int, grouped: bool, repeats: int) -> float:
    """Milliseconds per LM iteration (fixed mode, 10 iterations)."""
    targets = project_landmarks(geometry, subjects(geometry, n), "weak", "dynamic")
    params = start(geometry, targets)
    per_group: List[str] = []
    if grouped:  # one person: identity (1, n_id), the rest (1, n, ...)
        targets = targets[None]
        params = {k: (v[:1] if k == IDENTITY else v[None]) for k, v in params.items()}
        per_group = [EXPRESSION, ROTATION, SCALE, TRANS2D]
    blocks = [landmark_block(geometry, targets, "weak", weight=1 / 1.5 ** 2),
              prior_block(IDENTITY), prior_block(EXPRESSION, per_group=grouped)]
    config = SolverConfig(max_iterations=ITERATIONS, mode="fixed")
    run = lambda: solve(blocks, params, per_group=per_group, bounds=expression_bounds(geometry),  # noqa: E731
                        config=config)
    return timed(run, repeats) / ITERATIONS


def bench_fit(geometry: LandmarkGeometry, n: int, repeats: int) -> Dict[str, float]:
    targets = project_landmarks(geometry, subjects(geometry, n, seed=1), "weak", "dynamic")
    targets = targets + 1.5 * torch.randn(targets.shape, generator=torch.Generator().manual_seed(2))
    result = {}
    result["ms"] = timed(lambda: result.update(fit=fit_landmarks(geometry, targets)), repeats)
    result["iterations"] = result.pop("fit").history.shape[1] - 1
    return result


def bench_tracking(geometry: LandmarkGeometry, repeats: int) -> Dict[str, float]:
    gt = subjects(geometry, 1, seed=3)
    first = fit_landmarks(geometry, project_landmarks(geometry, gt, "weak", "dynamic"),
                          identity=gt[IDENTITY])
    moved = dict(gt, **{ROTATION: gt[ROTATION] + torch.tensor([0.0, 0.03, 0.0])})
    targets = project_landmarks(geometry, moved, "weak", "dynamic")
    prev = {k: first.params[k] for k in (ROTATION, SCALE, TRANS2D, EXPRESSION)}
    config = LandmarkFitConfig(pose_rounds=0, rounds=1, iterations=5)
    result = {}
    run = lambda: result.update(fit=fit_landmarks(geometry, targets, identity=gt[IDENTITY],  # noqa: E731
                                                  init=prev, previous=prev, config=config))
    result["ms"] = timed(run, repeats)
    result["iterations"] = result.pop("fit").history.shape[1] - 1
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=REPO / "external" / "ICT-FaceKit")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    model = load_face_model("ict", args.model_dir, region="face")
    geometry = LandmarkGeometry(model)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}, "
          f"unknowns per image: {6 + geometry.n_identity + geometry.n_expression}")
    print(f"{'case':58s} {'ms':>9s}")
    for n in (1, 8, 14):
        print(f"{f'LM iteration, {n} independent image(s)':58s} "
              f"{bench_iterations(geometry, n, False, args.repeats):9.2f}")
    for n in (8, 14):
        print(f"{f'LM iteration, 1 person x {n} images, shared identity':58s} "
              f"{bench_iterations(geometry, n, True, args.repeats):9.2f}")
    for n in (1, 8, 14):
        r = bench_fit(geometry, n, args.repeats)
        case = f"fit_landmarks, {n} image(s), {r['iterations']} LM iterations"
        print(f"{case:58s} {r['ms']:9.1f}")
    r = bench_tracking(geometry, args.repeats)
    case = f"tracking fit, 1 frame, warm start, {r['iterations']} LM iterations"
    print(f"{case:58s} {r['ms']:9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
