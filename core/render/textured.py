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
from torch import Tensor

from core.checks import check_shape
from core.render.rasterize import Fragments

try:  # the compiled kernels (`python setup.py build_ext --inplace`); torch does the same without them
    from core.render import _rasterize as _kernel
except ImportError:  # pragma: no cover - exercised where the extension is not built
    _kernel = None
_TEXEL_KERNEL = _kernel is not None and hasattr(_kernel, "shade_nearest_texels")  # an older build lacks it

__all__ = ["sample_texture", "pixel_uvs", "render_textured", "VertexNormals", "covered_pixels",
           "shade_texels"]


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
        from scipy import sparse  # here: the rig jobs never make one (its import is ~0.06 s)

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


def shade_texels(fragments: Fragments, triangles: Tensor, light: Tensor, corner_uv: Tensor, texture: Tensor,
                 window: Tensor, bilinear: bool = False, image: int = 0, compiled: Optional[bool] = None) -> None:
    """Texture colour times interpolated per-vertex shading, written into the covered pixels of
    ``window`` (the others keep their values): what a video's textured renders need per frame.

    ``bilinear=False`` takes the nearest texel, column ``int(u * W)``, row ``int((1 - v) * H)``
    (clamped): an atlas with several texels per pixel of a video's face shows just that, and it
    runs as one pass of the compiled kernel where it is built (``compiled=None``: when available;
    torch over the covered pixels otherwise, the same sums to float rounding). ``bilinear=True``
    samples as `sample_texture` does.

    Args:
        fragments: the rasterization of the window (image ``image`` of its batch).
        triangles: (F, 3) vertex ids of the rasterized triangles; light: (V, 3) per-vertex shading.
        corner_uv: (F, 3, 2) texture coordinates of each triangle's corners, v up.
        texture: (Ht, Wt, 3), values in [0, 1], contiguous.
        window: (3, h, w) written in place (a view into a frame is fine); values clamped to [0, 1].
    """
    tex_h, tex_w = int(texture.shape[0]), int(texture.shape[1])
    texels = texture.reshape(-1, texture.shape[-1])
    kernel = _TEXEL_KERNEL if compiled is None else compiled
    if (kernel and not bilinear and window.device.type == "cpu"
            and window.dtype in (torch.float32, torch.float64)):
        dtype = torch.empty(0, dtype=window.dtype).numpy().dtype

        def array(t: Tensor, kind: np.dtype) -> np.ndarray:
            return np.ascontiguousarray(t.detach().cpu().numpy().astype(kind, copy=False))

        _kernel.shade_nearest_texels(array(fragments.tri_id[image], np.int64), array(fragments.bary[image], dtype),
                                     array(triangles, np.int64), array(light, dtype), array(corner_uv, dtype),
                                     array(texels, dtype), tex_h, tex_w, window.detach().numpy())
        return
    covered, t, bary = covered_pixels(fragments, image)
    if len(covered) == 0:
        return
    dtype = light.dtype
    weights = bary.to(dtype)[:, None, :]                                                  # (P, 1, 3)
    corners = triangles.index_select(0, t).reshape(-1)
    shade = torch.bmm(weights, light.index_select(0, corners).reshape(-1, 3, 3))[:, 0]      # (P, 3)
    uv = torch.bmm(weights, corner_uv.to(dtype).index_select(0, t))[:, 0]                  # (P, 2)
    if bilinear:
        colour = sample_texture(texture.to(dtype), uv)
    else:
        col = (uv[:, 0] * tex_w).long().clamp(0, tex_w - 1)
        row = ((1.0 - uv[:, 1]) * tex_h).long().clamp(0, tex_h - 1)
        colour = texels.index_select(0, row * tex_w + col).to(dtype)   # rows: one cache line per texel
    values = (colour * shade).clamp(0.0, 1.0).to(window.dtype).T
    h, w = window.shape[1:]
    flat = window.reshape(3, h * w)  # a copy where the window is a strided view: written back below
    flat[:, covered] = values
    window.copy_(flat.reshape(3, h, w))
