"""Rasterizer, visibility and shaders on synthetic geometry with known answers, and the ICT face."""

import logging
import math

import pytest
import torch
import trimesh

import core.render.rasterize as rasterize_module
from core.camera import euler_to_matrix, weak_perspective_screen
from core.mesh import vertex_normals
from core.render.rasterize import Fragments, interpolate, kernel_built, rasterize, zbuffer_depth
from core.render.shade import (composite, default_sh, render_depth, render_flat, render_normals,
                               render_overlay, render_shaded, render_vertex_colors)
from core.render.visibility import front_facing, vertex_visibility

BACKENDS = [pytest.param("cython", marks=pytest.mark.skipif(
    not kernel_built(), reason="core.render._rasterize is not built (pip install -e . or python setup.py build_ext "
    "--inplace)")), "numpy"]

# A square facing the camera (counter-clockwise seen from +z, i.e. with v pointing down its
# corners run clockwise in (u, v)), corners off the pixel grid, at depth 5.
SQUARE = torch.tensor([[[1.5, 2.5, 5.0], [6.5, 2.5, 5.0], [6.5, 7.5, 5.0], [1.5, 7.5, 5.0]]])
SQUARE_TRIS = torch.tensor([[0, 2, 1], [0, 3, 2]])


def _sphere_screen(angles=(0.3, -0.5, 0.2), subdivisions=3):
    mesh = trimesh.creation.icosphere(subdivisions=subdivisions)
    verts = torch.tensor(mesh.vertices, dtype=torch.float32)[None] * 25.0
    R = euler_to_matrix(torch.tensor([angles]))
    screen = weak_perspective_screen(verts, R, torch.tensor([1.0]), torch.tensor([[31.5, 31.5]]))
    return verts, torch.tensor(mesh.faces, dtype=torch.int64), screen, R


def _random_soup(seed: int, n_vertices=120, n_faces=200, size=(40, 56)):
    gen = torch.Generator().manual_seed(seed)
    verts = torch.rand(1, n_vertices, 3, generator=gen, dtype=torch.float64)
    verts = verts * torch.tensor([size[1] + 10.0, size[0] + 10.0, 20.0],
                                 dtype=torch.float64) - 5.0
    verts[0, :12, :2] = torch.round(verts[0, :12, :2])  # corners exactly on pixel centres
    verts[0, 12, 0] = float("nan")
    tris = torch.randint(0, n_vertices, (n_faces, 3), generator=gen)
    tris[0] = torch.tensor([1, 1, 2])                    # degenerate
    tris[1] = torch.tensor([0, 1, 2])
    tris[2] = torch.tensor([2, 1, 0])                    # same triangle, equal depths: tie
    return verts, tris


@pytest.mark.parametrize("backend", BACKENDS)
def test_square_covers_exactly_the_expected_pixels(backend):
    frags = rasterize(SQUARE, SQUARE_TRIS, 10, 10, backend=backend)
    expected = torch.zeros(1, 10, 10, dtype=torch.bool)
    expected[0, 3:8, 2:7] = True  # rows v in [2.5, 7.5], cols u in [1.5, 6.5]
    assert torch.equal(frags.mask, expected)
    torch.testing.assert_close(frags.depth[expected], torch.full((25,), 5.0))
    assert torch.all(frags.depth[~expected] == -float("inf"))
    torch.testing.assert_close(frags.bary[expected].sum(-1), torch.ones(25))
    assert torch.all(frags.bary[~expected] == 0)
    # Barycentrics reproduce the pixel position from the triangle's corners.
    corners = SQUARE[0, SQUARE_TRIS[frags.tri_id[expected]]]          # (25, 3, 3)
    position = (frags.bary[expected][..., None] * corners).sum(1)[:, :2]
    rows, cols = torch.nonzero(expected[0], as_tuple=True)
    torch.testing.assert_close(position, torch.stack([cols, rows], -1).float())


@pytest.mark.parametrize("backend", BACKENDS)
def test_nearer_of_two_overlapping_triangles_wins(backend):
    far = [[0.2, 0.3, -10.0], [9.7, 0.4, -10.0], [0.3, 9.6, -10.0]]
    near = [[-0.5, -0.6, 3.0], [12.8, -0.1, 3.0], [-0.4, 12.9, 3.0]]  # covers all of far
    for order in ([far, near], [near, far]):
        verts = torch.tensor([order[0] + order[1]])
        tris = torch.tensor([[0, 2, 1], [3, 5, 4]])
        frags = rasterize(verts, tris, 10, 10, backend=backend)
        near_id = 1 if order[1] is near else 0
        assert int(frags.mask.sum()) > 60
        assert torch.all(frags.tri_id[frags.mask] == near_id)
        torch.testing.assert_close(frags.depth[frags.mask], torch.full_like(
            frags.depth[frags.mask], 3.0))


def test_backends_agree_on_random_overlapping_triangles():
    if not kernel_built():
        pytest.skip("core.render._rasterize is not built")
    for seed in range(3):
        verts, tris = _random_soup(seed)
        for cull in (False, True):
            a = rasterize(verts, tris, 40, 56, backend="cython", cull_backfaces=cull)
            b = rasterize(verts, tris, 40, 56, backend="numpy", cull_backfaces=cull)
            assert int(a.mask.sum()) > 500
            assert torch.equal(a.tri_id, b.tri_id)
            assert torch.equal(a.bary, b.bary)
            assert torch.equal(a.depth, b.depth)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_is_its_images_rasterized_one_by_one(backend):
    """The images of a batch (rasterized side by side on threads) give what each gives alone."""
    soup, tris = _random_soup(5)
    verts = torch.cat([soup + torch.tensor([3.0 * k, -2.0 * k, 0.0], dtype=soup.dtype) for k in range(4)])
    batch = rasterize(verts, tris, 40, 56, backend=backend)
    for k in range(4):
        alone = rasterize(verts[k:k + 1], tris, 40, 56, backend=backend)
        assert torch.equal(batch.tri_id[k:k + 1], alone.tri_id) and torch.equal(batch.depth[k:k + 1], alone.depth)
        assert torch.equal(batch.bary[k:k + 1], alone.bary)
    assert not torch.equal(batch.tri_id[0], batch.tri_id[1])  # the images differ
    for dtype in (torch.float64, torch.float32):  # the batch written in the vertices' dtype
        cast = rasterize(verts.to(dtype), tris, 40, 56, backend=backend)
        wide = rasterize(verts.to(dtype).double(), tris, 40, 56, backend=backend)  # the kernel's float64
        assert cast.bary.dtype == cast.depth.dtype == dtype and torch.equal(cast.tri_id, wide.tri_id)
        assert torch.equal(cast.depth, wide.depth.to(dtype)) and torch.equal(cast.bary, wide.bary.to(dtype))
        for images in (verts.to(dtype), verts[2:3].to(dtype)):  # a batch, and one image
            tri_id, depth = zbuffer_depth(images, tris, 40, 56, backend=backend)
            full = rasterize(images, tris, 40, 56, backend=backend)
            assert torch.equal(tri_id, full.tri_id) and torch.equal(depth, full.depth)


def test_numpy_backend_chunks_give_the_same_result(monkeypatch):
    verts, tris = _random_soup(7)
    whole = rasterize(verts, tris, 40, 56, backend="numpy")
    monkeypatch.setattr(rasterize_module, "_NUMPY_CHUNK", 50)
    chunked = rasterize(verts, tris, 40, 56, backend="numpy")
    assert torch.equal(whole.tri_id, chunked.tri_id)


def test_culling_and_front_facing_on_a_sphere():
    verts, tris, screen, R = _sphere_screen()
    normals_cam = vertex_normals(verts @ R.transpose(1, 2), tris)
    face_z = normals_cam[0][tris].mean(1)[:, 2]
    facing = front_facing(screen, tris)[0]
    clear = face_z.abs() > 0.05
    assert torch.equal(facing[clear], face_z[clear] > 0)
    culled = rasterize(screen, tris, 64, 64, cull_backfaces=True)
    full = rasterize(screen, tris, 64, 64)
    assert torch.equal(culled.mask, full.mask)            # a closed convex mesh looks the same
    assert bool(facing[full.tri_id[full.mask]].all())     # only front faces are ever nearest


def test_back_of_a_closed_mesh_is_invisible():
    verts, tris, screen, R = _sphere_screen()
    depth_dir = (verts @ R.transpose(1, 2))[0, :, 2] / 25.0   # cos of angle to the viewer
    visible = vertex_visibility(screen, tris, (64, 64), tol=0.5)[0]
    assert not bool(visible[depth_dir < -0.1].any())
    assert bool(visible[depth_dir > 0.2].all())
    # The depth test alone: hidden behind the front, except just behind the silhouette, where
    # the inscribed polygon leaves the pixel empty.
    depth_only = vertex_visibility(screen, tris, (64, 64), tol=0.5, front_facing_only=False)[0]
    assert not bool(depth_only[depth_dir < -0.3].any())
    assert bool(depth_only[depth_dir > 0.2].all())
    frags = rasterize(screen, tris, 64, 64)
    assert torch.equal(vertex_visibility(screen, tris, frags, tol=0.5),
                       vertex_visibility(screen, tris, (64, 64), tol=0.5))


def test_visibility_outside_the_image_and_occluded():
    # A far triangle behind a near square: its vertex under the square is hidden; a vertex
    # outside the image is never visible.
    verts = torch.cat([SQUARE, torch.tensor([[[4.0, 5.0, 1.0], [8.5, 8.8, 1.0],
                                              [20.0, 5.0, 1.0]]])], dim=1)
    tris = torch.cat([SQUARE_TRIS, torch.tensor([[4, 5, 6]])])
    visible = vertex_visibility(verts, tris, (10, 10), tol=0.1, front_facing_only=False)[0]
    assert visible.tolist() == [True, True, True, True, False, True, False]


def test_barycentrics_are_differentiable():
    verts = torch.tensor([[[1.3, 1.2, 2.0], [8.7, 2.1, -1.0], [3.4, 7.9, 4.0]]],
                         dtype=torch.float64, requires_grad=True)
    tris = torch.tensor([[0, 2, 1]])

    def depth_and_bary(v):
        frags = rasterize(v, tris, 10, 10)
        return frags.bary[frags.mask], frags.depth[frags.mask]

    assert torch.autograd.gradcheck(depth_and_bary, (verts,))
    with torch.no_grad():
        kernel = rasterize(verts, tris, 10, 10)
    frags = rasterize(verts, tris, 10, 10)
    assert frags.bary.requires_grad and not kernel.bary.requires_grad
    torch.testing.assert_close(frags.bary, kernel.bary)
    torch.testing.assert_close(frags.depth, kernel.depth)


def test_shaders_on_the_square():
    frags = rasterize(SQUARE, SQUARE_TRIS, 10, 10)
    mask = frags.mask[0]
    flat = render_flat(frags, (0.1, 0.2, 0.3))
    assert flat.shape == (1, 3, 10, 10)
    torch.testing.assert_close(flat[0, :, mask], torch.tensor([[0.1], [0.2], [0.3]]).expand(
        3, 25))
    assert torch.all(flat[0, :, ~mask] == 0)
    # Colours linear in position are interpolated exactly.
    colors = torch.stack([SQUARE[..., 0] / 10, SQUARE[..., 1] / 10, SQUARE[..., 2] / 10], -1)
    image = render_vertex_colors(frags, SQUARE_TRIS, colors)
    rows, cols = torch.nonzero(mask, as_tuple=True)
    torch.testing.assert_close(image[0, 0, rows, cols], cols.float() / 10)
    torch.testing.assert_close(image[0, 1, rows, cols], rows.float() / 10)
    normals = torch.tensor([0.0, 0.0, 1.0]).expand(1, 4, 3)
    torch.testing.assert_close(render_normals(frags, SQUARE_TRIS, normals)[0, :, mask],
                               torch.tensor([[0.5], [0.5], [1.0]]).expand(3, 25))
    light = torch.nn.functional.normalize(torch.tensor([0.3, 0.4, 1.0]), dim=0)
    shaded = render_shaded(frags, SQUARE_TRIS, normals, albedo=0.8)
    torch.testing.assert_close(shaded[0, :, mask],
                               torch.full((3, 25), 0.8 * (0.35 + 0.65 * float(light[2]))))
    tilted = torch.nn.functional.normalize(torch.tensor([0.3, 0.4, 1.0]), dim=0).expand(1, 4, 3)
    torch.testing.assert_close(render_shaded(frags, SQUARE_TRIS, tilted, albedo=1.0,
                                             sh=default_sh(1))[0, :, mask],
                               torch.ones(3, 25))  # lit head-on: ambient + diffuse = 1


def test_render_depth_scales_nearest_to_one():
    verts = torch.tensor([[[0.0, 0.0, 0.0], [9.0, 0.0, 9.0], [0.0, 9.0, 0.0]]])
    frags = rasterize(verts, torch.tensor([[0, 1, 2]]), 10, 10)
    depth = render_depth(frags)
    assert depth.shape == (1, 1, 10, 10)
    assert float(depth[0, 0, 0, 9]) == pytest.approx(1.0)
    assert float(depth[0, 0, 0, 0]) == pytest.approx(0.0)
    assert float(depth[0, 0, 0, 4]) == pytest.approx(4.0 / 9.0)


def test_composite_and_overlay():
    frags = rasterize(SQUARE, SQUARE_TRIS, 10, 10)
    background = torch.full((1, 3, 10, 10), 0.2)
    out = composite(torch.ones(1, 3, 10, 10), frags.mask, background, alpha=0.6)
    torch.testing.assert_close(out[0, :, frags.mask[0]], torch.full((3, 25), 0.68))
    torch.testing.assert_close(out[0, :, ~frags.mask[0]], torch.full((3, 75), 0.2))
    overlay = render_overlay(background, SQUARE, SQUARE_TRIS, alpha=0.6)
    shaded = render_shaded(frags, SQUARE_TRIS, torch.tensor([0.0, 0, 1]).expand(1, 4, 3))
    torch.testing.assert_close(overlay[0, :, frags.mask[0]],
                               0.6 * shaded[0, :, frags.mask[0]] + 0.4 * 0.2)
    torch.testing.assert_close(overlay[0, :, ~frags.mask[0]], torch.full((3, 75), 0.2))
    # Seen from behind (mirrored winding) the square is culled in overlays.
    behind = render_overlay(background, SQUARE, SQUARE_TRIS.flip(1))
    torch.testing.assert_close(behind, background)


def test_interpolate_on_background_is_zero():
    frags = rasterize(SQUARE, SQUARE_TRIS, 10, 10)
    values = interpolate(frags, SQUARE_TRIS, torch.ones(1, 4, 2))
    assert values.shape == (1, 10, 10, 2)
    assert torch.all(values[0][~frags.mask[0]] == 0)
    assert torch.all(values[0][frags.mask[0]] == 1)


def test_interpolate_is_the_barycentric_blend_of_the_corners():
    """Per covered pixel, sum_k bary_k * attribute(corner k) of its triangle, in every image of a batch."""
    verts, tris = _random_soup(5)
    verts = torch.cat([verts, verts.flip(1)]).nan_to_num(0.0)  # two different images
    frags = rasterize(verts, tris, 40, 56)
    gen = torch.Generator().manual_seed(0)
    attributes = torch.randn(2, verts.shape[1], 4, dtype=torch.float64, generator=gen)
    values = interpolate(frags, tris, attributes)
    for b in range(2):
        rows, cols = torch.nonzero(frags.mask[b], as_tuple=True)
        corners = tris[frags.tri_id[b, rows, cols]]  # (P, 3)
        expected = (attributes[b][corners] * frags.bary[b, rows, cols][..., None]).sum(1)
        assert torch.allclose(values[b, rows, cols], expected, atol=1e-12)
        assert torch.all(values[b][~frags.mask[b]] == 0)


def test_fallback_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(rasterize_module, "_kernel", None)
    monkeypatch.setattr(rasterize_module, "_warned_fallback", False)
    with caplog.at_level(logging.WARNING, logger="core.render.rasterize"):
        a = rasterize(SQUARE, SQUARE_TRIS, 10, 10)
        rasterize(SQUARE, SQUARE_TRIS, 10, 10)
    assert sum("NumPy fallback" in r.message for r in caplog.records) == 1
    assert int(a.mask.sum()) == 25
    with pytest.raises(RuntimeError, match="core.render._rasterize is not built"):
        rasterize(SQUARE, SQUARE_TRIS, 10, 10, backend="cython")


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match=r"vertices_px: expected shape \(\*, \*, 3\)"):
        rasterize(torch.zeros(4, 3), SQUARE_TRIS, 10, 10)
    with pytest.raises(ValueError, match=r"triangles: indices must lie in \[0, 4\)"):
        rasterize(SQUARE, torch.tensor([[0, 1, 4]]), 10, 10)
    with pytest.raises(ValueError, match="backend: expected"):
        rasterize(SQUARE, SQUARE_TRIS, 10, 10, backend="opengl")
    with pytest.raises(ValueError, match="height, width"):
        rasterize(SQUARE, SQUARE_TRIS, 0, 10)


def _frontal_face_screen(model, angles=(0.0, 0.0, 0.0), size=256):
    verts = model.neutral[None]
    lo, hi = verts[0].amin(0), verts[0].amax(0)
    scale = 0.9 * size / float((hi - lo)[:2].max())
    R = euler_to_matrix(torch.tensor([angles]))
    return weak_perspective_screen(verts - (lo + hi) / 2, R, torch.tensor([scale]),
                                   torch.tensor([[(size - 1) / 2, (size - 1) / 2]]))


def test_ict_face_renders_with_outward_winding_and_backends_agree(ict_face):
    screen = _frontal_face_screen(ict_face)
    frags = rasterize(screen, ict_face.triangles, 256, 256)
    assert isinstance(frags, Fragments)
    assert int(frags.mask.sum()) > 0.25 * 256 * 256
    # Frontal view: almost every covered pixel shows a camera-facing triangle (outward winding).
    facing = front_facing(screen, ict_face.triangles)[0]
    assert float(facing[frags.tri_id[frags.mask]].float().mean()) > 0.98
    visible = vertex_visibility(screen, ict_face.triangles, frags)[0]
    landmarks = ict_face.landmark_indices
    # Every landmark is seen from the front but the inner mouth corners, inside the lip crease.
    assert torch.nonzero(~visible[landmarks])[:, 0].tolist() == [60, 64]
    # Turned 70 degrees to its left (nose towards the viewer's right), the left jawline (9-16)
    # is hidden behind the face and the right one (0-7) and the nose stay visible.
    turned = _frontal_face_screen(ict_face, (0.0, math.radians(70), 0.0))
    visible = vertex_visibility(turned, ict_face.triangles, (256, 256))[0]
    assert not bool(visible[landmarks[9:17]].any())
    assert bool(visible[landmarks[list(range(8)) + [30, 33]]].all())
    if kernel_built():
        numpy_frags = rasterize(screen, ict_face.triangles, 256, 256, backend="numpy")
        assert torch.equal(frags.tri_id, numpy_frags.tri_id)


@pytest.mark.parametrize("compiled", [pytest.param(True, marks=pytest.mark.skipif(
    not kernel_built(), reason="core.render._rasterize is not built")), False])
def test_shade_texels_picks_the_nearest_texel_times_the_shading(compiled):
    """A square whose corners map to the whole of a 4 x 4 texture of distinct texels, under a
    light of 0.5 at every vertex: each covered pixel shows its texel x 0.5, the texel of its (u, v)
    (v up); pixels outside the square keep the frame's value, in a window that is a view."""
    from core.render.textured import shade_texels

    texture = (torch.arange(48, dtype=torch.float32).reshape(4, 4, 3) + 1) / 50.0
    square = torch.tensor([[[0.0, 0.0, 5.0], [8.0, 0.0, 5.0], [8.0, 8.0, 5.0], [0.0, 8.0, 5.0]]])
    uv = torch.tensor([[0.0, 1.0], [1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])   # image top = texture top
    fragments = rasterize(square, SQUARE_TRIS, 9, 9)
    frame = torch.full((3, 12, 12), 0.25)
    window = frame[:, 1:10, 2:11]
    light = torch.full((4, 3), 0.5)
    shade_texels(fragments, SQUARE_TRIS, light, uv[SQUARE_TRIS], texture, window, compiled=compiled)
    covered = fragments.tri_id[0] >= 0
    assert covered.sum() > 60
    rows, cols = torch.nonzero(covered, as_tuple=True)
    for i, j in zip(rows.tolist(), cols.tolist()):
        u, v = j / 8.0, 1.0 - i / 8.0
        col, row = min(int(u * 4), 3), min(int((1 - v) * 4), 3)
        torch.testing.assert_close(window[:, i, j], texture[row, col] * 0.5)
    assert bool((window[:, ~covered] == 0.25).all()) and bool((frame[:, 0] == 0.25).all())


@pytest.mark.skipif(not kernel_built(), reason="core.render._rasterize is not built")
def test_shade_texels_kernel_matches_torch_on_a_sphere():
    from core.render.textured import shade_texels

    _, tris, verts, _ = _sphere_screen()
    generator = torch.Generator().manual_seed(3)
    texture = torch.rand(64, 128, 3, generator=generator)
    corner_uv = torch.rand(len(tris), 3, 2, generator=generator)
    light = torch.rand(verts.shape[1], 3, generator=generator) * 1.5
    fragments = rasterize(verts, tris, 64, 64)
    out = {}
    for compiled in (True, False):
        window = torch.zeros(3, 64, 64)
        shade_texels(fragments, tris, light, corner_uv, texture, window, compiled=compiled)
        out[compiled] = window
    close = (out[True] - out[False]).abs().amax(0) < 1e-5
    assert int((fragments.tri_id[0] >= 0).sum()) > 1000
    assert float(close.float().mean()) > 0.999   # a texel boundary may fall either side of a rounding
