"""Shaders: turn rasterized `Fragments` into images (flat, vertex colours, SH-shaded, normals,
depth) and composite renders over photos.

Rendered images are ``(B, C, H, W)`` float tensors, as networks take images.
"""
from __future__ import annotations

import math

import torch

from core.checks import check_shape
from core.lighting import SH_CONSTANT, sh_shading
from core.mesh import vertex_normals
from core.render.rasterize import Fragments, interpolate, rasterize

__all__ = [
    "default_sh", "render_flat", "render_vertex_colors", "render_shaded", "render_normals",
    "render_depth", "composite", "render_overlay",
]


def _to_image(pixels: torch.Tensor, fragments: Fragments) -> torch.Tensor:
    """(B, H, W, C) with background zeroed -> (B, C, H, W)."""
    pixels = torch.where(fragments.mask[..., None], pixels, torch.zeros_like(pixels))
    return pixels.permute(0, 3, 1, 2)


def default_sh(batch: int = 1, ambient: float = 0.35, diffuse: float = 0.65,
               direction: tuple[float, float, float] = (0.3, 0.4, 1.0),
               dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
               ) -> torch.Tensor:
    """White SH lighting ``ambient + diffuse * (n . l)`` for showing geometry (renders in grey).

    ``direction`` is the unit-normalised light direction ``l`` in camera space (default: from
    the upper right, in front of the face). Values are clamped at 0 by ``render_shaded``.

    Shape:
        - output: (batch, 9, 3)
    """
    light = torch.tensor(direction, dtype=dtype, device=device)
    light = light / torch.linalg.vector_norm(light)
    band1 = (2.0 * math.pi / 3.0) * math.sqrt(3.0 / (4.0 * math.pi))  # A_1 Y_1: n . l -> SH
    sh = torch.zeros(batch, 9, 3, dtype=dtype, device=device)
    sh[:, 0] = ambient / SH_CONSTANT
    sh[:, 1:4] = (diffuse / band1 * light[[1, 2, 0]])[:, None]
    return sh


def render_flat(fragments: Fragments, color: torch.Tensor | tuple[float, float, float]
                = (0.7, 0.7, 0.7)) -> torch.Tensor:
    """Silhouette in one colour.

    Shape:
        - color: (3,) or (B, 3)
        - output: (B, 3, H, W)
    """
    batch, height, width = fragments.tri_id.shape
    color = torch.as_tensor(color, dtype=fragments.bary.dtype, device=fragments.bary.device)
    pixels = color.reshape(-1, 1, 1, 3).expand(batch, height, width, 3)
    return _to_image(pixels, fragments)


def render_vertex_colors(fragments: Fragments, triangles: torch.Tensor, colors: torch.Tensor
                         ) -> torch.Tensor:
    """Per-vertex colours interpolated across triangles (Gouraud).

    Shape:
        - colors: (B, V, C)
        - output: (B, C, H, W)
    """
    return _to_image(interpolate(fragments, triangles, colors), fragments)


def _pixel_normals(fragments: Fragments, triangles: torch.Tensor, normals: torch.Tensor
                   ) -> torch.Tensor:
    """Interpolated, renormalised normals per pixel, (B, H, W, 3)."""
    check_shape("normals", normals, (fragments.tri_id.shape[0], None, 3))
    return torch.nn.functional.normalize(interpolate(fragments, triangles, normals), dim=-1)


def render_shaded(fragments: Fragments, triangles: torch.Tensor, normals: torch.Tensor,
                  albedo: float | torch.Tensor = 0.8, sh: torch.Tensor | None = None
                  ) -> torch.Tensor:
    """Shaded geometry: per-pixel normals lit by SH lighting (``default_sh`` when None).

    Args:
        normals: per-vertex unit normals in camera space (x right, y up, z towards the camera).
        albedo: grey level, or per-vertex colours (B, V, 3) interpolated across triangles.
        sh: (B, 9, 3) lighting.

    Shape:
        - normals: (B, V, 3)
        - output: (B, 3, H, W), clamped to [0, 1]
    """
    batch = fragments.tri_id.shape[0]
    n = _pixel_normals(fragments, triangles, normals)
    if sh is None:
        sh = default_sh(batch, dtype=n.dtype, device=n.device)
    # Lit where a triangle is drawn only (a face is a fraction of its picture; the rest is zeroed).
    light = torch.zeros_like(n)
    for b in range(batch):
        covered = fragments.mask[b]
        light[b][covered] = sh_shading(n[b][covered][None], sh[b:b + 1])[0]
    if isinstance(albedo, torch.Tensor):
        albedo = interpolate(fragments, triangles, albedo)
    return _to_image((albedo * light).clamp(0.0, 1.0), fragments)


def render_normals(fragments: Fragments, triangles: torch.Tensor, normals: torch.Tensor
                   ) -> torch.Tensor:
    """Normals as colours ``(n + 1) / 2``.

    Shape:
        - normals: (B, V, 3)
        - output: (B, 3, H, W)
    """
    return _to_image(0.5 * (_pixel_normals(fragments, triangles, normals) + 1.0), fragments)


def render_depth(fragments: Fragments) -> torch.Tensor:
    """Depth rescaled per image to [0, 1] over covered pixels (1 = nearest), 0 on background.

    Shape:
        - output: (B, 1, H, W)
    """
    batch = fragments.depth.shape[0]
    mask = fragments.mask
    depth = torch.where(mask, fragments.depth, torch.zeros_like(fragments.depth))
    flat = depth.reshape(batch, -1)
    inf = torch.full_like(flat, float("inf"))
    lo = torch.where(mask.reshape(batch, -1), flat, inf).amin(1).clamp(max=1e30)
    hi = torch.where(mask.reshape(batch, -1), flat, -inf).amax(1).clamp(min=-1e30)
    scaled = (depth - lo[:, None, None]) / (hi - lo).clamp(min=1e-12)[:, None, None]
    return _to_image(scaled[..., None], fragments)


def composite(render: torch.Tensor, mask: torch.Tensor, background: torch.Tensor,
              alpha: float = 1.0) -> torch.Tensor:
    """Alpha-composite a render over a background where ``mask`` is set.

    Shape:
        - render: (B, C, H, W)
        - mask: (B, H, W) bool or weights in [0, 1]
        - background: (B, C, H, W)
        - output: (B, C, H, W)
    """
    check_shape("background", background, tuple(render.shape))
    check_shape("mask", mask, (render.shape[0], *render.shape[2:]))
    weight = alpha * mask.to(render.dtype)[:, None]
    return weight * render + (1.0 - weight) * background


def render_overlay(image: torch.Tensor, vertices_px: torch.Tensor, triangles: torch.Tensor,
                   normals: torch.Tensor | None = None, alpha: float = 0.6,
                   albedo: float = 0.8, sh: torch.Tensor | None = None,
                   backend: str = "auto") -> torch.Tensor:
    """Shaded grey mesh over a photo, as papers show fits (``alpha`` ~ 0.6).

    Args:
        image: photos, float in [0, 1].
        vertices_px: screen vertices (u, v, depth) of the fitted mesh.
        normals: camera-space vertex normals; None computes them from the screen geometry
            ``(u, -v, depth)``, exact for ``weak_perspective_screen`` (a scaled camera space).

    Shape:
        - image: (B, 3, H, W)
        - vertices_px: (B, V, 3)
        - output: (B, 3, H, W)
    """
    check_shape("image", image, (vertices_px.shape[0], 3, None, None))
    height, width = image.shape[-2:]
    fragments = rasterize(vertices_px, triangles, height, width, backend=backend,
                          cull_backfaces=True)
    if normals is None:
        sign = torch.tensor([1.0, -1.0, 1.0], dtype=vertices_px.dtype, device=vertices_px.device)
        normals = vertex_normals(vertices_px * sign, triangles)
    shaded = render_shaded(fragments, triangles, normals, albedo=albedo, sh=sh)
    return composite(shaded.to(image.dtype), fragments.mask, image, alpha)
