"""Which vertices a camera sees: back-face tests and z-buffer visibility of mesh vertices."""
from __future__ import annotations

import torch

from core.checks import check_batch, check_shape, check_triangles
from core.mesh import face_normals
from core.render.rasterize import Fragments, zbuffer_depth

__all__ = ["front_facing", "vertex_visibility"]


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
    check_shape("vertices_px", vertices_px, (None, None, 3))
    check_triangles(triangles, vertices_px.shape[1])
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
    if isinstance(fragments, Fragments):
        tri_ids, depths = fragments.tri_id, fragments.depth
    else:  # no barycentrics: only which triangle is nearest at each pixel, and its depth
        tri_ids, depths = zbuffer_depth(vertices_px, triangles, *fragments, backend=backend)
    check_shape("vertices_px", vertices_px, (None, None, 3))
    check_batch(vertices_px.shape[0], fragments=depths)
    batch, n_vertices = vertices_px.shape[:2]
    height, width = depths.shape[1:]
    with torch.no_grad():
        verts = vertices_px.detach()
        col, row = torch.round(verts[..., 0]), torch.round(verts[..., 1])
        inside = (col >= 0) & (col <= width - 1) & (row >= 0) & (row <= height - 1)
        flat = (row.clamp(0, height - 1) * width + col.clamp(0, width - 1)).long()
        tri = torch.gather(tri_ids.reshape(batch, -1).to(flat.device), 1, flat)
        zbuf = torch.gather(depths.reshape(batch, -1).to(flat.device), 1, flat)
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
