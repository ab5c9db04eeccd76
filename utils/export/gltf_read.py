"""Read back what `utils.export.gltf` writes: accessors (dense, sparse, normalized int) as numpy arrays.

Enough of glTF 2.0 for checks and tools (tests, ``benchmarks/check_exports.py``); not a general loader.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Union

import numpy as np
from PIL import Image as PILImage
from pygltflib import GLTF2

__all__ = ["read_accessor", "GlbContent", "read_glb"]

_DTYPES = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_NORMALIZE = {5120: 127.0, 5121: 255.0, 5122: 32767.0, 5123: 65535.0}


def _view_array(gltf: GLTF2, blob: bytes, view_index: int, offset: int, count: int, component: int,
                width: int) -> np.ndarray:
    view = gltf.bufferViews[view_index]
    dtype = np.dtype(_DTYPES[component])
    element = dtype.itemsize * width
    stride = view.byteStride or element
    start = (view.byteOffset or 0) + (offset or 0)
    raw = np.frombuffer(blob, np.uint8, count=stride * (count - 1) + element if count else 0, offset=start)
    if stride == element:
        return raw.view(dtype).reshape(count, width).copy()
    rows = np.lib.stride_tricks.as_strided(raw, shape=(count, element), strides=(stride, 1))
    return np.ascontiguousarray(rows).view(dtype).reshape(count, width)


def read_accessor(gltf: GLTF2, index: int, blob: Optional[bytes] = None) -> np.ndarray:
    """An accessor's values, sparse substitution applied, normalized integers as floats.

    Shape:
        -> (count, width) (width 1 for SCALAR), float32 for float / normalized data, else the
        stored integer type.
    """
    blob = gltf.binary_blob() if blob is None else blob
    acc = gltf.accessors[index]
    width = _WIDTH[acc.type]
    if acc.bufferView is not None:
        values = _view_array(gltf, blob, acc.bufferView, acc.byteOffset or 0, acc.count, acc.componentType, width)
    else:
        values = np.zeros((acc.count, width), _DTYPES[acc.componentType])
    if acc.sparse is not None:
        sp = acc.sparse
        idx = _view_array(gltf, blob, sp.indices.bufferView, sp.indices.byteOffset or 0, sp.count,
                          sp.indices.componentType, 1)[:, 0].astype(np.int64)
        values = values.copy()
        values[idx] = _view_array(gltf, blob, sp.values.bufferView, sp.values.byteOffset or 0, sp.count,
                                  acc.componentType, width)
    if acc.normalized:
        return np.maximum(values.astype(np.float32) / _NORMALIZE[acc.componentType], -1.0)
    return values


@dataclass
class GlbContent:
    """A written rig or animation, decoded (glTF units: metres, linear colours).

    Shapes: positions (V, 3), normals (V, 3), colors (V, 3) or None, triangles (F, 3), targets (T, V, 3),
    target_names T; animation (None in rig.glb): times (N,), weights (N, T), rotations (N, 4);
    texcoords (V, 2) (glTF's: v from the image's top) and texture (H, W, 3) uint8, or None.
    ``mesh_scale``: the mesh node's scale (1 unless quantized), already applied to positions/targets.
    """

    gltf: GLTF2
    positions: np.ndarray
    normals: np.ndarray
    colors: Optional[np.ndarray]
    triangles: np.ndarray
    targets: np.ndarray
    target_names: List[str]
    mesh_scale: float = 1.0
    times: Optional[np.ndarray] = None
    weights: Optional[np.ndarray] = None
    rotations: Optional[np.ndarray] = None
    texcoords: Optional[np.ndarray] = None
    texture: Optional[np.ndarray] = None


def read_glb(path: Union[str, Path]) -> GlbContent:
    """Decode a ``rig.glb`` / ``animation.glb`` written by `utils.export.gltf`."""
    gltf = GLTF2().load_binary(str(path))
    blob = gltf.binary_blob()
    prim = gltf.meshes[0].primitives[0]
    mesh_node = next(n for n in gltf.nodes if n.mesh == 0)
    scale = float(mesh_node.scale[0]) if mesh_node.scale else 1.0

    def get(i: int) -> np.ndarray:
        return read_accessor(gltf, i, blob)

    targets = [get(t["POSITION"] if isinstance(t, dict) else t.POSITION) * scale for t in (prim.targets or [])]
    content = GlbContent(
        gltf=gltf, positions=get(prim.attributes.POSITION) * scale, normals=get(prim.attributes.NORMAL),
        colors=None if prim.attributes.COLOR_0 is None else get(prim.attributes.COLOR_0),
        triangles=get(prim.indices).reshape(-1, 3).astype(np.int64),
        targets=np.stack(targets) if targets else np.zeros((0, 0, 3), np.float32),
        target_names=list((gltf.meshes[0].extras or {}).get("targetNames", [])), mesh_scale=scale)
    if prim.attributes.TEXCOORD_0 is not None:
        content.texcoords = get(prim.attributes.TEXCOORD_0)
    if gltf.images:
        view = gltf.bufferViews[gltf.images[0].bufferView]
        raw = blob[(view.byteOffset or 0):(view.byteOffset or 0) + view.byteLength]
        content.texture = np.asarray(PILImage.open(io.BytesIO(raw)).convert("RGB"))
    if gltf.animations:
        anim = gltf.animations[0]
        by_path = {ch.target.path: anim.samplers[ch.sampler] for ch in anim.channels}
        content.times = get(by_path["weights"].input)[:, 0]
        content.weights = get(by_path["weights"].output).reshape(len(content.times), -1)
        content.rotations = get(by_path["rotation"].output)
    return content
