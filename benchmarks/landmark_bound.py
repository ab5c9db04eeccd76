"""How well can 68 noisy landmarks alone determine a face's shape? A bound for the rig benchmark.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.landmark_bound [--subjects 20] [--noise 1.5]

For each held-out synthetic subject (seeds 1000+, as bench_rig.py) the true head poses, camera
scales and expressions are given, and the identity is estimated from the model's 68 landmark
vertices projected into each image plus Gaussian pixel noise. With everything else known the
landmarks are linear in the identity code, so the posterior mean under the N(0, 1) prior the
generator samples from (ridge regression) is the best estimate there is. Its aligned neutral-shape
error against the mean face's error is a floor for any fitter that uses only these landmarks;
prints a markdown table over the number of images (recorded in docs/benchmarks.md).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from core.metrics import aligned_mesh_error  # noqa: E402
from utils.synthetic.generator import SyntheticGenerator, SyntheticSubject  # noqa: E402

_FLIP_V = np.array([[1.0], [-1.0]])  # image v runs down (core.camera.weak_perspective_project)


def posterior_identity(face: MorphableModel, subject: SyntheticSubject, observed: np.ndarray, images: Sequence[int],
                       noise: float, points: Sequence[int] = tuple(range(68))) -> np.ndarray:
    """Ridge estimate (n_id,) of the identity from landmarks ``observed`` (M, 68, 2) of the subject's
    ``images``, with their true poses, scales and expressions, ``noise`` px per coordinate, and only
    the landmark numbers in ``points`` used (the model's landmark vertices)."""
    ids = subject.landmark_indices[list(points)]
    basis = face.identity_basis[:, ids].double().numpy()  # (n_id, P, 3)
    rows, targets = [], []
    for j, k in enumerate(images):
        camera = subject.scale[k] * subject.rotation_matrix[k][:2] * _FLIP_V  # (2, 3)
        known = face.neutral[ids].double().numpy() + np.einsum(
            "e,evc->vc", subject.expression[k], face.expression_basis[:, ids].double().numpy())
        rows.append(np.einsum("rc,kvc->vrk", camera, basis).reshape(-1, basis.shape[0]))
        targets.append((observed[j][list(points)] - known @ camera.T - subject.trans2d[k]).reshape(-1))
    A, b = np.concatenate(rows), np.concatenate(targets)
    return np.linalg.solve(A.T @ A / noise ** 2 + np.eye(A.shape[1]), A.T @ b / noise ** 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--noise", type=float, default=1.5, help="landmark noise, crop pixels (std per coordinate)")
    parser.add_argument("--images", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    generator = SyntheticGenerator(model)
    rng = np.random.default_rng(0)
    errors = {n: [] for n in args.images}
    baselines = []
    for s in range(args.subjects):
        subject = generator.subject(max(args.images), seed=1000 + s)
        truth = torch.from_numpy(subject.neutral).float()[None]
        baselines.append(float(aligned_mesh_error(face.neutral[None], truth)))
        for n in args.images:
            noisy = subject.landmarks[:n] + rng.normal(0.0, args.noise, (n, 68, 2))
            identity = torch.from_numpy(posterior_identity(face, subject, noisy, range(n), args.noise)).float()
            errors[n].append(float(aligned_mesh_error(face.vertices(identity[None]), truth)))
    print(f"\n### Landmarks-only bound: true poses and expressions, {args.noise} px noise, "
          f"{args.subjects} subjects (ICT face region, mm)\n")
    print("| images | neutral error | mean-face baseline | ratio |")
    print("|---|---|---|---|")
    for n in args.images:
        print(f"| {n} | {np.mean(errors[n]):.2f} | {np.mean(baselines):.2f} | "
              f"{np.mean(errors[n]) / np.mean(baselines):.2f} |")


if __name__ == "__main__":
    main()
