"""The rig: deformation transfer of the generic expressions, corrective decoder, rig.npz round trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.camera import euler_to_matrix
from core.mesh import vertex_neighbours
from core.rig.rig import CorrectiveBasis, Rig, RigFileError
from core.rig.transfer import local_affine_maps, similarity_part, transfer_deltas
from tests.conftest import grid_triangles


def _grid(n: int = 6):
    """A bumpy n x n height-field patch: vertices (V, 3) and CCW triangles."""
    xs, ys = np.meshgrid(np.arange(n, dtype=float), np.arange(n, dtype=float))
    z = 0.3 * np.sin(xs) * np.cos(ys)
    v = torch.tensor(np.stack([xs.ravel(), ys.ravel(), z.ravel()], 1))
    return v, grid_triangles(n, n)


def test_neighbour_table():
    v, t = _grid(3)
    nb = vertex_neighbours(t, 9)
    centre = sorted(x for x in nb[4].tolist() if x >= 0)
    assert centre == [0, 1, 2, 3, 5, 6, 7, 8] or len(centre) == 6  # depends on the diagonal
    corner = sorted(x for x in nb[0].tolist() if x >= 0)
    assert corner == [1, 3, 4]


def test_neighbour_table_lists_each_vertex_one_ring_in_order():
    import trimesh

    mesh = trimesh.creation.icosphere(subdivisions=2)
    t = torch.tensor(mesh.faces, dtype=torch.int64)
    nb = vertex_neighbours(t, len(mesh.vertices))
    ring = {i: set() for i in range(len(mesh.vertices))}
    for a, b, c in mesh.faces.tolist():
        ring[a] |= {b, c}
        ring[b] |= {a, c}
        ring[c] |= {a, b}
    for i, row in enumerate(nb.tolist()):
        listed = [x for x in row if x >= 0]
        assert listed == sorted(ring[i]) and row[len(listed):] == [-1] * (len(row) - len(listed))


def test_affine_maps_recover_a_global_linear_map():
    v, t = _grid()
    A = torch.tensor([[1.3, 0.2, 0.0], [-0.1, 0.9, 0.1], [0.05, 0.0, 1.1]], dtype=torch.float64)
    maps = local_affine_maps(v, (v @ A.T).unsqueeze(0), t)
    # The normal of the target maps as A^-T, not A, so the one-ring edges are reproduced in the
    # least-squares sense: within 3 % of their length for this moderate shear.
    nb = vertex_neighbours(t, v.shape[0])
    for i in (0, 7, 14, 35):
        for j in nb[i].tolist():
            if j < 0:
                continue
            e = v[j] - v[i]
            assert float((maps[0, i] @ e - A @ e).norm()) < 0.03 * float(e.norm())


def test_similarity_part_drops_shear():
    R = euler_to_matrix(torch.tensor([[0.2, 0.4, -0.1]], dtype=torch.float64))[0]
    shear = torch.tensor([[1.0, 0.8, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    sim = similarity_part(2.0 * R @ shear)
    torch.testing.assert_close(sim, 2.0 * similarity_part(R @ shear))
    torch.testing.assert_close(sim @ sim.T, 4.0 * torch.eye(3, dtype=torch.float64))  # scaled rotation
    assert float(torch.det(sim)) > 0
    torch.testing.assert_close(similarity_part(1.5 * R), 1.5 * R)


def test_similarity_part_is_the_svds_rotation_and_scale():
    """Newton's polar factor gives the SVD's rotation and scale (to float rounding) on maps near a
    rotation, on random maps, on reflections (the nearest rotation, det +1) and on singular maps."""
    g = torch.Generator().manual_seed(0)
    near = torch.eye(3) + 0.3 * torch.randn(500, 3, 3, generator=g)
    anything = torch.randn(500, 3, 3, generator=g)
    reflected = near * torch.tensor([1.0, 1.0, -1.0])
    singular = torch.randn(50, 3, 3, generator=g)
    singular[:, 2] = 0.5 * singular[:, 0] - singular[:, 1]
    for maps in (near, 4.0 * near, anything, reflected, singular):
        u, sv, vh = torch.linalg.svd(maps)
        flip = torch.ones_like(sv)
        flip[:, 2] = torch.sign(torch.det(u @ vh))
        truth = (u @ torch.diag_embed(flip) @ vh) * sv.clamp(min=1e-12).log().mean(-1).exp()[:, None, None]
        ours = similarity_part(maps)
        torch.testing.assert_close(ours, truth, atol=2e-5 * float(sv.max()), rtol=0)
        rotation = ours / ours[:, 0].norm(dim=-1).clamp(min=1e-12)[:, None, None]
        assert bool((torch.det(rotation[sv.min(-1).values > 1e-3]) > 0.99).all())


def test_a_templates_kept_side_gives_the_maps_computed_afresh(ict_face):
    """The template's side of the least squares, kept between calls, gives the same maps to the bit
    as computing it for every batch element (a batched source is not cached)."""
    g = torch.Generator().manual_seed(2)
    targets = ict_face.vertices(0.5 * torch.randn(2, ict_face.n_identity, generator=g))
    afresh = local_affine_maps(ict_face.neutral.expand(2, -1, -1), targets, ict_face.triangles)
    first = local_affine_maps(ict_face.neutral, targets, ict_face.triangles)
    again = local_affine_maps(ict_face.neutral.clone(), targets[1:], ict_face.triangles.clone())
    assert torch.equal(first, afresh) and torch.equal(again, afresh[1:])
    moved = ict_face.neutral + 1.0  # another template: not the kept one
    assert torch.equal(local_affine_maps(moved, targets, ict_face.triangles),
                       local_affine_maps(moved.expand(2, -1, -1), targets, ict_face.triangles))


def test_transfer_identity_scale_and_rotation():
    v, t = _grid()
    g = torch.Generator().manual_seed(0)
    deltas = torch.randn(4, v.shape[0], 3, generator=g, dtype=torch.float64) * 0.1
    same = transfer_deltas(deltas, v, v.unsqueeze(0), t)[0]
    torch.testing.assert_close(same, deltas, atol=1e-9, rtol=1e-9)
    bigger = transfer_deltas(deltas, v, (2.0 * v).unsqueeze(0), t)[0]
    torch.testing.assert_close(bigger, 2.0 * deltas, atol=1e-9, rtol=1e-9)
    R = euler_to_matrix(torch.tensor([[0.3, -0.5, 0.2]], dtype=torch.float64))[0]
    rotated = transfer_deltas(deltas, v, (v @ R.T).unsqueeze(0), t)[0]
    torch.testing.assert_close(rotated, deltas @ R.T, atol=1e-9, rtol=1e-9)


def test_rig_from_model_generic_identity_is_the_model(ict_face):
    rig = Rig.from_model(ict_face, torch.zeros(ict_face.n_identity))
    torch.testing.assert_close(rig.neutral, ict_face.neutral)
    torch.testing.assert_close(rig.blendshapes, ict_face.expression_basis, atol=2e-4, rtol=1e-3)
    e = torch.rand(2, ict_face.n_expression, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(rig.vertices(e), ict_face.vertices(None, e), atol=2e-3, rtol=1e-4)


def test_transferred_expressions_follow_the_face_size(ict_face):
    """A person 1.2 times the generic face's size opens the jaw 1.2 times as far."""
    import dataclasses

    basis = ict_face.identity_basis.clone()
    basis[0] = 0.2 * ict_face.neutral  # identity coefficient 1 scales the face by 1.2
    model = dataclasses.replace(ict_face, identity_basis=basis)
    identity = torch.zeros(ict_face.n_identity)
    identity[0] = 1.0
    rig = Rig.from_model(model, identity)
    k = ict_face.expression_names.index("jawOpen")
    moved = ict_face.expression_basis[k].norm(dim=-1) > 1.0
    ratio = rig.blendshapes[k][moved].norm(dim=-1) / ict_face.expression_basis[k][moved].norm(dim=-1)
    assert abs(float(ratio.median()) - 1.2) < 0.02


def test_corrective_is_local_and_linear(ict_face):
    basis = CorrectiveBasis.from_model(ict_face, rank=4)
    k = ict_face.expression_names.index("jawOpen")
    code = torch.zeros(1, *basis.code_shape)
    code[0, k, 0] = 1.0
    c = basis.decode(code)[0]
    assert torch.count_nonzero(c[[i for i in range(ict_face.n_expression) if i != k]]) == 0
    still = ict_face.expression_basis[k].norm(dim=-1) == 0
    assert float(c[k][still].abs().max()) == 0.0  # no correction where jawOpen does not move the face
    torch.testing.assert_close(basis.decode(2 * code), 2 * basis.decode(code))
    with pytest.raises(ValueError, match="rig code must be"):
        basis.decode(torch.zeros(1, 3, 4))


def test_rig_npz_round_trip_and_errors(ict_face, tmp_path):
    g = torch.Generator().manual_seed(1)
    basis = CorrectiveBasis.from_model(ict_face, rank=3)
    rig = Rig.from_model(ict_face, torch.randn(ict_face.n_identity, generator=g),
                         rig_code=0.1 * torch.randn(*basis.code_shape, generator=g), corrective=basis)
    path = rig.save(tmp_path / "rig" / "rig.npz")
    back = Rig.load(path, expect_model="ict/face", expect_vertices=ict_face.n_vertices)
    torch.testing.assert_close(back.neutral, rig.neutral)
    torch.testing.assert_close(back.blendshapes, rig.blendshapes)
    assert back.expression_names == rig.expression_names and back.expression_range == (0.0, 1.0)
    assert torch.equal(back.vertex_ids, ict_face.vertex_ids) and set(back.codes) == {"identity", "rig_code"}
    e = torch.rand(3, ict_face.n_expression, generator=g)
    torch.testing.assert_close(back.vertices(e), rig.vertices(e))
    with pytest.raises(RigFileError, match="built on face model 'ict/face', not 'bfm2009'"):
        Rig.load(path, expect_model="bfm2009")
    with pytest.raises(RigFileError, match="has 9409 vertices, the face model in use has 100"):
        Rig.load(path, expect_vertices=100)
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(RigFileError, match="corrupt.npz is corrupt"):
        Rig.load(corrupt)
    with pytest.raises(RigFileError, match="does not exist"):
        Rig.load(tmp_path / "nope.npz")
    with pytest.raises(ValueError, match=r"expression must be \(B, 53\)"):
        rig.vertices(torch.zeros(2, 52))
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    assert int(arrays["format_version"]) == 3 and "millimetres" in str(arrays["units"])
    assert back.parts is None and back.texture is None  # a face rig: no parts, no texture
    v2 = tmp_path / "v2.npz"  # as format 2 wrote it (uncompressed, no parts)
    np.savez(v2, **{**arrays, "format_version": np.array(2)})
    torch.testing.assert_close(Rig.load(v2).blendshapes, rig.blendshapes)
    old = tmp_path / "v1.npz"  # as 0.6 wrote it: version 1, no units or conventions
    np.savez(old, **{k: v for k, v in arrays.items() if k not in ("units", "conventions", "format_version")},
             **{"format_version": np.array(1)})
    torch.testing.assert_close(Rig.load(old).neutral, rig.neutral)
    newer = tmp_path / "v9.npz"
    np.savez(newer, **{**arrays, "format_version": np.array(9)})
    with pytest.raises(RigFileError, match="v9.npz has format_version 9"):
        Rig.load(newer)

