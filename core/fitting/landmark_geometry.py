"""The 68 landmarks on the face model: which model points they are, and how they slide with pose.

`LandmarkGeometry` restricts a model to its landmark and jawline vertices (a few dozen), so that
landmark fits never evaluate the whole mesh. The model points of the 68 landmarks follow a
`Correspondence`: each landmark is a blend of two model vertices, by default the model's landmark
vertex. Contour landmarks (the jawline, 0-7 and 9-16) slide to the silhouette with the head pose
(`update_contour`, rule documented there). `project_landmarks` gives their pixel positions for
the camera variables of `core.fitting.variables`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from core.camera import euler_to_matrix
from core.face_model.model import MorphableModel, VertexSubset
from core.fitting.variables import (CAMERA_VARIABLES, EXPRESSION, IDENTITY, ROTATION, CameraKind,
                                    camera_project, check_camera_kind)

__all__ = [
    "LandmarkGeometry", "Correspondence", "update_contour", "landmark_points", "project_landmarks",
]

# Contour landmarks per side with the outward object-space x direction of that side.
_SIDES = {"right": (tuple(range(0, 8)), -1.0), "left": (tuple(range(9, 17)), 1.0)}


@dataclass
class Correspondence:
    """Model points of the 68 landmarks: ``X_i = sum_j weights[b, i, j] * P[b, indices[b, i, j]]``.

    Shape:
        - indices: (B, 68, 2) int64 into `LandmarkGeometry.vertex_ids`
        - weights: (B, 68, 2), rows sum to 1
    """

    indices: Tensor
    weights: Tensor


class LandmarkGeometry:
    """A face model restricted to its landmark and jawline vertices (a few dozen of them).

    Also holds, for each contour landmark, its *jaw point*: the point of that side's extended
    jawline polyline at the height (model y) of the landmark's own vertex on the neutral face,
    as two jawline vertices and an interpolation weight.

    Args:
        model: a `MorphableModel` with 68 ``landmark_indices`` (``jawline_candidates`` optional;
            without them every correspondence is static).
    """

    def __init__(self, model: MorphableModel) -> None:
        if model.landmark_indices is None or tuple(model.landmark_indices.shape) != (68,):
            raise ValueError(f"model {model.name}: needs 68 landmark_indices for landmark fitting")
        jaw = {side: model.jawline_candidates.get(side) for side in _SIDES}
        jaw = {s: v.long() for s, v in jaw.items() if v is not None and v.numel() >= 2}
        ids = torch.cat([model.landmark_indices.long(), *jaw.values()])
        self.vertex_ids, inverse = torch.unique(ids, return_inverse=True)
        self.subset = VertexSubset(model, self.vertex_ids)
        self.n_identity, self.n_expression = model.n_identity, model.n_expression
        self.expression_range = model.expression_range
        self.neutral = self.subset.neutral  # (K, 3)
        # (K, 3, n) bases for per-landmark Jacobians.
        self.identity_basis = self.subset.identity_basis
        self.expression_basis = self.subset.expression_basis
        self.default_indices = inverse[:68]
        contour, jaw_pairs, jaw_weights, sides = [], [], [], []
        offset = 68
        for side, verts in jaw.items():
            local = inverse[offset:offset + len(verts)]
            offset += len(verts)
            for i in _SIDES[side][0]:
                height = float(self.neutral[self.default_indices[i], 1])
                pair, weight = _jaw_point(self.neutral[local, 1], height)
                contour.append(i)
                jaw_pairs.append(local[list(pair)])
                jaw_weights.append(weight)
                sides.append(_SIDES[side][1])
        self.contour = torch.tensor(contour, dtype=torch.long)  # (C,) landmark numbers
        self.jaw_indices = (torch.stack(jaw_pairs) if jaw_pairs
                            else torch.zeros(0, 2, dtype=torch.long))  # (C, 2) into vertex_ids
        self.jaw_weights = torch.tensor(jaw_weights, dtype=self.neutral.dtype).reshape(-1, 2)
        self.contour_sign = torch.tensor(sides, dtype=self.neutral.dtype)  # (C,) -1 right, +1 left

    @property
    def dtype(self) -> torch.dtype:
        return self.neutral.dtype

    def default_correspondence(self, batch: int, dtype: Optional[torch.dtype] = None
                               ) -> Correspondence:
        """The model's own landmark vertices for every element (static correspondence)."""
        idx = self.default_indices[None, :, None].expand(batch, 68, 2)
        w = torch.tensor([1.0, 0.0], dtype=dtype or self.dtype).expand(batch, 68, 2)
        return Correspondence(idx.clone(), w.clone())

    def points(self, identity: Optional[Tensor], expression: Optional[Tensor]) -> Tensor:
        """Model-space positions of the landmark and jawline vertices (mm).

        Shape:
            - identity: (B, n_identity) or None (zeros)
            - expression: (B, n_expression) or None (zeros)
            - output: (B, K, 3)
        """
        if identity is None and expression is None:
            raise ValueError("points: needs identity or expression coefficients for the batch size")
        return self.subset.points(identity, expression)


def _jaw_point(heights: Tensor, y: float) -> Tuple[Tuple[int, int], Tuple[float, float]]:
    """Segment of a jawline polyline crossing height ``y`` and the blend weights of its ends."""
    for k in range(len(heights) - 1):
        a, b = float(heights[k]), float(heights[k + 1])
        if (a - y) * (b - y) <= 0 and a != b:
            t = (y - a) / (b - a)
            return (k, k + 1), (1.0 - t, t)
    nearest = int((heights - y).abs().argmin())
    return (nearest, nearest), (1.0, 0.0)



def landmark_points(points: Tensor, correspondence: Correspondence) -> Tensor:
    """Blend the geometry's vertex positions into the 68 landmark points.

    Shape:
        - points: (B, K, 3) from `LandmarkGeometry.points`
        - output: (B, 68, 3)
    """
    B = points.shape[0]
    if tuple(correspondence.indices.shape) != (B, 68, 2):
        raise ValueError(f"correspondence.indices: expected shape ({B}, 68, 2), "
                         f"got {tuple(correspondence.indices.shape)}")
    idx = correspondence.indices.reshape(B, 136, 1).expand(B, 136, 3)
    gathered = points.gather(1, idx).reshape(B, 68, 2, 3)
    return (gathered * correspondence.weights[..., None].to(points.dtype)).sum(2)


def update_contour(geometry: LandmarkGeometry, points: Tensor, rotation_matrix: Tensor
                   ) -> Correspondence:
    """Slide the contour landmarks (0-7, 9-16) to the silhouette for the current pose.

    Rule: each contour landmark has two candidates at the same model height, its own landmark
    vertex (on the front of the cheek) and its jaw point on the extended jawline (further back).
    The candidate lying further out in the image along its side's outward direction wins: that
    direction is the object's -x axis (right side, landmarks 0-7) or +x axis (left, 9-16) rotated
    into the camera, compared in the camera's x-y plane (an orthographic silhouette test, also
    used for the pinhole camera). A side turned towards the camera thus takes the jaw points
    (its outline is the jaw), a side turned away keeps the cheek vertices, and the chin
    landmarks, whose vertices lie on the jawline, never move.

    Shape:
        - points: (B, K, 3) model-space positions from `LandmarkGeometry.points`
        - rotation_matrix: (B, 3, 3)
        - output: `Correspondence` for B elements
    """
    B = points.shape[0]
    corr = geometry.default_correspondence(B, points.dtype)
    if geometry.contour.numel() == 0:
        return corr
    axis = rotation_matrix[:, :2, 0]  # object x axis in camera x-y, (B, 2)
    cam = points @ rotation_matrix[:, :2, :].transpose(1, 2)  # camera x-y of the points (B, K, 2)
    w = geometry.jaw_weights.to(points.dtype)
    jaw = (cam[:, geometry.jaw_indices] * w[None, :, :, None]).sum(2)  # (B, C, 2)
    own = cam[:, geometry.default_indices[geometry.contour]]  # (B, C, 2)
    sign = geometry.contour_sign.to(points.dtype)
    outward = sign[None, :] * ((jaw - own) * axis[:, None, :]).sum(-1)  # > 0: jaw point outside
    use_jaw = outward > 0
    indices = corr.indices.clone()
    weights = corr.weights.clone()
    indices[:, geometry.contour] = torch.where(use_jaw[..., None], geometry.jaw_indices[None],
                                               indices[:, geometry.contour])
    weights[:, geometry.contour] = torch.where(use_jaw[..., None], w[None].expand(B, -1, -1),
                                               weights[:, geometry.contour])
    return Correspondence(indices, weights)


def project_landmarks(geometry: LandmarkGeometry, params: Mapping[str, Tensor],
                      camera: CameraKind = "weak",
                      correspondence: Union[Correspondence, Literal["static", "dynamic"]] = "dynamic",
                      principal_point: Optional[Tensor] = None, rotation: Optional[Tensor] = None) -> Tensor:
    """Pixel positions of the 68 model landmarks for a batch of fits.

    ``correspondence`` is a `Correspondence`, ``"static"`` (the model's landmark vertices) or
    ``"dynamic"`` (`update_contour` at these parameters). Missing identity / expression = zeros.
    ``rotation``: the rotation matrices of ``params``' angles where the caller has them (the shading
    stage shares one set with its colour term), else made here.

    Shape:
        - params: ``identity`` (B, n_id), ``expression`` (B, n_exp), camera variables (see module)
        - principal_point: (B, 2), pinhole only
        - rotation: (B, 3, 3) or None
        - output: (B, 68, 2)
    """
    check_camera_kind(camera)
    missing = [n for n in CAMERA_VARIABLES[camera] if n not in params]
    if missing:
        raise ValueError(f"params: missing camera variables {missing} for the {camera} camera")
    B = params[ROTATION].shape[0]
    ident, expr = params.get(IDENTITY), params.get(EXPRESSION)
    if ident is None and expr is None:
        expr = torch.zeros(B, geometry.n_expression, dtype=params[ROTATION].dtype)
    pts = geometry.points(ident, expr)
    if rotation is None:
        rotation = euler_to_matrix(params[ROTATION])
    if correspondence == "dynamic":
        correspondence = update_contour(geometry, pts, rotation)
    elif correspondence == "static":
        correspondence = geometry.default_correspondence(B)
    return camera_project(landmark_points(pts, correspondence), params, camera, principal_point, rotation)
