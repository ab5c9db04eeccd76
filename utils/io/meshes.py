"""Writing and reading meshes: OBJ / PLY with per-vertex colours, and textured OBJ.

OBJ files are written here directly (the text trimesh would write: ``v x y z [r g b]`` with 8
decimals, colours in [0, 1], then ``f a b c``), about 10x faster than through trimesh, whose import
alone costs 0.3-0.4 s of a rig build's start-up; PLY files and all reading go through trimesh
(imported when first needed), with ``process=False`` so vertex order and count are the face
model's (docs/conventions.md). The textured OBJ is written here directly: models with UV seams (ICT) have
more texture coordinates than vertices, and OBJ keeps the vertex count only when every face
corner names its own ``vt`` index (``f v/vt``), which trimesh's exporter does not do (it splits
vertices at seams). ``load_textured_obj`` reads that layout back.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from core import __version__
from core.face_model.obj import read_obj
from utils.io.text import format_rows

__all__ = ["Mesh", "TexturedMesh", "MeshIOError", "save_mesh", "load_mesh",
           "save_textured_obj", "load_textured_obj"]

_MESH_EXTENSIONS = (".obj", ".ply")
#: The comment at the top of every OBJ the project writes: a tool that assumes metres would
#: otherwise make a 276 m head.
OBJ_HEADER = (f"INORig-open {__version__}: units millimetres (scale by 0.001 for metres); axes right-handed, "
              "+y up, +z out of the face towards the viewer, +x to the subject's left; vertices in the face "
              "model's order (index by model vertex id)")


class MeshIOError(ValueError):
    """A mesh file or array is missing or malformed; the message names it and the problem."""


class Mesh(NamedTuple):
    """One mesh: vertices (V, 3) float64, triangles (F, 3) int64, colors (V, 3) uint8 or None."""

    vertices: np.ndarray
    triangles: np.ndarray
    colors: np.ndarray | None


class TexturedMesh(NamedTuple):
    """A mesh with per-corner texture coordinates.

    vertices (V, 3) float64, triangles (F, 3) int64, uvs (T, 2) float64 in [0, 1] (v up, as OBJ),
    uv_triangles (F, 3) int64 indices into uvs, texture (H, W, 3) uint8 RGB or None.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    uvs: np.ndarray
    uv_triangles: np.ndarray
    texture: np.ndarray | None


def _array(x: np.ndarray | torch.Tensor, name: str, cols: int, dtype: type | None) -> np.ndarray:
    """``x`` as a numpy (N, cols) array of ``dtype`` (None: as is), or MeshIOError naming it."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != cols:
        raise MeshIOError(f"{name}: expected shape (N, {cols}), got {x.shape}")
    return x if dtype is None else x.astype(dtype, copy=False)


def _check_indices(name: str, idx: np.ndarray, count: int) -> None:
    """Raise MeshIOError unless every index lies in [0, count)."""
    if idx.size and (idx.min() < 0 or idx.max() >= count):
        raise MeshIOError(f"{name}: indices must lie in [0, {count}), got "
                          f"[{idx.min()}, {idx.max()}]")


def _colors_uint8(colors: np.ndarray | torch.Tensor, n_vertices: int) -> np.ndarray:
    """Per-vertex colours as uint8; floats are taken as [0, 1]."""
    c = _array(colors, "colors", 3, None)
    if c.shape[0] != n_vertices:
        raise MeshIOError(f"colors: expected {n_vertices} rows (one per vertex), got {c.shape[0]}")
    if np.issubdtype(c.dtype, np.floating):
        return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)
    return np.clip(c, 0, 255).astype(np.uint8)


def _mesh_path(path: str | Path) -> Path:
    path = Path(path)
    if path.suffix.lower() not in _MESH_EXTENSIONS:
        raise MeshIOError(f"{path}: unsupported mesh extension {path.suffix!r}; expected one of "
                          f"{_MESH_EXTENSIONS}")
    return path


def save_mesh(path: str | Path, vertices: np.ndarray | torch.Tensor,
              triangles: np.ndarray | torch.Tensor,
              colors: np.ndarray | torch.Tensor | None = None) -> Path:
    """Write a mesh as OBJ or PLY (by extension), optionally with per-vertex colours.

    Args:
        path: ``*.obj`` or ``*.ply``; parent folders are created.
        vertices: (V, 3) positions (mm).
        triangles: (F, 3) vertex indices.
        colors: (V, 3) uint8 0..255, or float in [0, 1].

    Returns:
        The path written.
    """
    path = _mesh_path(path)
    verts = _array(vertices, "vertices", 3, np.float64)
    tris = _array(triangles, "triangles", 3, np.int64)
    _check_indices("triangles", tris, len(verts))
    vertex_colors = None if colors is None else _colors_uint8(colors, len(verts))
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".obj":
        _write_obj(path, verts, tris, vertex_colors)
        return path
    import trimesh

    trimesh.Trimesh(verts, tris, vertex_colors=vertex_colors, process=False).export(path)
    return path


_FACE_TEXT: dict = {}  # triangles' bytes -> their OBJ face lines (meshes of one model share them)


def _face_lines(triangles: np.ndarray) -> str:
    """``f a b c`` lines (1-based) of ``triangles`` (F, 3), cached for the last few triangle sets."""
    key = (triangles.shape, triangles.tobytes())
    text = _FACE_TEXT.get(key)
    if text is None:
        text = format_rows(triangles + 1, "f %d %d %d\n")
        if len(_FACE_TEXT) >= 4:
            _FACE_TEXT.pop(next(iter(_FACE_TEXT)))
        _FACE_TEXT[key] = text
    return text


def _write_obj(path: Path, vertices: np.ndarray, triangles: np.ndarray, colors: np.ndarray | None) -> None:
    """OBJ text of a mesh, byte for byte as trimesh (5.2) writes it: header comment, ``v x y z [r g b]``
    (8 decimals, colours as uint8 / 255), ``f a b c``, a closing blank line."""
    if colors is None:
        values, row = vertices, "v %.8f %.8f %.8f\n"
    else:
        values = np.concatenate([vertices, colors.astype(np.float64) / 255.0], axis=1)
        row = "v %.8f %.8f %.8f %.8f %.8f %.8f\n"
    text = format_rows(values, row)
    with open(path, "w") as f:
        f.write(f"# {OBJ_HEADER}\n")
        f.write(text)
        f.write(_face_lines(triangles))
        f.write("\n")


def load_mesh(path: str | Path) -> Mesh:
    """Read an OBJ or PLY written by ``save_mesh`` (or any triangle mesh) without reordering.

    Returns:
        Mesh with colors None when the file has no per-vertex colours.
    """
    import trimesh

    path = _mesh_path(path)
    if not path.is_file():
        raise MeshIOError(f"{path}: no such mesh file")
    mesh = trimesh.load(path, process=False, maintain_order=True, force="mesh")
    colors = None
    if mesh.visual.kind == "vertex":
        colors = np.asarray(mesh.visual.vertex_colors)[:, :3].astype(np.uint8)
    return Mesh(np.asarray(mesh.vertices, dtype=np.float64),
                np.asarray(mesh.faces, dtype=np.int64), colors)


def save_textured_obj(path: str | Path, vertices: np.ndarray | torch.Tensor,
                      triangles: np.ndarray | torch.Tensor, uvs: np.ndarray | torch.Tensor,
                      uv_triangles: np.ndarray | torch.Tensor,
                      texture: np.ndarray | None = None, texture_file: str | None = None,
                      texture_written_later: bool = False) -> Path:
    """Write an OBJ with per-corner texture coordinates, plus an MTL and PNG texture.

    The vertex count stays V (faces are ``f v/vt``), so rows match the face model's vertices.
    Writes ``name.obj``; with a texture also ``name.mtl`` and ``name.png`` beside it; with
    ``texture_file`` instead, ``name.mtl`` names that existing image (a path relative to the OBJ's
    folder, so that many meshes share one texture).

    Args:
        path: ``*.obj``.
        vertices: (V, 3); triangles: (F, 3).
        uvs: (T, 2) texture coordinates in [0, 1], v up (OBJ's convention).
        uv_triangles: (F, 3) indices into uvs for each face corner.
        texture: (H, W, 3) uint8 RGB image, or None for no material.
        texture_file: an image the material refers to, relative to the OBJ (with no ``texture``).
        texture_written_later: ``texture_file`` need not exist yet (the caller writes it, e.g. while
            another thread writes the meshes); else a missing one is an error.
    """
    path = Path(path)
    if path.suffix.lower() != ".obj":
        raise MeshIOError(f"{path}: a textured mesh is written as .obj, got {path.suffix!r}")
    verts = _array(vertices, "vertices", 3, np.float64)
    tris = _array(triangles, "triangles", 3, np.int64)
    tex_coords = _array(uvs, "uvs", 2, np.float64)
    uv_tris = _array(uv_triangles, "uv_triangles", 3, np.int64)
    if uv_tris.shape != tris.shape:
        raise MeshIOError(f"uv_triangles: expected shape {tris.shape} like triangles, got "
                          f"{uv_tris.shape}")
    _check_indices("triangles", tris, len(verts))
    _check_indices("uv_triangles", uv_tris, len(tex_coords))
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"# {OBJ_HEADER}", "# per-corner vt indices (OBJ's v up)"]
    if texture is not None:
        tex = np.asarray(texture)
        if tex.ndim != 3 or tex.shape[2] != 3 or tex.dtype != np.uint8:
            raise MeshIOError(f"texture: expected an (H, W, 3) uint8 image, got {tex.shape} "
                              f"{tex.dtype}")
        Image.fromarray(tex).save(path.with_suffix(".png"))
        texture_file = f"{path.stem}.png"
    elif texture_file is not None and not texture_written_later and not (path.parent / texture_file).is_file():
        raise MeshIOError(f"texture_file: {path.parent / texture_file} does not exist")
    if texture_file is not None:
        path.with_suffix(".mtl").write_text(
            f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nmap_Kd {texture_file}\n")
        lines += [f"mtllib {path.stem}.mtl", "usemtl material0"]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
        f.write(format_rows(verts, "v %.8g %.8g %.8g\n"))
        f.write(_uv_lines(tex_coords, tris, uv_tris))
    return path


def _uv_lines(tex_coords: np.ndarray, tris: np.ndarray, uv_tris: np.ndarray) -> str:
    """``vt`` and ``f v/vt`` lines, cached like `_face_lines` (the meshes of one rig share them)."""
    key = (tex_coords.shape, tex_coords.tobytes(), tris.tobytes(), uv_tris.tobytes())
    text = _FACE_TEXT.get(key)
    if text is None:
        faces = np.stack([tris + 1, uv_tris + 1], axis=-1).reshape(len(tris), 6)
        text = format_rows(tex_coords, "vt %.8g %.8g\n") + format_rows(faces, "f %d/%d %d/%d %d/%d\n")
        if len(_FACE_TEXT) >= 4:
            _FACE_TEXT.pop(next(iter(_FACE_TEXT)))
        _FACE_TEXT[key] = text
    return text


def load_textured_obj(path: str | Path) -> TexturedMesh:
    """Read an OBJ with ``f v/vt`` faces (as ``save_textured_obj`` writes) and its texture.

    Parsed by the project's one OBJ reader (`core.face_model.obj.read_obj`); polygons with more
    than three corners are fanned into triangles. The texture is the ``map_Kd`` image of the
    material library, or None.
    """
    path = Path(path)
    if not path.is_file():
        raise MeshIOError(f"{path}: no such OBJ file")
    obj = read_obj(path, error=MeshIOError)
    if obj["ft"] is None:
        raise MeshIOError(f"{path}: faces need v/vt indices (texture coordinates) for a textured mesh")
    texture = None
    mtllib = None if obj["mtllib"] is None else path.parent / obj["mtllib"]
    if mtllib is not None and mtllib.is_file():
        for line in mtllib.read_text().splitlines():
            if line.startswith("map_Kd"):
                texture = np.asarray(Image.open(mtllib.parent / line.split(None, 1)[1].strip()).convert("RGB"))
                break
    mesh = TexturedMesh(obj["v"], obj["f"].reshape(-1, 3), obj["vt"].reshape(-1, 2), obj["ft"].reshape(-1, 3), texture)
    _check_indices(f"{path}: face texture indices", mesh.uv_triangles, len(mesh.uvs))
    return mesh
