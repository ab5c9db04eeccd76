"""The export jobs: a rig (and a tracking) in, ``rig.glb`` / ``animation.glb`` / ``animation_arkit.csv`` out.

Each job checks that its inputs fit together and says which file is wrong when they do not:
a tracking drives a rig by expression *name* (the tracking's weights are picked in the rig's order),
so every expression of the rig must be among the tracking's; a tracking file that records the face
model or the vertex count of its rig must agree with the rig.
"""
from __future__ import annotations

import io
import logging
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterable, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image

from core.rig.rig import Rig, texture_file
from utils.export.arkit import NameStyle, target_mapping, write_live_link_csv
from utils.export.errors import ExportError
from utils.export.gltf import (MM_TO_M, GltfOptions, MeshData, RigGlbDraft, srgb_to_linear, vertex_normals,
                               write_animation_glb, write_rig_glb)
from utils.export.motion import head_quaternions, hold_invalid
from utils.io.tracking import TrackingData, load_tracking

logger = logging.getLogger(__name__)

__all__ = ["rig_mesh", "split_seams", "glb_options", "rig_weights", "animation_keys", "export_rig",
           "prepare_rig_glb", "write_rig_glb_draft", "export_animation", "export_live_link_csv",
           "export_files", "FORMATS"]

FORMATS = ("glb", "csv")
_FILES = {"rig": "rig.glb", "animation": "animation.glb", "csv": "animation_arkit.csv"}


def _label(rig: Rig, source: Optional[Union[str, Path]]) -> str:
    return f"rig {source}" if source else f"rig ({rig.model}, in memory)"


def _check_rig(rig: Rig, source: Optional[Union[str, Path]] = None) -> None:
    """Raise `ExportError` where the rig's arrays disagree or hold non-finite values."""
    v, k = rig.n_vertices, rig.n_expression
    label = _label(rig, source)
    if tuple(rig.blendshapes.shape) != (k, v, 3) or len(rig.expression_names) != k:
        raise ExportError(f"{label}: blendshapes {tuple(rig.blendshapes.shape)} and {len(rig.expression_names)} "
                          f"names do not match the neutral's {v} vertices")
    if tuple(rig.albedo.shape) != (v, 3):
        raise ExportError(f"{label}: albedo is {tuple(rig.albedo.shape)}, the neutral has {v} vertices")
    tri = rig.triangles
    if tri.ndim != 2 or tri.shape[1] != 3 or len(tri) == 0 or int(tri.min()) < 0 or int(tri.max()) >= v:
        raise ExportError(f"{label}: triangles {tuple(tri.shape)} do not index its {v} vertices")
    if not (bool(rig.neutral.isfinite().all()) and bool(rig.blendshapes.isfinite().all())):
        raise ExportError(f"{label}: neutral or blendshapes hold NaN or infinite values")


def rig_mesh(rig: Rig, names: NameStyle = "arkit", source: Optional[Union[str, Path]] = None,
             texture: bool = True) -> MeshData:
    """The rig in glTF units: metres, linear colours, targets named and merged as ``names`` says.

    A rig with parts is exported as its whole head (`Rig.head_vertices` order: the face, then the
    parts); a rig with a texture atlas as a textured mesh (vertices on UV seams copied after the
    others, `split_seams`), else with per-vertex colours. ``texture`` False leaves the atlas' PNG
    out (``texture_png`` None, the texcoords kept): its pixels are not read (`prepare_rig_glb`).

    Raises:
        ExportError: the rig's arrays disagree or hold non-finite values.
    """
    _check_rig(rig, source)
    mapping = target_mapping(rig.expression_names, names)
    zero = torch.zeros(1, rig.n_expression, dtype=rig.neutral.dtype)
    neutral = rig.head_vertices(zero)[0].detach().cpu().numpy().astype(np.float64)
    # The targets are float32 in the file: merged and scaled in float32 (half the memory traffic of ~30 MB).
    blend = rig.blendshapes.detach().cpu().numpy().astype(np.float32, copy=False)
    if rig.parts is not None:
        parts = rig.parts.blendshapes.detach().cpu().numpy().astype(np.float32, copy=False)
        blend = np.concatenate([blend, parts], axis=1)
    triangles = rig.head_triangles.cpu().numpy().astype(np.int64)
    colors = srgb_to_linear(rig.head_albedo.detach().cpu().numpy())
    texcoords = png = None
    extras: Dict[str, object] = {"rigVertices": int(rig.n_head_vertices)}
    targets = mapping.deltas(blend) * np.float32(MM_TO_M)  # seam copies take their vertex's below
    if rig.texture is not None and rig.uvs is not None and rig.uv_triangles is not None:
        source_ids, triangles, uv_ids = split_seams(triangles, rig.uv_triangles.cpu().numpy(), len(neutral))
        uvs = rig.uvs.detach().cpu().numpy().astype(np.float64)[uv_ids]
        texcoords = np.stack([uvs[:, 0], 1.0 - uvs[:, 1]], axis=1).astype(np.float32)  # glTF: v from the top
        png = _png(rig.texture, source) if texture else None
        extras["seamCopiesOf"] = source_ids[len(neutral):].tolist()
        neutral, targets, colors = neutral[source_ids], targets[:, source_ids], None
    return MeshData(positions=(neutral * MM_TO_M).astype(np.float32),
                    normals=vertex_normals(neutral, triangles),
                    colors=colors, triangles=triangles,
                    targets=targets,
                    target_names=list(mapping.names), name="head" if rig.parts is not None else "face",
                    texcoords=texcoords, texture_png=png, extras=extras)


def split_seams(triangles: np.ndarray, uv_triangles: np.ndarray, n_vertices: int
                ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One texture coordinate per vertex: vertices whose corners use several uvs are copied.

    Each vertex keeps the uv of its first corner; every other (vertex, uv) pair becomes a copy
    appended after the ``n_vertices`` originals, so the originals keep their indices.

    Returns:
        (source (V',) the original vertex of each output vertex, triangles (F, 3) into the output
        vertices, uv_ids (V',) each output vertex's uv id).

    Shape:
        triangles, uv_triangles (F, 3).
    """
    corners = np.stack([triangles.reshape(-1), uv_triangles.reshape(-1)], axis=1).astype(np.int64)
    # Distinct (vertex, uv) pairs in their order, by a 1-D unique of keys (``np.unique(axis=0)`` is slow).
    span = int(corners[:, 1].max()) + 1 if len(corners) else 1
    keys, inverse = np.unique(corners[:, 0] * span + corners[:, 1], return_inverse=True)
    pairs = np.stack([keys // span, keys % span], axis=1)
    inverse = inverse.reshape(-1)
    first_corner = np.full(n_vertices, -1, np.int64)
    order = np.arange(len(corners))[::-1]
    first_corner[corners[order, 0]] = order                                  # earliest corner wins
    primary_uv = np.where(first_corner >= 0, corners[np.maximum(first_corner, 0), 1], 0)
    is_primary = pairs[:, 1] == primary_uv[pairs[:, 0]]
    index_of_pair = np.empty(len(pairs), np.int64)
    index_of_pair[is_primary] = pairs[is_primary, 0]
    extra = np.flatnonzero(~is_primary)
    index_of_pair[extra] = n_vertices + np.arange(len(extra))
    source = np.concatenate([np.arange(n_vertices), pairs[extra, 0]])
    uv_ids = np.concatenate([primary_uv, pairs[extra, 1]])
    return source, index_of_pair[inverse].reshape(-1, 3), uv_ids


def _png(texture: torch.Tensor, source: Optional[Union[str, Path]] = None) -> bytes:
    """An (H, W, 3) texture in [0, 1] as PNG bytes (8-bit sRGB, the albedo values as stored): the
    PNG the rig file ``source`` was saved with where there is one (the same pixels, encoded once),
    else encoded here."""
    saved = None if source is None else texture_file(source)
    if saved is not None and saved.is_file():
        return saved.read_bytes()
    pixels = np.round(texture.detach().cpu().float().clamp(0.0, 1.0).numpy() * 255.0).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def rig_weights(rig: Rig, tracking: TrackingData, rig_source: Optional[Union[str, Path]] = None) -> np.ndarray:
    """The tracking's weights picked by name in the rig's expression order.

    Raises:
        ExportError: a rig expression is not in the tracking, or the tracking records another face
            model or vertex count than the rig's (the message names both files).

    Shape:
        -> (N, K_rig) float32 (NaN where the tracking has NaN).
    """
    label, where = _label(rig, rig_source), f"tracking {tracking.path or '(in memory)'}"
    if tracking.n_vertices is not None and tracking.n_vertices != rig.n_vertices:
        raise ExportError(f"{where} was tracked with a rig of {tracking.n_vertices} vertices; {label} has "
                          f"{rig.n_vertices}")
    if tracking.model is not None and tracking.model != rig.model:
        raise ExportError(f"{where} was tracked on face model {tracking.model!r}; {label} is {rig.model!r}")
    position = {name: i for i, name in enumerate(tracking.expression_names)}
    missing = [n for n in rig.expression_names if n not in position]
    if missing:
        raise ExportError(f"{label} has expressions {missing[:5]}{' ...' if len(missing) > 5 else ''} that {where} "
                          f"lacks (its {tracking.n_expression} expressions are of another face model?)")
    extra = [n for n in tracking.expression_names if n not in set(rig.expression_names)]
    if extra:
        logger.warning("%s: expressions %s are not in %s and are left out", where, extra[:5], label)
    return tracking.expression[:, [position[n] for n in rig.expression_names]]


def glb_options(rig: Rig, options: Optional[GltfOptions] = None) -> GltfOptions:
    """``options``, or the default for the rig: sparse targets for a whole head (most of its
    vertices, the parts', move with few expressions; 8 MB instead of 18 for ICT), dense for a face."""
    if options is not None:
        return options
    return GltfOptions(sparse=True) if rig.parts is not None else GltfOptions()


def export_rig(rig: Rig, path: Union[str, Path], names: NameStyle = "arkit",
               options: Optional[GltfOptions] = None, source: Optional[Union[str, Path]] = None) -> Path:
    """Write ``rig.glb`` (see `utils.export.gltf`; ``options`` None: `glb_options`)."""
    return write_rig_glb(rig_mesh(rig, names, source), path, glb_options(rig, options))


def prepare_rig_glb(rig: Rig, names: NameStyle = "arkit",
                    options: Optional[GltfOptions] = None) -> RigGlbDraft:
    """`export_rig`'s work up to the texture's pixels: ``rig.glb``'s geometry and targets from the
    rig's shape and UVs, for a caller whose texture is still being made (`write_rig_glb_draft`)."""
    return RigGlbDraft(rig_mesh(rig, names, texture=False), glb_options(rig, options))


def write_rig_glb_draft(draft: RigGlbDraft, rig: Rig, path: Union[str, Path],
                        source: Optional[Union[str, Path]] = None) -> Path:
    """Write a `prepare_rig_glb` draft with ``rig``'s texture (the PNG saved with the rig file
    ``source`` where there is one): the same bytes as `export_rig` of ``rig`` (of the same shape)."""
    return draft.write(path, _png(rig.texture, source) if draft.texture_later else None)


def animation_keys(rig: Rig, tracking: TrackingData, names: NameStyle = "arkit",
                   source: Optional[Union[str, Path]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """The animation's keys: morph weights in target order and head quaternions, invalid frames held.

    Raises:
        ExportError: see `rig_weights` and `hold_invalid`.

    Shape:
        -> weights (N, T) float32, rotations (N, 4) float32 ``(x, y, z, w)``, sign-continuous.
    """
    weights = rig_weights(rig, tracking, source)
    held = hold_invalid(replace(tracking, expression=weights, expression_names=list(rig.expression_names)))
    return target_mapping(rig.expression_names, names).weights(held.expression), head_quaternions(held.rotation)


def export_animation(rig: Rig, tracking: TrackingData, path: Union[str, Path], names: NameStyle = "arkit",
                     options: Optional[GltfOptions] = None, source: Optional[Union[str, Path]] = None) -> Path:
    """Write ``animation.glb``: the rig driven by the tracking (`animation_keys`; ``options`` None: `glb_options`)."""
    weights, rotations = animation_keys(rig, tracking, names, source)
    return write_animation_glb(rig_mesh(rig, names, source), weights, rotations, tracking.fps, path,
                               glb_options(rig, options))


def export_live_link_csv(tracking: TrackingData, path: Union[str, Path]) -> Path:
    """Write ``animation_arkit.csv`` (Live Link Face) from the tracking, invalid frames held."""
    held = hold_invalid(tracking)
    return write_live_link_csv(path, held.expression, tracking.expression_names, tracking.fps,
                               head_rotation=held.rotation, left_eye=held.gaze_left, right_eye=held.gaze_right)


def export_files(rig_path: Union[str, Path], out_dir: Union[str, Path], tracking_path: Optional[Union[str, Path]] = None,
                 formats: Iterable[str] = FORMATS, names: NameStyle = "arkit",
                 options: Optional[GltfOptions] = None) -> Dict[str, Path]:
    """Convert existing outputs: ``rig.npz`` (and ``tracking.npz``) -> files in ``out_dir``.

    Writes ``rig.glb`` (``glb``); with a tracking also ``animation.glb`` (``glb``) and
    ``animation_arkit.csv`` (``csv``). Returns ``{"rig" | "animation" | "csv": path}``.

    Raises:
        RigFileError, TrackingFileError, ExportError: unreadable or mismatched inputs (named).
    """
    formats = set(formats)
    unknown = formats - set(FORMATS)
    if unknown:
        raise ExportError(f"unknown format(s) {sorted(unknown)}; known: {', '.join(FORMATS)}")
    out_dir = Path(out_dir)
    rig = Rig.load(rig_path)
    tracking = load_tracking(tracking_path) if tracking_path is not None else None
    written: Dict[str, Path] = {}
    if "glb" in formats:
        written["rig"] = export_rig(rig, out_dir / _FILES["rig"], names, options, rig_path)
    if tracking is not None and "glb" in formats:
        written["animation"] = export_animation(rig, tracking, out_dir / _FILES["animation"], names, options, rig_path)
    if tracking is not None and "csv" in formats:
        rig_weights(rig, tracking, rig_path)  # the same name check as the animation
        written["csv"] = export_live_link_csv(tracking, out_dir / _FILES["csv"])
    return written
