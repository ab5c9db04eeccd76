"""Camera models: rotation conversions, projections with hand-computed pixels, 2D similarities."""

import math

import pytest
import torch

from core.camera import (WeakPerspective, apply_similarity_2d, axis_angle_to_matrix, euler_to_matrix,
                         invert_similarity_2d, matrix_to_axis_angle, matrix_to_euler, perspective_project,
                         perspective_screen, rotate_points, square_frame, transform_points,
                         weak_perspective_project, weak_perspective_screen)


def _rx(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[1.0, 0, 0], [0, c, -s], [0, s, c]], dtype=torch.float64)


def _ry(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]], dtype=torch.float64)


def _rz(a: float) -> torch.Tensor:
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]], dtype=torch.float64)


def test_euler_single_axes_move_known_points():
    half_pi = math.pi / 2
    R = euler_to_matrix(torch.tensor([[half_pi, 0, 0], [0, half_pi, 0], [0, 0, half_pi]]))
    # pitch: +y -> +z (chin towards the camera); yaw: +z -> +x; roll: +x -> +y.
    torch.testing.assert_close(R[0] @ torch.tensor([0.0, 1, 0]), torch.tensor([0.0, 0, 1]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(R[1] @ torch.tensor([0.0, 0, 1]), torch.tensor([1.0, 0, 0]),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(R[2] @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]),
                               atol=1e-6, rtol=0)


def test_euler_composition_order_is_rz_ry_rx():
    pitch, yaw, roll = 0.3, -0.7, 1.1
    R = euler_to_matrix(torch.tensor([[pitch, yaw, roll]], dtype=torch.float64))[0]
    torch.testing.assert_close(R, _rz(roll) @ _ry(yaw) @ _rx(pitch))


def test_euler_round_trip():
    gen = torch.Generator().manual_seed(0)
    angles = (torch.rand(200, 3, generator=gen, dtype=torch.float64) * 2 - 1) * \
        torch.tensor([math.pi * 0.99, math.pi / 2 * 0.99, math.pi * 0.99], dtype=torch.float64)
    back = matrix_to_euler(euler_to_matrix(angles))
    torch.testing.assert_close(back, angles)


def test_euler_gimbal_lock_reproduces_the_matrix():
    angles = torch.tensor([[0.4, math.pi / 2, 0.3], [-0.2, -math.pi / 2, 0.5]],
                          dtype=torch.float64)
    R = euler_to_matrix(angles)
    back = matrix_to_euler(R)
    assert torch.all(back[:, 2] == 0)
    torch.testing.assert_close(euler_to_matrix(back), R)


def test_axis_angle_known_and_round_trip():
    R = axis_angle_to_matrix(torch.tensor([[0.0, 0.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(R, euler_to_matrix(torch.tensor([[0.0, 0.5, 0.0]],
                                                               dtype=torch.float64)))
    gen = torch.Generator().manual_seed(1)
    axes = torch.nn.functional.normalize(torch.randn(100, 3, generator=gen,
                                                     dtype=torch.float64), dim=-1)
    angles = torch.rand(100, 1, generator=gen, dtype=torch.float64) * math.pi
    angles[:3] = torch.tensor([[0.0], [1e-9], [math.pi - 1e-7]], dtype=torch.float64)
    aa = axes * angles
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3, dtype=torch.float64)
                               .expand(100, 3, 3))
    back = matrix_to_axis_angle(R)
    torch.testing.assert_close(axis_angle_to_matrix(back), R)
    torch.testing.assert_close(back[:2], aa[:2], atol=1e-12, rtol=0)
    torch.testing.assert_close(back[3:], aa[3:], atol=1e-7, rtol=0)


def test_transform_points():
    R = euler_to_matrix(torch.tensor([[0.0, 0.0, math.pi / 2]]))
    out = transform_points(torch.tensor([[[1.0, 0.0, 0.0]]]), R, torch.tensor([[0.0, 0, -600]]))
    torch.testing.assert_close(out, torch.tensor([[[0.0, 1.0, -600.0]]]), atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # torch's own, on its first forward-mode call
def test_rotate_points_is_the_plain_product_with_its_gradients():
    """``R @ X^T`` gives the values of ``X @ R^T`` to the bit (three products summed in the same
    order), also in the forward mode the solver's Jacobians use; its reverse-mode gradients agree to
    float32 rounding (their backward products are other matrix products, which MKL's AVX-512 kernels
    round differently for the two layouts: up to 2.4e-7 on 40 % of the points' gradients)."""
    g = torch.Generator().manual_seed(3)
    points = torch.randn(4, 1000, 3, generator=g, requires_grad=True)
    R = euler_to_matrix(torch.randn(4, 3, generator=g)).requires_grad_(True)
    ours, plain = rotate_points(points, R), points @ R.transpose(1, 2)
    assert torch.equal(ours, plain) and ours.is_contiguous()
    upstream = torch.randn(4, 1000, 3, generator=g)
    for a, b in zip(torch.autograd.grad(ours, (points, R), upstream), torch.autograd.grad(plain, (points, R), upstream)):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()))
    tangent = torch.randn(4, 1000, 3, generator=g)
    _, forward = torch.func.jvp(lambda p: rotate_points(p, R.detach()), (points.detach(),), (tangent,))
    assert torch.equal(forward, tangent @ R.detach().transpose(1, 2))


def test_weak_perspective_hand_computed():
    points = torch.tensor([[[10.0, 20.0, 5.0], [-4.0, 0.0, 0.0]]])
    R = euler_to_matrix(torch.tensor([[0.0, math.pi / 2, 0.0]]))  # x -> -z, z -> x
    screen = weak_perspective_screen(points, R, torch.tensor([2.0]), torch.tensor([[100.0, 50.0]]))
    # X_c = (5, 20, -10) -> u = 2*5 + 100, v = -2*20 + 50, depth = 2*(-10).
    torch.testing.assert_close(screen[0, 0], torch.tensor([110.0, 10.0, -20.0]))
    torch.testing.assert_close(screen[0, 1], torch.tensor([100.0, 50.0, 8.0]), atol=1e-5,
                               rtol=0)
    uv = weak_perspective_project(points, R, torch.tensor([2.0]), torch.tensor([[100.0, 50.0]]))
    torch.testing.assert_close(uv, screen[..., :2])


def test_perspective_hand_computed():
    points = torch.tensor([[[30.0, 60.0, 0.0], [0.0, 0.0, 100.0]]])
    eye = torch.eye(3)[None]
    uv = perspective_project(points, eye, torch.tensor([[0.0, 0.0, -600.0]]),
                             torch.tensor([1000.0]), torch.tensor([[128.0, 100.0]]))
    # u = 128 + 1000 * 30 / 600 = 178, v = 100 - 1000 * 60 / 600 = 0.
    torch.testing.assert_close(uv[0, 0], torch.tensor([178.0, 0.0]))
    torch.testing.assert_close(uv[0, 1], torch.tensor([128.0, 100.0]))
    screen = perspective_screen(points, eye, torch.tensor([[0.0, 0.0, -600.0]]),
                                torch.tensor([1000.0]), torch.tensor([[128.0, 100.0]]))
    torch.testing.assert_close(screen[0, :, 2], torch.tensor([-600.0, -500.0]))  # nearer: larger


def test_projection_gradcheck():
    gen = torch.Generator().manual_seed(2)
    points = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    angles = torch.randn(2, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    scale = torch.rand(2, generator=gen, dtype=torch.float64).add(0.5).requires_grad_()
    trans = torch.randn(2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    t = (torch.randn(2, 3, generator=gen, dtype=torch.float64) - torch.tensor([0, 0, 20.0],
         dtype=torch.float64)).requires_grad_()
    focal = torch.tensor([500.0, 800.0], dtype=torch.float64, requires_grad=True)
    pp = torch.randn(2, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda p, a, s, tr: weak_perspective_project(p, euler_to_matrix(a), s, tr),
        (points, angles, scale, trans))
    assert torch.autograd.gradcheck(
        lambda p, a, tt, f, c: perspective_project(p, axis_angle_to_matrix(a), tt, f, c),
        (points, angles, t, focal, pp))
    assert torch.autograd.gradcheck(axis_angle_to_matrix,
                                    (torch.zeros(1, 3, dtype=torch.float64, requires_grad=True),))
    assert torch.autograd.gradcheck(matrix_to_euler, (euler_to_matrix(angles.detach())
                                                      .requires_grad_(),))


def test_similarity_round_trip_and_known_crop():
    # A crop whose pixel (0, 0) is original (40, 30), two original pixels per crop pixel.
    M = torch.tensor([[[2.0, 0.0, 40.0], [0.0, 2.0, 30.0]]])
    crop_pts = torch.tensor([[[0.0, 0.0], [10.0, 5.0]]])
    image_pts = apply_similarity_2d(crop_pts, M)
    torch.testing.assert_close(image_pts, torch.tensor([[[40.0, 30.0], [60.0, 40.0]]]))
    angle = 0.3
    M2 = torch.tensor([[[1.5 * math.cos(angle), -1.5 * math.sin(angle), 7.0],
                        [1.5 * math.sin(angle), 1.5 * math.cos(angle), -3.0]]])
    for transform in (M, M2):
        inv = invert_similarity_2d(transform)
        pts = torch.randn(1, 10, 2, generator=torch.Generator().manual_seed(3)) * 50
        torch.testing.assert_close(apply_similarity_2d(apply_similarity_2d(pts, transform), inv),
                                   pts, atol=1e-4, rtol=0)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"angles: expected shape \(\*, 3\), got \(3,\)"):
        euler_to_matrix(torch.zeros(3))
    with pytest.raises(ValueError, match="scale: expected batch size 1, got 2"):
        weak_perspective_project(torch.zeros(1, 4, 3), torch.eye(3)[None], torch.ones(2),
                                 torch.zeros(1, 2))
    with pytest.raises(ValueError, match="M: transform is singular"):
        invert_similarity_2d(torch.zeros(1, 2, 3))


def test_square_frame_maps_the_landmark_square_onto_the_frame_edges():
    """The box's corners land on the frame's outer pixel edges (-0.5 and size - 0.5), its centre on
    the centre pixel; a non-square box is centred in a square of its longer side."""
    lms = torch.tensor([[100.0, 50.0], [300.0, 250.0]]).repeat(34, 1)[None]
    step, offset = square_frame(lms, grow=1.0, size=256)
    corners = (lms[0] - offset[0]) / step[0]
    torch.testing.assert_close(corners.amin(0), torch.full((2,), -0.5))
    torch.testing.assert_close(corners.amax(0), torch.full((2,), 255.5))
    wide = torch.tensor([[[0.0, 0.0], [200.0, 100.0]]])
    step, offset = square_frame(wide, grow=1.2, size=100)
    framed = (wide[0] - offset[0]) / step[0]
    torch.testing.assert_close(framed.mean(0), torch.full((2,), 49.5))
    torch.testing.assert_close(step, torch.tensor([2.4]))
    with pytest.raises(ValueError, match="coincide"):
        square_frame(torch.ones(1, 5, 2))


def test_weak_perspective_pose_reframes_exactly():
    """A pose seen in another pixel frame projects to the same points mapped into that frame, and
    mapping there and back is the identity."""
    g = torch.Generator().manual_seed(3)
    pose = WeakPerspective(0.3 * torch.randn(4, 3, generator=g), 1 + torch.rand(4, generator=g),
                           100 * torch.rand(4, 2, generator=g))
    points = 50 * torch.randn(4, 7, 3, generator=g)
    step, offset = 0.5 + torch.rand(4, generator=g), 20 * torch.randn(4, 2, generator=g)
    moved = pose.reframed(step, offset)
    torch.testing.assert_close(moved.project(points), pose.project(points) * step[:, None, None] + offset[:, None])
    back = moved.reframed(1 / step, -offset / step[:, None])
    torch.testing.assert_close(back.trans2d, pose.trans2d)
    torch.testing.assert_close(back.scale, pose.scale)
    torch.testing.assert_close(pose[1].project(points[1:2]), pose.project(points)[1:2])
    torch.testing.assert_close(pose.screen(points)[..., :2], pose.project(points))
    with pytest.raises(ValueError, match="trans2d"):
        WeakPerspective(torch.zeros(2, 3), torch.ones(2), torch.zeros(3, 2))


def test_euler_jacobian_matches_autograd():
    from core.camera import euler_to_matrix_jacobian

    angles = torch.tensor([[0.3, -1.1, 2.0], [0.0, 0.0, 0.0], [-2.5, 1.5, 0.7]], dtype=torch.float64)
    for b in range(len(angles)):
        expected = torch.autograd.functional.jacobian(lambda a: euler_to_matrix(a[None])[0], angles[b])
        assert torch.allclose(euler_to_matrix_jacobian(angles)[b], expected, atol=1e-12)
