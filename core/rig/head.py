"""A face rig grown into a whole head: the model's other parts evaluated for the rig's person.

The rig is fitted on the face region; its identity code evaluates the full model, whose
expression deltas are carried onto that head (`core.rig.transfer`), exactly as the face's were.
Where the rig's face departs from the model's face for that identity (the rig's per-person
correctives, a network's neutral), the departure is carried onto the parts from the nearest face
vertices: fully for the neutral shape, and for the expression deltas fading out within a few
millimetres of the face (lids carry their lashes, lips the mouth socket's rim); rigid parts (teeth,
eyeballs) only move as a whole. Each part gets its own albedo (`core.rig.parts`), and the whole
head a texture atlas (`core.rig.texture`) painted from those albedos until photos replace it.

    head_rig = whole_head(result.rig, load_face_model("ict", "external/ICT-FaceKit"))
    meshes = head_rig.head_vertices(expression, gaze)      # (B, V + P, 3), the face first
"""
from __future__ import annotations

import logging
from dataclasses import replace
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from core.cache import StoredResults
from core.cpus import thread_count
from core.face_model.model import MorphableModel
from core.mesh import subset_index, triangles_within
from core.rig.parts import (EYEBALLS, IRIS, PART_COLOURS, PART_REGIONS, RIGID_PARTS, RigParts, eye_axis,
                            eye_colours, sphere_centre)
from core.rig.rig import Rig, RigFileError
from core.rig.texture import DEFAULT_TEXTURE_HEIGHT, atlas_uvs, paint_texture
from core.rig.transfer import transfer_deltas

logger = logging.getLogger(__name__)

try:  # pykdtree (requirements_pip.txt): exact nearest neighbours without SciPy's spatial package
    from pykdtree.kdtree import KDTree as _KDTree
except ImportError:
    _KDTree = None

__all__ = ["whole_head", "close_lids", "head_triangles_of_model", "mirror_map"]

_NEIGHBOURS = 8
_SPREAD_MM = 3.0   # kernel width of the carried departures over the nearest face vertices
_FADE_MM = 6.0     # expression departures fade out over this distance from the face
_EYE_SOCKET_TINT = (0.85, 0.62, 0.62)
#: Default neck length below the chin (mm) that renders keep.
NECK_MM = 45.0
#: How much lower than that the kept vertices reach on the model's mean head. A neck's vertices sit up
#: to ~25 mm higher or lower relative to its chin across identities: with 25 mm, 98.6 % of random ICT
#: identities (codes drawn from N(0, 1)) keep every vertex above their own cut, and ~1 % lack a few.
_LAYOUT_MARGIN_MM = 25.0
#: Each head vertex's mirror image, by the model's mean head (a layout's: the same in every run).
_MIRROR_MAPS: StoredResults[Tensor] = StoredResults(4, "head-mirror")


def _check(rig: Rig, model: MorphableModel) -> Tensor:
    ids = rig.vertex_ids.long()
    base = rig.model.split("/")[0]
    if model.name != base:
        raise RigFileError(f"rig of face model {rig.model!r} cannot take its head from model {model.name!r} "
                           f"(pass the full model, e.g. load_face_model('ict', ...))")
    if int(ids.max()) >= model.n_vertices or rig.n_expression != model.n_expression:
        raise RigFileError(f"rig over vertex ids up to {int(ids.max())} with {rig.n_expression} expressions does "
                           f"not fit model {model.name!r} ({model.n_vertices} vertices, {model.n_expression} "
                           f"expressions)")
    if "identity" not in rig.codes or rig.codes["identity"].shape != (model.n_identity,):
        raise RigFileError(f"rig of {rig.model!r} has no identity code of {model.n_identity} components: its head "
                           f"cannot be evaluated")
    return ids


def head_triangles_of_model(model: MorphableModel, ids: Tensor) -> Tuple[Tensor, Tensor]:
    """The model's triangles over the vertex ids ``ids`` (re-indexed into ``ids``' order) and the
    positions of those triangles in ``model.triangles``.

    Shape:
        ids (N,) -> triangles (F, 3), positions (F,).
    """
    remap = subset_index(ids, model.n_vertices)
    triangles, keep = triangles_within(model.triangles, remap)
    return triangles, torch.nonzero(keep)[:, 0]


def _nearest(points: np.ndarray, queries: np.ndarray, k: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    """The exact ``k`` nearest ``points`` of each query (distances, indices), nearest first, searched
    on the usable cores: by pykdtree where it is installed (it imports in about 1 ms; SciPy's
    ``scipy.spatial`` takes 0.1-0.17 s of every photo job's start-up, with the ``scipy.sparse`` it
    imports), else by SciPy's cKDTree, built neither balanced nor compacted (on head meshes quicker
    to build and to search). The two give the same neighbours and distances to the bit on a whole
    head (the parts' 8 nearest face vertices: 21 vs 48 ms).

    Shape:
        points (N, 3), queries (Q, 3) -> (Q,) or (Q, k) each; indices int64.
    """
    points, queries = np.ascontiguousarray(points, np.float64), np.ascontiguousarray(queries, np.float64)
    if _KDTree is not None:
        distances, indices = _KDTree(points).query(queries, k=k)
        return distances, indices.astype(np.int64)
    from scipy.spatial import cKDTree

    tree = cKDTree(points, balanced_tree=False, compact_nodes=False)
    distances, indices = tree.query(queries, k=k, workers=thread_count())
    return distances, indices.astype(np.int64)


def _carry(values: Tensor, index: np.ndarray, weight: np.ndarray) -> Tensor:
    """Weighted mean over each target's nearest sources. values (..., V, 3) -> (..., P, 3).

    ``(values[..., index, :] * weight[..., None]).sum(-2)`` without its (..., P, 8, 3) gather and
    strided sum (twice as fast): the eight terms added as torch's CPU sum adds them (four running
    sums, terms j and j + 4, then added in order), so that the result is the same to the bit.
    """
    w = torch.as_tensor(weight, dtype=values.dtype)
    ids = torch.as_tensor(index)
    if ids.shape[1] != 8:
        return (values[..., ids, :] * w[..., None]).sum(-2)
    w, ids = w.t().contiguous(), ids.t().contiguous()
    lanes = [values.index_select(-2, ids[j]).mul_(w[j, :, None])
             .add_(values.index_select(-2, ids[j + 4]).mul_(w[j + 4, :, None])) for j in range(4)]
    return lanes[0].add_(lanes[1]).add_(lanes[2]).add_(lanes[3])


def whole_head(rig: Rig, model: MorphableModel, parts: Sequence[str] = PART_REGIONS,
               iris: Sequence[float] = IRIS, texture_height: int = DEFAULT_TEXTURE_HEIGHT,
               neck_mm: Optional[float] = NECK_MM) -> Rig:
    """The rig with the head's other parts (`RigParts`), their albedos, UVs and a painted texture.

    Args:
        rig: a rig over a region of ``model`` with an ``identity`` code (any builder's).
        model: the full face model (e.g. all 26,719 ICT vertices), float32 or float64.
        parts: the model regions to add (those the model has).
        iris: the eyes' iris colour.
        texture_height: height of the texture atlas (its width is twice that).
        neck_mm: renders keep the neck this far below the person's chin (landmark 8) and leave out
            the rest, the face region's lower neck too (`RigParts.neck_cut`). The head keeps the
            vertices down to a little below that on the model's mean head: one layout per model (the
            same vertex ids, triangles and atlas for every person's rig, so that its layout-only
            work is kept on disk between runs: `core.cache.StoredResults`); the shoulders are left
            out. None keeps everything.

    Raises:
        RigFileError: the rig and the model do not fit together, or the rig has no identity code.
    """
    ids_face = _check(rig, model)
    dtype = rig.neutral.dtype
    model = model.to(dtype=dtype)
    present = [n for n in parts if n in model.regions and len(model.regions[n])]
    if not present:
        raise RigFileError(f"model {model.name!r} has none of the head parts {list(parts)}")
    in_face = torch.zeros(model.n_vertices, dtype=torch.bool)
    in_face[ids_face] = True
    region_of = torch.full((model.n_vertices,), -1, dtype=torch.long)
    for k, name in enumerate(present):
        region_of[model.regions[name].long()] = k
    full = model.vertices(rig.codes["identity"][None].to(dtype))[0]
    keep = (region_of >= 0) & ~in_face
    neck_cut = None
    if neck_mm is not None and model.landmark_indices is not None and len(model.landmark_indices) == 68:
        chin = int(model.landmark_indices[8])
        neck_cut = float(full[chin, 1]) - float(neck_mm)
        keep &= model.neutral[:, 1] >= float(model.neutral[chin, 1]) - float(neck_mm) - _LAYOUT_MARGIN_MM
    part_ids = torch.nonzero(keep)[:, 0]
    region = region_of[part_ids]

    transferred = transfer_deltas(model.expression_basis, model.neutral, full[None], model.triangles)[0]
    face_points = full[ids_face].detach().cpu().numpy()
    part_points = full[part_ids].detach().cpu().numpy()
    dist, nearest = _nearest(face_points, part_points, _NEIGHBOURS)
    kernel = np.exp(-((dist - dist[:, :1]) / _SPREAD_MM) ** 2)
    kernel /= kernel.sum(1, keepdims=True)
    fade = np.exp(-(dist[:, 0] / _FADE_MM) ** 2)

    neutral = full[part_ids] + _carry(rig.neutral - full[ids_face], nearest, kernel)
    blend = transferred.index_select(1, part_ids) + _carry(
        rig.blendshapes - transferred.index_select(1, ids_face), nearest, kernel * fade[:, None])
    albedo = _carry(rig.albedo.to(dtype), nearest, kernel)
    centres = torch.zeros(2, 3, dtype=dtype)
    for k, name in enumerate(present):
        sel = region == k
        if name in RIGID_PARTS:  # as a whole: the mean carried neutral offset, the model's own motion
            neutral[sel] = full[part_ids[sel]] + (neutral[sel] - full[part_ids[sel]]).mean(0)
            blend[:, sel] = transferred[:, part_ids[sel]]
        if name in PART_COLOURS:
            albedo[sel] = torch.tensor(PART_COLOURS[name], dtype=dtype)
        elif name.startswith("eye_socket"):
            albedo[sel] = albedo[sel] * torch.tensor(_EYE_SOCKET_TINT, dtype=dtype)
        if name in EYEBALLS:
            centre, _ = sphere_centre(neutral[sel])
            centres[EYEBALLS.index(name)] = centre
            albedo[sel] = eye_colours(neutral[sel], centre, iris, eye_axis(neutral[sel], centre))

    head_ids = torch.cat([ids_face, part_ids])
    all_triangles, positions = head_triangles_of_model(model, head_ids)
    own = (all_triangles < len(ids_face)).all(1)
    rig_parts = RigParts(neutral=neutral.detach(), blendshapes=blend.detach(), albedo=albedo.detach().clamp(0, 1),
                         vertex_ids=part_ids, triangles=all_triangles[~own], region=region, names=present,
                         eye_centres=centres, mirror=mirror_map(model.neutral[head_ids]), neck_cut=neck_cut)
    # The lids closed where blendshapes leave them apart (`close_lids`).
    out = close_lids(replace(rig, parts=rig_parts), model)
    if model.uvs is not None and model.uv_triangles is not None:
        face_positions = _match_triangles(rig.triangles, all_triangles[own], positions[own])
        corner_uvs = model.uv_triangles[torch.cat([face_positions, positions[~own]])]
        eyeball = torch.zeros(out.n_head_vertices, dtype=torch.bool)
        for name in EYEBALLS:
            eyeball[len(ids_face) + rig_parts.ids(name)] = True
        uvs, uv_triangles = atlas_uvs(model.uvs.to(dtype), corner_uvs, eyeball[out.head_triangles].all(1))
        out = replace(out, uvs=uvs, uv_triangles=uv_triangles)
        out = replace(out, texture=paint_texture(out, texture_height, iris))
    logger.info("whole head: %d face + %d part vertices (%s), %d triangles", rig.n_vertices, len(part_ids),
                ", ".join(present), len(out.head_triangles))
    return out


#: Per eye: the blink expression, the eye's corner landmarks and its (upper, lower) lid landmark pairs (iBUG).
_LIDS = (("eyeBlink_L", (42, 45), ((43, 47), (44, 46))), ("eyeBlink_R", (36, 39), ((37, 41), (38, 40))))


def close_lids(rig: Rig, model: MorphableModel, overlap_mm: float = 0.5) -> Rig:
    """The rig's eyeBlink blendshapes corrected so that the upper lid meets the lower at weight 1.

    Carried onto a person, ICT's eyeBlink stops the upper lid up to 2-3 mm short of the lower. At
    weight 1 each upper lid landmark is moved onto its lower partner (``overlap_mm`` past it); the
    offsets are interpolated along x between the eye's corners (which stay) and spread over the
    upper lid in proportion to how far eyeBlink moves each vertex, so the whole lid closes with
    its margin. Linear in the weight: a half blink is half the correction.

    Shape: the rig's blendshapes (K, V, 3) change on the upper lids only.
    """
    if model.landmark_indices is None or len(model.landmark_indices) != 68:
        return rig
    position = {int(v): i for i, v in enumerate(rig.vertex_ids.long().tolist())}
    landmark = [position.get(int(v)) for v in model.landmark_indices.tolist()]
    blend = rig.blendshapes.clone()
    rest = rig.neutral
    for name, corners, pairs in _LIDS:
        ids = [landmark[c] for c in corners] + [landmark[i] for pair in pairs for i in pair]
        if name not in rig.expression_names or None in ids:
            continue
        k = rig.expression_names.index(name)
        closed = rest + blend[k]
        # Offsets at the corners (none) and the upper landmarks, in order of x.
        xs = [float(rest[landmark[corners[0]], 0]), float(rest[landmark[corners[1]], 0])]
        offsets = [torch.zeros(3, dtype=rest.dtype), torch.zeros(3, dtype=rest.dtype)]
        for upper, lower in pairs:
            offset = closed[landmark[lower]] - closed[landmark[upper]]
            offset[1] -= overlap_mm
            xs.append(float(rest[landmark[upper], 0]))
            offsets.append(offset)
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        xs_t = torch.tensor([xs[i] for i in order], dtype=rest.dtype)
        off_t = torch.stack([offsets[i] for i in order])
        motion = blend[k].norm(dim=1)
        reference = float(torch.stack([motion[landmark[u]] for u, _ in pairs]).mean())
        a, b = rest[landmark[corners[0]]], rest[landmark[corners[1]]]
        line_y = a[1] + (rest[:, 0] - a[0]) / (b[0] - a[0]) * (b[1] - a[1])
        lid = torch.nonzero((motion > 0.1 * reference) & (rest[:, 1] > line_y)
                            & (rest[:, 0] > xs_t[0]) & (rest[:, 0] < xs_t[-1]))[:, 0]
        x = rest[lid, 0].contiguous()
        j = torch.searchsorted(xs_t, x).clamp(1, len(xs_t) - 1)
        t = ((x - xs_t[j - 1]) / (xs_t[j] - xs_t[j - 1]).clamp(min=1e-6)).clamp(0.0, 1.0)[:, None]
        offset = off_t[j - 1] + t * (off_t[j] - off_t[j - 1])
        share = (motion[lid] / reference).clamp(max=1.0)[:, None]
        blend[k, lid] += share * offset
    return replace(rig, blendshapes=blend)


def mirror_map(points: Tensor, tolerance_mm: float = 0.1) -> Tensor:
    """Each point's mirror image (x -> -x) among the points, -1 where none lies within ``tolerance_mm``;
    kept for the last few meshes and on disk (`whole_head` asks it of the model's mean head: the same
    in every run).

    Shape:
        points (N, 3) of a left-right symmetric mesh -> (N,) int64.
    """

    def compute() -> Tensor:
        p = points.detach().cpu().double().numpy()
        dist, index = _nearest(p, p * np.array([-1.0, 1.0, 1.0]))
        return torch.from_numpy(np.where(dist <= tolerance_mm, index, -1).astype(np.int64))

    return _MIRROR_MAPS.recall((points.detach().cpu(), float(tolerance_mm)), compute).clone()


def _match_triangles(rig_triangles: Tensor, model_triangles: Tensor, positions: Tensor) -> Tensor:
    """For each of the rig's triangles, its position in the model (the same corners, same order).

    Raises:
        RigFileError: a rig triangle is not one of the model's.
    """
    if rig_triangles.shape == model_triangles.shape and torch.equal(rig_triangles.long(), model_triangles):
        return positions
    key = {tuple(t): int(p) for t, p in zip(model_triangles.tolist(), positions.tolist())}
    try:
        return torch.tensor([key[tuple(t)] for t in rig_triangles.long().tolist()], dtype=torch.long)
    except KeyError as err:
        raise RigFileError(f"the rig's triangle {err} is not a triangle of the face model") from None
