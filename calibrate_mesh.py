"""Tie MediaPipe's 478 face-mesh points to the face model, and derive iBUG's 68 from them.

    python calibrate_mesh.py --subjects 60 --holdout 12 --images 8 --seed 500

Renders ``--subjects`` synthetic subjects (`utils.synthetic`, seeds ``seed .. seed + subjects - 1``,
as ``calibrate_landmarks.py``; never the benchmark's 1000+ or 3000+), runs `MediaPipeMesh` on
every render and, with every face-region vertex projected at the true geometry:

1. **Surface point per mesh point.** The vertex whose projections are nearest the detections over
   all renders (cost: mean of ``min(d, tau)^2``, d in eye distances, tau = ``--tau``, so wrong
   detections cannot dominate), then the best point on the triangles around it (barycentric
   grid of step 1/``--grid``).
2. **Noise spread** per point (`utils.landmark_noise.landmark_spread`, eye distances) of the
   detections around the projected surface points.
3. **Contour flag**: points on the 2D convex hull of the 468 surface points in at least
   ``--hull`` of the renders (the face outline, which slides over the surface with the pose
   like dlib's jawline). The 10 iris points are flagged as such (they follow the gaze).
4. **iBUG weights**: each of the 68 points (ground truth as a detector places it, the jawline on
   the silhouette: `utils.training_data.detector_landmarks`) as the convex combination of its
   ``--candidates`` nearest mesh points that fits best (non-negative least squares).

``--holdout`` further subjects give the spreads and the 68-point error on renders the calibration
never saw. Detections whose mesh centroid is farther than ``--reject`` eye distances from the
truth's are wrong faces and left out. Writes ``net_weights/landmark_mesh_mediapipe.npz`` (or
``--out``) and a JSON log beside it (command, seeds, counts, per-point spreads, seconds).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import nnls  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from utils.landmarks.mesh import (  # noqa: E402
    CORRESPONDENCE_PATH,
    IRIS_CENTRES,
    MEDIAPIPE_VERSION,
    MESH_POINTS,
    SURFACE_POINTS,
    MediaPipeMesh,
    MeshCorrespondence,
    save_mesh_correspondence,
)
from utils.landmarks.noise import landmark_spread  # noqa: E402
from utils.synthetic.generator import SyntheticGenerator  # noqa: E402
from utils.synthetic.truth import detector_landmarks  # noqa: E402

logger = logging.getLogger("calibrate_mesh")
ROOT = Path(__file__).resolve().parent


@dataclass
class Renders:
    """Detections and truth on N renders with a usable detection.

    Shape: dense (N, 478, 2); screen (N, V, 2) every face-region vertex projected; ibug (N, 68, 2)
    detector-style truth; eye (N,) outer-eye-corner distance of the truth, pixels.
    """

    dense: np.ndarray
    screen: np.ndarray
    ibug: np.ndarray
    eye: np.ndarray
    renders: int
    missed: int
    rejected: int


def collect(face: MorphableModel, generator: SyntheticGenerator, mesh: MediaPipeMesh, seeds: Sequence[int],
            images: int, reject: float) -> Renders:
    """Run the mesh on every render of ``seeds`` and keep the truth beside each detection."""
    dense, screen, ibug, eye = [], [], [], []
    missed = rejected = 0
    for seed in tqdm(seeds, desc="subjects", unit="subject", disable=None):
        subject = generator.subject(images, seed=seed)
        truth = detector_landmarks(face, subject)
        proj = subject.pose.project(torch.from_numpy(subject.vertices)).numpy()  # (M, V, 2) crop pixels
        for k, image in enumerate(subject.images):
            faces = mesh.detect(image)
            if not faces:
                missed += 1
                continue
            e = float(np.linalg.norm(truth[k, 36] - truth[k, 45]))
            if np.linalg.norm(faces[0].dense[:SURFACE_POINTS].mean(0) - truth[k].mean(0)) > reject * e:
                rejected += 1
                continue
            dense.append(faces[0].dense)
            screen.append(proj[k])
            ibug.append(truth[k])
            eye.append(e)
    if len(dense) < 2:
        raise RuntimeError(f"fewer than two usable detections on the renders of seeds {seeds[0]}..{seeds[-1]}")
    return Renders(np.stack(dense), np.stack(screen).astype(np.float32), np.stack(ibug), np.array(eye),
                   len(seeds) * images, missed, rejected)


def _truncated_cost(pred: torch.Tensor, target: torch.Tensor, eye: torch.Tensor, tau: float) -> torch.Tensor:
    """Mean over renders of min(d / eye, tau)^2. Shape: pred (N, ..., 2), target broadcastable -> (...)."""
    d = (pred - target).norm(dim=-1) / eye.reshape(-1, *([1] * (pred.dim() - 2)))
    return d.clamp(max=tau).pow(2).mean(0)


def nearest_vertices(r: Renders, tau: float) -> np.ndarray:
    """(478,) the face-region vertex of least truncated cost per mesh point."""
    cost = torch.zeros(MESH_POINTS, r.screen.shape[1], dtype=torch.float64)
    for n in range(len(r.dense)):
        d = torch.cdist(torch.from_numpy(r.dense[n]).float(), torch.from_numpy(r.screen[n])) / r.eye[n]
        cost += d.clamp(max=tau).double().pow(2)
    return cost.argmin(1).numpy()


def refine_on_triangles(r: Renders, vertex: np.ndarray, triangles: np.ndarray, tau: float, grid: int
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Best point (triangle, barycentric weights) on the triangles around each point's vertex.

    Shape: -> triangle (478, 3) int64, barycentric (478, 3) float32.
    """
    steps = [(a, b, grid - a - b) for a in range(grid + 1) for b in range(grid + 1 - a)]
    bary = torch.tensor(steps, dtype=torch.float32) / grid  # (G, 3)
    screen, eye = torch.from_numpy(r.screen), torch.from_numpy(r.eye).float()
    dense = torch.from_numpy(r.dense).float()
    out_tri = np.zeros((MESH_POINTS, 3), np.int64)
    out_bary = np.zeros((MESH_POINTS, 3), np.float32)
    for i in range(MESH_POINTS):
        ring = triangles[(triangles == vertex[i]).any(1)]
        if len(ring) == 0:
            out_tri[i], out_bary[i] = vertex[i], (1.0, 0.0, 0.0)
            continue
        corners = screen[:, torch.from_numpy(ring)]  # (N, T, 3, 2)
        cand = torch.einsum("gk,ntkc->ntgc", bary, corners)  # (N, T, G, 2)
        cost = _truncated_cost(cand, dense[:, i, None, None], eye, tau)  # (T, G)
        t, g = divmod(int(cost.argmin()), len(steps))
        out_tri[i], out_bary[i] = ring[t], bary[g].numpy()
    return out_tri, out_bary


def surface_points(screen: np.ndarray, triangle: np.ndarray, barycentric: np.ndarray) -> np.ndarray:
    """Projected calibrated points. Shape: screen (N, V, 2) -> (N, 478, 2)."""
    return np.einsum("ik,nikc->nic", barycentric, screen[:, triangle])


def hull_frequency(dense: np.ndarray) -> np.ndarray:
    """(478,) share of renders on which each surface point is a vertex of the mesh's 2D convex hull."""
    count = np.zeros(MESH_POINTS)
    for points in dense:
        hull = cv2.convexHull(points[:SURFACE_POINTS].astype(np.float32), returnPoints=False)
        count[hull.ravel()] += 1
    return count / len(dense)


def ibug_weights(r: Renders, candidates: int) -> np.ndarray:
    """(68, 478) convex weights fitting the truth's 68 points from the mesh points (NNLS, sum 1)."""
    weights = np.zeros((68, MESH_POINTS))
    scaled = r.dense / r.eye[:, None, None]
    for j in range(68):
        target = r.ibug[:, j] / r.eye[:, None]  # (N, 2)
        near = np.argsort(np.linalg.norm(scaled[:, :SURFACE_POINTS] - target[:, None], axis=-1).mean(0))[:candidates]
        A = scaled[:, near].transpose(0, 2, 1).reshape(-1, candidates)  # rows: (render, axis)
        b = target.reshape(-1)
        big = 1e3  # the sum-to-one row
        w, _ = nnls(np.vstack([A, big * np.ones(candidates)]), np.concatenate([b, [big]]))
        weights[j, near] = w / w.sum()
    return weights


def errors(r: Renders, corr: MeshCorrespondence) -> dict:
    """Per-point spread and mean error of the mesh points (eye distances), and the 68-point NME."""
    residuals = torch.from_numpy(r.dense - surface_points(r.screen, corr.triangle, corr.barycentric)).float()
    eye = torch.from_numpy(r.eye).float()
    sigma = landmark_spread(residuals, eye, points=MESH_POINTS)
    mean_error = (residuals.norm(dim=-1) / eye[:, None]).mean(0)
    ibug = corr.to_ibug(r.dense)
    nme = np.linalg.norm(ibug - r.ibug, axis=-1).mean(-1) / r.eye
    return {"sigma": sigma, "mean_error": mean_error, "nme_68": nme}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model-path", type=Path, default=ROOT / "external" / "ICT-FaceKit")
    p.add_argument("--subjects", type=int, default=60, help="subjects the correspondence is calibrated on")
    p.add_argument("--holdout", type=int, default=12, help="further subjects for held-out figures")
    p.add_argument("--images", type=int, default=8, help="renders per subject")
    p.add_argument("--seed", type=int, default=500, help="first subject seed")
    p.add_argument("--tau", type=float, default=0.1, help="truncation of the vertex cost, eye distances")
    p.add_argument("--grid", type=int, default=10, help="barycentric grid steps per triangle edge")
    p.add_argument("--hull", type=float, default=0.4,
                   help="contour flag: share of renders on the hull (the outline ring: >= 0.5, the rest <= 0.25)")
    p.add_argument("--candidates", type=int, default=6, help="mesh points per iBUG point")
    p.add_argument("--reject", type=float, default=0.3, help="wrong-face threshold, eye distances")
    p.add_argument("--out", type=Path, default=CORRESPONDENCE_PATH)
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    if args.seed + args.subjects + args.holdout > 1000:
        raise SystemExit("seeds 1000 and above are the benchmark's: choose a lower --seed")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = load_face_model("ict", args.model_path)
    face = model.region("face")
    generator = SyntheticGenerator(model)
    mesh = MediaPipeMesh()
    fit_seeds = list(range(args.seed, args.seed + args.subjects))
    held_seeds = list(range(fit_seeds[-1] + 1, fit_seeds[-1] + 1 + args.holdout))

    fit = collect(face, generator, mesh, fit_seeds, args.images, args.reject)
    logger.info("%d of %d renders used (%d without a face, %d rejected)", len(fit.dense), fit.renders,
                fit.missed, fit.rejected)
    vertex = nearest_vertices(fit, args.tau)
    triangles = face.triangles.numpy()
    triangle, barycentric = refine_on_triangles(fit, vertex, triangles, args.tau, args.grid)
    # the nearest vertex of the refined point, for consumers that want one vertex
    vertex = triangle[np.arange(MESH_POINTS), barycentric.argmax(1)]
    hull = hull_frequency(fit.dense)
    contour = hull >= args.hull
    iris = np.zeros(MESH_POINTS, bool)
    iris[SURFACE_POINTS:] = True
    weights = ibug_weights(fit, args.candidates)
    provisional = MeshCorrespondence(triangle, barycentric, vertex, np.ones(MESH_POINTS, np.float32), contour,
                                     iris, weights, face.n_vertices, "ict/face")
    fit_err = errors(fit, provisional)
    corr = MeshCorrespondence(triangle, barycentric, vertex, fit_err["sigma"].numpy(), contour, iris, weights,
                              face.n_vertices, "ict/face")
    save_mesh_correspondence(args.out, corr)

    def summary(e: dict) -> dict:
        s = e["sigma"]
        return {"sigma_median_tied": round(float(s[torch.from_numpy(corr.tied)].median()), 4),
                "sigma_median_contour": round(float(s[torch.from_numpy(contour)].median()), 4),
                "sigma_iris_centres": [round(float(s[i]), 4) for i in IRIS_CENTRES],
                "nme_68_mean": round(float(e["nme_68"].mean()), 4),
                "nme_68_median": round(float(np.median(e["nme_68"])), 4),
                "sigma": s.round(decimals=4).tolist(), "mean_error": e["mean_error"].round(decimals=4).tolist()}

    command = sys.argv if argv is None else ["calibrate_mesh.py", *argv]
    log = {"command": "python " + " ".join(shlex.quote(a) for a in command), "seed": args.seed,
           "mediapipe": MEDIAPIPE_VERSION, "fit_seeds": [fit_seeds[0], fit_seeds[-1]],
           "images_per_subject": args.images, "renders": fit.renders, "used": len(fit.dense),
           "no_face": fit.missed, "rejected": fit.rejected, "median_eye_distance_px": float(np.median(fit.eye)),
           "tau": args.tau, "grid": args.grid, "hull_threshold": args.hull, "candidates": args.candidates,
           "contour_points": np.flatnonzero(contour).tolist(), "hull_frequency": hull.round(3).tolist(),
           "fit": summary(fit_err)}
    if held_seeds:
        held = collect(face, generator, mesh, held_seeds, args.images, args.reject)
        log.update({"holdout_seeds": [held_seeds[0], held_seeds[-1]], "holdout_renders": held.renders,
                    "holdout_used": len(held.dense), "holdout_no_face": held.missed,
                    "holdout": summary(errors(held, corr))})
    log["seconds"] = round(time.perf_counter() - start, 1)
    log_path = args.out.with_name(args.out.stem + "_log.json")
    log_path.write_text(json.dumps(log, indent=1) + "\n")
    logger.info("spread (eye distances): tied median %.4f, contour median %.4f (%d points); 68-point NME "
                "%.4f fit, %s held out -> %s; log %s", log["fit"]["sigma_median_tied"],
                log["fit"]["sigma_median_contour"], int(contour.sum()), log["fit"]["nme_68_mean"],
                log.get("holdout", {}).get("nme_68_mean"), args.out, log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
