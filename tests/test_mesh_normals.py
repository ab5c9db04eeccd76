"""Vertex normals through the sparse incidence operators, and of a vertex patch: the same values and
gradients as summing triangle normals with ``index_add``; the operator cache notices changed
triangles."""
from __future__ import annotations

import pytest
import torch

import core.mesh as mesh_module
from core.mesh import PatchNormals, face_normals, vertex_normals
from tests.conftest import grid_triangles


def reference_normals(vertices: torch.Tensor, triangles: torch.Tensor) -> torch.Tensor:
    """Area-weighted vertex normals the plain way: triangle normals scattered with index_add."""
    v0, v1, v2 = (vertices[:, triangles[:, i]] for i in range(3))
    fn = torch.linalg.cross(v1 - v0, v2 - v0, dim=-1)
    summed = torch.zeros_like(vertices)
    for i in range(3):
        summed = summed.index_add(1, triangles[:, i], fn)
    return torch.nn.functional.normalize(summed, dim=-1, eps=1e-12)


def grid_mesh(n: int = 12, batch: int = 3, dtype=torch.float64, seed: int = 0):
    """A bumpy n x n grid surface (B, n*n, 3), counter-clockwise triangles, and an unused vertex."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(n, dtype=dtype), torch.arange(n, dtype=dtype), indexing="ij")
    flat = torch.stack([xs, ys, torch.zeros_like(xs)], -1).reshape(-1, 3)
    vertices = flat[None] + 0.3 * torch.randn(batch, n * n, 3, generator=g, dtype=dtype)
    vertices = torch.cat([vertices, torch.zeros(batch, 1, 3, dtype=dtype)], 1)  # last vertex in no triangle
    return vertices, grid_triangles(n, n)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vertex_normals_match_the_index_add_sum(dtype):
    vertices, triangles = grid_mesh(dtype=dtype)
    vertices.requires_grad_(True)
    ours, ref = vertex_normals(vertices, triangles), reference_normals(vertices, triangles)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert torch.allclose(ours, ref, atol=tol)
    assert bool((ours[:, -1] == 0).all())  # the vertex in no triangle
    weights = torch.randn_like(ref)
    g_ours, = torch.autograd.grad((ours * weights).sum(), vertices)
    g_ref, = torch.autograd.grad((ref * weights).sum(), vertices)
    assert torch.allclose(g_ours, g_ref, atol=100 * tol)


def test_vertex_normals_gradcheck_and_face_normals():
    vertices, triangles = grid_mesh(n=4, batch=2)
    points = vertices[:, :-1].clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda v: vertex_normals(v, triangles), (points,))
    square = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [2, 1, 0]]])
    assert face_normals(square, torch.tensor([[0, 1, 2]])).tolist() == [[[0.0, 0.0, 2.0]]]  # 2 x area, +z


def test_operator_cache_follows_changed_triangles():
    vertices, triangles = grid_mesh(batch=1)
    first = vertex_normals(vertices, triangles)
    flipped = triangles.clone()
    flipped[:, [1, 2]] = flipped[:, [2, 1]]  # same shape, other content: normals turn over
    assert torch.allclose(vertex_normals(vertices, flipped), -first, atol=1e-12)
    triangles[:, [1, 2]] = triangles[:, [2, 1]]  # changed in place (same storage)
    assert torch.allclose(vertex_normals(vertices, triangles), -first, atol=1e-12)


def test_patch_normals_are_the_mesh_normals_of_the_patch():
    vertices, triangles = grid_mesh(batch=2)
    n_vertices = vertices.shape[1]
    ids = torch.tensor([40, 3, 77, 12, 13, 143, 100])
    patch = PatchNormals(triangles, ids, n_vertices)
    assert patch.support[:len(ids)].tolist() == ids.tolist()  # the patch's vertices first
    assert len(set(patch.support.tolist())) == len(patch.support) < n_vertices
    points = vertices[:, patch.support].clone().requires_grad_(True)
    ours = patch(points)
    ref = reference_normals(vertices, triangles)[:, ids]
    assert torch.allclose(ours, ref, atol=1e-12)
    weights = torch.randn_like(ours)
    g_ours, = torch.autograd.grad((ours * weights).sum(), points)
    full = vertices.clone().requires_grad_(True)
    g_full, = torch.autograd.grad((reference_normals(full, triangles)[:, ids] * weights).sum(), full)
    assert torch.allclose(g_ours, g_full[:, patch.support], atol=1e-10)
    untouched = torch.ones(n_vertices, dtype=torch.bool)
    untouched[patch.support] = False
    assert bool((g_full[:, untouched] == 0).all())  # nothing outside the support matters


def test_patch_normals_check_their_input():
    vertices, triangles = grid_mesh(batch=1)
    patch = PatchNormals(triangles, torch.tensor([5]), vertices.shape[1])
    with pytest.raises(ValueError, match="points"):
        patch(vertices)


def _coalesced(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(torch.stack([rows, cols]), values, shape).coalesce().to_sparse_csr()


@pytest.mark.parametrize("duplicates", [False, True])
def test_sorted_csr_is_the_coalesced_matrix(duplicates):
    g = torch.Generator().manual_seed(3)
    keys = torch.randperm(40 * 30, generator=g)[:300]
    if duplicates:
        keys = torch.cat([keys, keys[:25]])
    rows, cols = keys // 30, keys % 30
    values = torch.randn(len(keys), generator=g)
    ours = mesh_module._sorted_csr(rows, cols, values, (40, 30))
    ref = _coalesced(rows, cols, values, (40, 30))
    assert torch.equal(ours.crow_indices(), ref.crow_indices())
    assert torch.equal(ours.col_indices(), ref.col_indices())
    assert torch.equal(ours.values(), ref.values())


def test_operator_cache_finds_equal_triangles_in_new_tensors():
    vertices, triangles = grid_mesh()
    n = vertices.shape[1]
    mesh_module._OPERATORS.clear()
    uncached = vertex_normals(vertices, triangles)
    found = mesh_module._mesh_operators(triangles.clone(), n)  # a new tensor, found by its values
    assert found is mesh_module._mesh_operators(triangles, n)
    assert torch.equal(vertex_normals(vertices, triangles.clone()), uncached)
    assert len(mesh_module._OPERATORS) == 1


def test_operators_kept_on_disk_come_back_whole_and_leave_torch_load_quiet(tmp_path):
    """`_MeshOperators` pickle as their dense parts (`core.cache.StoredResults` keeps them on disk):
    the same matrices come back, and no unpickled sparse tensor is left for torch.load to validate."""
    import pickle
    import warnings

    vertices, triangles = grid_mesh()
    built = mesh_module._build_operators(triangles, vertices.shape[1], triangles, vertices.shape[1])
    back = pickle.loads(pickle.dumps(built))
    for ours, theirs in zip(back, built):
        assert ours.layout == torch.sparse_csr and ours.shape == theirs.shape
        assert torch.equal(ours.to_dense(), theirs.to_dense())
    torch.save({"w": torch.ones(2)}, tmp_path / "w.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.load(tmp_path / "w.pt", weights_only=True)
