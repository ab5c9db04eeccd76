"""Issue 19: whole-head rigs, their parts and appearance.

The parts follow the rig (eyeballs turn rigidly with the gaze, the lids follow it, lower teeth
follow the jaw), the face stays the rig's own, a departure of the rig's face from the model's is
carried onto the parts, rig.npz format 3 round-trips, the texture round-trips through the
textured OBJ and the glTF, a synthetic subject's known albedo comes back from its photos, and the
renders fill the eye and mouth openings.
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from core.render.textured import sample_texture
from core.rig import head as head_module
from core.rig.head import whole_head
from core.rig.parts import EYE_LOOK_ANGLE, expression_with_gaze, gaze_from_expression, surface_distance
from core.rig.retarget import (OpeningGroups, RigRenderer, frontal_pose, neutral_sh, render_mesh_of, render_rig,
                               white_balanced)
from core.rig.rig import Rig
from core.rig.texture import texel_map
from core.rig.texture_fit import TextureConfig, estimate_texture, mirror_uvs, weighted_median
from tests.conftest import grid_triangles, imports_module
from utils.export import export_rig
from utils.export.gltf_read import read_glb
from utils.export.outputs import split_seams
from utils.io.meshes import load_textured_obj, save_textured_obj
from utils.visualization import FitOverlay

TEXTURE = 256  # atlas height in the tests (the default is 1024)


@pytest.fixture(scope="module")
def head(ict_model, ict_face):
    g = torch.Generator().manual_seed(3)
    rig = Rig.from_model(ict_face, 0.7 * torch.randn(ict_face.n_identity, generator=g))
    return whole_head(rig, ict_model, texture_height=TEXTURE)


def _weights(rig: Rig, **named: float) -> torch.Tensor:
    e = torch.zeros(1, rig.n_expression)
    for name, value in named.items():
        e[0, rig.expression_names.index(name)] = value
    return e


def test_whole_head_keeps_the_face_and_adds_the_model_parts(head, ict_model):
    e = torch.rand(2, head.n_expression, generator=torch.Generator().manual_seed(0)) * 0.5
    verts = head.head_vertices(e)
    assert verts.shape == (2, head.n_head_vertices, 3)
    away = (head.neutral[:, None, :] - head.parts.eye_centres[None]).norm(dim=-1).min(1).values > 25.0
    torch.testing.assert_close(verts[:, :head.n_vertices][:, away], head.vertices(e)[:, away])
    assert torch.equal(head.head_vertex_ids[:head.n_vertices], head.vertex_ids)
    for name in ("teeth", "eyeball_left", "mouth_socket"):
        ids = head.parts.vertex_ids[head.parts.ids(name)]
        assert torch.equal(ids.sort().values, ict_model.regions[name].long().sort().values)
    # A classical rig is the model's identity: its parts are the model's, unchanged.
    full = ict_model.vertices(head.codes["identity"][None])[0]
    torch.testing.assert_close(head.parts.neutral, full[head.parts.vertex_ids], atol=1e-4, rtol=0)
    tri = head.head_triangles
    assert int(tri.max()) < head.n_head_vertices and len(tri) > 2 * len(head.triangles)


def test_eyeballs_turn_rigidly_with_the_gaze_and_the_lids_follow(head):
    rest = head.head_vertices(torch.zeros(1, head.n_expression))[0]
    yaw, pitch = 0.3, 0.2
    gaze = torch.tensor([[[yaw, pitch], [yaw, pitch]]])
    turned = head.head_vertices(torch.zeros(1, head.n_expression), gaze)[0]
    for eye, name in enumerate(("eyeball_left", "eyeball_right")):
        ids = head.n_vertices + head.parts.ids(name)
        centre = head.parts.eye_centres[eye]
        torch.testing.assert_close((turned[ids] - centre).norm(dim=1), (rest[ids] - centre).norm(dim=1),
                                   atol=1e-4, rtol=0)  # rigid about the centre
        apex = ids[rest[ids, 2].argmax()]                # the cornea's front
        radius = float((rest[apex] - centre).norm())
        moved = turned[apex] - rest[apex]
        assert float(moved[0]) == pytest.approx(radius * math.sin(yaw) * math.cos(pitch), rel=0.05)  # towards +x
        assert float(moved[1]) == pytest.approx(-radius * math.sin(pitch), rel=0.05)             # down
    # The lids follow: the eyeLook weights come from the gaze, and give it back.
    e = expression_with_gaze(torch.zeros(1, head.n_expression), gaze, head.expression_names)
    assert float(e[0, head.expression_names.index("eyeLookOut_L")]) == pytest.approx(yaw / EYE_LOOK_ANGLE)
    assert float(e[0, head.expression_names.index("eyeLookIn_R")]) == pytest.approx(yaw / EYE_LOOK_ANGLE)
    assert float(e[0, head.expression_names.index("eyeLookDown_L")]) == pytest.approx(pitch / EYE_LOOK_ANGLE)
    torch.testing.assert_close(gaze_from_expression(e, head.expression_names), gaze)
    assert not torch.allclose(turned[:head.n_vertices], rest[:head.n_vertices])  # the lids moved


def test_lids_stay_outside_the_eyeballs(head):
    """eyeBlink moves a lid along a straight line, through the round eyeball: the contact keeps every
    face vertex outside it (and the lids closed over it), whatever the gaze."""
    for blink in (0.5, 1.0):
        for gaze in ((0.0, 0.0), (0.0, 0.4), (0.4, -0.3)):
            e = _weights(head, eyeBlink_L=blink, eyeBlink_R=blink)
            g = torch.tensor([[gaze, gaze]])
            verts = head.head_vertices(e, g)[0]
            raw = head.vertices(expression_with_gaze(e, g, head.expression_names))[0]
            for eye, name in enumerate(("eyeball_left", "eyeball_right")):
                ball = verts[head.n_vertices + head.parts.ids(name)]
                centre = head.parts.eye_centres[eye]
                # Along each face vertex's ray, no eyeball vertex in a 1-degree cone is farther out.
                d = verts[:head.n_vertices] - centre
                near = d.norm(dim=1) < 20.0
                rays = torch.nn.functional.normalize(d[near], dim=1)
                b = ball - centre
                cone = (rays @ torch.nn.functional.normalize(b, dim=1).T) > math.cos(math.radians(1.0))
                reach = torch.where(cone, b.norm(dim=1)[None], torch.zeros(1)).amax(1)
                assert float((reach - d[near].norm(dim=1)).max()) < 0.1
                if blink == 1.0 and eye == 0 and gaze == (0.0, 0.4):
                    moved = (verts[:head.n_vertices] - raw).norm(dim=1)
                    assert float(moved.max()) > 0.5  # the straight-line lid did cut the eyeball


def test_lower_teeth_follow_the_jaw(head, ict_face):
    rest = head.head_vertices(torch.zeros(1, head.n_expression))[0]
    opened = head.head_vertices(_weights(head, jawOpen=0.5))[0]
    teeth = head.n_vertices + head.parts.ids("teeth")
    drop = rest[teeth, 1] - opened[teeth, 1]
    chin = int(ict_face.landmark_indices[8])
    chin_drop = float(rest[chin, 1] - opened[chin, 1])
    lower = drop > 1.0
    assert 0.3 < float(lower.float().mean()) < 0.7           # about half the teeth: the lower row
    assert float(drop[lower].mean()) > 0.5 * chin_drop > 3.0  # they go down with the chin
    assert float(drop[~lower].abs().max()) < 0.5              # the upper row stays


def test_a_departure_of_the_face_is_carried_onto_the_parts(ict_model, ict_face):
    rig = Rig.from_model(ict_face, torch.zeros(ict_face.n_identity))
    shift = torch.tensor([1.5, -2.0, 0.5])
    moved = whole_head(replace(rig, neutral=rig.neutral + shift), ict_model, texture_height=64)
    base = whole_head(rig, ict_model, texture_height=64)
    for name in ("teeth", "eyeball_left", "head_and_neck", "gums_and_tongue"):
        ids = base.parts.ids(name)
        torch.testing.assert_close(moved.parts.neutral[ids] - base.parts.neutral[ids], shift.expand(len(ids), 3),
                                   atol=1e-3, rtol=0)
    torch.testing.assert_close(moved.parts.eye_centres - base.parts.eye_centres, shift.expand(2, 3), atol=1e-3, rtol=0)


def test_rig_format_3_round_trip_with_parts_and_texture(head, tmp_path):
    path = head.save(tmp_path / "rig" / "rig.npz")
    assert (tmp_path / "rig" / "rig_texture.png").is_file()
    back = Rig.load(path)
    e = _weights(head, jawOpen=0.4, eyeBlink_L=1.0)
    gaze = torch.tensor([[[0.1, -0.1], [0.2, 0.0]]])
    torch.testing.assert_close(back.head_vertices(e, gaze), head.head_vertices(e, gaze))
    assert torch.equal(back.head_triangles, head.head_triangles) and back.parts.names == head.parts.names
    torch.testing.assert_close(back.texture, head.texture, atol=0.5 / 255 + 1e-6, rtol=0)  # 8-bit PNG
    assert torch.equal(back.uv_triangles, head.uv_triangles) and back.parts.neck_cut == head.parts.neck_cut
    (tmp_path / "rig" / "rig_texture.png").unlink()
    assert Rig.load(path).texture is None  # a missing texture: per-vertex albedo (a warning)


def test_texture_round_trips_through_the_textured_obj(head, tmp_path):
    texture = np.round(head.texture.numpy() * 255).astype(np.uint8)
    verts = head.head_vertices(torch.zeros(1, head.n_expression))[0]
    save_textured_obj(tmp_path / "head.obj", verts, head.head_triangles, head.uvs, head.uv_triangles, texture)
    mesh = load_textured_obj(tmp_path / "head.obj")
    np.testing.assert_array_equal(mesh.texture, texture)
    np.testing.assert_array_equal(mesh.triangles, head.head_triangles.numpy())
    np.testing.assert_allclose(mesh.vertices, verts.numpy(), atol=1e-4)
    np.testing.assert_allclose(mesh.uvs[mesh.uv_triangles], head.uvs[head.uv_triangles].numpy(), atol=1e-6)
    # A second mesh sharing that texture file.
    save_textured_obj(tmp_path / "textured" / "pose.obj", verts, head.head_triangles, head.uvs, head.uv_triangles,
                      texture_file="../head.png")
    np.testing.assert_array_equal(load_textured_obj(tmp_path / "textured" / "pose.obj").texture, texture)


def test_split_seams_gives_one_uv_per_vertex():
    triangles = np.array([[0, 1, 2], [0, 2, 3]])
    uv_triangles = np.array([[0, 1, 2], [4, 2, 3]])  # vertex 0 has uv 0 in one triangle, 4 in the other
    source, tris, uv_ids = split_seams(triangles, uv_triangles, 4)
    assert source.tolist() == [0, 1, 2, 3, 0] and uv_ids.tolist() == [0, 1, 2, 3, 4]
    assert tris.tolist() == [[0, 1, 2], [4, 2, 3]]


def test_a_glb_prepared_before_its_texture_is_export_rigs_file(head, tmp_path):
    from utils.export.outputs import prepare_rig_glb, write_rig_glb_draft

    painted = head
    final = replace(head, texture=(1.0 - head.texture).contiguous())  # the texture made after the draft
    draft = prepare_rig_glb(painted)
    assert draft.texture_later
    written = write_rig_glb_draft(draft, final, tmp_path / "draft.glb")
    assert written.read_bytes() == export_rig(final, tmp_path / "rig.glb").read_bytes()
    with pytest.raises(ValueError, match="already written"):
        write_rig_glb_draft(draft, final, tmp_path / "again.glb")
    with pytest.raises(ValueError, match="texture_png is needed"):
        prepare_rig_glb(painted).write(tmp_path / "untextured.glb")


def test_texture_round_trips_through_the_gltf(head, tmp_path):
    content = read_glb(export_rig(head, tmp_path / "rig.glb"))
    texture = np.round(head.texture.numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(content.texture, texture)
    assert content.colors is None and content.texcoords is not None
    source = np.concatenate([np.arange(head.n_head_vertices),
                             content.gltf.meshes[0].extras["seamCopiesOf"]]).astype(np.int64)
    verts = head.head_vertices(torch.zeros(1, head.n_expression))[0].numpy()
    np.testing.assert_allclose(content.positions, verts[source] / 1000, atol=1e-7)
    # Every corner's texture coordinate is the rig's (v flipped to glTF's top-left origin).
    corners = content.texcoords[content.triangles]                         # (F, 3, 2)
    expected = head.uvs[head.uv_triangles].numpy()
    np.testing.assert_allclose(corners[..., 0], expected[..., 0], atol=1e-6)
    np.testing.assert_allclose(corners[..., 1], 1.0 - expected[..., 1], atol=1e-6)
    np.testing.assert_array_equal(source[content.triangles], head.head_triangles.numpy())
    assert (tmp_path / "rig.glb").stat().st_size < 12e6  # issue 17's limit for a whole head


def test_synthetic_subject_gets_its_albedo_back(ict_model, ict_face):
    """Photos rendered from a known per-vertex albedo (true shape, poses and lighting given): the
    texture over the face's well-seen skin is within 0.02 (of 1) of the truth on average."""
    from utils.synthetic.generator import SyntheticGenerator

    subject = SyntheticGenerator(ict_model).subject(6, seed=3)
    truth_rig = Rig.from_model(ict_face, torch.from_numpy(subject.identity), transfer=False,
                               albedo=torch.from_numpy(subject.albedo))
    rig = whole_head(truth_rig, ict_model, texture_height=TEXTURE)
    truth = rig.texture.clone()  # painted from the true per-vertex albedo
    images = torch.from_numpy(subject.images).permute(0, 3, 1, 2).float() / 255
    blank = replace(rig, texture=torch.full_like(rig.texture, 0.5))
    fit = estimate_texture(blank, images, torch.from_numpy(subject.expression), subject.pose,
                           torch.from_numpy(subject.sh), TextureConfig(height=TEXTURE))
    face = fit.skin.clone()
    face[:, TEXTURE:] = False  # the face's UV tile
    seen = face & (fit.weight >= TextureConfig().seen)
    assert int(seen.sum()) > 0.3 * int(face.sum())
    error = (fit.texture - truth).abs()[seen].mean()
    assert float(error) < 0.02, float(error)
    baseline = (torch.full_like(truth, 0.5) - truth).abs()[seen].mean()
    assert float(error) < 0.2 * float(baseline)


def test_weighted_median_known_answer():
    values = torch.tensor([[[1.0]], [[5.0]], [[2.0]], [[9.0]]])  # (G=4, N=1, C=1)
    weights = torch.tensor([[1.0], [1.0], [1.0], [10.0]])
    assert float(weighted_median(values, weights)) == 9.0
    assert float(weighted_median(values, torch.ones(4, 1))) == 2.0


def _grid(columns: int, rows: int, spacing: float = 1.0):
    """A flat grid, ``spacing`` mm apart: points (rows * columns, 3), triangles."""
    points = torch.tensor([[x * spacing, y * spacing, 0.0] for y in range(rows) for x in range(columns)])
    return points, grid_triangles(columns, rows)


def test_surface_distance_counts_each_edge_once():
    # Sources down the left column: every vertex is its column's number of 1 mm edges away, inner
    # rows (edges shared by two triangles) as the border rows; beyond the limit, the limit.
    points, triangles = _grid(11, 5)
    sources = (points[:, 0] == 0.0)
    distance = surface_distance(points, triangles, sources, 100.0).reshape(5, 11)
    assert torch.equal(distance, torch.arange(11.0).expand(5, 11))
    capped = surface_distance(points, triangles, sources, 4.5).reshape(5, 11)
    assert torch.equal(capped, torch.arange(11.0).clamp(max=4.5).expand(5, 11))
    none = surface_distance(points, triangles, torch.zeros(55, dtype=torch.bool), 3.0)
    assert torch.equal(none, torch.full((55,), 3.0))


def test_surface_distance_is_dijkstras_on_an_uneven_mesh():
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import dijkstra

    points, triangles = _grid(30, 20, spacing=2.0)
    points = points + torch.randn(points.shape, generator=torch.Generator().manual_seed(0)) * 0.6
    sources = torch.zeros(len(points), dtype=torch.bool)
    sources[[0, 100, 333, 599]] = True
    ours = surface_distance(points, triangles, sources, 9.0)
    edges = {tuple(sorted((int(t[i]), int(t[(i + 1) % 3])))) for t in triangles for i in range(3)}
    a, b = np.array(sorted(edges)).T
    length = np.linalg.norm(points[a].double().numpy() - points[b].double().numpy(), axis=1)
    graph = coo_matrix((length, (a, b)), shape=(len(points),) * 2).tocsr()
    theirs = dijkstra(graph, directed=False, indices=np.flatnonzero(sources.numpy()), min_only=True, limit=9.0)
    assert np.array_equal(ours.numpy(), np.minimum(theirs, 9.0).astype(np.float32))
    assert 0 < int((ours < 9.0).sum()) < len(points)


def test_the_rig_pipelines_import_no_library_they_need_only_sometimes():
    # Every photo job imports these; the glTF writer, SciPy's graph searches and image morphology
    # cost 0.1-0.2 s of its start-up and are needed only where a file is written or nothing is stored.
    code = "import utils.pipelines.rig, utils.pipelines.appearance, utils.visualization"
    for module in ("pygltflib", "scipy.sparse.csgraph", "scipy.ndimage"):
        assert imports_module(code, module) is False, module
    if head_module._KDTree is not None:  # pykdtree installed: no SciPy at all (0.1-0.17 s)
        assert imports_module(code, "scipy") is False


def test_nearest_face_vertices_are_scipys(ict_model, ict_face, monkeypatch):
    # pykdtree's neighbours and distances are cKDTree's to the bit, on a person's whole head
    # (the parts' 8 nearest face vertices) and on a mirror query (k = 1).
    if head_module._KDTree is None:
        pytest.skip("pykdtree is not installed (requirements_pip.txt): only cKDTree here")
    code = torch.randn(1, ict_model.n_identity, generator=torch.Generator().manual_seed(3))
    full = ict_model.vertices(code.to(ict_model.dtype))[0].double().numpy()
    face = ict_face.vertices(code.to(ict_face.dtype))[0].double().numpy()  # the face region of that head
    ours = head_module._nearest(face, full, 8), head_module._nearest(full, full * [-1.0, 1.0, 1.0])
    monkeypatch.setattr(head_module, "_KDTree", None)
    theirs = head_module._nearest(face, full, 8), head_module._nearest(full, full * [-1.0, 1.0, 1.0])
    for (d, i), (e, j) in zip(ours, theirs):
        assert np.array_equal(d, e) and np.array_equal(i, j) and i.dtype == j.dtype == np.int64
    assert ours[0][0].shape == (len(full), 8) and ours[1][0].shape == (len(full),)


def test_mirror_texels_are_the_mirror_images(head, ict_model):
    texels = texel_map(head.uvs, head.uv_triangles, TEXTURE)
    face = (texels.tri_id[0] >= 0) & (texels.tri_id[0] < len(head.triangles))
    tri, bary = texels.tri_id[0][face][::97], texels.bary[0][face][::97].float()
    uv, found = mirror_uvs(head, tri, bary)
    assert float(found.float().mean()) > 0.95
    # On the model's symmetric mean face a point and its mirror texel's point mirror each other.
    mean = Rig.from_model(ict_model.region("face"), torch.zeros(ict_model.n_identity))
    mean_head = whole_head(mean, ict_model, texture_height=64)
    points = mean_head.head_vertices(torch.zeros(1, head.n_expression))[0]
    corner = head.head_triangles[tri]
    xyz = (points[corner] * bary[..., None]).sum(1)
    atlas = torch.zeros(TEXTURE, 2 * TEXTURE, 4)
    atlas[face] = torch.cat([(points[head.head_triangles[texels.tri_id[0][face]]]
                              * texels.bary[0][face].float()[..., None]).sum(1), torch.ones(int(face.sum()), 1)], 1)
    looked = sample_texture(atlas, uv[found])
    ok = looked[:, 3] > 0.99
    mirrored = xyz[found][ok] * torch.tensor([-1.0, 1.0, 1.0])
    assert float((looked[ok, :3] - mirrored).norm(dim=1).median()) < 1.0  # mm (texel size ~0.7 mm)


def test_renders_fill_the_eyes_and_mouth(head):
    from scipy import ndimage

    e = _weights(head, jawOpen=0.4)
    background = torch.zeros(1, 3, 256, 256)
    pose = frontal_pose(head.neutral, 256, 256, fill=0.7)
    fractions = []
    for verts in (head.vertices(e), head.head_vertices(e)):
        image = render_rig(head, verts, pose, background)
        drawn = (image[0] > 0).any(0).numpy()
        filled = ndimage.binary_fill_holes(drawn)
        fractions.append((filled & ~drawn).sum() / filled.sum())
    assert fractions[0] > 0.005 and fractions[1] == 0.0  # the face alone has holes; the head none
    # The renderer kept for a video draws the same as render_rig.
    torch.testing.assert_close(RigRenderer(head, bilinear=True)(head.head_vertices(e), pose, background),
                               render_rig(head, head.head_vertices(e), pose, background))


def test_neutral_light_shows_the_albedo_and_white_balance_removes_a_cast(head):
    flat = replace(head, texture=torch.full_like(head.texture, 0.5))
    background = torch.zeros(1, 3, 128, 128)
    pose = frontal_pose(head.neutral, 128, 128, fill=0.8)
    verts = head.head_vertices(torch.zeros(1, head.n_expression))
    image = render_rig(flat, verts, pose, background, neutral_sh(1))
    centre = image[0, :, 60:68, 60:68]
    assert 0.45 < float(centre.mean()) < 0.55  # a frontal surface lit at about 1
    orange = neutral_sh(1) * torch.tensor([1.3, 1.0, 0.6])
    balanced = white_balanced(orange)
    assert torch.allclose(balanced[..., 0], balanced[..., 2])
    luma = torch.tensor([0.299, 0.587, 0.114])
    torch.testing.assert_close(balanced[..., 0], orange @ luma)
    cast = render_rig(flat, verts, pose, background, balanced)[0, :, 60:68, 60:68]
    assert float((cast[0] - cast[2]).abs().max()) < 1e-5


def test_fit_overlay_covers_the_face_not_the_scalp_and_fills_the_eyes(head):
    overlay = FitOverlay(head, alpha=1.0)
    ids = head.head_vertex_ids
    assert float(overlay.weights[head.n_vertices + head.parts.ids("head_and_neck")].max()) == 0.0
    assert float(overlay.weights[head.n_vertices + head.parts.ids("eyeball_left")].min()) == 1.0
    face = overlay.weights[:head.n_vertices]
    assert float(face[ids[:head.n_vertices] < 6706].max()) == 1.0  # ICT's narrow face: drawn
    assert float(face[ids[:head.n_vertices] >= 6706].max()) == 0.0  # ears, neck, scalp edge: not
    image = np.full((256, 256, 3), 123, np.uint8)
    pose = frontal_pose(head.neutral, 256, 256, fill=0.45)
    out = overlay(image, torch.zeros(head.n_expression), pose)
    screen = pose.screen(head.head_vertices(torch.zeros(1, head.n_expression)))[0]
    iris = head.n_vertices + head.parts.ids("eyeball_left")
    u, v = screen[iris[screen[iris, 2].argmax()], :2].round().long().tolist()
    assert (out[v, u] != 123).all()                        # the eye opening is drawn
    top = screen[head.n_vertices + head.parts.ids("head_and_neck")]
    u, v = top[top[:, 1].argmin(), :2].round().long().tolist()
    assert (out[v + 2, u] == 123).all()                    # the top of the scalp is not


@pytest.mark.parametrize("queued", [False, True])
def test_write_appearance_writes_the_textured_outputs(ict_model, ict_face, tmp_path, queued):
    """The demo's entry point: photos' rig run in, textured whole-head rig and files out; also with
    every file queued on the caller's worker thread (as the demo does), where the whole head's
    rig.npz must come after the face rig's."""
    import contextlib

    import cv2

    from core.fitting.shading_refine import ShadingConfig
    from core.rig.builder import RigBuildConfig
    from utils.background import BackgroundWorker
    from utils.landmarks.detect import FaceLandmarker
    from utils.pipelines.appearance import write_appearance
    from utils.pipelines.rig import build_rig_from_folder
    from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator

    subject = SyntheticGenerator(ict_model, SyntheticConfig(pose_limits_deg=(10.0, 25.0, 5.0))).subject(3, seed=1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, image in enumerate(subject.images):
        cv2.imwrite(str(photos / f"person_{k}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    fast = RigBuildConfig(rounds=2, iterations=6, shading=ShadingConfig(rounds=1, iterations=10))
    with BackgroundWorker("test") if queued else contextlib.nullcontext() as writer:
        run = build_rig_from_folder(photos, tmp_path / "out", ict_face, landmarker=FaceLandmarker("dlib"),
                                    config=fast, visualize=False, writer=writer)
        made = write_appearance(run, ict_model, tmp_path / "out", TextureConfig(height=TEXTURE), writer=writer)
    out = tmp_path / "out"
    assert "writing outputs" in run.timings
    for name in ("rig/rig.npz", "rig/rig_texture.png", "rig/rig.glb", "mesh/rig_textured.obj",
                 "mesh/textured/person_0.obj", "mesh/person_0.obj", "mesh/rig_neutral.obj", "params/person_0.json"):
        assert (out / name).is_file(), name
    back = Rig.load(out / "rig" / "rig.npz", expect_model="ict/face", expect_vertices=ict_face.n_vertices)
    assert back.parts is not None and back.texture.shape == (TEXTURE, 2 * TEXTURE, 3)
    assert made.fit.seen_fraction > 0.2  # three near-frontal photos see a good part of the skin
    assert load_textured_obj(out / "mesh" / "textured" / "person_0.obj").texture.shape == (TEXTURE, 2 * TEXTURE, 3)
    assert load_textured_obj(out / "mesh" / "rig_textured.obj").texture.shape == (TEXTURE, 2 * TEXTURE, 3)
    assert not list((out / "mesh").glob("*.png"))  # one texture PNG, the rig's: the OBJs point at it
    # The textured skin agrees with the rig's per-vertex albedo (both de-lit by the same lighting) and
    # has the subject's hue; its brightness is the fit's (albedo x light is known up to a scale).
    face_tile = made.fit.skin.clone()
    face_tile[:, TEXTURE:] = False
    seen = face_tile & (made.fit.weight >= TextureConfig().seen)
    skin = made.rig.texture[seen].median(0).values
    fitted = run.result.rig.albedo[:6706].median(0).values
    assert float((skin - fitted).abs().max()) < 0.08  # (medians over the seen texels vs all face vertices)
    truth = torch.from_numpy(np.median(subject.albedo[:6706], axis=0)).float()
    hue = lambda c: torch.stack([c[0] / c[1], c[2] / c[1]])  # noqa: E731
    assert float((hue(skin) - hue(truth)).abs().max()) < 0.1


def _write_appearance_failing_at(step: str, face_rig: Rig, model, out, monkeypatch) -> Rig:
    """`write_appearance` of a one-photo run of ``face_rig`` whose ``step`` (a function of
    `utils.pipelines.appearance`) raises; the error reaches the caller. -> the rig.npz left behind."""
    from types import SimpleNamespace

    import utils.pipelines.appearance as appearance
    from utils.pipelines.rig import RigRun

    run = RigRun(used=["a"])
    run.result = SimpleNamespace(rig=face_rig, params={"expression": torch.zeros(1, face_rig.n_expression)})

    def fails(*args, **kwargs):
        raise RuntimeError(f"{step} failed")

    monkeypatch.setattr(appearance, step, fails)
    with pytest.raises(RuntimeError, match=f"{step} failed"):
        appearance.write_appearance(run, model, out)
    return Rig.load(out / "rig" / "rig.npz")


def test_a_failed_texture_fit_leaves_the_painted_texture_beside_the_archive(ict_model, ict_face, tmp_path,
                                                                          monkeypatch):
    """The whole head's rig.npz is written while the texture is estimated; where the estimate fails
    the error reaches the caller and the painted texture is written, so the archive loads whole."""
    face_rig = Rig.from_model(ict_face, torch.zeros(ict_face.n_identity))
    back = _write_appearance_failing_at("textured_rig", face_rig, ict_model, tmp_path, monkeypatch)
    painted = whole_head(face_rig, ict_model).texture
    assert back.parts is not None and back.texture is not None
    assert float((back.texture - painted).abs().max()) <= 0.5 / 255 + 1e-6  # the painted atlas, as 8 bits
    # The textured OBJs, written while the texture was being estimated, name that painted PNG.
    for obj in (tmp_path / "mesh" / "rig_textured.obj", tmp_path / "mesh" / "textured" / "a.obj"):
        mesh = load_textured_obj(obj)
        assert len(mesh.vertices) == back.n_head_vertices
        np.testing.assert_array_equal(mesh.texture, np.round(back.texture.numpy() * 255).astype(np.uint8))


def test_a_failed_whole_head_keeps_the_face_rig(ict_model, ict_face, tmp_path, monkeypatch):
    """Where the whole head cannot be made, `write_appearance` writes the face rig's archive (the demo
    builds the face rig with ``save_rig=False``, as the whole head's replaces it) and the error reaches
    the caller."""
    face_rig = Rig.from_model(ict_face, 0.5 * torch.ones(ict_face.n_identity))
    back = _write_appearance_failing_at("head_rig", face_rig, ict_model, tmp_path, monkeypatch)
    assert back.parts is None and torch.equal(back.neutral, face_rig.neutral)


def test_openings_draw_the_interior_triangles_near_their_rims(head):
    """Per frame the mouth's and eyes' interiors keep exactly the triangles with a corner inside the
    box of their opening's rim (2 px margin); the face and the rest of the head are always drawn."""
    triangles, _, _ = render_mesh_of(head, head.n_head_vertices)
    groups = OpeningGroups(head, triangles)
    assert len(groups.rims) == 2  # the mouth and the eyes
    g = torch.Generator().manual_seed(11)
    for jaw in (0.0, 0.8):
        expression = torch.zeros(1, head.n_expression)
        expression[0, head.expression_names.index("jawOpen")] = jaw
        screen = head.head_vertices(expression)[0] * 2.0 + torch.tensor([200.0, 200.0, 0.0])
        screen = screen + torch.randn(screen.shape, generator=g)  # a little off the rest layout
        expected = [torch.arange(groups.starts[0], groups.starts[1]),
                    torch.arange(groups.starts[-2], groups.starts[-1])]
        for k, rim in enumerate(groups.rims, start=1):
            lo, hi = screen[rim, :2].amin(0) - 2.0, screen[rim, :2].amax(0) + 2.0
            near = ((screen[:, :2] >= lo) & (screen[:, :2] <= hi)).all(1)
            part = groups.triangles[groups.starts[k]:groups.starts[k + 1]]  # the interior's triangles
            expected.append(groups.starts[k] + torch.nonzero(near[part].any(1))[:, 0])
        drawn = groups.visible(screen)
        assert torch.equal(drawn, torch.cat(expected))
        assert 0 < len(drawn) - len(expected[0]) - len(expected[1]) < groups.starts[-2] - groups.starts[1]


def test_every_rig_of_a_model_has_the_same_head_layout(ict_model, ict_face):
    """The head's kept vertices are the model's, not the person's: two people's heads share their
    vertex ids, triangles and atlas, and each keeps its neck down to its own render cut."""
    codes = [scale * torch.randn(ict_face.n_identity, generator=torch.Generator().manual_seed(seed))
             for seed, scale in ((3, 1.0), (8, 1.5))]
    heads = [whole_head(Rig.from_model(ict_face, code), ict_model, texture_height=64) for code in codes]
    first, second = heads
    assert first.parts.neck_cut != second.parts.neck_cut  # the people's own cuts differ
    assert torch.equal(first.parts.vertex_ids, second.parts.vertex_ids)
    assert torch.equal(first.head_triangles, second.head_triangles)
    assert torch.equal(first.uvs, second.uvs) and torch.equal(first.uv_triangles, second.uv_triangles)
    neck = ict_model.regions["head_and_neck"].long()
    kept = torch.zeros(ict_model.n_vertices, dtype=torch.bool)
    kept[torch.cat([first.vertex_ids, first.parts.vertex_ids]).long()] = True
    assert not bool(kept.all())  # the shoulders are left out
    for head in heads:
        full = ict_model.vertices(head.codes["identity"][None])[0]
        shown = neck[full[neck, 1] >= head.parts.neck_cut]  # what renders keep of this person's neck
        assert bool(kept[shown].all())


def test_rig_npz_deflates_what_pays(head, tmp_path):
    """`Rig.save`: index arrays and the mostly-zero part deltas deflated, the face's dense float deltas
    stored as they are (they deflate little); np.load reads every member as saved."""
    import zipfile

    path = head.save(tmp_path / "rig.npz", texture=False)
    kinds = {i.filename: i.compress_type for i in zipfile.ZipFile(path).infolist()}
    assert kinds["blendshapes.npy"] == zipfile.ZIP_STORED
    for name in ("triangles", "uv_triangles", "parts_triangles", "parts_blendshapes", "neutral"):
        assert kinds[f"{name}.npy"] == zipfile.ZIP_DEFLATED, name
    with np.load(path) as back:
        assert np.array_equal(back["blendshapes"], head.blendshapes.numpy())
        assert np.array_equal(back["parts_blendshapes"], head.parts.blendshapes.numpy())
