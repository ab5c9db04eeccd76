"""Overlays, landmark pictures, grids and the demo renders."""

import numpy as np
import pytest
import torch
import trimesh
from PIL import Image

from utils.io.images import to_float, to_float_batch, to_uint8
from utils.visualization import (
    DETECTED_COLOR,
    PROJECTED_COLOR,
    draw_landmark_pair,
    fit_pictures,
    frame_mesh,
    image_grid,
    main,
    overlay_mesh,
    render_mesh,
    blend_pixels,
    save_jpeg,
    save_png,
    side_by_side,
)

SQUARE = np.array([[1.5, 2.5, 5.0], [6.5, 2.5, 5.0], [6.5, 7.5, 5.0], [1.5, 7.5, 5.0]])
SQUARE_TRIS = np.array([[0, 2, 1], [0, 3, 2]])


def test_uint8_float_round_trip():
    image = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    assert to_float(image).shape == (1, 3, 5, 7)
    np.testing.assert_array_equal(to_uint8(to_float(image)[0]), image)


def test_to_float_accepts_read_only_images_without_warning(recwarn):
    images = np.random.default_rng(1).integers(0, 256, (2, 4, 6, 3), dtype=np.uint8)
    images.flags.writeable = False
    batch = to_float_batch(images)
    assert batch.shape == (2, 3, 4, 6) and batch.dtype == torch.float32
    np.testing.assert_array_equal(to_uint8(batch[1]), images[1])
    np.testing.assert_array_equal(to_float(images[0]).numpy(), batch[:1].numpy())
    assert not [w for w in recwarn if "not writable" in str(w.message)]
    with pytest.raises(ValueError, match="images_rgb"):
        to_float_batch(images[0])


def _whole_frame_overlay(photo, verts, triangles, vertex_alpha, alpha):
    """The reference of the windowed pictures: the whole frame rasterized, each vertex's grey lit by
    the default light, colour and opacity interpolated, blended as the module blends."""
    from core.lighting import sh_shading
    from core.mesh import vertex_normals
    from core.render.rasterize import Fragments, interpolate, rasterize
    from core.render.shade import default_sh

    points = torch.as_tensor(verts).float()[None]
    tris = torch.as_tensor(triangles).long()
    raw = rasterize(points.double(), tris, photo.shape[0], photo.shape[1], cull_backfaces=True)
    fragments = Fragments(raw.tri_id, raw.bary.float(), raw.depth.float())
    normals = vertex_normals(points * torch.tensor([1.0, -1.0, 1.0]), tris)
    attributes = [(0.8 * sh_shading(normals, default_sh(1))).clamp(0.0, 1.0)]
    if vertex_alpha is not None:
        attributes.append(torch.as_tensor(vertex_alpha).float().reshape(1, -1, 1))
    values = interpolate(fragments, tris, torch.cat(attributes, -1))[0].numpy()
    weight = values[..., 3] if vertex_alpha is not None else fragments.mask[0].numpy().astype(np.float32)
    return blend_pixels(photo, values[..., :3], alpha * weight)


@pytest.mark.parametrize("scale, centre", [(0.35, (60.0, 40.0)), (0.17, (131.3, 97.8)), (0.5, (-5.0, 90.0)),
                                           (0.35, (-400.0, 40.0))])
def test_fit_pictures_are_the_two_overlays(ict_face, scale, centre):
    """One rasterization and shading for both pictures of a fit, over the mesh's bounding box only:
    the same pixels as two whole-frame overlay_mesh calls, for a face filling a photo, a small one
    in a large photo (at fractional pixels), one cut by the photo's edges and one beside the photo."""
    g = np.random.default_rng(3)
    photo = g.integers(0, 256, (96, 120, 3) if scale == 0.35 else (180, 250, 3), dtype=np.uint8)
    verts = ict_face.neutral.numpy() * np.array([scale, -scale, scale]) + np.array([*centre, 0.0])
    soft = g.uniform(0.0, 1.0, ict_face.n_vertices)
    white = np.full_like(photo, 255)
    for weights in (soft, None):
        over, geometry = fit_pictures(photo, verts, ict_face.triangles, vertex_alpha=weights)
        np.testing.assert_array_equal(over, overlay_mesh(photo, verts, ict_face.triangles, vertex_alpha=weights))
        np.testing.assert_array_equal(geometry, overlay_mesh(white, verts, ict_face.triangles, alpha=1.0))
        reference = _whole_frame_overlay(photo, verts, ict_face.triangles, weights, 0.6)
        np.testing.assert_array_equal(over, reference)
        reference = _whole_frame_overlay(white, verts, ict_face.triangles, None, 1.0)
        np.testing.assert_array_equal(geometry, reference)
    drawn = (geometry != 255).any()
    assert drawn == (centre[0] > -100) and drawn == (over != photo).any()


def test_overlay_blends_grey_mesh_at_sixty_percent():
    photo = np.full((10, 10, 3), 50, dtype=np.uint8)
    out = overlay_mesh(photo, SQUARE, SQUARE_TRIS, alpha=0.6)
    covered = np.zeros((10, 10), dtype=bool)
    covered[3:8, 2:7] = True
    np.testing.assert_array_equal(out[~covered], photo[~covered])
    light_z = 1.0 / np.linalg.norm([0.3, 0.4, 1.0])
    grey = 0.8 * (0.35 + 0.65 * light_z)
    expected = 0.6 * grey * 255 + 0.4 * 50
    assert np.abs(out[covered].astype(float) - expected).max() <= 1.0


def test_landmark_pair_uses_two_colours():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    detected = np.array([[10.0, 10.0], [30.0, 12.0]])
    projected = np.array([[10.0, 30.0]])
    out = draw_landmark_pair(image, detected, projected, radius=2)
    assert tuple(out[10, 10]) == DETECTED_COLOR and tuple(out[12, 30]) == DETECTED_COLOR
    assert tuple(out[30, 10]) == PROJECTED_COLOR
    assert tuple(out[20, 20]) == (0, 0, 0)
    assert np.all(image == 0)  # input untouched


def test_grid_places_images_in_cells():
    a = np.full((10, 20, 3), 10, dtype=np.uint8)
    b = np.full((15, 5, 3), 20, dtype=np.uint8)
    c = np.full((4, 4, 3), 30, dtype=np.uint8)
    grid = image_grid([a, b, c], ncols=2, pad=2)
    assert grid.shape == (2 * (15 + 2) + 2, 2 * (20 + 2) + 2, 3)
    assert np.all(grid[2:12, 2:22] == 10)
    assert np.all(grid[2:17, 24:29] == 20)
    assert np.all(grid[19:23, 2:6] == 30)
    assert np.all(grid[0:2] == 255)
    row = side_by_side(a, a, pad=0)
    assert row.shape == (10, 40, 3)
    with pytest.raises(ValueError, match="labels: expected 3 captions, got 1"):
        image_grid([a, b, c], labels=["x"])


def test_grid_captions_are_white_on_a_darkened_band_within_the_cell():
    light = np.full((60, 120, 3), 200, dtype=np.uint8)
    grid = image_grid([light, light], ncols=2, pad=2, labels=["frame 12: blink", ""])
    band = grid[2:22, 2:60]
    assert band.max() == 255 and np.median(band) == 80        # white text over 200 darkened to 80
    assert np.all(grid[30:62, 2:122] == 200)                  # below the band: the image as it was
    assert np.all(grid[2:62, 124:244] == 200)                 # an empty caption draws nothing


def test_render_mesh_frames_and_lights_a_sphere():
    sphere = trimesh.creation.icosphere(subdivisions=3)
    verts = torch.tensor(sphere.vertices, dtype=torch.float32)[None] * 40.0
    tris = torch.tensor(sphere.faces)
    screen, _ = frame_mesh(verts, 64, margin=0.1)
    # Diameter 0.8 * 64 = 51.2 px centred on the image centre 31.5.
    assert float(screen[0, :, 0].min()) == pytest.approx(31.5 - 25.6, abs=1e-4)
    assert float(screen[0, :, 1].max()) == pytest.approx(31.5 + 25.6, abs=1e-4)
    shaded, normals, depth = (render_mesh(verts, tris, 64, mode=m)[0]
                              for m in ("shaded", "normals", "depth"))
    assert tuple(shaded[0, 0]) == (255, 255, 255)                  # background
    centre = shaded[31:33, 31:33].astype(float).mean()
    light_z = 1.0 / np.linalg.norm([0.3, 0.4, 1.0])
    assert centre == pytest.approx(255 * 0.8 * (0.35 + 0.65 * light_z), abs=4)
    # Light comes from the upper right: the upper-right quadrant is brighter than lower-left.
    assert shaded[20, 44].mean() > shaded[44, 20].mean() + 40
    np.testing.assert_allclose(normals[32, 32], [128, 128, 255], atol=4)
    assert depth[32, 32].mean() > 240 and depth[32, 12].mean() < depth[32, 32].mean()


def test_demo_writes_upright_face_renders(tmp_path, ict_dir, capsys):
    assert main(["--demo", "--out", str(tmp_path), "--model", str(ict_dir)]) == 0
    assert str(tmp_path) in capsys.readouterr().out
    names = {p.name for p in tmp_path.glob("*.png")}
    assert {"neutral_front_shaded.png", "random_front_shaded.png", "summary.png",
            "overlay_landmarks.png", "random_three_quarter_shaded.png"} <= names
    front = np.asarray(Image.open(tmp_path / "neutral_front_shaded.png"))
    random = np.asarray(Image.open(tmp_path / "random_front_shaded.png"))
    assert front.shape == (256, 256, 3)
    assert not np.array_equal(front, random)
    covered = np.any(front != 255, axis=-1)
    rows = np.nonzero(covered.any(axis=1))[0]
    # Upright head: the top of the skull is narrower than the shoulders at the bottom.
    assert covered[rows[0] + 5].sum() < covered[rows[-1] - 5].sum()
    # Lit face: the face centre is mid-grey, not black or background white.
    assert 80 < front[100:140, 110:146].mean() < 240


@pytest.mark.parametrize("filtered", [True, False])
def test_save_png_keeps_the_pixels_with_either_encoder(tmp_path, monkeypatch, filtered):
    """The picture read back is the array written, by OpenCV's 'up'-filtered encoder and by Pillow's
    (OpenCV builds without the filter choice), for an odd size with smooth and noisy parts."""
    import utils.visualization as visualization

    if not filtered:
        monkeypatch.setattr(visualization, "_PNG_FILTER", None)
    elif visualization._PNG_FILTER is None:
        pytest.skip("this OpenCV cannot choose a PNG row filter")
    rng = np.random.default_rng(3)
    ramp = np.linspace(0, 255, 131, dtype=np.uint8)[None, :, None]
    image = np.concatenate([np.broadcast_to(ramp, (37, 131, 3)),
                            rng.integers(0, 256, (37, 131, 3), dtype=np.uint8)], 0)
    image[0, 0] = (255, 0, 0)  # channel order: red stays red
    path = save_png(tmp_path / "sub" / "picture.png", image, compress_level=1)
    back = np.asarray(Image.open(path).convert("RGB"))
    assert path.parent.name == "sub" and np.array_equal(back, image)
    assert tuple(back[0, 0]) == (255, 0, 0)


@pytest.mark.parametrize("opencv", [True, False])
def test_save_jpeg_keeps_colour_at_full_resolution(tmp_path, monkeypatch, opencv):
    """A visualization as JPEG, by OpenCV's encoder and by Pillow's: smooth parts come back within a
    few levels, and one-pixel coloured dots keep their hue (no chroma subsampling, which would
    average a red dot with its grey neighbours into a brownish blur)."""
    import utils.visualization as visualization

    if not opencv:
        monkeypatch.setattr(visualization, "_JPEG_SAMPLING", None)
    elif visualization._JPEG_SAMPLING is None:
        pytest.skip("this OpenCV cannot choose a JPEG's chroma sampling")
    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    image = np.ascontiguousarray(np.broadcast_to(ramp[None, :, None], (64, 96, 3)))
    dots = [(8 + 16 * k, 9 + 16 * k) for k in range(4)]
    for y, x in dots:
        image[y, x] = (255, 32, 32)
    path = save_jpeg(tmp_path / "sub" / "picture.jpg", image)
    back = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert path.parent.name == "sub" and path.read_bytes()[:2] == b"\xff\xd8" and back.shape == image.shape
    smooth = np.ones(image.shape[:2], bool)  # JPEG's 8 x 8 blocks without a dot
    for y, x in dots:
        smooth[y // 8 * 8:y // 8 * 8 + 8, x // 8 * 8:x // 8 * 8 + 8] = False
    assert np.abs(back - image)[smooth].max() <= 2
    for y, x in dots:
        red, green, blue = back[y, x]
        assert red - max(green, blue) > 120, (y, x, back[y, x])
    with pytest.raises(ValueError, match="quality 0"):
        save_jpeg(tmp_path / "bad.jpg", image, quality=0)


def test_blend_pixels_known_answers():
    """Weight 0 keeps the pixel, 1 gives the colour, 0.5 the rounded midpoint; out-of-range colours clip."""
    under = np.array([[[0, 100, 255], [10, 20, 30]]], dtype=np.uint8)
    colour = np.array([[[1.0, 0.2, 0.0], [2.0, -1.0, 0.5]]], dtype=np.float32)
    np.testing.assert_array_equal(blend_pixels(under, colour, np.zeros((1, 2), np.float32)), under)
    np.testing.assert_array_equal(blend_pixels(under, colour, np.ones((1, 2), np.float32)),
                                  [[[255, 51, 0], [255, 0, 128]]])
    np.testing.assert_array_equal(blend_pixels(under, colour, np.full((1, 2), 0.5, np.float32)),
                                  [[[128, 76, 128], [255, 0, 79]]])
