"""Ground truth of synthetic subjects in the form fitters and benchmarks compare against: the
landmarks a detector should find (sliding contour) and the true parameters per image.
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch

from core.face_model.model import MorphableModel
from core.fitting.landmark_geometry import LandmarkGeometry, project_landmarks
from utils.synthetic.generator import SyntheticSubject

__all__ = ["detector_landmarks", "subject_params"]


def detector_landmarks(face: MorphableModel, subject: SyntheticSubject) -> np.ndarray:
    """Ground-truth 68 landmarks of a synthetic subject's images as a detector places them.

    Detectors put the jawline points 0-16 on the face's silhouette, not on fixed vertices; the
    fitter models that with its sliding-contour rule (``project_landmarks(..., "dynamic")``). The
    other points are the model's landmark vertices, as in ``subject.landmarks``.

    Args:
        face: the model the subject's identity and expression belong to (the ICT face region).
        subject: a subject from `utils.synthetic.generator.SyntheticGenerator`.

    Shape:
        - output: (M, 68, 2) float32 crop pixels (u, v), M = ``subject.n_images``
    """
    n = subject.n_images
    if subject.identity.shape != (face.n_identity,) or \
            subject.expression.shape != (n, face.n_expression):
        raise ValueError(f"subject: expected identity ({face.n_identity},) and expression "
                         f"({n}, {face.n_expression}) of model {face.name}, got "
                         f"{subject.identity.shape} and {subject.expression.shape}")
    geometry = LandmarkGeometry(face.to(device="cpu", dtype=torch.float32))
    with torch.no_grad():
        return project_landmarks(geometry, subject_params(subject), "weak", "dynamic").numpy()


def subject_params(subject: SyntheticSubject) -> Dict[str, torch.Tensor]:
    """A synthetic subject's true parameters as the fitters name them, float32.

    Shape: ``identity`` (M, n_id) (the one row repeated), ``expression`` (M, K), ``rotation``
    (M, 3) Euler angles, ``scale`` (M,), ``trans2d`` (M, 2); M = ``subject.n_images``.
    """
    f32 = torch.float32
    return {"identity": torch.as_tensor(subject.identity, dtype=f32)[None].expand(subject.n_images, -1),
            "expression": torch.as_tensor(subject.expression, dtype=f32),
            "rotation": torch.as_tensor(subject.rotation, dtype=f32),
            "scale": torch.as_tensor(subject.scale, dtype=f32),
            "trans2d": torch.as_tensor(subject.trans2d, dtype=f32)}
