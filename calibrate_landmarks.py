"""Measure a landmark detector's per-point noise on synthetic renders (`utils.landmarks.noise`).

    python calibrate_landmarks.py --detector dlib --subjects 40 --holdout 10 --seed 500

Renders ``--subjects`` synthetic subjects (`utils.synthetic`, seeds ``seed .. seed + subjects - 1``,
never the benchmark's 1000+ or 3000+) with their true geometry, runs the detector on every
render, and measures, per landmark, the robust spread of the detections around the projected
model landmarks (sliding contour at the true pose), in eye distances. Detections farther than
``--reject`` eye distances on average from the truth are wrong faces and left out. ``--holdout``
further subjects give the same figures on renders the profile never saw. Writes
``net_weights/landmark_noise_<detector>.npz`` (or ``--out``) and a JSON log beside it (command,
seed, counts, spreads and mean errors per landmark, the inverse-variance contrast, seconds).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402
from utils.landmarks.noise import (  # noqa: E402
    INNER,
    landmark_spread,
    noise_path,
    relative_confidence,
    save_landmark_noise,
)
from utils.synthetic.generator import SyntheticGenerator  # noqa: E402
from utils.synthetic.truth import detector_landmarks  # noqa: E402

logger = logging.getLogger("calibrate_landmarks")
ROOT = Path(__file__).resolve().parent


def collect(face: MorphableModel, generator: SyntheticGenerator, landmarker: FaceLandmarker,
            seeds: Sequence[int], images: int, reject: float) -> Tuple[torch.Tensor, torch.Tensor, int, int]:
    """Detections minus projected model landmarks on the renders of ``seeds``.

    Returns:
        residuals (N, 68, 2) pixels and eye distances (N,) pixels over the N kept detections, the
        number of renders without a face, and the number rejected as wrong faces.
    """
    residuals: List[torch.Tensor] = []
    eyes: List[float] = []
    missed = rejected = 0
    for seed in tqdm(seeds, desc="subjects", unit="subject"):
        subject = generator.subject(images, seed=seed)
        projected = torch.from_numpy(detector_landmarks(face, subject))
        for k, image in enumerate(subject.images):
            faces = landmarker.detect(image)
            if not faces:
                missed += 1
                continue
            eye = float((projected[k, 36] - projected[k, 45]).norm())
            residual = torch.from_numpy(faces[0].landmarks).float() - projected[k]
            if float(residual.norm(dim=-1).mean()) > reject * eye:
                rejected += 1
                continue
            residuals.append(residual)
            eyes.append(eye)
    if len(residuals) < 2:
        raise RuntimeError(f"fewer than two usable detections on the renders of seeds {seeds[0]}..{seeds[-1]}")
    return torch.stack(residuals), torch.tensor(eyes), missed, rejected


def summary(residuals: torch.Tensor, eyes: torch.Tensor) -> dict:
    """Per-landmark robust spread and mean error, in eye distances (rounded lists)."""
    return {"spread": landmark_spread(residuals, eyes).round(decimals=4).tolist(),
            "mean_error": (residuals.norm(dim=-1) / eyes[:, None]).mean(0).round(decimals=4).tolist()}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--detector", default="dlib", choices=["dlib", "face_alignment", "mediapipe"])
    p.add_argument("--model-path", type=Path, default=ROOT / "external" / "ICT-FaceKit")
    p.add_argument("--subjects", type=int, default=40, help="subjects the profile is measured on")
    p.add_argument("--holdout", type=int, default=10, help="further subjects for the before / after error")
    p.add_argument("--images", type=int, default=8, help="renders per subject")
    p.add_argument("--seed", type=int, default=500, help="first subject seed")
    p.add_argument("--reject", type=float, default=0.3, help="wrong-face threshold, eye distances")
    p.add_argument("--out", type=Path, default=None,
                   help="noise profile (default net_weights/landmark_noise_<detector>.npz)")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    start = time.perf_counter()
    torch.manual_seed(args.seed)
    model = load_face_model("ict", args.model_path)
    face = model.region("face")
    generator = SyntheticGenerator(model)
    landmarker = FaceLandmarker(args.detector)
    out = args.out or noise_path(args.detector)

    fit_seeds = list(range(args.seed, args.seed + args.subjects))
    held_seeds = list(range(args.seed + args.subjects, args.seed + args.subjects + args.holdout))
    residuals, eyes, missed, rejected = collect(face, generator, landmarker, fit_seeds, args.images, args.reject)
    sigma = landmark_spread(residuals, eyes)
    save_landmark_noise(out, sigma, args.detector)

    command = sys.argv if argv is None else ["calibrate_landmarks.py", *argv]
    log = {"command": "python " + " ".join(shlex.quote(a) for a in command), "seed": args.seed,
           "fit_seeds": [fit_seeds[0], fit_seeds[-1]], "images_per_subject": args.images,
           "detector": args.detector, "renders": len(fit_seeds) * args.images, "used": len(residuals),
           "no_face": missed, "rejected": rejected, "median_eye_distance_px": float(eyes.median()),
           "inverse_variance_contrast": relative_confidence(sigma).round(decimals=3).tolist(),
           "fit": summary(residuals, eyes)}
    if held_seeds:
        held, held_eyes, _, _ = collect(face, generator, landmarker, held_seeds, args.images, args.reject)
        log.update({"holdout_seeds": [held_seeds[0], held_seeds[-1]], "holdout_used": len(held),
                    "holdout": summary(held, held_eyes)})
    log["seconds"] = round(time.perf_counter() - start, 1)
    log_path = out.with_name(out.stem + "_log.json")
    log_path.write_text(json.dumps(log, indent=1) + "\n")
    logger.info("%s: spread (eye distances) inner median %.3f, jawline median %.3f -> %s; log %s",
                args.detector, sigma[INNER].median().item(), sigma[:17].median().item(), out, log_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
