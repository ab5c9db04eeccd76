"""The fitters' unknowns: one name per quantity, their shapes, and the camera they describe.

=================  =====================================================================
``identity``       (B, n_identity) identity coefficients ~ N(0, 1)
``expression``     (B, n_expression) expression coefficients (ICT: weights in [0, 1])
``rotation``       (B, 3) Euler angles (pitch, yaw, roll), radians (docs/conventions.md)
``scale``          (B,) weak perspective: pixels per mm
``trans2d``        (B, 2) weak perspective: 2D translation, pixels
``translation``    (B, 3) pinhole: camera-space translation, mm (the face at negative z)
``focal``          (B,) pinhole: focal length, pixels
=================  =====================================================================

In a multi-image problem ``identity`` is global (B, n_id) and the others may carry a group axis
(B, G, ...) (`core.fitting.solver`); `flatten_groups` folds that axis into the batch.
"""
from __future__ import annotations

from typing import Dict, Literal, Mapping, Optional

from torch import Tensor

from core.camera import euler_to_matrix, perspective_project, weak_perspective_project

__all__ = [
    "IDENTITY", "EXPRESSION", "ROTATION", "SCALE", "TRANS2D", "TRANSLATION", "FOCAL", "CameraKind",
    "camera_project", "check_camera_kind", "flatten_groups",
]

IDENTITY, EXPRESSION, ROTATION = "identity", "expression", "rotation"
SCALE, TRANS2D, TRANSLATION, FOCAL = "scale", "trans2d", "translation", "focal"
CameraKind = Literal["weak", "perspective"]

# Dimensions of one element of each variable (after its batch, or batch and group, axes).
ELEMENT_DIMS = {IDENTITY: 1, EXPRESSION: 1, ROTATION: 1, SCALE: 0, TRANS2D: 1, TRANSLATION: 1,
                 FOCAL: 0}
CAMERA_VARIABLES = {"weak": (ROTATION, SCALE, TRANS2D), "perspective": (ROTATION, TRANSLATION, FOCAL)}


def camera_project(points: Tensor, params: Mapping[str, Tensor], camera: CameraKind,
                   principal_point: Optional[Tensor], rotation: Optional[Tensor] = None) -> Tensor:
    """Project model-space points (B, N, 3) with the camera variables in ``params`` (``rotation``:
    their rotation matrices (B, 3, 3) where the caller has made them already)."""
    R = euler_to_matrix(params[ROTATION]) if rotation is None else rotation
    if camera == "weak":
        return weak_perspective_project(points, R, params[SCALE], params[TRANS2D])
    if principal_point is None:
        raise ValueError("principal_point: required for the perspective camera")
    return perspective_project(points, R, params[TRANSLATION], params[FOCAL], principal_point)


def check_camera_kind(camera: str) -> None:
    if camera not in CAMERA_VARIABLES:
        raise ValueError(f"camera: expected 'weak' or 'perspective', got {camera!r}")


def flatten_groups(params: Mapping[str, Tensor], names, groups: int) -> Dict[str, Tensor]:
    """Fold a group axis into the batch: per-group variables (B, G, ...) -> (B*G, ...); global
    ones (B, ...) are repeated per group. Identity when ``groups`` is 0."""
    out = {}
    for n in names:
        if n not in params:
            continue
        x = params[n]
        if groups:
            if x.dim() == ELEMENT_DIMS[n] + 1:
                x = x[:, None].expand(x.shape[0], groups, *x.shape[1:])
            x = x.reshape(-1, *x.shape[2:])
        out[n] = x
    return out
