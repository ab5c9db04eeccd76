"""The compiled colour term (`core.fitting._shading`) against the composed torch functions it
replaces: the same cost and gradient on patches with every case the kernel branches on."""
from __future__ import annotations

import pytest
import torch

from core.camera import euler_to_matrix, rotate_points
from core.fitting.colour_term import active_triangles, colour_term, compiled_available, compiled_colour_term
from core.mesh import PatchNormals

pytestmark = pytest.mark.skipif(not compiled_available(), reason="core.fitting._shading is not built (make setup)")


def _grid(n: int) -> tuple:
    """A flat n x n grid of points 3 mm apart (mm, centred) and its triangles."""
    ys, xs = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs.flatten() * 3 - 1.5 * n, ys.flatten() * 3 - 1.5 * n, torch.zeros(n * n)], -1)
    a = (torch.arange(n - 1)[:, None] * n + torch.arange(n - 1)[None]).flatten()
    triangles = torch.cat([torch.stack([a, a + 1, a + n], 1), torch.stack([a + 1, a + n + 1, a + n], 1)])
    return points, triangles


def _problem(seed: int, images_size: int = 96, prior_one_colour: bool = False) -> dict:
    """A bumpy patch seen in three images, some vertices off the image, some weights zero, lighting
    and colours that push some albedos outside [0, 1] (the clamp)."""
    gen = torch.Generator().manual_seed(seed)
    n = 24
    grid, triangles = _grid(n)
    ids = torch.randperm(n * n, generator=gen)[:300].sort().values
    patch = PatchNormals(triangles, ids, n * n)
    g = 3
    points = grid[patch.support][None].repeat(g, 1, 1) + 0.8 * torch.randn(g, len(patch.support), 3, generator=gen,
                                                                             dtype=torch.float64)
    points[..., 2] += 5 * torch.sin(points[..., 0] / 10)
    weights = torch.rand(g, len(ids), generator=gen, dtype=torch.float64)
    weights[torch.rand(g, len(ids), generator=gen) < 0.2] = 0
    sh = 0.3 * torch.randn(g, 9, 3, generator=gen, dtype=torch.float64)
    sh[:, 0] += 0.6
    rotation = euler_to_matrix(torch.tensor([[0.1, -0.2, 0.05], [-0.15, 0.3, 0.0], [0.05, 0.1, -0.1]],
                                            dtype=torch.float64))
    return dict(
        shape=points, rotation=rotation, scale=torch.tensor([1.5, 1.9, 1.2], dtype=torch.float64),
        trans=torch.tensor([[48.0, 48.0], [30.0, 70.0], [50.0, 44.0]], dtype=torch.float64),  # image 2: part off
        images=torch.rand(g, 3, images_size, images_size, generator=gen, dtype=torch.float64), patch=patch,
        weights=weights, sh=sh,
        prior=(torch.tensor([0.6, 0.45, 0.4], dtype=torch.float64) if prior_one_colour
               else torch.rand(len(ids), 3, generator=gen, dtype=torch.float64)))


_VARIABLES = ("shape", "rotation", "scale", "trans")


def _cost_and_grads(problem: dict, compiled: bool, dtype: torch.dtype, prior_weight: float = 0.05,
                    sigma: float = 0.05) -> tuple:
    p = {k: (v.to(dtype) if torch.is_tensor(v) else v) for k, v in problem.items()}
    wanted = [p[k].requires_grad_(True) for k in _VARIABLES]
    cost = colour_term(*wanted, p["images"], p["patch"], p["weights"], p["sh"], p["prior"], prior_weight,
                       sigma, compiled=compiled)
    return cost, torch.autograd.grad(cost, wanted)


@pytest.mark.parametrize("seed, one_colour", [(0, False), (1, True), (2, False)])
def test_compiled_pass_equals_the_composed_functions(seed, one_colour):
    """Cost and gradients (object-space points, rotations, scales, translations) within float32
    rounding of the torch functions evaluated in float64; the problem covers zero weights, vertices
    beyond the image's edge and albedos clamped at 0 or 1."""
    problem = _problem(seed, prior_one_colour=one_colour)
    ref_cost, ref_grads = _cost_and_grads(problem, compiled=False, dtype=torch.float64)
    cost, grads = _cost_and_grads(problem, compiled=True, dtype=torch.float32)
    assert float(cost.detach()) == pytest.approx(float(ref_cost.detach()), rel=2e-5)
    for got, want in zip(grads, ref_grads):
        assert got.dtype == torch.float32
        assert torch.allclose(got.double(), want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))
    # The cases are really there: the clamp and the image's edge change the cost.
    camera = rotate_points(problem["shape"], problem["rotation"])
    uv_u = problem["scale"][:, None] * camera[:, :300, 0] + problem["trans"][:, :1]
    assert bool(((uv_u < 0) | (uv_u > 95)).any())


def test_compiled_gradient_is_the_cost_slope():
    """The kernel's own gradient against central differences of its own cost (float32 steps of 1e-3 mm
    of the points, 1e-4 of the rotation matrices' entries), on smooth images (bilinear sampling of
    noise has a kink at every pixel edge)."""
    problem = _problem(3)
    ys, xs = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    smooth = torch.stack([0.5 + 0.3 * torch.sin(xs / (7 + c) + c) * torch.cos(ys / 5) for c in range(3)])
    problem["images"] = smooth[None].repeat(3, 1, 1, 1).double()
    problem["rotation"] = torch.eye(3, dtype=torch.float64).repeat(3, 1, 1)  # no kink within the steps
    p = {k: (v.float() if torch.is_tensor(v) else v) for k, v in problem.items()}
    cost, grads = _cost_and_grads(problem, compiled=True, dtype=torch.float32)
    gen = torch.Generator().manual_seed(4)
    for k, h in ((0, 1e-3), (1, 1e-4)):
        direction = torch.randn(p[_VARIABLES[k]].shape, generator=gen)

        def at(step: float) -> float:
            moved = [p[name] + step * direction if i == k else p[name] for i, name in enumerate(_VARIABLES)]
            return float(colour_term(*moved, p["images"], p["patch"], p["weights"], p["sh"], p["prior"], 0.05,
                                     0.05, compiled=True))

        slope = (at(h) - at(-h)) / (2 * h)
        assert slope == pytest.approx(float((grads[k] * direction).sum()), rel=0.02)


def test_float64_points_take_the_torch_path_and_bad_shapes_are_named():
    problem = _problem(5)
    cost, grads = _cost_and_grads(problem, compiled=None, dtype=torch.float64)  # not float32: torch functions
    ref, _ = _cost_and_grads(problem, compiled=False, dtype=torch.float64)
    assert float(cost.detach()) == float(ref.detach()) and grads[0].dtype == torch.float64
    with pytest.raises(ValueError, match="weights"):
        colour_term(*(problem[k] for k in _VARIABLES), problem["images"], problem["patch"],
                    problem["weights"][:, :10], problem["sh"], problem["prior"], 0.05, 0.05)
    with pytest.raises(ValueError, match="rotation"):
        colour_term(problem["shape"], problem["rotation"][:, :2], problem["scale"], problem["trans"],
                    problem["images"], problem["patch"], problem["weights"], problem["sh"], problem["prior"],
                    0.05, 0.05)


def test_thread_count_does_not_change_the_result(monkeypatch):
    """The images run in parallel but every sum keeps its order: 1 and 3 threads give the same bits."""
    problem = _problem(6)
    p = {k: (v.float() if torch.is_tensor(v) else v) for k, v in problem.items()}
    results = []
    for threads in (1, 3):
        wanted = [p[k].clone().requires_grad_(True) for k in _VARIABLES]
        cost = colour_term(*wanted, p["images"], p["patch"], p["weights"], p["sh"], p["prior"], 0.05, 0.05,
                           compiled=True, threads=threads)
        results.append((cost.detach(), torch.autograd.grad(cost, wanted)))
    assert torch.equal(results[0][0], results[1][0])
    for a, b in zip(results[0][1], results[1][1]):
        assert torch.equal(a, b)


def test_working_arrays_kept_between_calls_do_not_change_the_result():
    """A scratch dict reused over calls with other points, weights and shapes gives each call the
    bits of a call that allocates its arrays anew (the sums start from zero every call)."""
    scratch: dict = {}
    for seed in (7, 8, 7, 9):
        problem = _problem(seed, images_size=64 + seed)
        p = {k: (v.float() if torch.is_tensor(v) else v) for k, v in problem.items()}
        if seed == 9:  # fewer images: other shapes, other arrays
            p = {k: (v[:2] if torch.is_tensor(v) and k not in ("prior",) else v) for k, v in p.items()}
        results = []
        for kept in (scratch, None):
            wanted = [p[k].clone().requires_grad_(True) for k in _VARIABLES]
            cost = colour_term(*wanted, p["images"], p["patch"], p["weights"], p["sh"], p["prior"], 0.05,
                               0.05, compiled=True, threads=2, scratch=kept)
            results.append((cost.detach(), torch.autograd.grad(cost, wanted)))
        assert torch.equal(results[0][0], results[1][0])
        for a, b in zip(results[0][1], results[1][1]):
            assert torch.equal(a, b)
    assert len(scratch) == 1  # the last shapes' arrays only


def test_the_triangles_that_count_give_every_triangles_result():
    """Each image's triangles with a corner of weight in it (`active_triangles`) give the bits of all
    triangles; leaving out one of them does not."""
    p = {k: (v.float() if torch.is_tensor(v) else v) for k, v in _problem(10).items()}
    p["weights"][1, :150] = 0.0  # image 1 sees half the patch: whole triangles count for nothing there
    ptr, ids = active_triangles(p["patch"], p["weights"])
    n_triangles = len(p["patch"].triangles)
    assert len(ids) < 3 * n_triangles and ptr[2] - ptr[1] < 0.75 * n_triangles

    def run(active):
        return compiled_colour_term(p["shape"], p["rotation"], p["scale"], p["trans"], p["images"], p["patch"],
                                    p["weights"], p["sh"], p["prior"].expand(len(p["patch"].vertex_ids), 3),
                                    0.05, 0.05, 2, None, active)

    every, counted = run(None), run((ptr, ids))
    assert every[0] == counted[0]
    assert all(torch.equal(a, b) for a, b in zip(every[1:], counted[1:]))
    missing = run((ptr - (torch.arange(len(ptr)) > 0).numpy(), ids[[i for i in range(len(ids)) if i != ptr[1] - 1]]))
    assert not all(torch.equal(a, b) for a, b in zip(every[1:], missing[1:]))
