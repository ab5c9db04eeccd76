"""Where the rig benchmark's detected-landmark row loses its accuracy: a stage-by-stage study.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.detector_gap [--subjects 8] [--weights 2 20]

For held-out synthetic subjects (seeds 1000+, as bench_rig.py) and each landmark source (ground
truth + 1.5 px noise, dlib's detections on the renders), prints the rig neutral-shape error over
the mean face's error (ratio of means, as bench_rig.py) of:

1. ``landmark bound``: the identity from the 51 inner landmarks alone with the true poses, scales
   and expressions given (ridge posterior mean, `benchmarks/landmark_bound.py`), the noise level
   set to the source's own robust spread around the truth, and to 8 times it (more shrinkage
   towards the mean face, better for a detector whose errors look like a change of face): what
   these detections could say about the face if everything else were known.
2. ``landmark stage``: `build_rig` without its photometric stage.
3. ``rig builder``: `build_rig` with its defaults (what bench_rig.py reports).
4. Oracles of the photometric stage (`core.fitting.shading_refine.refine_from_shading`, per-image poses and
   expressions free, the source's landmarks and weights as the pipelines use them, the subject's
   generic expression basis), at each shading weight of ``--weights``, started from
   (a) the truth (identity, poses, expressions): whether the objective holds the true face;
   (b) the true poses and expressions with the mean face: what shading recovers of the identity
   when the per-image parameters are right;
   (c) the landmark stage's poses, expressions and identity (the stage as the builder runs it,
   but with the generic basis and the chosen weight).

The oracles use ground truth the pipelines never see; they locate the loss, they are not methods.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from functools import partial
from pathlib import Path
from typing import Dict, List, Sequence

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from benchmarks.landmark_bound import posterior_identity  # noqa: E402
from benchmarks.rig_eval import (  # noqa: E402
    SOURCE_DETECTOR,
    SOURCES,
    SyntheticCase,
    detector_weighted,
    synthetic_cases,
)
from core.camera import euler_to_matrix  # noqa: E402
from core.face_model.load import load_face_model  # noqa: E402
from core.face_model.model import MorphableModel  # noqa: E402
from core.fitting.landmark_geometry import LandmarkGeometry, update_contour  # noqa: E402
from core.fitting.residuals import expression_bounds  # noqa: E402
from core.fitting.shading_refine import refine_from_shading  # noqa: E402
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION  # noqa: E402
from core.metrics import aligned_mesh_error  # noqa: E402
from core.rig.builder import RigBuildConfig, above_chin_mask, albedo_prior, build_rig  # noqa: E402
from utils.landmarks.detect import FaceLandmarker  # noqa: E402
from utils.landmarks.noise import INNER, detector_weights  # noqa: E402
from utils.synthetic.truth import detector_landmarks, subject_params  # noqa: E402

_INNER_POINTS = tuple(range(INNER.start, INNER.stop))


def _neutral_error(face: MorphableModel, identity: Tensor, case: SyntheticCase) -> float:
    return float(aligned_mesh_error(face.vertices(identity[None].float()), case.truth_neutral))


def landmark_bound(face: MorphableModel, case: SyntheticCase, source: str, shrinks: Sequence[float]
                   ) -> Dict[float, float]:
    """Neutral error (mm) of the inner-landmark ridge identity with the true per-image parameters,
    per shrink factor: the noise assumed that many times the landmarks' robust spread around the truth."""
    _, landmarks, idx = case.inputs[source]
    observed = landmarks.numpy().astype(np.float64)
    residual = (observed - detector_landmarks(face, case.subject)[idx])[:, list(_INNER_POINTS)]
    noise = 1.4826 * float(np.median(np.abs(residual - np.median(residual))))  # robust std per coordinate, px
    return {k: _neutral_error(face, torch.from_numpy(posterior_identity(
                face, case.subject, observed, idx, k * max(noise, 1e-3), _INNER_POINTS)), case)
            for k in shrinks}


def shading_oracle(face: MorphableModel, geometry: LandmarkGeometry, case: SyntheticCase, source: str,
                   start: Dict[str, Tensor], weight: float, config: RigBuildConfig) -> float:
    """Neutral error (mm) after the photometric stage started from ``start`` (per image (G, ...));
    ``geometry`` is ``face``'s landmark geometry."""
    crops, landmarks, _ = case.inputs[source]
    points = geometry.points(start[IDENTITY], start[EXPRESSION])
    correspondence = update_contour(geometry, points, euler_to_matrix(start[ROTATION]))
    detector = SOURCE_DETECTOR[source]
    confidence = None if detector is None else detector_weights(detector, landmarks)
    identity, _, _ = refine_from_shading(
        face, crops, start, geometry, correspondence, landmarks, prior_albedo=albedo_prior(face),
        mask=above_chin_mask(face, config.neck_margin), landmark_sigma=config.landmark_sigma,
        landmark_huber=config.landmark_huber, identity_weight=config.identity_weight,
        expression_weight=config.expression_weight, bounds=expression_bounds(face).get(EXPRESSION), confidence=confidence,
        config=dataclasses.replace(config.shading, weight=weight))
    return _neutral_error(face, identity, case)


def study(face: MorphableModel, case: SyntheticCase, source: str, weights: List[float]) -> Dict[str, float]:
    """Neutral errors (mm) of every row of the module docstring for one subject and source."""
    config = RigBuildConfig()
    crops, landmarks, idx = case.inputs[source]
    detector = SOURCE_DETECTOR[source]
    staged = detector_weighted(partial(build_rig, face, config=dataclasses.replace(config, photometric=False)), detector)
    full = detector_weighted(partial(build_rig, face, config=config), detector)
    landmark_result = staged(crops, landmarks)
    out = {f"landmark bound (inner 51, true poses and expressions), noise {k:g} x spread": error
           for k, error in landmark_bound(face, case, source, (1.0, 8.0)).items()}
    out["landmark stage"] = float(aligned_mesh_error(landmark_result.rig.neutral[None], case.truth_neutral))
    out["rig builder (default)"] = float(aligned_mesh_error(full(crops, landmarks).rig.neutral[None],
                                                            case.truth_neutral))
    truth = {k: v[idx] for k, v in subject_params(case.subject).items()}
    g = len(idx)
    mean_face = dict(truth, **{IDENTITY: torch.zeros_like(truth[IDENTITY])})
    fitted = dict(landmark_result.params)
    fitted[IDENTITY] = landmark_result.params[IDENTITY][None].expand(g, -1)
    starts = {"from the truth": truth, "true poses and expressions, mean face": mean_face,
              "from the landmark stage": fitted}
    geometry = LandmarkGeometry(face)
    for w in weights:
        for name, start in starts.items():
            out[f"shading {w:g}: {name}"] = shading_oracle(face, geometry, case, source, start, w, config)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--weights", type=float, nargs="+", default=[2.0, 20.0], help="shading weights of the oracles")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_face_model("ict", ROOT / "external" / "ICT-FaceKit")
    face = model.region("face")
    errors: Dict[str, Dict[str, List[float]]] = {s: {} for s in SOURCES}
    baselines: Dict[str, List[float]] = {s: [] for s in SOURCES}
    for case in synthetic_cases(model, face, args.subjects, args.images, FaceLandmarker("dlib")):
        for source in SOURCES:
            if source not in case.inputs:
                continue
            baselines[source].append(case.base_neutral)
            for row, value in study(face, case, source, args.weights).items():
                errors[source].setdefault(row, []).append(value)
    print(f"\n### Detected-landmark gap: {args.subjects} subjects x {args.images} images, rig neutral error / "
          "mean face (ratio of means)\n")
    print("| | " + " | ".join(SOURCES) + " |")
    print("|---|" + "---|" * len(SOURCES))
    for row in errors[SOURCES[0]]:
        cells: List[str] = []
        for source in SOURCES:
            values = errors[source].get(row)
            cells.append(f"{np.mean(values) / np.mean(baselines[source]):.3f}" if values else "-")
        print(f"| {row} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
