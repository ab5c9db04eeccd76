"""Triangle-mesh helpers shared by fitting, rendering and rigs: normals, one-ring neighbours,
vertex smoothing, and triangles restricted to a vertex subset.

Meshes are batched vertices (B, V, 3) with triangles (F, 3) int64 shared by the batch,
counter-clockwise seen from outside (docs/conventions.md).
"""
from __future__ import annotations

import warnings
from typing import NamedTuple, Tuple

import torch
from torch import Tensor

from core.cache import StoredResults
from core.checks import check_shape, check_triangles

__all__ = ["vertex_normals", "face_normals", "PatchNormals", "vertex_neighbours", "subset_index",
           "triangles_within"]


def face_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Unnormalised triangle normals ``(v1 - v0) x (v2 - v0)``; length is twice the area.

    Shape:
        - vertices: (B, V, 3)
        - triangles: (F, 3)
        - output: (B, F, 3)
    """
    v0, v1, v2 = (vertices.index_select(1, triangles[:, i]) for i in range(3))  # [:, t[:, i]], 3x quicker
    return torch.stack(_cross_parts((v1 - v0).unbind(-1), (v2 - v0).unbind(-1)), -1)


def _cross_parts(a, b):
    """Components of ``a x b`` from the components of ``a`` and ``b`` (elementwise, any shape; several
    times faster than ``torch.linalg.cross`` on CPU)."""
    return a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]


class _MeshOperators(NamedTuple):
    """Sparse CSR matrices of a triangle set acting on per-vertex rows: the two edges of each triangle
    (``v1 - v0``, ``v2 - v0``: (F, V)), the sum over each vertex's triangles ((V, F)), and their
    transposes (the backward products)."""

    edge1: Tensor
    edge1_t: Tensor
    edge2: Tensor
    edge2_t: Tensor
    corner_sum: Tensor
    corner_sum_t: Tensor

    def __reduce__(self):
        # Pickled (`core.cache.StoredResults`) as their dense parts: unpickled sparse tensors would
        # wait in torch's list of tensors to validate, and warn at the process's next torch.load.
        return _operators_from_parts, tuple((m.crow_indices(), m.col_indices(), m.values(), tuple(m.shape))
                                            for m in self)


def _operators_from_parts(*parts: Tuple[Tensor, Tensor, Tensor, Tuple[int, int]]) -> _MeshOperators:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used for CSR @ dense only
        warnings.simplefilter("ignore")
        return _MeshOperators(*(torch.sparse_csr_tensor(*part) for part in parts))


_OPERATORS: StoredResults[_MeshOperators] = StoredResults(8, "mesh-operators")  # by (vertex count, triangles)
_NEIGHBOURS: StoredResults[torch.Tensor] = StoredResults(8, "one-rings")  # by (triangles, vertex count)


def _csr(rows: Tensor, cols: Tensor, values: Tensor, shape: Tuple[int, int]) -> Tuple[Tensor, Tensor]:
    """A sparse CSR matrix and its transpose from coordinates (duplicates summed)."""
    with warnings.catch_warnings():  # "sparse CSR support is in beta": used for CSR @ dense only
        warnings.simplefilter("ignore")
        return _sorted_csr(rows, cols, values, shape), _sorted_csr(cols, rows, values, (shape[1], shape[0]))


def _sorted_csr(rows: Tensor, cols: Tensor, values: Tensor, shape: Tuple[int, int]) -> Tensor:
    """CSR from coordinates, entries in (row, column) order: the matrix ``coalesce().to_sparse_csr()``
    makes, by one sort of distinct keys (several times faster); duplicates go the coalescing way."""
    key, order = torch.sort(rows * shape[1] + cols)
    if len(key) > 1 and bool((key[1:] == key[:-1]).any()):
        return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape).coalesce().to_sparse_csr()
    crow = torch.zeros(shape[0] + 1, dtype=torch.long)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=shape[0]), 0)
    return torch.sparse_csr_tensor(crow, cols[order], values[order], shape)


def _build_operators(corners: Tensor, n_points: int, targets: Tensor, n_targets: int) -> _MeshOperators:
    """`_MeshOperators` of triangles whose ``corners`` (T, 3) are rows of ``n_points`` points, summing
    each corner's triangle normal into row ``targets`` (T, 3) of ``n_targets`` (-1: not summed)."""
    n_faces = len(corners)
    faces = torch.arange(n_faces)
    signs = torch.cat([torch.ones(n_faces), -torch.ones(n_faces)])
    edge1 = _csr(faces.repeat(2), torch.cat([corners[:, 1], corners[:, 0]]), signs, (n_faces, n_points))
    edge2 = _csr(faces.repeat(2), torch.cat([corners[:, 2], corners[:, 0]]), signs, (n_faces, n_points))
    keep = targets >= 0
    corner_sum = _csr(targets[keep], faces[:, None].expand(-1, 3)[keep], torch.ones(int(keep.sum())),
                      (n_targets, n_faces))
    return _MeshOperators(*edge1, *edge2, *corner_sum)


def _mesh_operators(triangles: Tensor, n_vertices: int) -> _MeshOperators:
    """`_MeshOperators` of a whole mesh, kept for the last few triangle sets (found by their values:
    a rig's head triangles are a new tensor each time they are asked for) and on disk (a model's
    meshes are the same in every run)."""
    t = triangles.detach().long().cpu()
    return _OPERATORS.recall((int(n_vertices), t), lambda: _build_operators(t, n_vertices, t, n_vertices))


class _SparseRows(torch.autograd.Function):
    """``matrix @ rows`` (a sparse CSR matrix on dense rows) with ``transposed @ grad`` as backward."""

    @staticmethod
    def forward(ctx, rows: Tensor, matrix: Tensor, transposed: Tensor) -> Tensor:  # type: ignore[override]
        ctx.transposed = transposed
        return matrix.to(rows.dtype) @ rows

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        return ctx.transposed.to(grad.dtype) @ grad.contiguous(), None, None


def vertex_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted unit vertex normals (the sum of incident triangle normals, normalised).

    Triangles are counter-clockwise seen from outside, so normals point out of the surface.
    Vertices in no triangle get a zero normal. On the CPU the triangles' edges and the sums over
    each vertex's triangles are sparse products on rows of ``3B`` values (`_MeshOperators`, built
    once per triangle set and cached), several times faster than gathers and ``index_add``
    scatters, forward and backward; differentiable.

    Shape:
        - vertices: (B, V, 3)
        - triangles: (F, 3) int64
        - output: (B, V, 3)
    """
    check_shape("vertices", vertices, (None, None, 3))
    check_triangles(triangles, vertices.shape[1])
    batch, n_vertices = vertices.shape[:2]
    if vertices.device.type != "cpu" or not len(triangles) or not vertices.dtype.is_floating_point \
            or vertices.dtype in (torch.float16, torch.bfloat16):
        fn = face_normals(vertices, triangles)
        normals = torch.zeros_like(vertices)
        for i in range(3):
            normals = normals.index_add(1, triangles[:, i], fn)
        return torch.nn.functional.normalize(normals, dim=-1, eps=1e-12)
    return _summed_normals(vertices, _mesh_operators(triangles, n_vertices))


def _summed_normals(points: Tensor, ops: _MeshOperators) -> Tensor:
    """Unit sums of triangle normals through `_MeshOperators` (points (B, N, 3) -> (B, M, 3))."""
    batch, n_points = points.shape[:2]
    rows = points.permute(1, 0, 2).reshape(n_points, 3 * batch)
    e1 = _SparseRows.apply(rows, ops.edge1, ops.edge1_t).reshape(-1, batch, 3).unbind(-1)
    e2 = _SparseRows.apply(rows, ops.edge2, ops.edge2_t).reshape(-1, batch, 3).unbind(-1)
    per_face = torch.stack(_cross_parts(e1, e2), -1).reshape(-1, 3 * batch)
    summed = _SparseRows.apply(per_face, ops.corner_sum, ops.corner_sum_t).reshape(-1, batch, 3)
    return torch.nn.functional.normalize(summed.permute(1, 0, 2), dim=-1, eps=1e-12)


class PatchNormals:
    """Unit vertex normals of some of a mesh's vertices (a patch), for many evaluations.

    `vertex_normals` restricted to ``vertex_ids``: each normal sums the triangles incident to its
    vertex, so only those triangles and their corners (``support``) are needed; the sparse operators
    are built once here (an optimiser's closure then pays only the products).

    Attributes:
        vertex_ids: (U,) the patch's vertices (distinct mesh ids, as given).
        support: (N,) mesh ids of the vertices whose positions a call takes: ``vertex_ids`` first
            (rows 0 to U - 1), then the other corners of their triangles, sorted.
        triangles: (T, 3) the triangles incident to the patch, as rows of ``support``.
        targets: (T, 3) for each of their corners, its row in the patch, or -1 outside it.

    Example:
        >>> tris = torch.tensor([[0, 1, 2], [0, 2, 3], [3, 2, 4]])
        >>> patch = PatchNormals(tris, torch.tensor([0]), 5)
        >>> patch.support.tolist()
        [0, 1, 2, 3]
        >>> verts = torch.tensor([[[0., 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [2, 2, 1]]])
        >>> patch(verts[:, patch.support]).tolist()
        [[[0.0, 0.0, 1.0]]]
    """

    def __init__(self, triangles: Tensor, vertex_ids: Tensor, n_vertices: int) -> None:
        check_triangles(triangles, n_vertices)
        self.vertex_ids = vertex_ids.long()
        inside = torch.zeros(n_vertices, dtype=torch.bool)
        inside[self.vertex_ids] = True
        incident = triangles[inside[triangles].any(1)].long()
        corners = torch.zeros(n_vertices, dtype=torch.bool)
        corners[incident.reshape(-1)] = True
        corners[self.vertex_ids] = False
        self.support = torch.cat([self.vertex_ids, torch.nonzero(corners)[:, 0]])
        self.triangles = subset_index(self.support, n_vertices)[incident]  # (T, 3) rows of the support
        self.targets = subset_index(self.vertex_ids, n_vertices)[incident]  # (T, 3) patch position or -1
        self._ops = _build_operators(self.triangles, len(self.support), self.targets, len(self.vertex_ids))

    def __call__(self, points: Tensor) -> Tensor:
        """Normals of the patch's vertices from the support's positions (float32 or float64).

        Shape:
            points (B, N, 3) (N = len(support)) -> (B, U, 3), unit, zero for a vertex in no triangle.
        """
        check_shape("points", points, (None, len(self.support), 3))
        return _summed_normals(points, self._ops)


# ------------------------------------------------------------------ deformation transfer
def vertex_neighbours(triangles: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """Padded one-ring neighbour table of a triangle mesh (kept by the triangles' values, in memory and
    on disk: a model's meshes are the same in every run; each call gets its own copy).

    Shape:
        triangles (F, 3) -> (V, D) int64, padded with -1 (D = the largest vertex degree).
    """
    t = triangles.detach().long().cpu()
    return _NEIGHBOURS.recall((t, int(n_vertices)), lambda: _one_rings(t, int(n_vertices))).clone()


def _one_rings(t: torch.Tensor, n_vertices: int) -> torch.Tensor:
    """`vertex_neighbours`' table, computed."""
    edges = torch.cat([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])
    edges = torch.cat([edges, edges.flip(1)])
    keys = torch.unique(edges[:, 0] * n_vertices + edges[:, 1])  # 1-D unique: sorted by (first, second)
    edges = torch.stack([keys // n_vertices, keys % n_vertices], 1)
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
