"""Photometric data term of the fitter: observed vertex colours, albedo and lighting, residuals.

The energy compares the image colour sampled at each visible vertex with ``albedo x SH shading``
(method.md). Within one solver round the shading target is held fixed (albedo, lighting and normals
are re-estimated between rounds in closed form, as the original solves lighting at each step), so
the residual moves the geometry by image alignment; its Jacobian is closed form: image gradient x
projection Jacobian x model basis. Lighting lives in camera space (camera-space normals). Weak
perspective camera (the rig builder's, as the original).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from core.camera import (WeakPerspective, euler_to_matrix, euler_to_matrix_jacobian, rotate_points,
                         weak_perspective_jacobian, weak_perspective_project)
from core.face_model.model import MorphableModel, VertexSubset
from core.fitting.solver import ResidualBlock, Weight
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D, flatten_groups
from core.lighting import ShSystem
from core.mesh import vertex_normals
from core.render.visibility import vertex_visibility
from core.sampling import sample_points

__all__ = ["SKIN_PRIOR", "Observation", "observe", "grazing_weight", "estimate_albedo", "estimate_appearance",
           "image_gradients", "photometric_block", "sampled_block"]

# Mean skin albedo used as the prior where a model has no albedo basis (linear RGB-ish, [0, 1]).
SKIN_PRIOR = (0.62, 0.45, 0.38)
_POSE = (ROTATION, SCALE, TRANS2D)


@dataclass
class Observation:
    """What the images say about each vertex.

    Shape: colors (B, V, 3) in [0, 1]; weights (B, V) in [0, 1] (visibility x facing the camera);
    normals (B, V, 3) unit, camera space; screen (B, V, 3) (u, v, depth) pixels.
    """

    colors: Tensor
    weights: Tensor
    normals: Tensor
    screen: Tensor


def grazing_weight(normal_z: Tensor, grazing: Tuple[float, float]) -> Tensor:
    """0 below ``grazing[0]``, 1 above ``grazing[1]``, linear between, of camera-space normals' z.

    Grazing views are unreliable: colours there mix with the background and the neighbours.
    """
    lo, hi = grazing
    return ((normal_z - lo) / (hi - lo)).clamp(0.0, 1.0)


def _coarse_visibility(screen: Tensor, triangles: Tensor, size: int) -> Tensor:
    """Visibility from a ``size``-pixel z-buffer over each face's own box (self-occlusion only).

    Screen points are scaled, depth included, so that the box spans the raster: the depth tolerance
    of one raster pixel then means the same whatever the face's size in the image.
    """
    uv = screen[..., :2]
    lo = uv.amin(1, keepdim=True)
    k = (size - 2) / (uv.amax(1, keepdim=True) - lo).amax(-1, keepdim=True).clamp(min=1.0)
    local = torch.cat([(uv - lo) * k + 0.5, screen[..., 2:] * k], -1)
    return vertex_visibility(local, triangles, (size, size), tol=1.0)


def observe(images: Tensor, vertices: Tensor, triangles: Tensor, pose: WeakPerspective, *,
            grazing: Tuple[float, float] = (0.15, 0.45), subset: Optional[Tensor] = None,
            normal_triangles: Optional[Tensor] = None, raster_size: Optional[int] = None) -> Observation:
    """Sample image colours at the projected vertices, with visibility weights.

    A vertex's weight is 0 where it is hidden (z-buffer) or outside the image, and ramps from 0 to
    1 as the camera-space normal's z goes from ``grazing[0]`` to ``grazing[1]`` (`grazing_weight`).
    The rig builder, the shading stage and the tracker's lighting all observe the images this way.

    Args:
        images: the frames, RGB in [0, 1].
        vertices: object-space meshes, mm; triangles: their triangles.
        pose: the meshes' head poses in the images' pixels.
        grazing: normal z range of the ramp.
        subset: observe only these vertex ids (default all).
        normal_triangles: triangles whose normals reach the observed vertices (default all; a
            subset's incident triangles are enough and cheaper).
        raster_size: decide visibility on a coarse ``raster_size`` z-buffer over the face's box
            (cheap, self-occlusion only) instead of the images' full size.

    Shape:
        images (B, 3, H, W); vertices (B, V, 3); subset (M,) -> Observation over (B, M) (M = V by
        default).
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
    with torch.no_grad():
        screen = pose.screen(vertices)
        height, width = images.shape[-2:]
        if raster_size is None:  # inside the image (to the nearest pixel) and not occluded
            visible = vertex_visibility(screen, triangles, (height, width))
        else:
            visible = _coarse_visibility(screen, triangles, raster_size)
        normals = vertex_normals(pose.camera_points(vertices),
                                 triangles if normal_triangles is None else normal_triangles)
        if subset is not None:
            screen, visible, normals = screen[:, subset], visible[:, subset], normals[:, subset]
        uv = screen[..., :2]
        if raster_size is not None:  # the coarse z-buffer saw no image edges
            visible = visible & (uv[..., 0] >= 0) & (uv[..., 0] <= width - 1) & (uv[..., 1] >= 0) \
                & (uv[..., 1] <= height - 1)
        colors = sample_points(images, uv)
        weights = visible.to(colors.dtype) * grazing_weight(normals[..., 2], grazing)
    return Observation(colors=colors, weights=weights, normals=normals, screen=screen)


def _smooth(values: Tensor, neighbours: Tensor, iterations: int) -> Tensor:
    """Average each vertex with its one-ring ``iterations`` times (values (V, C))."""
    valid = (neighbours >= 0).to(values.dtype)
    count = valid.sum(1, keepdim=True).clamp(min=1)
    for _ in range(iterations):
        ring = (values[neighbours.clamp(min=0)] * valid[..., None]).sum(1) / count
        values = 0.5 * values + 0.5 * ring
    return values


def estimate_albedo(colors: Tensor, shading: Tensor, weights: Tensor, prior: Tensor,
                    prior_weight: float = 0.05, neighbours: Optional[Tensor] = None,
                    smooth_iterations: int = 4) -> Tensor:
    """Per-vertex albedo explaining the colours of all images given their shading.

    Closed form per vertex and channel: ``a = (sum_g w s o + lam p) / (sum_g w s^2 + lam)`` with the
    skin prior ``p`` weighted by ``lam = prior_weight * mean(sum_g w s^2)`` (unseen vertices take the
    prior), then a few rounds of one-ring smoothing.

    Shape:
        colors, shading (G, V, 3); weights (G, V); prior (V, 3) or (3,); neighbours (V, D) -> (V, 3).
    """
    w = weights[..., None]
    num = (w * shading * colors).sum(0)
    den = (w * shading * shading).sum(0)
    lam = prior_weight * den.mean().clamp(min=1e-6)
    prior = prior.to(colors.dtype).expand_as(num)
    albedo = (num + lam * prior) / (den + lam)
    if neighbours is not None and smooth_iterations > 0:
        albedo = _smooth(albedo, neighbours, smooth_iterations)
    return albedo.clamp(0.0, 1.0)


def estimate_appearance(obs: Observation, prior: Tensor, neighbours: Optional[Tensor] = None,
                        iterations: int = 3, sh_reg: float = 1e-3,
                        prior_weight: float = 0.05) -> Tuple[Tensor, Tensor]:
    """Alternate closed-form SH lighting per image and a shared per-vertex albedo (`estimate_albedo`).

    Shape:
        obs over (G, V); prior (V, 3) or (3,) -> albedo (V, 3), sh (G, 9, 3).
    """
    groups, n_vertices = obs.weights.shape
    albedo = prior.to(obs.colors.dtype).expand(n_vertices, 3)
    system = ShSystem(obs.normals, obs.weights)  # the normals stay: their basis products are formed once
    sh = None
    for _ in range(iterations):
        sh = system.solve(albedo.expand(groups, -1, -1), obs.colors, reg=sh_reg)
        shading = system.shading(sh)
        albedo = estimate_albedo(obs.colors, shading, obs.weights, prior, prior_weight=prior_weight,
                                 neighbours=neighbours)
    return albedo, sh


def image_gradients(images: Tensor, blur_sigma: float = 1.0) -> Tuple[Tensor, Tensor]:
    """Blurred images and their (d/du, d/dv) central-difference gradients.

    Shape:
        images (B, C, H, W) -> blurred (B, C, H, W), gradients (B, C, 2, H, W).
    """
    radius = max(1, int(round(2.5 * blur_sigma)))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    k = torch.exp(-0.5 * (x / blur_sigma) ** 2)
    k = k / k.sum()
    c = images.shape[1]
    blurred = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    blurred = F.conv2d(F.pad(blurred, (0, 0, radius, radius), mode="replicate"), k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    padded = F.pad(blurred, (1, 1, 1, 1), mode="replicate")
    du = 0.5 * (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2])
    dv = 0.5 * (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1])
    return blurred, torch.stack([du, dv], dim=2)


def photometric_block(subset: VertexSubset, images: Tensor, targets: Tensor, weights: Tensor, *,
                      weight: Weight = 1.0, huber: Optional[float] = 0.1, blur_sigma: float = 1.0,
                      name: str = "photometric") -> ResidualBlock:
    """Per-group photometric residuals ``sqrt(w) * (I(project(X_m)) - target_m)`` per channel.

    Identity is global (B, n_id); expression and pose are per image (B, G, ...). ``targets`` are
    the shaded albedo of the subset's vertices for this round, ``weights`` their visibility.

    Shape:
        images (B, G, 3, H, W); targets (B, G, M, 3); weights (B, G, M) -> residual (B, G, 3M).
    """
    if images.ndim != 5 or images.shape[2] != 3:
        raise ValueError(f"images must be (B, G, 3, H, W), got {tuple(images.shape)}")
    return sampled_block(subset, images, targets, weights, weight=weight, huber=huber,
                         blur_sigma=blur_sigma, name=name)


def sampled_block(subset: VertexSubset, maps: Tensor, targets: Tensor, weights: Tensor, *,
                  weight: Weight = 1.0, huber: Optional[float] = None, blur_sigma: float = 1.0,
                  uv_scale: float = 1.0, uv_offset: float = 0.0,
                  name: str = "sampled") -> ResidualBlock:
    """Per-group residuals ``sqrt(w) * (F(a * project(X_m) + b) - target_m)`` over C channels.

    The photometric term (``maps`` = the images) and the network's feature-metric term (``maps``
    = learned feature maps at a lower resolution: ``a``, ``b`` = ``uv_scale``, ``uv_offset`` map
    crop pixels to map pixels) share it. Identity is global (B, n_id); expression and pose are per
    image (B, G, ...). The Jacobian is closed form: map gradient x projection x basis. Gradients
    flow into ``maps`` and ``targets`` (the network trains through it).

    Shape:
        maps (B, G, C, H, W); targets (B, G, M, C); weights (B, G, M) -> residual (B, G, C*M).
    """
    if maps.ndim != 5 or targets.ndim != 4 or weights.ndim != 3:
        raise ValueError(f"maps (B, G, C, H, W), targets (B, G, M, C), weights (B, G, M) expected; got "
                         f"{tuple(maps.shape)}, {tuple(targets.shape)}, {tuple(weights.shape)}")
    b, g, c = maps.shape[:3]
    m = subset.neutral.shape[0]
    if targets.shape != (b, g, m, c) or weights.shape != (b, g, m):
        raise ValueError(f"targets must be {(b, g, m, c)} and weights {(b, g, m)}; got "
                         f"{tuple(targets.shape)}, {tuple(weights.shape)}")
    # Residuals read the map itself (the targets come from the same, unblurred samples); only
    # the Jacobian uses the blurred map's gradients, which are smooth over a few pixels.
    flat_maps = maps.reshape(b * g, *maps.shape[2:])
    _, grads = image_gradients(flat_maps, blur_sigma)
    grads = grads.reshape(b * g, -1, *grads.shape[-2:])  # (n, C*2, H, W)
    flat_targets = targets.reshape(b * g, m, c)
    sqrt_w = weights.reshape(b * g, m, 1).clamp(min=0).sqrt()

    def to_map(uv: Tensor) -> Tensor:
        return uv * uv_scale + uv_offset if (uv_scale != 1.0 or uv_offset != 0.0) else uv

    names = (IDENTITY, EXPRESSION) + _POSE

    def residual(params: Mapping[str, Tensor]) -> Tensor:
        flat = flatten_groups(params, names, g)
        uv = weak_perspective_project(subset.points(flat[IDENTITY], flat[EXPRESSION]),
                                      euler_to_matrix(flat[ROTATION]), flat[SCALE], flat[TRANS2D])
        r = (sample_points(flat_maps, to_map(uv)) - flat_targets) * sqrt_w
        return r.reshape(b, g, c * m)

    def linearize(params: Mapping[str, Tensor]) -> Tuple[Tensor, Dict[str, Tensor]]:
        flat = flatten_groups(params, names, g)
        pts = subset.points(flat[IDENTITY], flat[EXPRESSION])
        R = euler_to_matrix(flat[ROTATION])
        s = flat[SCALE]
        uv = weak_perspective_project(pts, R, s, flat[TRANS2D])
        r = (sample_points(flat_maps, to_map(uv)) - flat_targets) * sqrt_w
        # dF/duv in crop pixels (chain rule through the map's affine uv).
        d_img = sample_points(grads, to_map(uv)).reshape(b * g, m, c, 2) * (sqrt_w[..., None] * uv_scale)
        d_img_dx = torch.einsum("nmcj,njk->nmck", d_img, weak_perspective_jacobian(R, s))  # (n, M, C, 3)
        jac = {
            IDENTITY: torch.einsum("nmcx,mxk->nmck", d_img_dx, subset.identity_basis.to(pts.dtype)),
            EXPRESSION: torch.einsum("nmcx,mxk->nmck", d_img_dx, subset.expression_basis.to(pts.dtype)),
            TRANS2D: d_img,
        }
        xc = rotate_points(pts, R)
        d_uv_ds = torch.stack([xc[..., 0], -xc[..., 1]], dim=-1)  # (n, M, 2)
        jac[SCALE] = (d_img * d_uv_ds[:, :, None, :]).sum(-1)[..., None]  # (n, M, C, 1)
        d_xc = torch.einsum("nijk,nmj->nmik", euler_to_matrix_jacobian(flat[ROTATION]), pts)  # d(R X)/d angle
        d_uv_drot = torch.stack([d_xc[..., 0, :], -d_xc[..., 1, :]], dim=-2) * s[:, None, None, None]  # (n, M, 2, 3)
        jac[ROTATION] = torch.einsum("nmcj,nmjk->nmck", d_img, d_uv_drot)
        out = {}
        for var, J in jac.items():
            k = J.shape[-1]
            J = J.reshape(b, g, c * m, k)
            out[var] = J if var != SCALE else J[..., 0]
        return r.reshape(b, g, c * m), out

    return ResidualBlock(name=name, residual=residual, weight=weight, linearize=linearize,
                         depends_on=names, per_group=True, huber=huber)


def sample_vertex_subset(model: MorphableModel, count: int, region: Optional[str] = "narrow_face",
                         seed: int = 0) -> Tensor:
    """A fixed, spread-out random subset of vertex ids for the photometric term (ids into model)."""
    pool = model.regions.get(region, torch.arange(model.n_vertices)) if region else torch.arange(model.n_vertices)
    g = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(pool), generator=g)[: min(count, len(pool))]
    return pool[pick].sort().values
