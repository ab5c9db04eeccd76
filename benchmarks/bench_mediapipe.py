"""Benchmark: MediaPipe's face mesh (backend 'mediapipe') against dlib's 68 points.

On the benchmark's synthetic renders (seeds 1000 + s, as `benchmarks/rig_eval.py`; ground truth as
a detector places it, `utils.training_data.detector_landmarks`):

- detection rate, 68-point NME (mean error / outer-eye-corner distance of the truth, %) on the
  renders each backend found and on those both found, and on the 51 inner points;
- head-pose error (degrees) of landmark-only fits: the project's `core.fit_landmarks.fit_landmarks`
  (pose + identity + expression, sliding contour) on each backend's 68 points, and a fit to the
  dense correspondence (the mesh points tied to the surface, `MeshCorrespondence.tied`:
  closed-form weak-perspective pose alternated with a bounded linear identity + expression solve);
- time per face (detection + landmarks, median).

On the real videos (default d0 and d3): per-frame detection with both backends, and the jitter
on still stretches: frames where the consensus centroid of the rigid points (nose, eye corners)
stays within ``--still`` (2 %) of the eye distance over +-4 frames; jitter = RMS second difference / sqrt(6)
(the per-frame noise of a still point), px and % of the eye distance. On the wild videos: share
of frames with a face and time per frame.

Usage:
    python -m benchmarks.bench_mediapipe [--subjects 20] [--images 8] [--video-frames 300]
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy.optimize import lsq_linear  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

from core.camera import euler_to_matrix  # noqa: E402
from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from core.fitting.fit_landmarks import fit_landmarks, init_pose_weak  # noqa: E402
from core.fitting.landmark_geometry import LandmarkGeometry  # noqa: E402
from core.metrics import rotation_error_deg  # noqa: E402
from utils.io.video import VideoReader  # noqa: E402
from utils.landmarks.detect import FaceLandmarker, select_face  # noqa: E402
from utils.landmarks.mesh import MeshCorrespondence  # noqa: E402
from utils.synthetic.generator import SyntheticGenerator  # noqa: E402
from utils.synthetic.truth import detector_landmarks  # noqa: E402

logger = logging.getLogger("bench_mediapipe")
REAL = REPO.parent / "shared" / "data" / "real"
RIGID = [27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45]  # nose and eye corners
BACKENDS = ("dlib", "mediapipe")


def fit_dense(face: MorphableModel, corr: MeshCorrespondence, dense: np.ndarray, iterations: int = 4,
              sigma_px: float = 1.5) -> torch.Tensor:
    """Weak-perspective pose from the tied mesh points: closed-form pose (`init_pose_weak`)
    alternated with a bounded linear identity + expression solve (N(0, 1) identity prior, the
    expression pulled to 0 with weight 1 and kept in [0, 1], as `fit_landmarks`'s defaults).

    Shape: dense (478, 2) pixels -> rotation (3,) Euler angles.
    """
    mask = corr.tied
    tri = torch.from_numpy(corr.triangle[mask])
    bary = torch.from_numpy(corr.barycentric[mask]).double()

    def at(x: torch.Tensor) -> torch.Tensor:  # (V, 3, ...) -> (K, 3, ...)
        w = bary.reshape(*bary.shape, *([1] * (x.dim() - 1)))
        return (x.double()[tri] * w).sum(1)

    p0 = at(face.neutral)  # (K, 3)
    basis = torch.cat([at(face.identity_basis.permute(1, 2, 0)), at(face.expression_basis.permute(1, 2, 0))], -1)
    n_id, n = face.n_identity, face.n_identity + face.n_expression
    target = torch.from_numpy(dense[mask]).double()
    lower = np.concatenate([np.full(n_id, -np.inf), np.zeros(n - n_id)])
    upper = np.concatenate([np.full(n_id, np.inf), np.ones(n - n_id)])
    points = p0
    for _ in range(iterations):
        pose = init_pose_weak(points[None], target[None])
        R, s, t = euler_to_matrix(pose["rotation"])[0], pose["scale"][0], pose["trans2d"][0]
        rb = torch.einsum("ij,kjn->kin", R, basis)  # (K, 3, n)
        A = torch.cat([s * rb[:, 0], -s * rb[:, 1]]) / sigma_px
        proj0 = p0 @ R.T
        b = torch.cat([target[:, 0] - s * proj0[:, 0] - t[0], target[:, 1] + s * proj0[:, 1] - t[1]]) / sigma_px
        A_all = np.vstack([A.numpy(), np.eye(n)])
        b_all = np.concatenate([b.numpy(), np.zeros(n)])
        coeffs = torch.from_numpy(lsq_linear(A_all, b_all, bounds=(lower, upper)).x)
        points = p0 + basis @ coeffs
    return init_pose_weak(points[None], target[None])["rotation"][0].float()


def synthetic(model: MorphableModel, face: MorphableModel, landmarkers: dict, subjects: int, images: int) -> None:
    """Detection rate, NME, pose error and time on the benchmark renders; prints tables."""
    generator = SyntheticGenerator(model)
    corr = landmarkers["mediapipe"]._backend.correspondence
    geometry = LandmarkGeometry(face.to(dtype=torch.float32))
    found = {b: [] for b in BACKENDS}
    times = {b: [] for b in BACKENDS}
    rows = []  # per render: truth, angles, {backend: landmarks or None}, dense
    for s in range(subjects):
        subject = generator.subject(images, seed=1000 + s)
        truth = detector_landmarks(face, subject)
        for k, image in enumerate(subject.images):
            row = {"truth": truth[k].astype(np.float64), "rotation": subject.rotation[k], "dense": None}
            for b, lm in landmarkers.items():
                start = time.perf_counter()
                faces = lm.detect(image)
                times[b].append(time.perf_counter() - start)
                face_b = select_face(faces, image.shape) if faces else None
                row[b] = None if face_b is None else face_b.landmarks
                if b == "mediapipe" and face_b is not None:
                    row["dense"] = face_b.dense
                found[b].append(face_b is not None)
            rows.append(row)
    n = len(rows)
    eye = np.array([np.linalg.norm(r["truth"][36] - r["truth"][45]) for r in rows])

    def nme(b: str, idx: list, points: slice = slice(0, 68)) -> float:
        e = [np.linalg.norm(rows[i][b][points] - rows[i]["truth"][points], axis=-1).mean() / eye[i] for i in idx]
        return 100 * float(np.mean(e))

    own = {b: [i for i in range(n) if rows[i][b] is not None] for b in BACKENDS}
    both = [i for i in own["dlib"] if rows[i]["mediapipe"] is not None]
    print(f"\nSynthetic renders: seeds 1000-{999 + subjects}, {images} each ({n} renders, median eye "
          f"distance {np.median(eye):.0f} px)\n")
    print("| backend | found | NME 68 (found) % | NME 68 (both found) % | NME 51 inner (both) % | "
          "NME jawline (both) % | ms per image (median) |")
    print("|---|---|---|---|---|---|---|")
    for b in BACKENDS:
        print(f"| {b} | {len(own[b])}/{n} | {nme(b, own[b]):.2f} | {nme(b, both):.2f} | "
              f"{nme(b, both, slice(17, 68)):.2f} | {nme(b, both, slice(0, 17)):.2f} | "
              f"{1e3 * np.median(times[b]):.1f} |")

    truth_rot = torch.from_numpy(np.stack([rows[i]["rotation"] for i in both])).float()
    print(f"\nHead-pose error (degrees) of landmark-only fits, on the {len(both)} renders both found\n")
    print("| landmarks | fit | mean | median | 90th pct |")
    print("|---|---|---|---|---|")

    def report(label: str, fit: str, err: torch.Tensor) -> None:
        e = err.numpy()
        print(f"| {label} | {fit} | {e.mean():.2f} | {np.median(e):.2f} | {np.percentile(e, 90):.2f} |")

    gt = torch.from_numpy(np.stack([rows[i]["truth"] for i in both])).float()
    report("truth (68, contour on the silhouette)", "fit_landmarks", rotation_error_deg(
        fit_landmarks(geometry, gt).params["rotation"], truth_rot))
    for b in BACKENDS:
        lms = torch.from_numpy(np.stack([rows[i][b] for i in both])).float()
        report(f"{b} 68", "fit_landmarks", rotation_error_deg(fit_landmarks(geometry, lms).params["rotation"],
                                                                truth_rot))
    dense_rot = torch.stack([fit_dense(face, corr, rows[i]["dense"]) for i in both])
    report(f"mediapipe dense ({int(corr.tied.sum())} tied points)", "fit_dense", rotation_error_deg(dense_rot,
                                                                                                    truth_rot))


def still_jitter(tracks: dict, window: int = 4, tolerance: float = 0.02) -> dict:
    """Jitter of each track on the frames where the consensus rigid centroid is still.

    Shape: tracks backend -> (T, P, 2) with NaN for missing frames; the (T, 68, 2) iBUG tracks
    define stillness. Returns the still-frame share and per track (px, % eye distance).
    """
    ibug = [tracks[b] for b in BACKENDS]
    centre = np.mean([t[:, RIGID].mean(1) for t in ibug], axis=0)  # (T, 2)
    eye = np.nanmedian(np.linalg.norm(ibug[0][:, 36] - ibug[0][:, 45], axis=-1))
    T = len(centre)
    still = np.zeros(T, bool)
    for t in range(window, T - window):
        seg = centre[t - window:t + window + 1]
        still[t] = np.isfinite(seg).all() and float(np.linalg.norm(seg - seg.mean(0), axis=-1).max()) < tolerance * eye
    out = {"still": float(still[1:-1].mean()), "eye": float(eye)}
    for name, track in tracks.items():
        accel = track[2:] - 2 * track[1:-1] + track[:-2]  # centred on frames 1..T-2
        sel = still[1:-1]
        val = np.sqrt(np.nanmean(np.sum(accel[sel] ** 2, -1)) / 6.0) if sel.any() else float("nan")
        out[name] = (float(val), 100 * float(val / eye))
    return out


def videos(landmarkers: dict, corr: MeshCorrespondence, names: list, frames: int, tolerance: float) -> None:
    """Per-frame detection on the real talking-head videos: still-stretch jitter per backend."""
    print(f"\nJitter on still stretches (rigid centroid within {100 * tolerance:g} % of the eye distance over "
          f"+-4 frames), real videos (first {frames} frames, detection on every frame)\n")
    print("| video | frames | found dlib / mediapipe | still frames | dlib 68 px (% eye) | mediapipe 68 | "
          "dlib rigid 13 | mediapipe rigid 13 | mediapipe dense tied | ms/frame dlib / mediapipe |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        path = REAL / "videos" / f"{name}.mp4"
        if not path.is_file():
            logger.warning("%s missing, skipped", path)
            continue
        tracks = {b: [] for b in BACKENDS}
        dense, times = [], {b: [] for b in BACKENDS}
        with VideoReader(path) as video:
            for index, image in enumerate(video):
                if index >= frames:
                    break
                for b, lm in landmarkers.items():
                    start = time.perf_counter()
                    faces = lm.detect(image)
                    times[b].append(time.perf_counter() - start)
                    f = select_face(faces, image.shape) if faces else None
                    tracks[b].append(f.landmarks if f is not None else np.full((68, 2), np.nan))
                    if b == "mediapipe":
                        dense.append(f.dense if f is not None else np.full((478, 2), np.nan))
        arr = {b: np.array(v) for b, v in tracks.items()}
        rigid = {f"{b} rigid": arr[b][:, RIGID] for b in BACKENDS}
        j = still_jitter({**arr, **rigid, "dense": np.array(dense)[:, corr.tied]}, tolerance=tolerance)

        def cell(key: str) -> str:
            return f"{j[key][0]:.2f} ({j[key][1]:.2f})"

        found = " / ".join(str(int(np.isfinite(arr[b][:, 0, 0]).sum())) for b in BACKENDS)
        ms = " / ".join(f"{1e3 * np.median(times[b]):.1f}" for b in BACKENDS)
        print(f"| {name} | {len(arr['dlib'])} | {found} | {round(j['still'] * (len(arr['dlib']) - 2))} | {cell('dlib')} | "
              f"{cell('mediapipe')} | {cell('dlib rigid')} | {cell('mediapipe rigid')} | {cell('dense')} | {ms} |")


def wild(landmarkers: dict, frames: int) -> None:
    """Faces found and time per frame on the wild (720p-1080p) videos."""
    paths = sorted((REAL / "videos_wild").glob("*.mp4"))
    if not paths or frames < 1:
        return
    print(f"\nWild videos (first {frames} frames each): frames with a face, median ms per frame\n")
    print("| video | size | dlib found | dlib ms | mediapipe found | mediapipe ms | mediapipe eye distance px |")
    print("|---|---|---|---|---|---|---|")
    for path in paths:
        found = {b: 0 for b in BACKENDS}
        times = {b: [] for b in BACKENDS}
        eyes = []
        with VideoReader(path) as video:
            size = f"{video.info.width}x{video.info.height}"
            for index, image in enumerate(video):
                if index >= frames:
                    break
                for b, lm in landmarkers.items():
                    start = time.perf_counter()
                    faces = lm.detect(image)
                    times[b].append(time.perf_counter() - start)
                    found[b] += bool(faces)
                    if faces and b == "mediapipe":
                        eyes.append(np.linalg.norm(faces[0].landmarks[36] - faces[0].landmarks[45]))
        n = len(times["dlib"])
        print(f"| {path.stem} | {size} | {found['dlib']}/{n} | {1e3 * np.median(times['dlib']):.1f} | "
              f"{found['mediapipe']}/{n} | {1e3 * np.median(times['mediapipe']):.1f} | "
              f"{np.median(eyes) if eyes else float('nan'):.0f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subjects", type=int, default=20, help="benchmark subjects (seeds 1000+; 0: skip)")
    parser.add_argument("--images", type=int, default=8, help="renders per subject")
    parser.add_argument("--videos", nargs="*", default=["d0", "d3"], help="real videos (stems)")
    parser.add_argument("--video-frames", type=int, default=300)
    parser.add_argument("--wild-frames", type=int, default=30)
    parser.add_argument("--still", type=float, default=0.02, help="still-stretch tolerance, eye distances")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    model = load_face_model("ict", REPO / "external" / "ICT-FaceKit")
    face = model.region("face")
    landmarkers = {b: FaceLandmarker(b) for b in BACKENDS}
    corr = landmarkers["mediapipe"]._backend.correspondence
    if args.subjects > 0:
        synthetic(model, face, landmarkers, args.subjects, args.images)
    if REAL.is_dir():
        videos(landmarkers, corr, args.videos, args.video_frames, args.still)
        wild(landmarkers, args.wild_frames)
    else:
        print(f"\n{REAL} absent: real-video tables skipped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
