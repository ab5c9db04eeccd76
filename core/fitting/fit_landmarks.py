"""Fit pose, identity and expression of a face model to 68 2D landmarks, for a batch of images.

Coarse to fine, each image independently (batched):

1. Pose from the mean face in closed form: an affine camera fitted by linear least squares to
   the landmarks, projected to the nearest scaled rotation (weak perspective).
2. Pose refinement by Levenberg-Marquardt on the mean face (rotation, scale, 2D translation, or
   rotation and translation for the pinhole camera), contour landmarks updated between rounds.
3. Pose, identity and expression together with Gaussian priors on the codes and, for ICT, the
   [0, 1] box on expression weights; again in rounds with contour updates in between.

For video, pass the previous frame's parameters as ``init`` (skips stage 1) and ``previous``
(temporal smoothness), and the person's ``identity`` to hold it fixed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Dict, List, Mapping, Optional, Union

import torch
from torch import Tensor

from core.camera import euler_to_matrix, matrix_to_euler
from core.face_model.model import MorphableModel
from core.fitting.landmark_geometry import (Correspondence, LandmarkGeometry, landmark_points,
                                            project_landmarks, update_contour)
from core.fitting.residuals import expression_bounds, landmark_block, prior_block, temporal_block
from core.fitting.solver import SolverConfig, solve
from core.fitting.variables import (EXPRESSION, FOCAL, IDENTITY, ROTATION, SCALE, TRANS2D, TRANSLATION,
                                    CameraKind)

logger = logging.getLogger(__name__)

__all__ = ["LandmarkFitConfig", "LandmarkFit", "fit_landmarks", "init_pose_weak"]


@dataclass(frozen=True)
class LandmarkFitConfig:
    """Settings of `fit_landmarks`.

    Attributes:
        camera: ``"weak"`` (scale + 2D translation) or ``"perspective"`` (translation, given focal).
        landmark_sigma: landmark noise in pixels; the landmark term is weighted by 1 / sigma^2.
        identity_weight: weight of the N(0, 1) prior on identity coefficients.
        expression_weight: weight of the prior pulling expression coefficients to 0.
        temporal_weight: weight of the difference to ``previous`` (per variable, video).
        dynamic_contour: slide contour landmarks with the pose (`core.fitting.landmark_geometry.update_contour`).
        pose_rounds, pose_iterations: stage 2 (contour updates x LM iterations).
        rounds, iterations: stage 3.
        solver: LM settings (its ``max_iterations`` is replaced by the values above).
    """

    camera: CameraKind = "weak"
    landmark_sigma: float = 1.5
    identity_weight: float = 1.0
    expression_weight: float = 1.0
    temporal_weight: float = 1.0
    dynamic_contour: bool = True
    pose_rounds: int = 2
    pose_iterations: int = 8
    rounds: int = 3
    iterations: int = 10
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(ftol=1e-6, xtol=1e-7))

    def __post_init__(self) -> None:
        if self.rounds < 1 or self.iterations < 1 or self.pose_rounds < 0:
            raise ValueError("LandmarkFitConfig: expected rounds >= 1, iterations >= 1 and "
                             f"pose_rounds >= 0, got {self.rounds}, {self.iterations}, {self.pose_rounds}")
        if self.landmark_sigma <= 0:
            raise ValueError(f"LandmarkFitConfig.landmark_sigma: expected > 0, got {self.landmark_sigma}")


@dataclass
class LandmarkFit:
    """Result of `fit_landmarks`.

    Attributes:
        params: ``identity`` (B, n_id), ``expression`` (B, n_exp), ``rotation`` (B, 3) and the
            camera variables (``scale``, ``trans2d`` or ``translation``, ``focal``).
        landmarks_2d: (B, 68, 2) projected model landmarks (final correspondence), pixels.
        correspondence: the final landmark correspondence.
        reprojection_error: (B,) mean distance to the target landmarks, pixels (confidence > 0).
        cost: (B,) final cost; history: (B, T) cost over all LM iterations of all stages.
    """

    params: Dict[str, Tensor]
    landmarks_2d: Tensor
    correspondence: Correspondence
    reprojection_error: Tensor
    cost: Tensor
    history: Tensor


def init_pose_weak(model_points: Tensor, landmarks: Tensor, confidence: Optional[Tensor] = None
                   ) -> Dict[str, Tensor]:
    """Weak-perspective pose from 3D-2D correspondences in closed form.

    Fits an affine camera ``y = A X + b`` by weighted linear least squares, then takes the nearest
    scaled rotation to the rows of ``A`` (SVD): ``u = s (R X).x + tx``, ``v = -s (R X).y + ty``.

    Shape:
        - model_points: (B, N, 3) mm, N >= 4 non-coplanar
        - landmarks: (B, N, 2) pixels
        - confidence: (B, N) or None
        - output: ``rotation`` (B, 3) Euler angles, ``scale`` (B,), ``trans2d`` (B, 2)
    """
    B, N = landmarks.shape[:2]
    if model_points.shape != (B, N, 3) or landmarks.shape != (B, N, 2):
        raise ValueError(f"init_pose_weak: expected model_points (B, N, 3) and landmarks (B, N, 2), "
                         f"got {tuple(model_points.shape)} and {tuple(landmarks.shape)}")
    w = (torch.ones(B, N, dtype=landmarks.dtype) if confidence is None
         else confidence.to(landmarks.dtype))
    w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
    X_mean = (w[..., None] * model_points).sum(1)
    y_mean = (w[..., None] * landmarks).sum(1)
    Xc, yc = model_points - X_mean[:, None], landmarks - y_mean[:, None]
    XtX = Xc.transpose(1, 2) @ (w[..., None] * Xc)
    Xty = Xc.transpose(1, 2) @ (w[..., None] * yc)
    A = torch.linalg.solve(XtX, Xty).transpose(1, 2)  # (B, 2, 3)
    rows = torch.stack([A[:, 0], -A[:, 1]], 1)  # s * R[:2]
    U, S, Vh = torch.linalg.svd(rows, full_matrices=False)
    R2 = U @ Vh
    R = torch.cat([R2, torch.linalg.cross(R2[:, 0], R2[:, 1])[:, None]], 1)
    scale = S.mean(-1)
    proj_mean = scale[:, None] * (R2 @ X_mean[..., None]).squeeze(-1)
    trans2d = torch.stack([y_mean[:, 0] - proj_mean[:, 0], y_mean[:, 1] + proj_mean[:, 1]], -1)
    return {ROTATION: matrix_to_euler(R), SCALE: scale, TRANS2D: trans2d}


def _weak_to_perspective(pose: Mapping[str, Tensor], focal: Tensor, principal_point: Tensor
                         ) -> Dict[str, Tensor]:
    """Pinhole translation equivalent to a weak-perspective pose at the given focal length."""
    s = pose[SCALE]
    tz = -focal / s
    tx = (pose[TRANS2D][:, 0] - principal_point[:, 0]) / s
    ty = (principal_point[:, 1] - pose[TRANS2D][:, 1]) / s
    return {ROTATION: pose[ROTATION], TRANSLATION: torch.stack([tx, ty, tz], -1), FOCAL: focal}


def _camera_names(camera: CameraKind) -> List[str]:
    return [ROTATION, SCALE, TRANS2D] if camera == "weak" else [ROTATION, TRANSLATION]


def fit_landmarks(model: Union[MorphableModel, LandmarkGeometry], landmarks: Tensor, *,
                  config: LandmarkFitConfig = LandmarkFitConfig(),
                  confidence: Optional[Tensor] = None, focal: Union[float, Tensor, None] = None,
                  principal_point: Optional[Tensor] = None, identity: Optional[Tensor] = None,
                  init: Optional[Mapping[str, Tensor]] = None,
                  previous: Optional[Mapping[str, Tensor]] = None) -> LandmarkFit:
    """Fit pose + identity + expression to 68 landmarks per image (images independent).

    Args:
        model: the face model (or its `LandmarkGeometry`, built once and reused for speed).
        landmarks: (B, 68, 2) target landmarks, pixels.
        config: see `LandmarkFitConfig`.
        confidence: (B, 68) per-landmark weights (0 = missing), or None.
        focal: pinhole focal length in pixels, float or (B,) (``camera="perspective"`` only).
        principal_point: (B, 2) pinhole principal point, pixels.
        identity: (B, n_id) holds the identity fixed at these coefficients (e.g. from a rig).
        init: starting values of any variables (a previous frame's fit); with the camera
            variables given, the closed-form pose stage is skipped.
        previous: values of the previous frame for temporal smoothness (any variables).

    Returns:
        `LandmarkFit`.
    """
    geometry = model if isinstance(model, LandmarkGeometry) else LandmarkGeometry(model)
    if landmarks.dim() != 3 or tuple(landmarks.shape[1:]) != (68, 2):
        raise ValueError(f"landmarks: expected shape (B, 68, 2), got {tuple(landmarks.shape)}")
    B, dtype = landmarks.shape[0], landmarks.dtype
    camera = config.camera
    if camera not in ("weak", "perspective"):
        raise ValueError(f"config.camera: expected 'weak' or 'perspective', got {camera!r}")
    if camera == "perspective" and (focal is None or principal_point is None):
        raise ValueError("focal and principal_point: required for the perspective camera")
    if confidence is not None and tuple(confidence.shape) != (B, 68):
        raise ValueError(f"confidence: expected shape ({B}, 68), got {tuple(confidence.shape)}")
    landmarks = landmarks.detach()
    params: Dict[str, Tensor] = {
        IDENTITY: torch.zeros(B, geometry.n_identity, dtype=dtype),
        EXPRESSION: torch.zeros(B, geometry.n_expression, dtype=dtype),
    }
    if identity is not None:
        if tuple(identity.shape) != (B, geometry.n_identity):
            raise ValueError(f"identity: expected shape ({B}, {geometry.n_identity}), "
                             f"got {tuple(identity.shape)}")
        params[IDENTITY] = identity.to(dtype)
    params.update({k: v.detach().to(dtype) for k, v in (init or {}).items()})
    cams = _camera_names(camera)
    if not all(n in params for n in cams):
        pts = landmark_points(geometry.points(params[IDENTITY], params[EXPRESSION]),
                              geometry.default_correspondence(B))
        pose = init_pose_weak(pts, landmarks, confidence)
        if camera == "perspective":
            f = torch.as_tensor(focal, dtype=dtype).expand(B)
            pose = _weak_to_perspective(pose, f, principal_point.to(dtype))
        for k, v in pose.items():
            params.setdefault(k, v)
    if camera == "perspective":
        params[FOCAL] = torch.as_tensor(focal, dtype=dtype).expand(B).clone()

    bounds = expression_bounds(geometry)
    if EXPRESSION in bounds:
        params[EXPRESSION] = params[EXPRESSION].clamp(*bounds[EXPRESSION])
    histories: List[Tensor] = []
    corr = geometry.default_correspondence(B)
    shape_vars = [n for n in (IDENTITY, EXPRESSION) if not (n == IDENTITY and identity is not None)]
    stages = [(cams, config.pose_rounds, config.pose_iterations),
              (cams + shape_vars, config.rounds, config.iterations)]
    result = None
    for free, rounds, iterations in stages:
        solver_config = replace(config.solver, max_iterations=iterations)
        damping = None
        for _ in range(rounds):
            if config.dynamic_contour:
                pts = geometry.points(params[IDENTITY], params[EXPRESSION])
                corr = update_contour(geometry, pts, euler_to_matrix(params[ROTATION]))
            blocks = [landmark_block(geometry, landmarks, camera, correspondence=corr,
                                     confidence=confidence, principal_point=principal_point,
                                     weight=1.0 / config.landmark_sigma ** 2)]
            if IDENTITY in free:
                blocks.append(prior_block(IDENTITY, weight=config.identity_weight))
            if EXPRESSION in free:
                blocks.append(prior_block(EXPRESSION, weight=config.expression_weight))
            for n in free:
                if previous is not None and n in previous:
                    blocks.append(temporal_block(n, previous[n].to(dtype),
                                                 weight=config.temporal_weight))
            result = solve(blocks, params, free=free, bounds=bounds, config=solver_config,
                           damping=damping)
            params, damping = result.params, result.damping
            histories.append(result.history)
    uv = project_landmarks(geometry, params, camera, corr,
                           None if principal_point is None else principal_point.to(dtype))
    valid = torch.ones(B, 68, dtype=dtype) if confidence is None else (confidence > 0).to(dtype)
    err = ((uv - landmarks).norm(dim=-1) * valid).sum(1) / valid.sum(1).clamp_min(1)
    logger.debug("landmark fit of %d images: mean reprojection error %.2f px", B, float(err.mean()))
    return LandmarkFit(params=params, landmarks_2d=uv, correspondence=corr, reprojection_error=err,
                       cost=result.cost, history=torch.cat(histories, 1))
