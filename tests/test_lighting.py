"""Vertex normals and SH shading: analytic cases, the closed-form solve, gradients."""

import math

import pytest
import torch
import trimesh

from core.lighting import SH_CONSTANT, ShSystem, sh_basis, sh_shading, shade, solve_sh
from core.mesh import vertex_normals


def _sphere(subdivisions: int = 3, dtype=torch.float64):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    return (torch.tensor(mesh.vertices, dtype=dtype)[None],
            torch.tensor(mesh.faces, dtype=torch.int64))


def test_normals_of_a_flat_counter_clockwise_square_point_up_z():
    verts = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]])
    tris = torch.tensor([[0, 1, 2], [0, 2, 3]])
    torch.testing.assert_close(vertex_normals(verts, tris),
                               torch.tensor([0.0, 0, 1]).expand(1, 4, 3))


def test_normals_are_area_weighted():
    # Vertex 0 is shared by a large triangle in the z=0 plane (normal +z, area 2) and a small
    # one in the x=0 plane (normal +x, area 0.5): its normal is (0.5, 0, 2) normalised.
    verts = torch.tensor([[[0.0, 0, 0], [2, 0, 0], [0, 2, 0], [0, 0, 1], [0, 1, 0]]])
    tris = torch.tensor([[0, 1, 2], [0, 4, 3]])
    expected = torch.nn.functional.normalize(torch.tensor([0.5, 0.0, 2.0]), dim=0)
    torch.testing.assert_close(vertex_normals(verts, tris)[0, 0], expected)


def test_sphere_normals_point_outwards():
    verts, tris = _sphere()
    normals = vertex_normals(verts * 3.0 + 1.0, tris)
    cos = (normals * verts).sum(-1)
    assert float(cos.min()) > 0.999


def test_constant_band_reproduces_albedo_times_constant():
    verts, tris = _sphere(2)
    normals = vertex_normals(verts, tris)
    albedo = torch.rand(1, verts.shape[1], 3, generator=torch.Generator().manual_seed(0),
                        dtype=torch.float64)
    sh = torch.zeros(1, 9, 3, dtype=torch.float64)
    sh[0, 0] = torch.tensor([0.5, 1.0, 2.0])
    out = shade(albedo, normals, sh)
    torch.testing.assert_close(out, albedo * SH_CONSTANT * sh[:, 0][:, None])
    assert SH_CONSTANT == pytest.approx(math.sqrt(math.pi) / 2)


def test_basis_values_for_known_normals():
    n = torch.tensor([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    basis = sh_basis(n)[0]
    band1 = 2 * math.pi / 3 * math.sqrt(3 / (4 * math.pi))
    band20 = math.pi / 4 * 0.25 * math.sqrt(5 / math.pi)
    band22 = math.pi / 4 * 0.25 * math.sqrt(15 / math.pi)
    torch.testing.assert_close(basis[0], torch.tensor(
        [SH_CONSTANT, 0, band1, 0, 0, 0, 2 * band20, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(basis[1], torch.tensor(
        [SH_CONSTANT, 0, 0, band1, 0, 0, -band20, 0, band22], dtype=torch.float64))


def test_basis_without_a_gradient_is_the_differentiable_ones_to_the_bit():
    g = torch.Generator().manual_seed(3)
    n = torch.nn.functional.normalize(torch.randn(2, 500, 3, generator=g), dim=-1)
    with_grad = n.clone().requires_grad_(True)
    reference = sh_basis(with_grad)
    assert reference.requires_grad  # the stacked path, differentiable
    assert torch.equal(sh_basis(n), reference.detach())
    reference.sum().backward()
    assert with_grad.grad is not None and bool(with_grad.grad.abs().sum() > 0)


def test_sh_approximates_clamped_cosine_lobe():
    # A unit distant light from +z has radiance coefficients L_lm = Y_lm(z) and irradiance
    # E(n) = max(n.z, 0) (Ramamoorthi & Hanrahan), which 2nd-order SH approximates closely.
    y = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64)
    coeffs = sh_basis(y)[0, 0] / torch.tensor([math.pi] + [2 * math.pi / 3] * 3 +
                                              [math.pi / 4] * 5, dtype=torch.float64)
    sh = coeffs[None, :, None].expand(1, 9, 3)
    n = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]], dtype=torch.float64)
    irradiance = sh_shading(n, sh)[0, :, 0]
    torch.testing.assert_close(irradiance, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64),
                               atol=0.1, rtol=0)


def test_solve_sh_recovers_coefficients_on_a_sphere():
    verts, tris = _sphere(3)
    normals = vertex_normals(verts, tris).expand(2, -1, -1)
    gen = torch.Generator().manual_seed(4)
    albedo = torch.rand(2, verts.shape[1], 3, generator=gen, dtype=torch.float64) * 0.6 + 0.3
    sh_true = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64) * 0.2
    sh_true[:, 0] += 1.0
    observed = shade(albedo, normals, sh_true)
    sh = solve_sh(albedo, normals, observed, reg=0.0)
    torch.testing.assert_close(sh, sh_true, atol=1e-8, rtol=0)
    # Half the sphere masked out and noise elsewhere: the visible half still pins the lighting.
    mask = normals[..., 2] > -0.2
    corrupted = torch.where(mask[..., None], observed, torch.rand_like(observed))
    sh_masked = solve_sh(albedo, normals, corrupted, mask=mask, reg=1e-8)
    torch.testing.assert_close(sh_masked, sh_true, atol=1e-4, rtol=0)


def test_sh_system_solves_the_weighted_normal_equations_for_each_albedo():
    """One `ShSystem` (fixed normals and weights) solved for two albedos and colour sets gives the
    explicit per-image, per-channel ridge normal equations' answer (its 45 pair products stand for
    the 81 entries of the symmetric matrix), with and without a gradient being taken, and its
    shading is `sh_shading`'s."""
    verts, _ = _sphere(2)
    gen = torch.Generator().manual_seed(7)
    normals = torch.nn.functional.normalize(verts.repeat(2, 1, 1) + 0.3 * torch.randn(
        2, verts.shape[1], 3, generator=gen, dtype=torch.float64), dim=-1)
    mask = torch.rand(2, verts.shape[1], generator=gen, dtype=torch.float64) * (
        torch.rand(2, verts.shape[1], generator=gen) > 0.3)
    system = ShSystem(normals, mask)
    basis = sh_basis(normals)
    for seed in (1, 2):
        g = torch.Generator().manual_seed(seed)
        albedo = torch.rand(2, verts.shape[1], 3, generator=g, dtype=torch.float64) + 0.2
        observed = torch.rand(2, verts.shape[1], 3, generator=g, dtype=torch.float64)
        want = torch.empty(2, 9, 3, dtype=torch.float64)
        for b in range(2):
            for c in range(3):
                design = albedo[b, :, c, None] * basis[b]  # (V, 9)
                lhs = design.T @ (mask[b, :, None] * design) + 1e-3 * float(mask[b].sum()) * torch.eye(9)
                want[b, :, c] = torch.linalg.solve(lhs, design.T @ (mask[b] * observed[b, :, c]))
        torch.testing.assert_close(system.solve(albedo, observed, reg=1e-3), want, rtol=1e-7, atol=1e-9)
        graded = ShSystem(normals.clone().requires_grad_(), mask).solve(albedo, observed, reg=1e-3)
        torch.testing.assert_close(graded.detach(), want, rtol=1e-7, atol=1e-9)
        torch.testing.assert_close(solve_sh(albedo, normals, observed, mask, reg=1e-3), want, rtol=1e-7,
                                   atol=1e-9)
    sh = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64)
    assert torch.equal(system.shading(sh), sh_shading(normals, sh))


def test_gradcheck_normals_shading_and_solve():
    verts, tris = _sphere(0)
    gen = torch.Generator().manual_seed(5)
    verts = (verts + 0.05 * torch.randn(verts.shape, generator=gen, dtype=torch.float64))
    normals = vertex_normals(verts, tris).detach()
    albedo = torch.rand(1, verts.shape[1], 3, generator=gen, dtype=torch.float64) + 0.2
    sh = torch.randn(1, 9, 3, generator=gen, dtype=torch.float64)
    observed = torch.rand(1, verts.shape[1], 3, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda v: vertex_normals(v, tris),
                                    (verts.clone().requires_grad_(),))
    assert torch.autograd.gradcheck(shade, (albedo.clone().requires_grad_(),
                                            normals.clone().requires_grad_(),
                                            sh.clone().requires_grad_()))
    assert torch.autograd.gradcheck(lambda a, n, o: solve_sh(a, n, o, reg=1e-3),
                                    (albedo.clone().requires_grad_(),
                                     normals.clone().requires_grad_(),
                                     observed.clone().requires_grad_()))


def test_errors_state_expected_and_actual_shapes():
    with pytest.raises(ValueError, match=r"sh: expected shape \(\*, 9, 3\), got \(1, 4, 3\)"):
        sh_shading(torch.zeros(1, 5, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"triangles: indices must lie in \[0, 3\)"):
        vertex_normals(torch.zeros(1, 3, 3), torch.tensor([[0, 1, 3]]))
    with pytest.raises(ValueError, match="mask: expected shape"):
        solve_sh(torch.ones(1, 5, 3), torch.ones(1, 5, 3), torch.ones(1, 5, 3),
                 mask=torch.ones(5))
