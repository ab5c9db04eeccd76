"""glTF 2.0 binary (``.glb``) files of a rig: named morph targets, and an animation of them.

``rig.glb``: one node with the rig's mesh: the neutral face as ``POSITION`` (metres; glTF's unit, the
project works in mm; axes as ours: +y up, +z towards the viewer), ``NORMAL`` (area-weighted vertex
normals of the neutral), ``COLOR_0`` (the per-vertex albedo, converted from sRGB to linear as glTF
expects), one morph target per exported expression (``POSITION`` deltas in metres, with ``min`` /
``max``), their names in ``meshes[0].extras.targetNames`` and ``mesh.weights`` all zero. A textured
mesh has ``TEXCOORD_0`` and its material's ``baseColorTexture`` (a PNG in the file) instead of
``COLOR_0``; glTF has one texture coordinate per vertex, so vertices on UV seams are copied (the
copies come after the original vertices, ``extras.seamCopiesOf`` names each copy's original).

``animation.glb``: the same mesh under a ``head`` node, plus one animation with two samplers: the
morph weights of the mesh node (one key per video frame at ``i / fps`` s, ``LINEAR``, one sampler for
all targets) and the head node's rotation (quaternions, sign-continuous; see `utils.export.motion`).

Options: ``sparse`` stores each target as a sparse accessor (only the vertices it moves by more than
``sparse_tolerance_m``); ``quantize`` stores positions and targets as normalized int16 with
``KHR_mesh_quantization`` (the node's scale restores metres). Both keep the file valid glTF 2.0.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

import numpy as np
import torch

from core.mesh import vertex_normals as mesh_normals
from utils.process import LazyModule

logger = logging.getLogger(__name__)
#: pygltflib, imported where a file is first written (`utils.process.LazyModule`)
gl = LazyModule("pygltflib")

__all__ = ["GltfOptions", "MeshData", "srgb_to_linear", "vertex_normals", "write_rig_glb", "RigGlbDraft",
           "write_animation_glb"]

MM_TO_M = 1e-3
SHORT = 5122  # glTF componentType of int16
_QUANT = 32767.0
_GENERATOR = "INORig-open utils.export"


@dataclass(frozen=True)
class GltfOptions:
    """How targets are stored: float32 by default; ``sparse`` and/or ``quantize`` make files smaller."""

    sparse: bool = False
    sparse_tolerance_m: float = 1e-7
    quantize: bool = False


@dataclass
class MeshData:
    """The exported mesh, already in glTF units.

    Shapes: positions (V, 3) metres, normals (V, 3) unit, colors (V, 3) linear in [0, 1] or None,
    triangles (F, 3) int, targets (T, V, 3) metres, target_names T names; texcoords (V, 2) in
    glTF's convention (origin at the image's top left) or None; texture_png: the base colour image
    (PNG bytes, sRGB) or None; extras: more ``meshes[0].extras`` entries.
    """

    positions: np.ndarray
    normals: np.ndarray
    colors: Optional[np.ndarray]
    triangles: np.ndarray
    targets: np.ndarray
    target_names: List[str]
    name: str = "face"
    texcoords: Optional[np.ndarray] = None
    texture_png: Optional[bytes] = None
    extras: Optional[dict] = None


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    """The sRGB transfer function inverted (IEC 61966-2-1), input clipped to [0, 1].

    Shape: any -> the same, float32.
    """
    c = np.clip(np.asarray(c, np.float64), 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def vertex_normals(positions: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Area-weighted unit vertex normals (`core.mesh.vertex_normals`); +z for vertices no triangle
    uses (or of zero area), since glTF wants unit normals everywhere.

    Shape:
        positions (V, 3), triangles (F, 3) -> (V, 3) float32.
    """
    p = torch.as_tensor(np.asarray(positions, np.float64))[None]
    n = mesh_normals(p, torch.as_tensor(np.asarray(triangles, np.int64)))[0].numpy()
    unused = np.linalg.norm(n, axis=1) < 0.5
    n[unused] = (0.0, 0.0, 1.0)
    return n.astype(np.float32)


class _Binary:
    """The GLB binary chunk and the buffer views / accessors that point into it."""

    def __init__(self) -> None:
        self.chunks: List[bytes] = []
        self.length = 0
        self.views: List[gl.BufferView] = []
        self.accessors: List[gl.Accessor] = []

    def view(self, data: np.ndarray, target: Optional[int] = None, stride: Optional[int] = None) -> int:
        pad = (-self.length) % 4
        if pad:
            self.chunks.append(b"\0" * pad)
            self.length += pad
        raw = np.ascontiguousarray(data).tobytes()
        self.views.append(gl.BufferView(buffer=0, byteOffset=self.length, byteLength=len(raw), target=target,
                                     byteStride=stride))
        self.chunks.append(raw)
        self.length += len(raw)
        return len(self.views) - 1

    def add(self, accessor: gl.Accessor) -> int:
        self.accessors.append(accessor)
        return len(self.accessors) - 1

    def blob(self) -> bytes:
        pad = (-self.length) % 4
        return b"".join(self.chunks) + b"\0" * pad


def _bounds(values: np.ndarray) -> Tuple[list, list]:
    return values.min(axis=0).astype(float).tolist(), values.max(axis=0).astype(float).tolist()


class _Writer:
    """Accessors for one mesh under the chosen `GltfOptions`."""

    def __init__(self, binary: _Binary, options: GltfOptions, unit: float) -> None:
        self.bin, self.options, self.unit = binary, options, unit  # unit: metres per quantized step * 32767

    def floats(self, values: np.ndarray, kind: str, target: Optional[int] = None, bounds: bool = False) -> int:
        values = np.ascontiguousarray(values, np.float32)
        lo, hi = _bounds(values.reshape(len(values), -1)) if bounds else (None, None)
        view = self.bin.view(values, target)
        return self.bin.add(gl.Accessor(bufferView=view, byteOffset=0, componentType=gl.FLOAT, count=len(values), type=kind,
                                     min=lo, max=hi))

    def _quantized(self, values: np.ndarray) -> np.ndarray:
        return np.clip(np.round(values / self.unit * _QUANT), -_QUANT, _QUANT).astype(np.int16)

    def positions(self, values: np.ndarray) -> int:
        """A VEC3 vertex position accessor (float, or int16 padded to 8 bytes when quantized)."""
        if not self.options.quantize:
            return self.floats(values, gl.VEC3, gl.ARRAY_BUFFER, bounds=True)
        q = self._quantized(values)
        lo, hi = _bounds(q)
        padded = np.concatenate([q, np.zeros((len(q), 1), np.int16)], axis=1)  # 4-byte aligned elements
        view = self.bin.view(padded, gl.ARRAY_BUFFER, stride=8)
        return self.bin.add(gl.Accessor(bufferView=view, byteOffset=0, componentType=SHORT, normalized=True,
                                     count=len(q), type=gl.VEC3, min=[int(v) for v in lo], max=[int(v) for v in hi]))

    def target(self, delta: np.ndarray) -> int:
        """A morph target's POSITION accessor (dense, or sparse over the vertices it moves)."""
        if not self.options.sparse:
            return self.positions(delta)
        stored = self._quantized(delta) if self.options.quantize else delta.astype(np.float32, copy=False)
        size = np.abs(delta)
        peak = np.maximum(np.maximum(size[:, 0], size[:, 1]), size[:, 2])  # max(axis=1), minus its slow loop
        moved = np.flatnonzero(peak > self.options.sparse_tolerance_m)
        if len(moved) == 0:
            moved = np.array([0])  # a sparse accessor needs at least one entry
        kept = stored[moved]
        lo, hi = _bounds(kept)  # the accessor's: the kept values and, where any vertex is left out, its zeros
        if len(moved) < len(delta):
            lo, hi = [min(v, 0.0) for v in lo], [max(v, 0.0) for v in hi]
        if self.options.quantize:
            lo, hi = [int(v) for v in lo], [int(v) for v in hi]
        index_type, index_dtype = ((gl.UNSIGNED_SHORT, np.uint16) if len(delta) <= 65535 else (gl.UNSIGNED_INT, np.uint32))
        indices = self.bin.view(moved.astype(index_dtype))
        values = self.bin.view(kept)
        sparse = gl.Sparse(count=int(len(moved)), indices=gl.AccessorSparseIndices(bufferView=indices, componentType=index_type),
                        values=gl.AccessorSparseValues(bufferView=values))
        return self.bin.add(gl.Accessor(bufferView=None, byteOffset=None, componentType=SHORT if self.options.quantize
                                     else gl.FLOAT, normalized=self.options.quantize, count=len(delta), type=gl.VEC3,
                                     sparse=sparse, min=lo, max=hi))

    def indices(self, triangles: np.ndarray, n_vertices: int) -> int:
        flat = triangles.reshape(-1)
        kind, dtype = (gl.UNSIGNED_SHORT, np.uint16) if n_vertices <= 65535 else (gl.UNSIGNED_INT, np.uint32)
        view = self.bin.view(flat.astype(dtype), gl.ELEMENT_ARRAY_BUFFER)
        return self.bin.add(gl.Accessor(bufferView=view, byteOffset=0, componentType=kind, count=len(flat), type=gl.SCALAR))


def _check_mesh(mesh: MeshData, texture_later: bool = False) -> None:
    v = len(mesh.positions)
    t = len(mesh.target_names)
    checks = [
        (mesh.positions.shape == (v, 3) and v > 0, f"positions must be (V, 3), got {mesh.positions.shape}"),
        (mesh.normals.shape == (v, 3), f"normals must be ({v}, 3), got {mesh.normals.shape}"),
        (mesh.colors is None or mesh.colors.shape == (v, 3),
         f"colors must be ({v}, 3), got {None if mesh.colors is None else mesh.colors.shape}"),
        (mesh.texcoords is None or mesh.texcoords.shape == (v, 2),
         f"texcoords must be ({v}, 2), got {None if mesh.texcoords is None else mesh.texcoords.shape}"),
        (texture_later or (mesh.texcoords is None) == (mesh.texture_png is None),
         "texcoords and texture_png come together"),
        (not texture_later or (mesh.texcoords is not None and mesh.texture_png is None),
         "a texture to come needs texcoords and no texture_png yet"),
        (mesh.targets.shape == (t, v, 3), f"targets must be ({t}, {v}, 3), got {mesh.targets.shape}"),
        (mesh.triangles.ndim == 2 and mesh.triangles.shape[1] == 3 and len(mesh.triangles) > 0,
         f"triangles must be (F, 3), got {mesh.triangles.shape}"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)
    if mesh.triangles.min() < 0 or mesh.triangles.max() >= v:
        raise ValueError(f"triangles index vertices outside [0, {v})")
    if not (np.isfinite(mesh.positions).all() and np.isfinite(mesh.targets).all()):
        raise ValueError("positions or targets have NaN or infinite values")


def _unit(mesh: MeshData) -> float:
    """The quantization range (metres): the largest coordinate of the neutral or of any target."""
    peak = max(float(np.abs(mesh.positions).max()), float(np.abs(mesh.targets).max()) if mesh.targets.size else 0.0)
    return peak if peak > 0 else 1.0


def _document(mesh: MeshData, options: GltfOptions, texture_later: bool = False) -> Tuple[gl.GLTF2, _Binary]:
    """A glTF with the mesh on node 0 (its scale set when quantized), the scene holding node 0; with
    ``texture_later``, without the texture that ``mesh.texcoords`` map (`_add_texture` adds it)."""
    _check_mesh(mesh, texture_later)
    binary = _Binary()
    unit = _unit(mesh)
    writer = _Writer(binary, options, unit)
    attributes = gl.Attributes(POSITION=writer.positions(mesh.positions),
                            NORMAL=writer.floats(mesh.normals, gl.VEC3, gl.ARRAY_BUFFER))
    if mesh.colors is not None:
        attributes.COLOR_0 = writer.floats(np.clip(mesh.colors, 0, 1), gl.VEC3, gl.ARRAY_BUFFER)
    if mesh.texcoords is not None:
        attributes.TEXCOORD_0 = writer.floats(mesh.texcoords, gl.VEC2, gl.ARRAY_BUFFER)
    targets = [gl.Attributes(POSITION=writer.target(delta)) for delta in mesh.targets]
    primitive = gl.Primitive(attributes=attributes, indices=writer.indices(mesh.triangles, len(mesh.positions)),
                          material=0, targets=targets)
    gltf_mesh = gl.Mesh(name=mesh.name, primitives=[primitive], weights=[0.0] * len(targets) or None,
                     extras={"targetNames": list(mesh.target_names), **(mesh.extras or {})})
    node = gl.Node(name=mesh.name, mesh=0)
    if options.quantize:
        node.scale = [unit] * 3  # normalized int16 spans [-1, 1] -> [-unit, unit] metres
    pbr = gl.PbrMetallicRoughness(baseColorFactor=[1.0, 1.0, 1.0, 1.0], metallicFactor=0.0, roughnessFactor=0.7)
    material = gl.Material(name="albedo", doubleSided=False, pbrMetallicRoughness=pbr)
    gltf = gl.GLTF2(asset=gl.Asset(version="2.0", generator=_GENERATOR), scene=0, scenes=[gl.Scene(nodes=[0])],
                 nodes=[node], meshes=[gltf_mesh], materials=[material])
    if options.quantize:
        gltf.extensionsUsed = ["KHR_mesh_quantization"]
        gltf.extensionsRequired = ["KHR_mesh_quantization"]
    if mesh.texture_png is not None:
        _add_texture(gltf, binary, mesh.texture_png)
    return gltf, binary


def _add_texture(gltf: gl.GLTF2, binary: _Binary, png: bytes) -> None:
    """The material's base colour texture: the PNG in the binary's last view."""
    image_view = binary.view(np.frombuffer(png, np.uint8))
    gltf.materials[0].pbrMetallicRoughness.baseColorTexture = gl.TextureInfo(index=0, texCoord=0)
    gltf.images = [gl.Image(bufferView=image_view, mimeType="image/png", name="albedo")]
    gltf.samplers = [gl.Sampler(magFilter=gl.LINEAR, minFilter=gl.LINEAR_MIPMAP_LINEAR, wrapS=gl.CLAMP_TO_EDGE,
                             wrapT=gl.CLAMP_TO_EDGE)]
    gltf.textures = [gl.Texture(sampler=0, source=0)]


def _save(gltf: gl.GLTF2, binary: _Binary, path: Union[str, Path]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = binary.blob()
    gltf.buffers = [gl.Buffer(byteLength=len(blob))]
    gltf.bufferViews = binary.views
    gltf.accessors = binary.accessors
    gltf.set_binary_blob(blob)
    gltf.save_binary(str(path))  # not save(): it would replace the asset block
    return path


def write_rig_glb(mesh: MeshData, path: Union[str, Path], options: GltfOptions = GltfOptions()) -> Path:
    """Write ``rig.glb``: the mesh with its named morph targets, all weights zero.

    Raises:
        ValueError: inconsistent shapes, indices out of range, or non-finite values.
    """
    return RigGlbDraft(mesh, options).write(path)


class RigGlbDraft:
    """``rig.glb`` in two steps: made from a mesh whose texture may be still to come (``texcoords``
    given, ``texture_png`` None: the geometry and morph targets, most of the work), then written
    with it; the same bytes as `write_rig_glb` of the mesh with that texture.

    Raises:
        ValueError: as `write_rig_glb`; `write` also where the texture is missing or written twice.
    """

    def __init__(self, mesh: MeshData, options: GltfOptions = GltfOptions()) -> None:
        start = time.perf_counter()
        self.texture_later = mesh.texcoords is not None and mesh.texture_png is None
        self._gltf, self._binary = _document(mesh, options, texture_later=self.texture_later)
        self._counts = (len(mesh.positions), len(mesh.target_names))
        self._seconds = time.perf_counter() - start
        self._written = False

    def write(self, path: Union[str, Path], texture_png: Optional[bytes] = None) -> Path:
        """Write the file, with ``texture_png`` (PNG bytes) where the texture was to come."""
        if self._written:
            raise ValueError("RigGlbDraft: already written")
        if self.texture_later != (texture_png is not None):
            raise ValueError("RigGlbDraft: texture_png is needed exactly where the mesh's texture was "
                             "to come")
        start = time.perf_counter()
        if texture_png is not None:
            _add_texture(self._gltf, self._binary, texture_png)
        self._written = True
        path = _save(self._gltf, self._binary, path)
        logger.info("wrote %s (%d vertices, %d targets, %.1f MB) in %.2f s", path, *self._counts,
                    path.stat().st_size / 1e6, self._seconds + time.perf_counter() - start)
        return path


def write_animation_glb(mesh: MeshData, weights: np.ndarray, rotations: np.ndarray, fps: float,
                        path: Union[str, Path], options: GltfOptions = GltfOptions()) -> Path:
    """Write ``animation.glb``: the mesh under a ``head`` node, its weights and the head rotation animated.

    Args:
        mesh: the driven rig (see `MeshData`).
        weights: morph weights per frame, in ``mesh.target_names`` order, finite.
        rotations: the head node's rotation per frame, quaternions ``(x, y, z, w)``, sign-continuous.
        fps: key ``i`` is at ``i / fps`` seconds.
        path: the ``.glb`` to write.

    Shape:
        weights (N, T), rotations (N, 4).
    """
    weights = np.asarray(weights, np.float32)
    rotations = np.asarray(rotations, np.float32)
    n, t = len(weights), len(mesh.target_names)
    if weights.shape != (n, t) or n == 0:
        raise ValueError(f"weights must be (N, {t}) with N > 0, got {weights.shape}")
    if rotations.shape != (n, 4):
        raise ValueError(f"rotations must be ({n}, 4), got {rotations.shape}")
    if not (np.isfinite(weights).all() and np.isfinite(rotations).all()):
        raise ValueError("weights or rotations have NaN or infinite values (hold them before writing)")
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    start = time.perf_counter()
    gltf, binary = _document(mesh, options)
    writer = _Writer(binary, options, 1.0)
    times = writer.floats(np.arange(n, dtype=np.float64) / fps, gl.SCALAR, bounds=True)
    weight_values = writer.floats(weights.reshape(-1), gl.SCALAR)
    rotation_values = writer.floats(rotations, gl.VEC4)
    gltf.nodes.append(gl.Node(name="head", children=[0], rotation=rotations[0].astype(float).tolist()))
    gltf.scenes = [gl.Scene(nodes=[1])]
    gltf.animations = [gl.Animation(
        name="tracking",
        samplers=[gl.AnimationSampler(input=times, output=weight_values, interpolation="LINEAR"),
                  gl.AnimationSampler(input=times, output=rotation_values, interpolation="LINEAR")],
        channels=[gl.AnimationChannel(sampler=0, target=gl.AnimationChannelTarget(node=0, path="weights")),
                  gl.AnimationChannel(sampler=1, target=gl.AnimationChannelTarget(node=1, path="rotation"))])]
    path = _save(gltf, binary, path)
    logger.info("wrote %s (%d frames at %.3f fps, %d targets, %.1f MB) in %.2f s", path, n, fps, t,
                path.stat().st_size / 1e6, time.perf_counter() - start)
    return path
