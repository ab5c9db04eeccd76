"""The project's one Wavefront OBJ reader: vertices, UVs, faces with quads triangulated, and the
material library's name. The face model loaders and `utils.io.meshes.load_textured_obj` use it.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Tuple, Type

import numpy as np

from core.face_model.model import FaceModelError

__all__ = ["read_obj"]


def read_obj(path: Path, with_faces: bool = True, error: Type[Exception] = FaceModelError) -> dict:
    """Read vertices (and faces with UV indices, quads triangulated) from a Wavefront OBJ.

    Returns ``{"v": (V,3) float64, "vt": (T,2) or None, "f": (F,3) int64 0-based,
    "ft": (F,3) int64 or None, "mtllib": the first material library's file name or None}``; only
    ``v`` when ``with_faces`` is False. Vertex order is kept. Problems raise ``error`` (a
    `FaceModelError` by default) naming the file.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise error(f"cannot read OBJ file {path}: {err}") from err
    lines = data.split(b"\n")
    try:
        v = np.array(b" ".join(l[2:] for l in lines if l.startswith(b"v ")).split(), dtype=np.float64)
        v = v.reshape(-1, 3)
    except ValueError as err:
        raise error(f"malformed vertex lines in OBJ file {path}: {err}") from err
    if len(v) == 0:
        raise error(f"OBJ file {path} has no vertices")
    out = {"v": v}
    if not with_faces:
        return out
    vt_lines = [l[3:] for l in lines if l.startswith(b"vt ")]
    out["vt"] = (np.array(b" ".join(vt_lines).split(), dtype=np.float64).reshape(-1, 2)
                 if vt_lines else None)
    tris: List[Tuple[int, int, int]] = []
    uv_tris: List[Tuple[int, int, int]] = []
    for line in lines:
        if not line.startswith(b"f "):
            continue
        corners = [c.split(b"/") for c in line[2:].split()]
        try:
            vid = [int(c[0]) for c in corners]
            tid = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
        except ValueError as err:
            raise error(f"malformed face line in OBJ file {path}: {line[:80]!r}") from err
        for k in range(1, len(vid) - 1):  # fan triangulation of quads / polygons
            tris.append((vid[0], vid[k], vid[k + 1]))
            uv_tris.append((tid[0], tid[k], tid[k + 1]))
    f = np.asarray(tris, dtype=np.int64)
    f = np.where(f < 0, f + len(v), f - 1)  # OBJ indices are 1-based (negative: relative)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise error(f"OBJ file {path} has face indices outside its {len(v)} vertices")
    out["f"] = f
    ft = np.asarray(uv_tris, dtype=np.int64) - 1
    out["ft"] = ft if out["vt"] is not None and len(ft) == len(f) and (ft >= 0).all() else None
    mtllib = next((l[7:].strip() for l in lines if l.startswith(b"mtllib ")), None)
    out["mtllib"] = None if mtllib is None else mtllib.decode("utf-8", "replace")
    return out
