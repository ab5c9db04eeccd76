"""Texture-mapped shading: per-pixel texture colour from per-corner UVs, times interpolated shading.

Texture coordinates are in [0, 1] with v up (OBJ's convention, the rigs' atlas): texel (row i,
column j) of an (H, W) texture is centred at ``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``, and
sampling is bilinear. Only covered pixels are looked up, so the cost follows the rendered area.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy import sparse
from torch import Tensor

from core.checks import check_shape
from core.render.rasterize import Fragments

__all__ = ["sample_texture", "pixel_uvs", "render_textured", "VertexNormals", "covered_pixels"]


def sample_texture(texture: Tensor, uv: Tensor) -> Tensor:
    """Bilinear texture values at texture coordinates (clamped at the texture's border).

    Shape:
        texture (H, W, C); uv (..., 2) in [0, 1], v up -> (..., C).
    """
    check_shape("texture", texture, (None, None, None))
    flat = uv.reshape(1, 1, -1, 2).to(texture.dtype)
    grid = torch.stack([2.0 * flat[..., 0] - 1.0, 1.0 - 2.0 * flat[..., 1]], -1)
    image = texture.permute(2, 0, 1)[None]
    values = F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return values[0, :, 0].T.reshape(*uv.shape[:-1], texture.shape[-1])


def pixel_uvs(fragments: Fragments, uvs: Tensor, uv_triangles: Tensor) -> Tensor:
    """Texture coordinates at every pixel, from the per-corner uvs of the pixel's triangle.

    Shape:
        uvs (T, 2); uv_triangles (F, 3), one row per rasterized triangle -> (B, H, W, 2), 0 on background.
    """
    corners = uvs.to(fragments.bary.dtype)[uv_triangles.long()[fragments.tri_id.clamp(min=0)]]  # (B, H, W, 3, 2)
    out = (corners * fragments.bary[..., None]).sum(-2)
    return torch.where(fragments.mask[..., None], out, torch.zeros_like(out))


def render_textured(fragments: Fragments, uvs: Tensor, uv_triangles: Tensor, texture: Tensor,
                    triangles: Optional[Tensor] = None, shading: Optional[Tensor] = None) -> Tensor:
    """Texture colour times per-vertex shading (interpolated across triangles), 0 on background.

    Args:
        fragments: the rasterization (triangle ids index ``uv_triangles`` and ``triangles``).
        uvs: texture coordinates; uv_triangles: per corner, ids into ``uvs``.
        texture: the image, values in [0, 1].
        triangles: vertex ids of the rasterized triangles (needed with ``shading``).
        shading: per-vertex shading (e.g. SH irradiance), or None (the texture alone).

    Shape:
        uvs (T, 2); uv_triangles (F, 3); texture (Ht, Wt, 3); triangles (F, 3); shading (B, V, 3)
        -> (B, 3, H, W).
    """
    check_shape("uv_triangles", uv_triangles, (None, 3))
    mask = fragments.mask
    batch, height, width = mask.shape
    dtype = fragments.bary.dtype
    out = torch.zeros(batch, height, width, texture.shape[-1], dtype=dtype)
    where = torch.nonzero(mask)
    if len(where):
        tri = fragments.tri_id[mask]
        bary = fragments.bary[mask].to(dtype)
        uv = (uvs.to(dtype)[uv_triangles.long()[tri]] * bary[..., None]).sum(1)
        colour = sample_texture(texture.to(dtype), uv)
        if shading is not None:
            if triangles is None:
                raise ValueError("render_textured: shading needs the triangles' vertex ids")
            corners = triangles.long()[tri]                                  # (P, 3)
            light = (shading.to(dtype)[where[:, 0][:, None], corners] * bary[..., None]).sum(1)
            colour = colour * light
        out[mask] = colour
    return out.permute(0, 3, 1, 2)


class VertexNormals:
    """Area-weighted unit vertex normals of one triangle list, for many frames (as
    `core.mesh.vertex_normals`, the triangle normals summed by a precomputed sparse incidence).

    Args:
        triangles: (F, 3) vertex ids. n_vertices: V.
    """

    def __init__(self, triangles: Tensor, n_vertices: int) -> None:
        self.triangles = triangles.long()
        f = len(self.triangles)
        self._incidence = sparse.csr_matrix((np.ones(3 * f, np.float32), (self.triangles.reshape(-1).numpy(),
                                                              np.repeat(np.arange(f), 3))), shape=(n_vertices, f))

    def __call__(self, points: Tensor, normalize: bool = True) -> Tensor:
        """Shape: points (B, V, 3) -> (B, V, 3) unit normals (zero for vertices in no triangle); with
        ``normalize`` False the area-weighted sums (to add several triangle lists' before normalizing)."""
        t = self.triangles
        a, b, c = points[:, t[:, 0]], points[:, t[:, 1]], points[:, t[:, 2]]
        face = torch.linalg.cross(b - a, c - a, dim=-1).detach().cpu().numpy()
        summed = torch.from_numpy(np.stack([self._incidence @ fi for fi in face])).to(points.dtype)
        return torch.nn.functional.normalize(summed, dim=-1, eps=1e-12) if normalize else summed


def covered_pixels(fragments: Fragments, image: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
    """One image's covered pixels: flat pixel indices (P,), their triangles (P,) and barycentrics (P, 3)."""
    tri = fragments.tri_id[image].reshape(-1)
    covered = torch.nonzero(tri >= 0)[:, 0]
    return covered, tri[covered], fragments.bary[image].reshape(-1, 3)[covered]
