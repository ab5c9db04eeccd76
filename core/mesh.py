"""Triangle-mesh helpers shared by fitting, rendering and rigs: normals, one-ring neighbours,
vertex smoothing, and triangles restricted to a vertex subset.

Meshes are batched vertices (B, V, 3) with triangles (F, 3) int64 shared by the batch,
counter-clockwise seen from outside (docs/conventions.md).
"""
from __future__ import annotations

from typing import Tuple

import torch

from core.checks import check_shape, check_triangles

__all__ = ["vertex_normals", "face_normals", "vertex_neighbours", "subset_index", "triangles_within"]


def face_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unnormalised triangle normals ``(v1 - v0) x (v2 - v0)``; length is twice the area.

    Shape:
        - vertices: (B, V, 3)
        - triangles: (F, 3)
        - output: (B, F, 3)
    """
    v0, v1, v2 = (vertices[:, triangles[:, i]] for i in range(3))
    return torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (the sum of incident triangle normals, normalised).

    Triangles are counter-clockwise seen from outside, so normals point out of the surface.
    Vertices in no triangle get a zero normal.

    Shape:
        - vertices: (B, V, 3)
        - triangles: (F, 3) int64
        - output: (B, V, 3)
    """
    check_shape("vertices", vertices, (None, None, 3))
    check_triangles(triangles, vertices.shape[1])
    fn = face_normals(vertices, triangles)
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals = normals.index_add(1, triangles[:, i], fn)
    return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)


# ------------------------------------------------------------------ deformation transfer
def vertex_neighbours(triangles: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """Padded one-ring neighbour table of a triangle mesh.

    Shape:
        triangles (F, 3) -> (V, D) int64, padded with -1 (D = the largest vertex degree).
    """
    t = triangles.long()
    edges = torch.cat([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    edges = torch.unique(torch.cat([edges, edges.flip(1)]), dim=0)  # sorted by first column
    counts = torch.bincount(edges[:, 0], minlength=n_vertices)
    width = int(counts.max()) if len(counts) else 0
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(len(edges)) - starts[edges[:, 0]]
    table = torch.full((n_vertices, max(width, 1)), -1, dtype=torch.long)
    table[edges[:, 0], slot] = edges[:, 1]
    return table


def subset_index(vertex_ids: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """Position of each of ``n_vertices`` vertices in the subset ``vertex_ids``, -1 outside it.

    Shape:
        vertex_ids (M,) -> (n_vertices,) int64.
    """
    index = torch.full((n_vertices,), -1, dtype=torch.long)
    index[vertex_ids.long()] = torch.arange(len(vertex_ids))
    return index


def triangles_within(triangles: torch.Tensor, index: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The triangles whose three corners lie in a vertex subset (``index`` from `subset_index`).

    Shape:
        triangles (F, 3) -> corners renumbered into the subset (T, 3), kept triangles (F,) bool.

    Example:
        >>> tris = torch.tensor([[0, 1, 2], [1, 2, 3]])
        >>> triangles_within(tris, subset_index(torch.tensor([1, 2, 3]), 4))
        (tensor([[0, 1, 2]]), tensor([False,  True]))
    """
    renumbered = index[triangles.long()]
    keep = (renumbered >= 0).all(dim=1)
    return renumbered[keep], keep
