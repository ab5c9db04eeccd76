"""Z-buffer rasterization into fragments, vertex visibility, and shaders that consume fragments.

Two small parts, as in PyTorch3D: ``rasterize`` finds, per pixel centre, the nearest triangle
(larger depth is nearer, docs/conventions.md) and returns ``Fragments``; the shaders turn
fragments into images. The triangle search is a discrete z-buffer (Cython kernel
``core._rasterize``, or its NumPy twin when the extension is not built, with identical results).
When the vertices require grad, barycentric coordinates and depth are recomputed in torch from
the triangle ids, so they are differentiable with respect to the vertex positions (not across
triangle boundaries).

Screen vertices are ``(u, v, depth)`` as ``core.camera.weak_perspective_screen`` /
``perspective_screen`` return them. Barycentrics are screen-space (exact for weak perspective).
Rendered images are ``(B, C, H, W)`` float tensors, as networks take images.
"""

from __future__ import annotations

import logging
import math
from typing import NamedTuple

import numpy as np
import torch

from core.camera import _check_batch, _check_shape
from core.lighting import SH_CONSTANT, _check_triangles, face_normals, sh_shading, vertex_normals

__all__ = [
    "Fragments",
    "rasterize",
    "front_facing",
    "vertex_visibility",
    "interpolate",
    "default_sh",
    "render_flat",
    "render_vertex_colors",
    "render_shaded",
    "render_normals",
    "render_depth",
    "composite",
    "render_overlay",
]

logger = logging.getLogger(__name__)

try:
    from core import _rasterize as _kernel
except ImportError:  # extension not built: the NumPy twin is used
    _kernel = None

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
    """Vectorised twin of ``core._rasterize.zbuffer``: same arithmetic, same tie-breaking."""
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


def _select_backend(backend: str) -> str:
    """Resolve 'auto' and check that the requested backend exists."""
    global _warned_fallback
    if backend not in ("auto", "cython", "numpy"):
        raise ValueError(f"backend: expected 'auto', 'cython' or 'numpy', got {backend!r}")
    if backend == "cython" and _kernel is None:
        raise RuntimeError("backend='cython': the extension core._rasterize is not built; run "
                           "`python setup.py build_ext --inplace` in the repository root")
    if backend == "auto":
        if _kernel is not None:
            return "cython"
        if not _warned_fallback:
            logger.warning("core._rasterize is not built; rasterizing with the slower NumPy "
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
    _check_shape("vertices_px", vertices_px, (None, None, 3))
    _check_triangles(triangles, vertices_px.shape[1])
    if int(height) <= 0 or int(width) <= 0:
        raise ValueError(f"height, width: expected positive image size, got {height}x{width}")
    backend = _select_backend(backend)
    kernel = _kernel.zbuffer if backend == "cython" else _zbuffer_numpy
    tris = triangles.detach().cpu().numpy().astype(np.int64, copy=False)
    tris = np.ascontiguousarray(tris)
    verts = vertices_px.detach().cpu().numpy().astype(np.float64)
    results = [kernel(np.ascontiguousarray(v), tris, int(height), int(width),
                      bool(cull_backfaces)) for v in verts]
    # Conversions in NumPy (single-threaded): cheap, and immune to a busy second core.
    np_dtype = torch.empty(0, dtype=vertices_px.dtype).numpy().dtype
    tri_id, bary, depth = (torch.from_numpy(np.stack(r).astype(dtype, copy=False))
                           .to(vertices_px.device)
                           for r, dtype in zip(zip(*results), (np.int64, np_dtype, np_dtype)))
    if vertices_px.requires_grad and torch.is_grad_enabled():
        bary, depth = _barycentrics(vertices_px, triangles.to(vertices_px.device), tri_id)
    return Fragments(tri_id, bary, depth)


def front_facing(vertices_px: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Back-face test: True for triangles whose outside faces the camera.

    Triangles are counter-clockwise seen from outside (docs/conventions.md); with v pointing
    down, a triangle facing the camera has a negative signed area in (u, v). Exact for both
    weak-perspective and pinhole screen coordinates.

    Shape:
        - vertices_px: (B, V, 3)
        - triangles: (F, 3)
        - output: (B, F) bool
    """
    _check_shape("vertices_px", vertices_px, (None, None, 3))
    _check_triangles(triangles, vertices_px.shape[1])
    screen = vertices_px.clone()
    screen[..., 2] = 0
    return face_normals(screen, triangles)[..., 2] < 0


def vertex_visibility(vertices_px: torch.Tensor, triangles: torch.Tensor,
                      fragments: Fragments | tuple[int, int], tol: float = 1.0,
                      front_facing_only: bool = True, backend: str = "auto") -> torch.Tensor:
    """Which vertices the camera sees.

    A vertex is visible when it projects inside the image, (with ``front_facing_only``) at
    least one of its triangles faces the camera, and at its nearest pixel either one of its own
    triangles is drawn or the depth buffer is not nearer than the vertex by more than ``tol``
    (the first condition keeps vertices on steep but unoccluded surfaces, where the depth at the
    pixel centre differs from the vertex's by more than any fixed tolerance).

    Args:
        vertices_px: screen vertices (u, v, depth).
        triangles: vertex indices.
        fragments: the rasterization of these vertices, or ``(height, width)`` to rasterize here.
        tol: depth tolerance in the unit of ``vertices_px[..., 2]`` (pixels for weak
            perspective, mm for pinhole screens).
        front_facing_only: also require a camera-facing incident triangle, so that vertices on
            the far side of a silhouette count as hidden.
        backend: rasterizer backend when ``fragments`` is a size.

    Shape:
        - vertices_px: (B, V, 3)
        - triangles: (F, 3)
        - output: (B, V) bool
    """
    if not isinstance(fragments, Fragments):
        height, width = fragments
        fragments = rasterize(vertices_px, triangles, height, width, backend=backend)
    _check_shape("vertices_px", vertices_px, (None, None, 3))
    _check_batch(vertices_px.shape[0], fragments=fragments.depth)
    batch, n_vertices = vertices_px.shape[:2]
    height, width = fragments.depth.shape[1:]
    with torch.no_grad():
        verts = vertices_px.detach()
        col, row = torch.round(verts[..., 0]), torch.round(verts[..., 1])
        inside = (col >= 0) & (col <= width - 1) & (row >= 0) & (row <= height - 1)
        flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).long()
        tri = torch.gather(fragments.tri_id.reshape(batch, -1).to(flat.device), 1, flat)
        zbuf = torch.gather(fragments.depth.reshape(batch, -1).to(flat.device), 1, flat)
        ids = torch.arange(n_vertices, device=flat.device)
        own = (triangles.to(flat.device)[tri.clamp(min=0)] == ids[:, None]).any(-1) & (tri >= 0)
        visible = inside & (own | (verts[..., 2] >= zbuf - tol))
        if front_facing_only:
            facing = front_facing(vertices_px.detach(), triangles).to(torch.int64)  # (B, F)
            count = torch.zeros(batch, n_vertices, dtype=torch.int64, device=facing.device)
            for i in range(3):
                count.index_add_(1, triangles[:, i].to(facing.device), facing)
            visible &= count.to(visible.device) > 0
    return visible


def interpolate(fragments: Fragments, triangles: torch.Tensor, attributes: torch.Tensor
                ) -> torch.Tensor:
    """Interpolate per-vertex attributes at every pixel with the fragments' barycentrics.

    Shape:
        - attributes: (B, V, C)
        - output: (B, H, W, C), zeros on background
    """
    _check_shape("attributes", attributes, (fragments.tri_id.shape[0], None, None))
    batch, height, width = fragments.tri_id.shape
    corner_ids = triangles.to(attributes.device)[fragments.tri_id.clamp(min=0).reshape(batch, -1)]
    channels = attributes.shape[-1]
    values = torch.gather(attributes, 1, corner_ids.reshape(batch, -1, 1).expand(-1, -1, channels))
    values = values.reshape(batch, -1, 3, channels)
    out = (values * fragments.bary.reshape(batch, -1, 3, 1).to(values.dtype)).sum(2)
    return out.reshape(batch, height, width, channels)


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
    _check_shape("normals", normals, (fragments.tri_id.shape[0], None, 3))
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
    batch, height, width = fragments.tri_id.shape
    n = _pixel_normals(fragments, triangles, normals)
    if sh is None:
        sh = default_sh(batch, dtype=n.dtype, device=n.device)
    light = sh_shading(n.reshape(batch, -1, 3), sh).reshape(batch, height, width, 3)
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
    _check_shape("background", background, tuple(render.shape))
    _check_shape("mask", mask, (render.shape[0], *render.shape[2:]))
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
    _check_shape("image", image, (vertices_px.shape[0], 3, None, None))
    height, width = image.shape[-2:]
    fragments = rasterize(vertices_px, triangles, height, width, backend=backend,
                          cull_backfaces=True)
    if normals is None:
        sign = torch.tensor([1.0, -1.0, 1.0], dtype=vertices_px.dtype, device=vertices_px.device)
        normals = vertex_normals(vertices_px * sign, triangles)
    shaded = render_shaded(fragments, triangles, normals, albedo=albedo, sh=sh)
    return composite(shaded.to(image.dtype), fragments.mask, image, alpha)
