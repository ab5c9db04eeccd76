"""Z-buffer rasterization into fragments (per pixel: triangle id, barycentrics, depth).

Two small parts, as in PyTorch3D: `rasterize` finds, per pixel centre, the nearest triangle
(larger depth is nearer, docs/conventions.md) and returns `Fragments`; the shaders of
`core.render.shade` turn fragments into images. The triangle search is a discrete z-buffer
(Cython kernel ``core.render._rasterize``, or its NumPy twin when the extension is not built, with
identical results; tests compare both with a per-pixel exact-arithmetic reference). When the
vertices require grad, barycentric coordinates and depth are recomputed in torch from the triangle
ids, so they are differentiable with respect to the vertex positions (not across triangle
boundaries).

Screen vertices are ``(u, v, depth)`` as `core.camera.WeakPerspective.screen` /
`core.camera.perspective_screen` return them. Barycentrics are screen-space (exact for weak
perspective).
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import numpy as np
import torch

from core.checks import check_shape, check_triangles
from core.cpus import parallel_map

__all__ = ["Fragments", "rasterize", "zbuffer_depth", "interpolate", "kernel_built"]

logger = logging.getLogger(__name__)

try:
    from core.render import _rasterize as _kernel
except ImportError:  # extension not built: the NumPy twin is used
    _kernel = None

# An extension built before the interpolation kernel existed still rasterizes; interpolate then runs in torch.
_INTERPOLATE_KERNEL = _kernel is not None and hasattr(_kernel, "interpolate_covered")
_warned_fallback = False
# Candidate (triangle, pixel) pairs evaluated at once by the NumPy twin; bounds its memory.
_NUMPY_CHUNK = 1 << 21


class Fragments(NamedTuple):
    """Per-pixel rasterization result.

    Shape:
        - tri_id: (B, H, W) int64, index into the triangles, -1 on background
        - bary: (B, H, W, 3) barycentric weights of the triangle's corners, 0 on background
        - depth: (B, H, W) interpolated depth (larger is nearer), -inf on background
    """

    tri_id: torch.Tensor
    bary: torch.Tensor
    depth: torch.Tensor

    @property
    def mask(self) -> torch.Tensor:
        """(B, H, W) bool, True where a triangle covers the pixel."""
        return self.tri_id >= 0


def _zbuffer_numpy(vertices: np.ndarray, triangles: np.ndarray, height: int, width: int,
                   cull_backfaces: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised twin of ``core.render._rasterize.zbuffer``: same arithmetic, same tie-breaking."""
    tri_id = np.full(height * width, -1, dtype=np.int64)
    bary = np.zeros((height * width, 3))
    depth = np.full(height * width, -np.inf)
    corners = vertices[triangles]                                   # (F, 3, 3)
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = corners.reshape(-1, 9).T
    with np.errstate(invalid="ignore"):
        area = (x1 - x0) * (y2 - y0) - (y1 - y0) * (x2 - x0)
        keep = np.isfinite(corners).all(axis=(1, 2)) & (area != 0.0)
        if cull_backfaces:
            keep &= ~(area > 0.0)
        umin, umax = corners[:, :, 0].min(1), corners[:, :, 0].max(1)
        vmin, vmax = corners[:, :, 1].min(1), corners[:, :, 1].max(1)
        keep &= ~((umax < 0) | (vmax < 0) | (umin > width - 1) | (vmin > height - 1))
    faces = np.flatnonzero(keep)
    j0 = np.maximum(np.ceil(umin[faces]), 0).astype(np.int64)
    j1 = np.minimum(np.floor(umax[faces]), width - 1).astype(np.int64)
    i0 = np.maximum(np.ceil(vmin[faces]), 0).astype(np.int64)
    i1 = np.minimum(np.floor(vmax[faces]), height - 1).astype(np.int64)
    n_cols = np.maximum(j1 - j0 + 1, 0)
    counts = n_cols * np.maximum(i1 - i0 + 1, 0)
    ends = np.cumsum(counts)
    start = 0
    while start < len(faces):
        # Largest run of triangles whose candidate pixels fit in one chunk (at least one).
        stop = max(int(np.searchsorted(ends, ends[start] - counts[start] + _NUMPY_CHUNK,
                                       side="right")), start + 1)
        sel = slice(start, stop)
        n = counts[sel]
        local = np.repeat(np.arange(stop - start), n)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        cols = n_cols[sel][local]
        px = (j0[sel][local] + k % np.maximum(cols, 1)).astype(np.float64)
        py = (i0[sel][local] + k // np.maximum(cols, 1)).astype(np.float64)
        f = faces[sel][local]
        ax, ay, az, bx, by, bz, cx, cy, cz, ar = (
            q[f] for q in (x0, y0, z0, x1, y1, z1, x2, y2, z2, area))
        w0 = ((cx - bx) * (py - by) - (cy - by) * (px - bx)) / ar
        w1 = ((ax - cx) * (py - cy) - (ay - cy) * (px - cx)) / ar
        w2 = ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / ar
        inside = (w0 >= 0.0) & (w1 >= 0.0) & (w2 >= 0.0)
        z = (w0 * az + w1 * bz + w2 * cz)[inside]
        weights = np.stack([w0[inside], w1[inside], w2[inside]], axis=-1)
        pix = (py[inside] * width + px[inside]).astype(np.int64)
        f = f[inside]
        # Per pixel: largest depth, then lowest triangle index (the kernel's strict '>').
        order = np.lexsort((f, -z, pix))
        first = np.ones(len(order), dtype=bool)
        first[1:] = pix[order][1:] != pix[order][:-1]
        win = order[first]
        win = win[z[win] > depth[pix[win]]]
        depth[pix[win]] = z[win]
        tri_id[pix[win]] = f[win]
        bary[pix[win]] = weights[win]
        start = stop
    return tri_id.reshape(height, width), bary.reshape(height, width, 3), \
        depth.reshape(height, width)


def kernel_built() -> bool:
    """Whether the compiled z-buffer kernel is available (else the NumPy twin is used)."""
    return _kernel is not None


def _select_backend(backend: str) -> str:
    """Resolve 'auto' and check that the requested backend exists."""
    global _warned_fallback
    if backend not in ("auto", "cython", "numpy"):
        raise ValueError(f"backend: expected 'auto', 'cython' or 'numpy', got {backend!r}")
    if backend == "cython" and _kernel is None:
        raise RuntimeError("backend='cython': the extension core.render._rasterize is not built; run "
                           "`python setup.py build_ext --inplace` in the repository root")
    if backend == "auto":
        if _kernel is not None:
            return "cython"
        if not _warned_fallback:
            logger.warning("core.render._rasterize is not built; rasterizing with the slower NumPy "
                           "fallback (build it with `python setup.py build_ext --inplace`)")
            _warned_fallback = True
        return "numpy"
    return backend


def _barycentrics(vertices_px: torch.Tensor, triangles: torch.Tensor, tri_id: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable screen-space barycentrics and depth at the pixel centres of ``tri_id``."""
    batch, height, width = tri_id.shape
    n_vertices = vertices_px.shape[1]
    flat_id = tri_id.reshape(-1)
    covered = torch.nonzero(flat_id >= 0)[:, 0]                     # flat (b, row, col) index
    image, pixel = covered // (height * width), covered % (height * width)
    corner_ids = triangles[flat_id[covered]] + (image * n_vertices)[:, None]
    a, b, c = vertices_px.reshape(-1, 3)[corner_ids].unbind(1)      # (P, 3) each
    px = (pixel % width).to(vertices_px.dtype)
    py = (pixel // width).to(vertices_px.dtype)
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    w0 = (c[:, 0] - b[:, 0]) * (py - b[:, 1]) - (c[:, 1] - b[:, 1]) * (px - b[:, 0])
    w1 = (a[:, 0] - c[:, 0]) * (py - c[:, 1]) - (a[:, 1] - c[:, 1]) * (px - c[:, 0])
    weights = torch.stack([w0, w1, area - w0 - w1], dim=-1) / area[:, None]
    z = (weights * torch.stack([a[:, 2], b[:, 2], c[:, 2]], dim=-1)).sum(-1)
    bary = vertices_px.new_zeros(batch * height * width, 3).index_put((covered,), weights)
    depth = vertices_px.new_full((batch * height * width,), -float("inf")).index_put(
        (covered,), z)
    return bary.reshape(batch, height, width, 3), depth.reshape(batch, height, width)


def _zbuffers(vertices_px: torch.Tensor, triangles: torch.Tensor, height: int, width: int, backend: str,
              cull_backfaces: bool, barycentrics: bool = True
              ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """The kernel's (or its twin's) tri_id, bary (None unless ``barycentrics``) and depth of every
    image, in the vertices' dtype: one image per thread (the kernel releases the GIL), each thread
    also copying its image's results into the batch's arrays (no stacking pass afterwards).

    Shape:
        vertices_px (B, V, 3); triangles (F, 3) -> (B, H, W) int64, (B, H, W, 3) or None, (B, H, W).
    """
    check_shape("vertices_px", vertices_px, (None, None, 3))
    check_triangles(triangles, vertices_px.shape[1])
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height, width: expected positive image size, got {height}x{width}")
    height, width = int(height), int(width)
    kernel = _kernel.zbuffer if _select_backend(backend) == "cython" else _zbuffer_numpy
    tris = np.ascontiguousarray(triangles.detach().cpu().numpy().astype(np.int64, copy=False))
    verts = vertices_px.detach().cpu().numpy().astype(np.float64)
    dtype = torch.empty(0, dtype=vertices_px.dtype).numpy().dtype
    if len(verts) == 1:  # one image (a video frame's render): viewed with its batch axis, not copied
        tri_id, bary, depth = kernel(np.ascontiguousarray(verts[0]), tris, height, width,
                                     bool(cull_backfaces))
        outputs = [tri_id[None], bary[None].astype(dtype, copy=False) if barycentrics else None,
                   depth[None].astype(dtype, copy=False)]
    else:
        outputs = [np.empty((len(verts), height, width), np.int64),
                   np.empty((len(verts), height, width, 3), dtype) if barycentrics else None,
                   np.empty((len(verts), height, width), dtype)]

        def one(b: int) -> None:
            for out, result in zip(outputs, kernel(np.ascontiguousarray(verts[b]), tris, height, width,
                                                   bool(cull_backfaces))):
                if out is not None:
                    out[b] = result

        parallel_map(one, range(len(verts)))
    tri_id, bary, depth = (None if a is None else torch.from_numpy(a).to(vertices_px.device) for a in outputs)
    return tri_id, bary, depth


def zbuffer_depth(vertices_px: torch.Tensor, triangles: torch.Tensor, height: int, width: int,
                  backend: str = "auto", cull_backfaces: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """`rasterize`'s ``tri_id`` and ``depth`` alone (the same values), for callers that read no
    barycentrics, such as visibility tests: the largest of the three arrays is never gathered.

    Shape:
        vertices_px (B, V, 3); triangles (F, 3) -> tri_id (B, H, W) int64, depth (B, H, W).
    """
    tri_id, _, depth = _zbuffers(vertices_px, triangles, height, width, backend, cull_backfaces,
                                 barycentrics=False)
    return tri_id, depth


def rasterize(vertices_px: torch.Tensor, triangles: torch.Tensor, height: int, width: int,
              backend: str = "auto", cull_backfaces: bool = False) -> Fragments:
    """Z-buffer rasterization of triangle meshes at pixel centres.

    Args:
        vertices_px: screen vertices (u, v, depth): pixels, depth larger = nearer.
        triangles: vertex indices, shared by the batch.
        height, width: image size; pixel (row i, col j) is sampled at u = j, v = i.
        backend: 'cython' (compiled kernel), 'numpy' (fallback twin) or 'auto' (the kernel when
            built, else the fallback with one logged warning).
        cull_backfaces: ignore triangles seen from behind (see ``front_facing``).

    Returns:
        Fragments; when ``vertices_px`` requires grad, bary and depth are recomputed in torch
        from the triangle ids and carry gradients to it.

    Shape:
        - vertices_px: (B, V, 3)
        - triangles: (F, 3) int64
        - output: Fragments with (B, H, W) tri_id and depth, (B, H, W, 3) bary
    """
    tri_id, bary, depth = _zbuffers(vertices_px, triangles, height, width, backend, cull_backfaces)
    if vertices_px.requires_grad and torch.is_grad_enabled():
        bary, depth = _barycentrics(vertices_px, triangles.to(vertices_px.device), tri_id)
    return Fragments(tri_id, bary, depth)


def _interpolate_kernel(fragments: Fragments, triangles: torch.Tensor, attributes: torch.Tensor) -> torch.Tensor:
    """`interpolate` by the compiled kernel (one pass over the pixels; the same sums in the same order)."""
    tris = np.ascontiguousarray(triangles.detach().cpu().numpy().astype(np.int64, copy=False))
    if tris.size and (tris.min() < 0 or tris.max() >= attributes.shape[1]):
        raise ValueError(f"triangles: indices must lie in [0, {attributes.shape[1]}), got "
                         f"[{tris.min()}, {tris.max()}]")
    tri_id = np.ascontiguousarray(fragments.tri_id.cpu().numpy().astype(np.int64, copy=False))
    if tri_id.size and tri_id.max() >= len(tris):
        raise ValueError(f"fragments: triangle ids up to {tri_id.max()} for {len(tris)} triangles")
    dtype = torch.empty(0, dtype=attributes.dtype).numpy().dtype
    bary = np.ascontiguousarray(fragments.bary.detach().cpu().numpy().astype(dtype, copy=False))
    values = np.ascontiguousarray(attributes.detach().cpu().numpy())
    return torch.from_numpy(_kernel.interpolate_covered(tri_id, bary, tris, values))


def interpolate(fragments: Fragments, triangles: torch.Tensor, attributes: torch.Tensor
                ) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Only covered pixels are computed (the background stays zero): by the compiled kernel where no
    gradient is needed, else in torch from contiguous rows of the attributes (differentiable in
    the attributes and the barycentrics); both sum the same products in the same order.

    Shape:
        - attributes: (B, V, C)
        - output: (B, H, W, C), zeros on background
    """
    check_shape("attributes", attributes, (fragments.tri_id.shape[0], None, None))
    batch, height, width = fragments.tri_id.shape
    n_vertices, channels = attributes.shape[1:]
    needs_grad = torch.is_grad_enabled() and (attributes.requires_grad or fragments.bary.requires_grad)
    if _INTERPOLATE_KERNEL and not needs_grad and attributes.device.type == "cpu" \
            and attributes.dtype in (torch.float32, torch.float64):
        return _interpolate_kernel(fragments, triangles, attributes)
    flat_id = fragments.tri_id.reshape(-1)
    covered = torch.nonzero(flat_id >= 0)[:, 0]
    offset = torch.div(covered, height * width, rounding_mode="floor") * n_vertices
    corners = triangles.to(attributes.device).index_select(0, flat_id.index_select(0, covered))  # (P, 3)
    rows = attributes.reshape(-1, channels)
    bary = fragments.bary.reshape(-1, 3).index_select(0, covered).to(attributes.dtype)
    pixels = sum(rows.index_select(0, corners[:, k] + offset) * bary[:, k:k + 1] for k in range(3))
    out = pixels.new_zeros(batch * height * width, channels).index_put((covered,), pixels)
    return out.reshape(batch, height, width, channels)
