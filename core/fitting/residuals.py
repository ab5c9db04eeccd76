"""Residual blocks of the fitters: 68-point landmark reprojection, priors and temporal smoothness.

Blocks are `core.fitting.solver.ResidualBlock` objects over the variables named in
`core.fitting.variables`. Landmark reprojection projects the model points of a `Correspondence`
(`core.fitting.landmark_geometry`) with the weak-perspective or pinhole camera; Jacobians are in
closed form for the identity and expression codes (linear bases chained through the projection's
Jacobian) and forward-mode for the camera variables.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from core.camera import euler_to_matrix, euler_to_matrix_jacobian
from core.face_model.model import MorphableModel
from core.fitting.landmark_geometry import Correspondence, LandmarkGeometry, landmark_points
from core.fitting.solver import ResidualBlock, Weight, batched_jacfwd
from core.fitting.variables import (CAMERA_VARIABLES, EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D,
                                    CameraKind, camera_project, check_camera_kind, flatten_groups)

__all__ = ["landmark_block", "prior_block", "temporal_block", "expression_bounds"]


def _weak_jacobians(points: Tensor, params: Mapping[str, Tensor]) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """`_camera_jacobians` of the weak-perspective camera in closed form (``u = s (R X).x + tx``,
    ``v = -s (R X).y + ty``): no forward-mode pass, whose first use imports ``torch._decomp``."""
    R, s = euler_to_matrix(params[ROTATION]), params[SCALE]
    flip = torch.tensor([1.0, -1.0], dtype=points.dtype, device=points.device)
    rotated = (points @ R[:, :2].transpose(1, 2)) * flip  # (B, N, 2): (R X).x, -(R X).y
    uv = rotated * s[:, None, None] + params[TRANS2D][:, None]
    d_point = (R[:, :2] * flip[:, None] * s[:, None, None])[:, None].expand(*points.shape[:2], 2, 3)
    dR = euler_to_matrix_jacobian(params[ROTATION])[:, :2]  # (B, 2, 3, 3 angles)
    d_rotation = torch.einsum("bijk,bnj->bnik", dR, points) * (flip[:, None] * s[:, None, None])[:, None]
    eye = torch.eye(2, dtype=points.dtype, device=points.device)
    return uv, d_point, {ROTATION: d_rotation, SCALE: rotated[..., None],
                         TRANS2D: eye.expand(*points.shape[:2], 2, 2)}


def _camera_jacobians(points: Tensor, params: Mapping[str, Tensor], camera: CameraKind,
                      principal_point: Optional[Tensor]) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """Projection of points and its Jacobians: closed form for the weak-perspective camera, one
    vmapped forward-mode pass for the pinhole one.

    Returns:
        uv (B, N, 2); d(uv)/d(model point) (B, N, 2, 3); {camera variable: (B, N, 2, size)}.
    """
    if camera == "weak" and all(n in params for n in CAMERA_VARIABLES["weak"]):
        return _weak_jacobians(points, params)
    names = [n for n in CAMERA_VARIABLES[camera] if n in params]

    def proj(pts: Tensor, *values: Tensor) -> Tensor:
        return camera_project(pts, {**params, **dict(zip(names, values))}, camera, principal_point)

    values = [params[n] for n in names]
    jac = batched_jacfwd(proj, [points, *values], [2] + [1] * len(values))
    return proj(points, *values), jac[0], dict(zip(names, jac[1:]))


def landmark_block(geometry: LandmarkGeometry, targets: Tensor, camera: CameraKind = "weak", *,
                   correspondence: Optional[Correspondence] = None,
                   confidence: Optional[Tensor] = None, principal_point: Optional[Tensor] = None,
                   weight: Weight = 1.0, name: str = "landmarks") -> ResidualBlock:
    """Landmark reprojection residuals ``sqrt(c_i) * (project(X_i) - y_i)`` in pixels.

    Per-image fits use batch-first targets (B, 68, 2); a multi-image fit passes (B, G, 68, 2)
    and gets a per-group block (identity global, the other variables global or per group, told
    apart by their number of dimensions).

    Args:
        geometry: `LandmarkGeometry` of the face model.
        targets: detected landmarks, pixels.
        camera: ``"weak"`` or ``"perspective"``.
        correspondence: model points of the landmarks, batch (B) or (B*G) flattened; default the
            model's landmark vertices. Recompute with `update_contour` between solver rounds.
        confidence: (B, 68) or (B, G, 68) non-negative per-landmark weights (0 = missing).
        principal_point: (B, 2) or (B, G, 2), pinhole only.
        weight: block weight (e.g. 1 / sigma^2 for landmark noise sigma in pixels).

    Shape:
        - residual: (B, 136) or (B, G, 136), ordered u0, v0, u1, v1, ...
    """
    check_camera_kind(camera)
    per_group = targets.dim() == 4
    if targets.dim() not in (3, 4) or tuple(targets.shape[-2:]) != (68, 2):
        raise ValueError("targets: expected shape (B, 68, 2) or (B, G, 68, 2), "
                         f"got {tuple(targets.shape)}")
    groups = targets.shape[1] if per_group else 0
    lead = tuple(targets.shape[:-2])
    n_flat = targets.shape[0] * max(groups, 1)
    flat_targets = targets.reshape(n_flat, 68, 2)
    if correspondence is None:
        correspondence = geometry.default_correspondence(n_flat)
    if tuple(correspondence.indices.shape) != (n_flat, 68, 2):
        raise ValueError(f"correspondence: expected indices of shape ({n_flat}, 68, 2), "
                         f"got {tuple(correspondence.indices.shape)}")
    sqrt_conf = None
    if confidence is not None:
        if tuple(confidence.shape) != (*lead, 68):
            raise ValueError(f"confidence: expected shape {(*lead, 68)}, "
                             f"got {tuple(confidence.shape)}")
        if bool((confidence < 0).any()):
            raise ValueError("confidence: expected non-negative weights")
        sqrt_conf = confidence.reshape(n_flat, 68, 1).sqrt()
    pp = None
    if principal_point is not None:
        if tuple(principal_point.shape) not in ((lead[0], 2), (*lead, 2)):
            raise ValueError(f"principal_point: expected shape ({lead[0]}, 2) or {(*lead, 2)}, "
                             f"got {tuple(principal_point.shape)}")
        pp = principal_point if principal_point.dim() == len(lead) + 1 else principal_point[:, None]
        pp = pp.expand(*lead, 2).reshape(n_flat, 2)
    names = (IDENTITY, EXPRESSION) + CAMERA_VARIABLES[camera]

    def flat_params(params: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        flat = flatten_groups(params, names, groups)
        for n in CAMERA_VARIABLES[camera]:
            if n not in flat:
                raise ValueError(f"params: block {name!r} needs {n!r} for the {camera} camera")
        return flat

    def finish(r: Tensor) -> Tensor:
        if sqrt_conf is not None:
            r = r * sqrt_conf.to(r.dtype)
        return r.reshape(*lead, 136)

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        flat = flat_params(params)
        pts = landmark_points(geometry.points(flat.get(IDENTITY), flat.get(EXPRESSION)), correspondence)
        return finish(camera_project(pts, flat, camera, pp) - flat_targets)

    point_jacobians: Dict[Tuple[str, torch.dtype], Tensor] = {}

    def basis_jacobian(var: str, dtype: torch.dtype) -> Tensor:
        """d(landmark point)/d(code) (n, 68, 3, k): fixed by the correspondence, so cached."""
        if (var, dtype) not in point_jacobians:
            basis = (geometry.identity_basis if var == IDENTITY else geometry.expression_basis)
            per_vertex = basis.to(dtype)[correspondence.indices]  # (n, 68, 2, 3, k)
            w = correspondence.weights[..., None, None].to(dtype)
            point_jacobians[(var, dtype)] = (per_vertex * w).sum(2)
        return point_jacobians[(var, dtype)]

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        flat = flat_params(params)
        pts = landmark_points(geometry.points(flat.get(IDENTITY), flat.get(EXPRESSION)), correspondence)
        uv, d_uv, d_cam = _camera_jacobians(pts, flat, camera, pp)
        jac = {}
        for var in (IDENTITY, EXPRESSION):
            if var in flat:
                jac[var] = torch.einsum("bnij,bnjk->bnik", d_uv, basis_jacobian(var, pts.dtype))
        jac.update(d_cam)
        for var, J in jac.items():  # (n, 68, 2, size) -> (*lead, 136, *var_shape)
            if sqrt_conf is not None:
                J = J * sqrt_conf[..., None].to(J.dtype)
            shape = flat[var].shape[1:]
            jac[var] = J.reshape(*lead, 136, *shape)
        return finish(uv - flat_targets), jac

    return ResidualBlock(name=name, residual=residual, weight=weight, linearize=linearize,
                         depends_on=names, per_group=per_group)


def prior_block(variable: str, mean: Union[float, Tensor] = 0.0, std: Union[float, Tensor] = 1.0,
                *, weight: Weight = 1.0, per_group: bool = False,
                name: Optional[str] = None) -> ResidualBlock:
    """Gaussian prior ``(x - mean) / std`` on one variable (e.g. identity ~ N(0, 1)).

    ``mean`` and ``std`` broadcast to the variable. Set ``per_group`` when the variable has a
    group axis in a multi-image problem.

    Shape:
        - residual: (B, n) or (B, G, n) with n the variable's size per element
    """
    std_t = torch.as_tensor(std)
    if bool((std_t <= 0).any()):
        raise ValueError(f"std of the prior on {variable!r}: expected positive values")
    lead_dims = 2 if per_group else 1

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        x = params[variable]
        return ((x - mean) / std_t.to(x.dtype)).reshape(*x.shape[:lead_dims], -1)

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        x = params[variable]
        r = residual(params)
        inv = (1.0 / std_t.to(x.dtype)).expand(x.shape).reshape(r.shape)
        shape = x.shape[lead_dims:]
        J = torch.diag_embed(inv).reshape(*r.shape, *shape)
        return r, {variable: J}

    return ResidualBlock(name=name or f"{variable}_prior", residual=residual, weight=weight,
                         linearize=linearize, depends_on=(variable,), per_group=per_group)


def temporal_block(variable: str, previous: Tensor, *, weight: Weight = 1.0,
                   per_group: bool = False, name: Optional[str] = None) -> ResidualBlock:
    """Temporal smoothness for video: the difference to the previous frame's value.

    Shape:
        - previous: the variable's shape, e.g. (B, n_expression)
        - residual: (B, n) or (B, G, n)
    """
    return prior_block(variable, mean=previous, std=1.0, weight=weight, per_group=per_group,
                       name=name or f"{variable}_temporal")


def expression_bounds(model: Union[MorphableModel, LandmarkGeometry]
                      ) -> Dict[str, Tuple[float, float]]:
    """Solver ``bounds`` for the expression code: ``{"expression": (0, 1)}`` for ICT, else {}."""
    rng = model.expression_range
    return {} if rng is None else {EXPRESSION: (float(rng[0]), float(rng[1]))}
