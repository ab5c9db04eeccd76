"""Mesh export round trips: OBJ / PLY with vertex colours, textured OBJ with UV seams."""

import numpy as np
import pytest
import torch
import trimesh

from tests.conftest import imports_module
from utils.io.meshes import MeshIOError, load_mesh, load_textured_obj, save_mesh, save_textured_obj


def _colored_sphere():
    mesh = trimesh.creation.icosphere(subdivisions=2)
    rng = np.random.default_rng(0)
    vertices = mesh.vertices * 87.3 + np.array([1.0, -2.0, 30.0])
    colors = rng.integers(0, 256, (len(vertices), 3), dtype=np.uint8)
    return vertices, np.asarray(mesh.faces, dtype=np.int64), colors


@pytest.mark.parametrize("ext", ["obj", "ply"])
def test_colored_mesh_round_trip_keeps_order_and_count(tmp_path, ext):
    vertices, faces, colors = _colored_sphere()
    # Shuffle the vertex order: a loader that reorders or merges would be caught.
    perm = np.random.default_rng(1).permutation(len(vertices))
    inverse = np.argsort(perm)
    vertices, faces, colors = vertices[perm], inverse[faces], colors[perm]
    path = save_mesh(tmp_path / f"sub/mesh.{ext}", torch.tensor(vertices), torch.tensor(faces),
                     colors)
    back = load_mesh(path)
    np.testing.assert_allclose(back.vertices, vertices, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(back.triangles, faces)
    np.testing.assert_array_equal(back.colors, colors)


def test_float_colors_and_no_colors(tmp_path):
    vertices, faces, _ = _colored_sphere()
    float_colors = np.linspace(0, 1, len(vertices) * 3).reshape(-1, 3)
    back = load_mesh(save_mesh(tmp_path / "f.ply", vertices, faces, float_colors))
    np.testing.assert_array_equal(back.colors, np.round(float_colors * 255).astype(np.uint8))
    plain = load_mesh(save_mesh(tmp_path / "p.obj", vertices, faces))
    assert plain.colors is None
    assert len(plain.vertices) == len(vertices)


def _seamed_cube():
    """A cube (8 vertices, 12 triangles) unwrapped with seams: 14 texture coordinates."""
    mesh = trimesh.creation.box()
    faces = np.asarray(mesh.faces, dtype=np.int64)
    rng = np.random.default_rng(2)
    uvs = rng.random((14, 2))
    uv_faces = rng.integers(0, 14, faces.shape)
    uv_faces[0] = [0, 1, 13]
    return np.asarray(mesh.vertices), faces, uvs, uv_faces


def test_textured_obj_round_trip_with_seams(tmp_path):
    vertices, faces, uvs, uv_faces = _seamed_cube()
    texture = np.random.default_rng(3).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    path = save_textured_obj(tmp_path / "tex.obj", vertices, faces, uvs, uv_faces, texture)
    assert (tmp_path / "tex.mtl").is_file() and (tmp_path / "tex.png").is_file()
    back = load_textured_obj(path)
    assert len(back.vertices) == 8 and len(back.uvs) == 14
    np.testing.assert_allclose(back.vertices, vertices, rtol=1e-7, atol=0)
    np.testing.assert_allclose(back.uvs, uvs, rtol=1e-7, atol=1e-8)
    np.testing.assert_array_equal(back.triangles, faces)
    np.testing.assert_array_equal(back.uv_triangles, uv_faces)
    np.testing.assert_array_equal(back.texture, texture)


def test_a_shared_texture_must_exist_unless_written_later(tmp_path):
    """A mesh naming another file's texture: refused while that file is missing, unless the caller
    says it writes it later (the demo writes the meshes while the texture is estimated); then the
    mesh reads back with it."""
    vertices, faces, uvs, uv_faces = _seamed_cube()
    with pytest.raises(MeshIOError, match="shared.png does not exist"):
        save_textured_obj(tmp_path / "a.obj", vertices, faces, uvs, uv_faces, texture_file="shared.png")
    path = save_textured_obj(tmp_path / "a.obj", vertices, faces, uvs, uv_faces, texture_file="shared.png",
                             texture_written_later=True)
    assert "map_Kd shared.png" in (tmp_path / "a.mtl").read_text()
    texture = np.random.default_rng(4).integers(0, 256, (16, 32, 3), dtype=np.uint8)
    save_textured_obj(tmp_path / "shared.obj", vertices, faces, uvs, uv_faces, texture)
    np.testing.assert_array_equal(load_textured_obj(path).texture, texture)


def test_textured_obj_of_the_ict_face(tmp_path, ict_face):
    assert ict_face.uvs is not None and len(ict_face.uvs) != ict_face.n_vertices  # seams
    texture = np.full((8, 8, 3), 200, dtype=np.uint8)
    path = save_textured_obj(tmp_path / "face.obj", ict_face.neutral, ict_face.triangles,
                             ict_face.uvs, ict_face.uv_triangles, texture)
    back = load_textured_obj(path)
    assert back.vertices.shape == (ict_face.n_vertices, 3)
    np.testing.assert_allclose(back.vertices, ict_face.neutral.numpy(), rtol=1e-6, atol=1e-5)
    np.testing.assert_array_equal(back.triangles, ict_face.triangles.numpy())
    np.testing.assert_array_equal(back.uv_triangles, ict_face.uv_triangles.numpy())
    np.testing.assert_allclose(back.uvs, ict_face.uvs.numpy(), rtol=1e-6, atol=1e-7)


def test_bad_input_names_the_problem(tmp_path):
    vertices, faces, colors = _colored_sphere()
    with pytest.raises(MeshIOError, match="unsupported mesh extension '.stl'"):
        save_mesh(tmp_path / "m.stl", vertices, faces)
    with pytest.raises(MeshIOError, match="colors: expected 162 rows"):
        save_mesh(tmp_path / "m.ply", vertices, faces, colors[:5])
    with pytest.raises(MeshIOError, match=r"triangles: indices must lie in \[0, 162\)"):
        save_mesh(tmp_path / "m.ply", vertices, faces + 1000)
    with pytest.raises(MeshIOError, match="no such mesh file"):
        load_mesh(tmp_path / "missing.ply")
    bad = tmp_path / "bad.obj"
    bad.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(MeshIOError, match=r"bad.obj: faces need v/vt indices"):
        load_textured_obj(bad)


def test_obj_files_state_their_units_and_axes(tmp_path):
    """A tool that assumes metres must be told: the first line of every OBJ names the units."""
    path = save_mesh(tmp_path / "m.obj", np.random.default_rng(0).random((4, 3)), np.array([[0, 1, 2], [0, 2, 3]]))
    first = path.read_text().splitlines()[0]
    assert first.startswith("# INORig-open") and "millimetres" in first and "+y up" in first
    assert load_mesh(path).vertices.shape == (4, 3)


@pytest.mark.parametrize("with_colors", [False, True])
def test_obj_text_is_what_trimesh_writes(tmp_path, with_colors):
    """OBJs are written without trimesh, byte for byte as its exporter writes them."""
    from utils.io.meshes import OBJ_HEADER

    vertices, faces, colors = _colored_sphere()
    vertices[0, 0] = -0.0
    colors = colors if with_colors else None
    ours = save_mesh(tmp_path / "ours.obj", vertices, faces, colors)
    trimesh.Trimesh(vertices, faces, vertex_colors=colors, process=False).export(tmp_path / "theirs.obj",
                                                                                 header=OBJ_HEADER)
    assert ours.read_bytes() == (tmp_path / "theirs.obj").read_bytes()
    again = save_mesh(tmp_path / "again.obj", vertices + 1.0, faces, colors)  # the faces' text is cached
    assert again.read_text().split("\nf ", 1)[1] == ours.read_text().split("\nf ", 1)[1]


def test_writing_meshes_needs_no_trimesh_import():
    code = ("import numpy as np\nfrom utils.io.meshes import save_mesh\nimport tempfile, pathlib\n"
            "d = pathlib.Path(tempfile.mkdtemp())\n"
            "save_mesh(d / 'a.obj', np.eye(3), np.array([[0, 1, 2]]))\n")
    assert imports_module(code, "trimesh") is False
