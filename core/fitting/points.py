"""Reprojection of surface points that are linear in the expression weights (a rig's landmarks, dense mesh points).

A point set is ``X = neutral + basis @ expression`` in object space (any number of points: the 68
iBUG landmarks at their current correspondence, or MediaPipe's mesh points tied to the surface by
barycentric weights, `surface_points`). `point_block` makes the solver's residual block of their
weak-perspective reprojection, ``sqrt(c_i) * M_i (project(X_i) - y_i)``, with closed-form
Jacobians for the expression and the pose (rotation, scale, trans2d). ``M_i`` is a 2x2 matrix per
point: the identity, or ``n n^T`` for a point that may slide along an image curve with unit
normal ``n`` (a face-outline point: only its distance across the outline counts).
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple

import torch
from torch import Tensor

from core.camera import euler_to_matrix
from core.fitting.solver import ResidualBlock, Weight
from core.fitting.variables import EXPRESSION, ROTATION, SCALE, TRANS2D

__all__ = ["surface_points", "euler_jacobian", "project_points", "point_block", "outline_normals"]

_FLIP = (1.0, -1.0)  # weak perspective: u = s x + tx, v = -s y + ty


def surface_points(vertices: Tensor, triangles: Tensor, barycentric: Tensor) -> Tensor:
    """Points given by barycentric weights on triangles of a mesh, or of a basis.

    Shape: vertices (V, 3, ...) (a mesh, or a basis laid out per vertex); triangles (P, 3) vertex
    ids; barycentric (P, 3) -> (P, 3, ...).
    """
    w = barycentric.to(vertices.dtype).reshape(*barycentric.shape, *([1] * (vertices.dim() - 1)))
    return (vertices[triangles] * w).sum(1)


def euler_jacobian(angles: Tensor) -> Tensor:
    """Derivatives of `core.camera.euler_to_matrix` w.r.t. (pitch, yaw, roll).

    Shape: angles (B, 3) -> (B, 3, 3, 3), [:, a] = dR / d angle_a.
    """
    cx, cy, cz = torch.cos(angles).unbind(-1)
    sx, sy, sz = torch.sin(angles).unbind(-1)
    o, z = torch.ones_like(cx), torch.zeros_like(cx)

    def mat(*rows: Tensor) -> Tensor:
        return torch.stack(rows, -1).reshape(-1, 3, 3)

    Rx, dRx = mat(o, z, z, z, cx, -sx, z, sx, cx), mat(z, z, z, z, -sx, -cx, z, cx, -sx)
    Ry, dRy = mat(cy, z, sy, z, o, z, -sy, z, cy), mat(-sy, z, cy, z, z, z, -cy, z, -sy)
    Rz, dRz = mat(cz, -sz, z, sz, cz, z, z, z, o), mat(-sz, -cz, z, cz, -sz, z, z, z, z)
    return torch.stack([Rz @ Ry @ dRx, Rz @ dRy @ Rx, dRz @ Ry @ Rx], 1)


def project_points(points: Tensor, rotation: Tensor, scale: Tensor, trans2d: Tensor) -> Tensor:
    """Weak-perspective pixels of object-space points.

    Shape: points (B, P, 3); rotation (B, 3); scale (B,); trans2d (B, 2) -> (B, P, 2).
    """
    cam = points @ euler_to_matrix(rotation).transpose(1, 2)
    flip = torch.tensor(_FLIP, dtype=points.dtype, device=points.device)
    return scale[:, None, None] * cam[..., :2] * flip + trans2d[:, None]


def outline_normals(points: Tensor, closed: bool = True) -> Tensor:
    """Unit normals of a 2D polyline at its vertices (from the neighbours' difference).

    Shape: points (B, P, 2) in polyline order -> (B, P, 2).
    """
    if closed:
        nxt, prv = points.roll(-1, 1), points.roll(1, 1)
    else:
        nxt = torch.cat([points[:, 1:], points[:, -1:]], 1)
        prv = torch.cat([points[:, :1], points[:, :-1]], 1)
    tangent = nxt - prv
    normal = torch.stack([-tangent[..., 1], tangent[..., 0]], -1)
    return normal / normal.norm(dim=-1, keepdim=True).clamp_min(1e-9)


def point_block(neutral: Tensor, basis: Tensor, targets: Tensor, *, confidence: Optional[Tensor] = None,
                projector: Optional[Tensor] = None, weight: Weight = 1.0, name: str = "points") -> ResidualBlock:
    """Weak-perspective reprojection residuals of linear points, with closed-form Jacobians.

    Args:
        neutral: (B, P, 3) the points at zero expression, object space mm.
        basis: (P, 3, K) or (B, P, 3, K) their motion per unit expression weight.
        targets: (B, P, 2) observed pixels.
        confidence: (P,) or (B, P) non-negative per-point weights.
        projector: (P, 2, 2) or (B, P, 2, 2) per-point matrices ``M_i`` (module docstring).
        weight: block weight (1 / sigma^2 for pixel noise sigma).

    Shape:
        - residual: (B, 2P) ordered u0, v0, u1, v1, ... (after ``M_i``)
    """
    B, P = targets.shape[:2]
    if neutral.shape != (B, P, 3) or targets.shape != (B, P, 2):
        raise ValueError(f"point_block: expected neutral (B, P, 3) and targets (B, P, 2), got "
                         f"{tuple(neutral.shape)} and {tuple(targets.shape)}")
    if basis.shape[-3:-1] != (P, 3) or basis.dim() not in (3, 4):
        raise ValueError(f"point_block: basis must be ({P}, 3, K) or (B, {P}, 3, K), got {tuple(basis.shape)}")
    dtype = neutral.dtype
    sqrt_c = None if confidence is None else confidence.to(dtype).clamp_min(0).sqrt().expand(B, P)[..., None]
    M = None if projector is None else projector.to(dtype).expand(B, P, 2, 2)
    flip = torch.tensor(_FLIP, dtype=dtype)
    names = (EXPRESSION, ROTATION, SCALE, TRANS2D)

    def finish(d: Tensor) -> Tensor:  # (B, P, 2, ...) per-point rows -> weighted
        if M is not None:
            d = torch.einsum("bpij,bpj...->bpi...", M, d)
        if sqrt_c is not None:
            d = d * sqrt_c.reshape(B, P, 1, *([1] * (d.dim() - 3)))
        return d

    def points(params: Mapping[str, Tensor]) -> Tensor:
        w = params[EXPRESSION].to(dtype)
        if basis.dim() == 3:
            return neutral + torch.einsum("pjk,bk->bpj", basis, w)
        return neutral + torch.einsum("bpjk,bk->bpj", basis, w)

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        uv = project_points(points(params), params[ROTATION], params[SCALE], params[TRANS2D])
        return finish(uv - targets).reshape(B, 2 * P)

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        X = points(params)
        rot, s, t = params[ROTATION], params[SCALE], params[TRANS2D]
        R = euler_to_matrix(rot)
        cam = X @ R.transpose(1, 2)
        uv = s[:, None, None] * cam[..., :2] * flip + t[:, None]
        D = s[:, None, None] * flip[None, :, None] * R[:, :2]  # (B, 2, 3)
        if basis.dim() == 3:
            J_w = torch.einsum("bij,pjk->bpik", D, basis)
        else:
            J_w = torch.einsum("bij,bpjk->bpik", D, basis)
        dR = euler_jacobian(rot)[:, :, :2]  # (B, 3 angles, 2, 3)
        J_rot = s[:, None, None, None] * torch.einsum("baij,bpj->bpia", dR, X) * flip[None, None, :, None]
        J_s = (cam[..., :2] * flip)[..., None]  # (B, P, 2, 1)
        J_t = torch.eye(2, dtype=dtype).expand(B, P, 2, 2)
        jac = {EXPRESSION: finish(J_w).reshape(B, 2 * P, -1), ROTATION: finish(J_rot).reshape(B, 2 * P, 3),
               SCALE: finish(J_s).reshape(B, 2 * P), TRANS2D: finish(J_t).reshape(B, 2 * P, 2)}
        return finish(uv - targets).reshape(B, 2 * P), jac

    return ResidualBlock(name=name, residual=residual, weight=weight, linearize=linearize, depends_on=names)
