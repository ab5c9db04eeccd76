"""The rig's texture atlas: one image over every textured part of the head.

ICT-FaceKit lays its UVs out in UDIM tiles (u in [0, 7): the face in tile 0, the rest of the head,
mouth socket and eye sockets in tile 1, gums and tongue in 2, teeth in 3, eyelashes in 6; the
eyeballs share tile 0 with the face). A rig packs the tiles it uses into one atlas twice as wide as
high (`ATLAS_CELLS`): the face gets the left half (1024 x 1024 texels at the default size), the
head, eyeballs and teeth 512 x 512 each, gums and lashes 256 x 256. Atlas coordinates are in
[0, 1] with v up (OBJ and the model's convention); texel (row i, column j) is centred at
``u = (j + 0.5) / W``, ``v = 1 - (i + 0.5) / H``.

`texel_map` finds, per texel, the head triangle and barycentrics it lies on (a rasterization in
UV space); `paint_texture` fills the atlas from per-vertex albedos (the eyes' iris and pupil drawn
per texel, so they stay sharp); `core.render.textured` reads it back when rendering.
"""
from __future__ import annotations

from typing import Dict, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from core.cache import RecentResults, StoredResults
from core.render.rasterize import Fragments, interpolate, rasterize
from core.rig.parts import EYEBALLS, IRIS, eye_axis, eye_colours

__all__ = ["DEFAULT_TEXTURE_HEIGHT", "ATLAS_CELLS", "atlas_uvs", "texel_map", "paint_texture", "fill_empty"]

DEFAULT_TEXTURE_HEIGHT = 512
#: UDIM tile (or ``"eyeball"``) -> atlas cell ``(u0, v0, width, height)`` in atlas units (v up).
ATLAS_CELLS: Dict[Union[int, str], Tuple[float, float, float, float]] = {
    0: (0.0, 0.0, 0.5, 1.0),
    1: (0.5, 0.5, 0.25, 0.5),
    "eyeball": (0.75, 0.5, 0.25, 0.5),
    3: (0.5, 0.0, 0.25, 0.5),
    2: (0.75, 0.25, 0.125, 0.25),
    6: (0.875, 0.25, 0.125, 0.25),
}
_EYEBALL_CODE = -1
_KEPT = 4  # atlases whose texel maps and fill indices are kept
_TEXEL_MAPS: RecentResults[Fragments] = RecentResults(_KEPT)  # by (uvs, uv triangles, height)
#: By the covered mask.
_NEAREST: StoredResults[Tuple[np.ndarray, np.ndarray]] = StoredResults(_KEPT, "atlas-fill")


def atlas_uvs(model_uvs: Tensor, corner_uv_ids: Tensor, eyeball: Tensor) -> Tuple[Tensor, Tensor]:
    """Model UDIM coordinates packed into the atlas, per triangle corner.

    Args:
        model_uvs: the model's texture coordinates (UDIM: tile = floor(u)).
        corner_uv_ids: per corner, ids into ``model_uvs`` of the head's triangles.
        eyeball: which triangles are eyeball triangles (their own cell, though in the face's tile).

    Returns:
        (uvs (T', 2) in [0, 1], uv_triangles (F, 3) into them).

    Raises:
        ValueError: a triangle lies in a tile the atlas has no cell for.

    Shape:
        model_uvs (T, 2); corner_uv_ids (F, 3); eyeball (F,).
    """
    corners = model_uvs[corner_uv_ids.long()]                          # (F, 3, 2)
    tile = torch.floor(corners[..., 0].mean(1)).long()
    code = torch.where(eyeball.bool(), torch.full_like(tile, _EYEBALL_CODE), tile)
    known = {(_EYEBALL_CODE if k == "eyeball" else int(k)): v for k, v in ATLAS_CELLS.items()}
    missing = sorted(set(code.tolist()) - set(known))
    if missing:
        raise ValueError(f"triangles in UDIM tile(s) {missing}: the atlas has cells for tiles "
                         f"{sorted(k for k in known if k >= 0)} and the eyeballs")
    # Distinct (uv id, cell) pairs in (uv id, cell) order, by one 1-D unique of their keys (as
    # ``torch.unique(pairs, dim=0)`` orders them, many times faster).
    span = int(code.max()) - _EYEBALL_CODE + 1
    keys = corner_uv_ids.long() * span + (code[:, None] - _EYEBALL_CODE)
    unique_keys, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
    unique = torch.stack([unique_keys // span, unique_keys % span + _EYEBALL_CODE], 1)
    base = model_uvs[unique[:, 0]]
    cells = torch.tensor([known[int(c)] for c in unique[:, 1].tolist()], dtype=model_uvs.dtype)  # (T', 4)
    tiles = torch.where(unique[:, 1] == _EYEBALL_CODE, torch.zeros_like(unique[:, 1]), unique[:, 1])
    local = torch.stack([base[:, 0] - tiles.to(base.dtype), base[:, 1]], -1).clamp(0.0, 1.0)
    uvs = cells[:, :2] + local * cells[:, 2:]
    return uvs, inverse.reshape(-1, 3)


def texel_map(uvs: Tensor, uv_triangles: Tensor, height: int) -> Fragments:
    """Per texel of a ``height`` x ``2 height`` atlas: the triangle it lies on and its barycentrics.

    Texels outside every triangle have ``tri_id`` -1. Where UV islands overlap (the two eyeballs
    share theirs) the lower triangle index wins. The last few atlases' maps are kept (a rig's layout
    is its model's: the head's painting and the texture fit ask for the same one); each call gets
    its own copy.

    Shape:
        uvs (T, 2); uv_triangles (F, 3) -> Fragments of batch 1, (1, H, 2H).
    """
    key = (uvs, uv_triangles.long(), int(height))
    texels = _TEXEL_MAPS.get(key)
    if texels is None:
        width = 2 * int(height)
        screen = torch.stack([uvs[:, 0].double() * width - 0.5, (1.0 - uvs[:, 1].double()) * height - 0.5,
                              torch.zeros(len(uvs), dtype=torch.float64)], -1)
        texels = _TEXEL_MAPS.put(key, rasterize(screen[None], key[1], int(height), width))
    return Fragments(*(x.clone() for x in texels))


def fill_empty(texture: np.ndarray, filled: np.ndarray) -> np.ndarray:
    """Every texel not ``filled`` takes the value of the nearest filled one (so that bilinear
    sampling at island borders and mip-mapping in viewers never reach empty texels).

    Shape:
        texture (H, W, C); filled (H, W) bool -> (H, W, C).
    """
    if filled.all() or not filled.any():
        return texture
    rows, cols = _nearest_filled(filled)
    return texture[rows, cols]


def _nearest_filled(filled: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Row and column of each texel's nearest ``filled`` texel, kept for the last few masks and on disk
    (an atlas' coverage is its layout's: painting and the texture fit fill the same one, in every run
    of a model)."""
    key = (np.asarray(filled, bool),)

    def compute() -> Tuple[np.ndarray, np.ndarray]:
        from scipy import ndimage  # here: its import (~0.05 s) only where nothing is stored yet

        _, (rows, cols) = ndimage.distance_transform_edt(~key[0], return_indices=True)
        return rows, cols

    rows, cols = _NEAREST.recall(key, compute)
    rows.flags.writeable = cols.flags.writeable = False
    return rows, cols


def paint_texture(rig, height: int = DEFAULT_TEXTURE_HEIGHT, iris: Sequence[float] = IRIS) -> Tensor:
    """The atlas painted from the rig's per-vertex albedos (the eyes' iris and pupil per texel).

    Args:
        rig: a `core.rig.rig.Rig` with ``uvs`` and ``uv_triangles``.
        height: atlas height in texels (width twice that).
        iris: the eyes' iris colour.

    Shape:
        -> (height, 2 height, 3) float in [0, 1], the rig's dtype.
    """
    if rig.uvs is None or rig.uv_triangles is None:
        raise ValueError("paint_texture: the rig has no texture atlas (uvs, uv_triangles)")
    texels = texel_map(rig.uvs, rig.uv_triangles, height)
    triangles = rig.head_triangles.long()
    dtype = rig.neutral.dtype
    colours = interpolate(texels, triangles, rig.head_albedo.to(dtype)[None])[0]  # (H, W, 3)
    if rig.parts is not None:
        neutral = rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=dtype))[0]
        tri = texels.tri_id[0]
        surface = None  # the neutral's point at each texel, for both eyes
        for eye, name in enumerate(EYEBALLS):
            ids = rig.n_vertices + rig.parts.ids(name)
            if len(ids) == 0:
                continue
            member = torch.zeros(rig.n_head_vertices, dtype=torch.bool)
            member[ids] = True
            on_eye = (tri >= 0) & member[triangles[tri.clamp(min=0)]].all(-1)
            if bool(on_eye.any()):
                if surface is None:
                    surface = interpolate(texels, triangles, neutral[None])[0]
                points = surface[on_eye]
                centre = rig.parts.eye_centres[eye].to(dtype)
                colours[on_eye] = eye_colours(points, centre, iris, eye_axis(neutral[ids], centre))
    filled = texels.mask[0].numpy()
    painted = fill_empty(colours.detach().cpu().numpy(), filled)
    return torch.from_numpy(np.ascontiguousarray(painted)).to(dtype).clamp(0.0, 1.0)
