"""Residual blocks for face fitting: landmark reprojection (both cameras, per image and per
group), sliding contour correspondence, priors; Jacobians against finite differences."""
from __future__ import annotations

import math

import pytest
import torch

from core.camera import euler_to_matrix, perspective_project, weak_perspective_project
from core.fitting.landmark_geometry import (LandmarkGeometry, landmark_points, project_landmarks,
                                            update_contour)
from core.fitting.residuals import expression_bounds, landmark_block, prior_block, temporal_block
from core.fitting.solver import block_jacobian
from core.fitting.variables import EXPRESSION, FOCAL, IDENTITY, ROTATION, SCALE, TRANS2D, TRANSLATION

F64 = torch.float64


@pytest.fixture(scope="module")
def geometry(ict_face):
    return LandmarkGeometry(ict_face)


def _params(geometry, batch, camera="weak", seed=0, dtype=F64, yaw=None):
    g = torch.Generator().manual_seed(seed)
    yaw = (torch.rand(batch, generator=g, dtype=dtype) * 2 - 1) * 0.7 if yaw is None else yaw
    p = {
        IDENTITY: torch.randn(batch, geometry.n_identity, generator=g, dtype=dtype),
        EXPRESSION: 0.5 * torch.rand(batch, geometry.n_expression, generator=g, dtype=dtype),
        ROTATION: torch.stack([0.2 * torch.randn(batch, generator=g, dtype=dtype), yaw,
                               0.1 * torch.randn(batch, generator=g, dtype=dtype)], -1),
    }
    if camera == "weak":
        p[SCALE] = 1.0 + 0.2 * torch.rand(batch, generator=g, dtype=dtype)
        p[TRANS2D] = 128 + 4 * torch.randn(batch, 2, generator=g, dtype=dtype)
    else:
        p[TRANSLATION] = torch.tensor([5.0, -3.0, -650.0], dtype=dtype).expand(batch, 3).clone()
        p[FOCAL] = torch.full((batch,), 700.0, dtype=dtype)
    return p


def _finite_difference(block, params, name, eps=1e-5):
    x = params[name]
    flat = x.reshape(x.shape[0], -1)
    cols = []
    for j in range(flat.shape[1]):
        d = torch.zeros_like(flat)
        d[:, j] = eps
        d = d.reshape(x.shape)
        cols.append((block.residual({**params, name: x + d})
                     - block.residual({**params, name: x - d})) / (2 * eps))
    return torch.stack(cols, -1).reshape(*cols[0].shape, *x.shape[1:])


def test_geometry_points_are_the_model_vertices(ict_face, geometry):
    p = _params(geometry, 2, dtype=torch.float32)
    full = ict_face.vertices(p[IDENTITY], p[EXPRESSION])
    assert torch.allclose(geometry.points(p[IDENTITY], p[EXPRESSION]), full[:, geometry.vertex_ids],
                          atol=1e-3)
    static = landmark_points(geometry.points(p[IDENTITY], p[EXPRESSION]),
                             geometry.default_correspondence(2))
    assert torch.allclose(static, full[:, ict_face.landmark_indices], atol=1e-3)


@pytest.mark.parametrize("camera", ["weak", "perspective"])
def test_static_projection_goes_through_core_camera(ict_face, geometry, camera):
    p = _params(geometry, 3, camera, dtype=torch.float32)
    pp = torch.full((3, 2), 128.0)
    X = ict_face.vertices(p[IDENTITY], p[EXPRESSION])[:, ict_face.landmark_indices]
    R = euler_to_matrix(p[ROTATION])
    expected = (weak_perspective_project(X, R, p[SCALE], p[TRANS2D]) if camera == "weak"
                else perspective_project(X, R, p[TRANSLATION], p[FOCAL], pp))
    got = project_landmarks(geometry, p, camera, "static", principal_point=pp)
    assert torch.allclose(got, expected, atol=1e-3)


@pytest.mark.parametrize("camera", ["weak", "perspective"])
def test_landmark_jacobians_match_finite_differences(geometry, camera):
    p = _params(geometry, 2, camera, seed=3)
    pp = torch.full((2, 2), 120.0, dtype=F64)
    targets = project_landmarks(geometry, p, camera, "static", principal_point=pp) + 1.0
    conf = torch.rand(2, 68, dtype=F64, generator=torch.Generator().manual_seed(1))
    block = landmark_block(geometry, targets, camera, confidence=conf, principal_point=pp)
    r, jac = block_jacobian(block, p)
    assert r.shape == (2, 136)
    assert set(jac) == set(p)
    for name in p:
        fd = _finite_difference(block, p, name)
        scale = fd.abs().max().clamp_min(1.0)
        assert (jac[name] - fd).abs().max() / scale < 1e-6, name


def test_per_group_landmark_block_matches_per_image_blocks(geometry):
    P, G = 2, 3
    flat = _params(geometry, P * G, seed=4)
    flat[IDENTITY] = flat[IDENTITY][::G].repeat_interleave(G, 0)  # one identity per person
    targets = project_landmarks(geometry, flat, "weak", "static") + 0.5
    grouped = {IDENTITY: flat[IDENTITY][::G]}
    grouped.update({n: v.reshape(P, G, *v.shape[1:]) for n, v in flat.items() if n != IDENTITY})
    per_group = landmark_block(geometry, targets.reshape(P, G, 68, 2), "weak")
    per_image = landmark_block(geometry, targets, "weak")
    r_g, jac_g = block_jacobian(per_group, grouped, per_group=[EXPRESSION, ROTATION, SCALE, TRANS2D])
    r_i, jac_i = block_jacobian(per_image, flat)
    assert torch.allclose(r_g.reshape(P * G, 136), r_i)
    for name in flat:
        assert torch.allclose(jac_g[name].reshape(jac_i[name].shape), jac_i[name], atol=1e-9), name


def test_contour_slides_to_the_jaw_on_the_side_turned_towards_the_camera(geometry):
    yaw = torch.tensor([0.6, -0.6], dtype=F64)  # +yaw: the subject's right side faces the camera
    p = _params(geometry, 2, yaw=yaw)
    p[ROTATION][:, [0, 2]] = 0.0
    pts = geometry.points(p[IDENTITY], p[EXPRESSION])
    corr = update_contour(geometry, pts, euler_to_matrix(p[ROTATION]))
    default = geometry.default_indices
    moved = (corr.indices[..., 0] != default) | (corr.weights[..., 0] != 1)
    right, left, chin = [0, 1, 2, 3, 4], [12, 13, 14, 15, 16], [6, 7, 8, 9, 10]
    assert moved[0, right].all() and not moved[0, left].any()
    assert moved[1, left].all() and not moved[1, right].any()
    inner = [i for i in range(68) if i not in range(17)]
    assert not moved[:, inner].any()
    # The chin landmarks lie on the jawline: whichever candidate wins, the point is the same.
    static = landmark_points(pts, geometry.default_correspondence(2))
    assert torch.allclose(landmark_points(pts, corr)[:, chin], static[:, chin], atol=1e-6)


def test_contour_point_is_the_outermost_candidate(geometry):
    p = _params(geometry, 6, seed=5)
    pts = geometry.points(p[IDENTITY], p[EXPRESSION])
    R = euler_to_matrix(p[ROTATION])
    chosen = landmark_points(pts, update_contour(geometry, pts, R))
    static = landmark_points(pts, geometry.default_correspondence(6))
    axis = R[:, :2, 0]  # the object x axis in the camera's x-y plane

    def outward(points, sign):
        return sign * (torch.einsum("bj,bkj->bk", points, R[:, :2]) * axis).sum(-1)

    for i, sign in [(1, -1.0), (3, -1.0), (13, 1.0), (15, 1.0)]:
        assert (outward(chosen[:, i], sign) >= outward(static[:, i], sign) - 1e-9).all()


def test_priors_and_temporal_smoothness():
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=F64)
    block = prior_block("code", mean=0.5, std=torch.tensor([1.0, 2.0, 0.5], dtype=F64))
    r, jac = block_jacobian(block, {"code": x})
    assert torch.allclose(r, torch.tensor([[0.5, -1.25, 0.0]], dtype=F64))
    assert torch.allclose(jac["code"][0], torch.diag(torch.tensor([1.0, 0.5, 2.0], dtype=F64)))
    prev = torch.tensor([[0.0, 0.0, 1.0]], dtype=F64)
    r, jac = block_jacobian(temporal_block("code", prev), {"code": x})
    assert torch.allclose(r, x - prev) and torch.allclose(jac["code"][0], torch.eye(3, dtype=F64))
    grouped = prior_block("code", per_group=True)
    r, jac = block_jacobian(grouped, {"code": x.expand(2, 4, 3)}, per_group=["code"])
    assert r.shape == (2, 4, 3) and jac["code"].shape == (2, 4, 3, 3)
    with pytest.raises(ValueError, match="positive"):
        prior_block("code", std=0.0)


def test_expression_bounds_and_bad_inputs(ict_face, geometry):
    assert expression_bounds(ict_face) == {EXPRESSION: (0.0, 1.0)}
    with pytest.raises(ValueError, match="targets"):
        landmark_block(geometry, torch.zeros(2, 68, 3))
    with pytest.raises(ValueError, match="camera"):
        landmark_block(geometry, torch.zeros(2, 68, 2), "fisheye")
    with pytest.raises(ValueError, match="confidence"):
        landmark_block(geometry, torch.zeros(2, 68, 2), confidence=torch.ones(2, 60))
    block = landmark_block(geometry, torch.zeros(1, 68, 2))
    with pytest.raises(ValueError, match="scale"):
        block.residual({ROTATION: torch.zeros(1, 3), TRANS2D: torch.zeros(1, 2)})
    assert math.isfinite(float(block.residual(_params(geometry, 1, dtype=torch.float32)).sum()))


def test_unrolled_landmark_solve_is_differentiable(geometry):
    """Shifting every target by (dx, dy) shifts the fitted 2D translation by exactly that much."""
    from core.fitting.solver import SolverConfig, solve

    p = _params(geometry, 1, seed=6)
    base = project_landmarks(geometry, p, "weak", "static")
    shape = {IDENTITY: p[IDENTITY], EXPRESSION: p[EXPRESSION]}
    config = SolverConfig(max_iterations=2, mode="fixed", adaptive=False, damping=0.0,
                          differentiable=True)

    def fitted_translation(shift):
        block = landmark_block(geometry, base + shift, "weak")
        start = {**shape, ROTATION: p[ROTATION], SCALE: p[SCALE], TRANS2D: p[TRANS2D]}
        res = solve([block], start, free=[ROTATION, SCALE, TRANS2D], config=config)
        return res.params[TRANS2D]

    shift = torch.tensor([0.3, -0.2], dtype=F64, requires_grad=True)
    J = torch.autograd.functional.jacobian(fitted_translation, shift)
    assert torch.allclose(J[0], torch.eye(2, dtype=F64), atol=1e-8)
    assert torch.autograd.gradcheck(fitted_translation, (shift,), eps=1e-6, atol=1e-5)
