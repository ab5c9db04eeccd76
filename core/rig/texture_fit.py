"""A de-lit texture of the skin from all photos of a rig's person.

For each texel of the skin (the face region and the rest of the head) its point on the person's
head in each photo (the photo's fitted expression and head pose) is projected into the photo; the
colour there divided by the photo's shading at that point (its SH lighting at the point's normal)
is that photo's estimate of the albedo. The estimates are combined per texel by a weighted median
(robust to a highlight or a shadow in one photo), each photo weighted by

- visibility: the point is in front in the photo's z-buffer of the whole head, inside the photo, and
  not next to a pixel of anything but skin (background, eyes, teeth: colours mix there);
- angle: the surface faces the camera (weight ramps up with the normal's z, `TextureConfig.grazing`);
- rest: the photo's expression barely moves the skin there (weight ``exp(-(d / rest_mm)^2)`` for a
  displacement of d mm, floored at ``rest_floor``), so that a raised brow's furrows or a smile's
  creases come from the photos where that part of the face is at rest, where there are any.

Only the face region takes photo colours: beyond it photos show hair or the scene, not the scalp
(hair is out of scope), so the rest of the head takes the skin colour spread from the face.
Texels seen too little take their mirror image's estimate (the model is left-right symmetric;
`core.rig.parts.RigParts.mirror`), and texels seen on neither side the skin colour diffused over
the mesh from the seen ones; the atlas' empty texels take their nearest neighbour's value, so no
seam shows. The parts that photos do not show (eyes, mouth interior, teeth) keep the rig's painted
texture.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Optional, Tuple

import cv2
import numpy as np
import torch
from torch import Tensor

from core.cache import StoredResults
from core.camera import WeakPerspective
from core.cpus import parallel_map, single_thread, thread_count
from core.lighting import SH_FACTORS, sh_shading
from core.mesh import vertex_neighbours, vertex_normals
from core.render.rasterize import rasterize
from core.render.textured import sample_texture
from core.rig.parts import surface_distance
from core.rig.rig import Rig
from core.rig.texture import DEFAULT_TEXTURE_HEIGHT, fill_empty, paint_texture, texel_map
from core.sampling import sample_points

logger = logging.getLogger(__name__)

try:  # the diffusion's rounds compiled (setup.py builds it); else SciPy's products, the same bits
    from core.rig import _diffusion as _DIFFUSION
except ImportError:
    _DIFFUSION = None
try:  # each photo's texel estimates in one compiled pass; else the torch composition (to float rounding)
    from core.rig import _texels as _TEXELS
except ImportError:
    _TEXELS = None

__all__ = ["TextureConfig", "TextureFit", "estimate_texture", "skin_triangles", "mirror_uvs", "weighted_median"]

_SKIN_PARTS = ("head_and_neck",)
#: A sparse matrix as CSR arrays: indptr (R + 1,) int32, indices (nnz,) int32, data (nnz,).
Csr = Tuple[np.ndarray, np.ndarray, np.ndarray]
_CHUNK = 1 << 17  # texels per weighted-median batch (bounds the sort's memory)
#: The skin texels' mirror coordinates, by the head layout (a model's: the same in every run).
_MIRRORS: StoredResults[Tuple[Tensor, Tensor]] = StoredResults(4, "atlas-mirror")


@dataclass(frozen=True)
class TextureConfig:
    """Settings of `estimate_texture`.

    Attributes:
        height: atlas height in texels (width twice that).
        grazing: camera-space normal z below which a photo does not count, and above which it counts fully.
        rest_mm: displacement (mm) by a photo's expression at which its weight falls to 1/e.
        rest_floor: the least weight of a photo for its expression (where every photo moves the skin).
        min_shading: shading is clamped to at least this before dividing (deep shadows are noise).
        depth_tol: z-buffer tolerance, pixels of the photo.
        edge_px: pixels this close to anything but skin in a photo (eyes, teeth, mouth) are left
            out (their colours mix).
        border_px: a photo's weight rises from 0 at its border (or a crop's padding) over this many pixels.
        silhouette_px: pixels this close to the background (outside the head's silhouette) are left
            out: there a fit a little off samples the scene.
        seen: total weight at which a texel counts as fully seen (below it the mirror and the
            diffused colour mix in).
        median: combine the photos by a weighted median (else a weighted mean).
        diffusion_iterations: one-ring averaging rounds spreading colour into never-seen skin.
        neck_margin: with a jawline given, skin lower than this many mm below it (at rest, seen from
            the front) takes no photo colour (collars, shirts, the neck's shadow) but the spread skin
            colour; the photo weight ramps down over ``neck_ramp`` mm above that.
        neck_ramp: see ``neck_margin``.
        border_mm: photo colours fade in over this distance (along the mesh's edges) inside the face
            region's border (beyond it the head takes the spread skin colour), so no seam shows
            where they end. 5 mm is the width the textures have had since the whole head came
            (issue 19): the distance counted each edge twice until session 20, and this read 10.
    """

    height: int = DEFAULT_TEXTURE_HEIGHT
    grazing: Tuple[float, float] = (0.15, 0.55)
    rest_mm: float = 1.5
    rest_floor: float = 0.05
    min_shading: float = 0.2
    depth_tol: float = 1.0
    edge_px: int = 1
    silhouette_px: int = 3
    border_px: float = 12.0
    seen: float = 0.6
    median: bool = True
    diffusion_iterations: int = 400
    neck_margin: float = 2.0
    neck_ramp: float = 4.0
    border_mm: float = 5.0


@dataclass
class TextureFit:
    """What `estimate_texture` made.

    Attributes:
        rig: the rig with the new ``texture``.
        texture: (H, 2H, 3) the atlas, [0, 1].
        weight: (H, 2H) each texel's total photo weight (0 off the skin).
        skin: (H, 2H) bool, the skin texels.
        seen_fraction: share of the skin texels fully seen (weight >= ``seen``) in the photos.
    """

    rig: Rig
    texture: Tensor
    weight: Tensor
    skin: Tensor
    seen_fraction: float


def skin_triangles(rig: Rig, photographed: bool = False) -> Tensor:
    """Which of the rig's head triangles are skin: the face region and the rest of the head (with
    ``photographed``, the face region alone: photos show hair, not scalp, beyond it).

    Shape:
        -> (F_head,) bool.
    """
    skin = torch.zeros(rig.n_head_vertices, dtype=torch.bool)
    skin[:rig.n_vertices] = True
    if rig.parts is not None and not photographed:
        for name in _SKIN_PARTS:
            skin[rig.n_vertices + rig.parts.ids(name)] = True
    return skin[rig.head_triangles.long()].all(1)


def weighted_median(values: Tensor, weights: Tensor) -> Tensor:
    """Per column, the weighted median over the first axis (the lower one at a tie).

    Shape:
        values (G, N, C); weights (G, N) >= 0 -> (N, C).
    """
    g, n, c = values.shape
    if (_TEXELS is not None and values.dtype == weights.dtype == torch.float32 and values.device.type == "cpu"
            and g > 0):  # compiled: the same picks, to the bit
        out = torch.empty(n, c, dtype=values.dtype)
        _TEXELS.weighted_median(values.detach().contiguous().numpy(), weights.detach().contiguous().numpy(),
                                out.numpy())
        return out
    # Each column's G values in a contiguous row, ordered by numpy's stable sort (torch's CPU order, in
    # half the time); the cumulative weights by torch (its accumulation, as along the first axis).
    rows = values.permute(1, 2, 0).reshape(n * c, g)
    order = torch.from_numpy(np.argsort(rows.detach().cpu().numpy(), axis=1, kind="stable")).to(values.device)
    cumulative = torch.gather(weights.t()[:, None, :].expand(n, c, g).reshape(n * c, g), 1, order).cumsum(1)
    pick = (cumulative < 0.5 * cumulative[:, -1:]).sum(1, keepdim=True).clamp(max=g - 1)
    return torch.gather(rows, 1, torch.gather(order, 1, pick))[:, 0].reshape(n, c)


def _median_in_pieces(values: Tensor, weights: Tensor, threads: Optional[int]) -> Tensor:
    """`weighted_median` in pieces of at most ``_CHUNK`` texels (bounding the sort's memory), side by
    side on up to ``threads`` threads (its columns are independent: the same result for any split).

    Shape:
        values (G, M, C); weights (G, M) -> (M, C).
    """
    m = values.shape[1]
    size = max(1, min(_CHUNK, -(-m // 4)))  # pieces for two threads to share evenly
    with single_thread():
        pieces = parallel_map(lambda s: weighted_median(values[:, s:s + size], weights[:, s:s + size]),
                              range(0, m, size), threads)
    return torch.cat(pieces)


def mirror_uvs(rig: Rig, tri_id: Tensor, bary: Tensor) -> Tuple[Tensor, Tensor]:
    """Atlas coordinates of the mirror image (x -> -x on the model) of surface points.

    Args:
        tri_id: head triangle of each point; bary: its barycentrics.

    Returns:
        (uv (N, 2), found (N,) bool: the point's triangle has a mirror triangle).

    Shape:
        tri_id (N,); bary (N, 3).
    """
    n = len(tri_id)
    if rig.parts is None or rig.parts.mirror is None or rig.uvs is None:
        return torch.zeros(n, 2, dtype=bary.dtype), torch.zeros(n, dtype=torch.bool)
    triangles = rig.head_triangles.long().numpy()
    mirror = rig.parts.mirror.long().numpy()
    size = np.int64(rig.n_head_vertices)

    def keys(t: np.ndarray) -> np.ndarray:
        s = np.sort(t, axis=1).astype(np.int64)
        return (s[:, 0] * size + s[:, 1]) * size + s[:, 2]

    own = keys(triangles)
    order = np.argsort(own)
    corners = mirror[triangles]                                     # (F, 3)
    valid = (corners >= 0).all(1)
    wanted = keys(np.where(corners >= 0, corners, 0))
    at = np.clip(np.searchsorted(own[order], wanted), 0, len(own) - 1)
    partner = np.where(valid & (own[order][at] == wanted), order[at], -1)
    # Corner k of a triangle sits at position perm[k] of its partner.
    perm = np.argmax(triangles[np.maximum(partner, 0)][:, None, :] == corners[:, :, None], axis=2)
    tri = tri_id.long().numpy()
    uv_triangles = rig.uv_triangles.long().numpy()
    uvs = rig.uvs.double().numpy()
    corner_uv = uvs[uv_triangles[np.maximum(partner[tri], 0)[:, None], perm[tri]]]       # (N, 3, 2)
    found = partner[tri] >= 0
    # Quads split along the other diagonal on the mirror side have no mirror triangle: interpolate
    # the mirrored corners' own uvs, where those lie together in one UV island.
    first_uv = np.zeros(rig.n_head_vertices, np.int64)
    first_uv[triangles.reshape(-1)[::-1]] = uv_triangles.reshape(-1)[::-1]
    loose = ~found & valid[tri]
    fallback = uvs[first_uv[corners[tri[loose]]]]                                           # (M, 3, 2)
    own = uvs[uv_triangles[tri[loose]]]
    extent = lambda c: np.ptp(c, axis=1).max(1)  # noqa: E731
    together = extent(fallback) <= 3.0 * extent(own) + 1e-6
    corner_uv[np.flatnonzero(loose)[together]] = fallback[together]
    found[np.flatnonzero(loose)[together]] = True
    uv = (torch.from_numpy(corner_uv).to(bary.dtype) * bary[..., None]).sum(1)
    return uv, torch.from_numpy(found)


def _photo_estimates(rig: Rig, images: Tensor, expression: Tensor, pose: WeakPerspective, sh: Tensor,
                     tri: Tensor, bary: Tensor, config: TextureConfig,
                     jawline: Optional[Tensor], valid: Optional[Tensor], threads: Optional[int] = None
                     ) -> Tuple[Tensor, Tensor, Tensor]:
    """Per photo, the albedo estimate and weight of each texel that any photo may weigh (the photos on
    up to ``threads`` threads, `core.cpus.parallel_map`; the result does not depend on the count).

    Texels below the neck or outside the face region (weight 0 in every photo) are left out: their
    estimate counts for nothing.

    Returns:
        (values (G, M, 3), weights (G, M), active (N,) bool: the M texels estimated).
    """
    triangles = rig.head_triangles.long()
    skin = skin_triangles(rig)
    dtype = images.dtype
    rest = rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=dtype))[0]
    g, _, height, width = images.shape
    prior = _photo_prior(rig, rest, triangles, tri, bary, config, jawline)
    active = _weighed(prior)
    corners = triangles[tri[active]].t().contiguous()                 # (3, M)
    bary, prior = bary[active].t().contiguous(), prior[active]         # (3, M), (M, 2)
    verts = torch.cat([rig.head_vertices(expression[i:i + 1].to(dtype)) for i in range(g)])
    pose = pose.to(dtype)
    screens = pose.screen(verts)
    all_normals = vertex_normals(pose.camera_points(verts), triangles)
    values = torch.zeros(g, len(prior), 3, dtype=dtype)
    weights = torch.zeros(g, len(prior), dtype=dtype)

    compiled = _TEXELS is not None and dtype == verts.dtype == torch.float32
    factors = np.asarray(SH_FACTORS, np.float32)

    def photo(i: int) -> None:
        """Photo ``i``'s row of ``values`` and ``weights`` (left at zero where the head is off the photo)."""
        screen = screens[i]
        # The vertices' screen points, normals and displacements by the expression, interpolated at
        # the texels in one pass.
        at_vertices = torch.cat([screen, all_normals[i], (verts[i] - rest).norm(dim=-1)[:, None]], 1)
        lo = torch.floor(screen[:, :2].amin(0)).clamp(min=0).long()
        hi = torch.ceil(screen[:, :2].amax(0)).long() + 1
        x0, y0 = int(lo[0]), int(lo[1])
        x1, y1 = min(int(hi[0]), width), min(int(hi[1]), height)
        if x1 <= x0 or y1 <= y0:
            return
        local = screen - torch.tensor([x0, y0, 0.0], dtype=dtype)
        fragments = rasterize(local[None], triangles, y1 - y0, x1 - x0)
        # Pixels near anything but skin mix colours: left out (within edge_px of eyes, teeth, mouth;
        # within silhouette_px of the background, where a fit that is a little off samples the scene).
        background = ~fragments.mask[0]
        not_skin = _grow(~background & ~skin[fragments.tri_id[0].clamp(min=0)], config.edge_px) \
            | _grow(background, config.silhouette_px)
        # Weight ramps up over border_px from the photo's edge (and a crop's padding): no seam where
        # photos end.
        ramp = _edge_ramp(None if valid is None else valid[i], height, width, config.border_px)
        lo_z, hi_z = config.grazing
        if compiled:
            _TEXELS.photo_texels(at_vertices.detach().numpy(), corners.numpy(), bary.numpy(),
                                 fragments.depth[0].contiguous().numpy(),
                                 not_skin.contiguous().numpy().view(np.uint8),
                                 x0, y0, ramp.numpy(), images[i].detach().contiguous().numpy(),
                                 sh[i].detach().to(dtype).contiguous().numpy(), factors,
                                 prior.detach().contiguous().numpy(), config.depth_tol, lo_z, hi_z - lo_z,
                                 config.rest_mm, config.rest_floor, config.min_shading, values[i].numpy(),
                                 weights[i].numpy())
            return
        at = _at_texels(at_vertices, corners, bary)
        point = at[:, :3]                                             # (M, 3) u, v, depth
        normal = torch.nn.functional.normalize(at[:, 3:6].contiguous(), dim=-1)
        displacement = at[:, 6]
        col = torch.round(point[:, 0]).long() - x0
        row = torch.round(point[:, 1]).long() - y0
        inside = (col >= 0) & (col < x1 - x0) & (row >= 0) & (row < y1 - y0)
        row, col = row.clamp(0, y1 - y0 - 1), col.clamp(0, x1 - x0 - 1)
        depth = fragments.depth[0][row, col]
        visible = inside & (point[:, 2] >= depth - config.depth_tol) & ~not_skin[row, col]
        at_edge = ramp[(row + y0).clamp(0, height - 1), (col + x0).clamp(0, width - 1)].to(dtype)
        facing = ((normal[:, 2] - lo_z) / (hi_z - lo_z)).clamp(0.0, 1.0)
        at_rest = torch.exp(-(displacement / config.rest_mm) ** 2).clamp(min=config.rest_floor)
        colour = sample_points(images[i:i + 1], point[None, :, :2])[0]
        shading = sh_shading(normal[None], sh[i:i + 1].to(dtype))[0].clamp(min=config.min_shading)
        values[i] = (colour / shading).clamp(0.0, 1.0)
        weights[i] = visible.to(dtype) * facing * at_rest * prior[:, 0] * prior[:, 1] * at_edge

    with single_thread():  # each photo's operations on one core; the photos side by side
        parallel_map(photo, range(g), threads)
    return values, weights, active


def _weighed(prior: Tensor) -> Tensor:
    """The texels a photo may weigh: (N,) bool, where each factor of ``prior`` (N, 2) is positive."""
    return (prior > 0).all(1)


def _photo_prior(rig: Rig, rest: Tensor, triangles: Tensor, tri: Tensor, bary: Tensor, config: TextureConfig,
                 jawline: Optional[Tensor]) -> Tensor:
    """Each texel's photo weight before the photos: (N, 2) above the neck and inside the face region."""
    dtype = rest.dtype
    corners, bary = triangles[tri].t().contiguous(), bary.t().contiguous()  # (3, N)
    above_neck = torch.ones(len(tri), dtype=dtype)
    if jawline is not None:
        point = _at_texels(rest, corners, bary)
        jaw = jawline[torch.argsort(jawline[:, 0])].to(dtype)
        x = point[:, 0].clamp(float(jaw[0, 0]), float(jaw[-1, 0]))
        k = torch.searchsorted(jaw[:, 0].contiguous(), x.contiguous()).clamp(1, len(jaw) - 1)
        t = ((x - jaw[k - 1, 0]) / (jaw[k, 0] - jaw[k - 1, 0]).clamp(min=1e-9)).clamp(0.0, 1.0)
        jaw_y = jaw[k - 1, 1] + t * (jaw[k, 1] - jaw[k - 1, 1])
        above_neck = ((point[:, 1] - (jaw_y - config.neck_margin)) / config.neck_ramp).clamp(0.0, 1.0)
    # Photo colours fade in over border_mm inside the face region's border (no seam where they end).
    face = torch.zeros(rig.n_head_vertices, dtype=torch.bool)
    face[:rig.n_vertices] = True
    inside = surface_distance(rest, triangles, ~face, config.border_mm) / config.border_mm
    inside[~face] = 0.0
    return torch.stack([above_neck, _at_texels(inside, corners, bary)], 1)


def _at_texels(values: Tensor, corners: Tensor, bary: Tensor) -> Tensor:
    """Per-vertex values at texels: the corners' values weighted by the barycentrics, the three terms
    added in order (as ``(values[corners.T] * bary.T).sum(1)`` rounds, without its strided gathers and
    reduction: several times faster).

    Shape:
        values (V,) or (V, C); corners (3, N) and bary (3, N), contiguous -> (N,) or (N, C).
    """
    out = None
    for k in range(3):
        term = values.index_select(0, corners[k]).mul_(bary[k] if values.ndim == 1 else bary[k, :, None])
        out = term if out is None else out.add_(term)
    return out


def _edge_ramp(valid: Optional[Tensor], height: int, width: int, pixels: float) -> Tensor:
    """(H, W) in [0, 1]: 0 at the photo's border and outside ``valid``, rising to 1 over ``pixels``."""
    inside = np.ones((height, width), bool) if valid is None else valid.cpu().numpy().astype(bool)
    padded = np.pad(inside, 1).astype(np.uint8)
    # cv2's exact distance, squared back to the integer it is the root of: scipy's float64 root, bit for bit.
    exact = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE).astype(np.float64)
    squared = np.rint(np.square(exact))
    distance = np.sqrt(squared)[1:-1, 1:-1]
    return torch.from_numpy(np.clip((distance - 1.0) / max(pixels, 1e-6), 0.0, 1.0))


def _grow(mask: Tensor, pixels: int) -> Tensor:
    """A (h, w) bool mask grown by ``pixels`` (a square neighbourhood)."""
    if pixels <= 0:
        return mask
    k = 2 * pixels + 1
    grown = cv2.dilate(mask.numpy().astype(np.uint8), np.ones((k, k), np.uint8))
    return torch.from_numpy(grown > 0)


def _csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, size: int) -> Csr:
    """The (size, size) CSR arrays of entries given row by row, each row's columns ascending."""
    indptr = np.zeros(size + 1, np.int32)
    np.cumsum(np.bincount(rows, minlength=size), out=indptr[1:])
    return indptr, cols.astype(np.int32), values


def _rounds(a: Csr, b: np.ndarray, x: np.ndarray, rounds: int, threads: Optional[int]) -> np.ndarray:
    """``rounds`` times ``x <- a @ x + b``: in one compiled loop (``core.rig._diffusion``, on up to
    ``threads`` threads, None: the usable cores) for float32 values, else by SciPy's products; the
    same bits either way (rig_case1's head: the diffusion 0.13 -> 0.06 s).

    Shape:
        a (R, R) as CSR arrays (indptr, indices, data); b, x (R, C) -> (R, C).
    """
    indptr, indices, data = a
    compiled = (_DIFFUSION is not None and data.dtype == b.dtype == x.dtype == np.float32
                and indptr.dtype == indices.dtype == np.int32)
    if not compiled:
        from scipy import sparse  # here: only this fallback needs it (its import is ~0.06 s)

        matrix = sparse.csr_matrix((data, indices, indptr), shape=(len(indptr) - 1, len(x)))
        for _ in range(rounds):
            x = matrix @ x + b
        return x
    x = np.array(x, dtype=np.float32, order="C")  # a copy: iterated in place
    _DIFFUSION.iterate(indptr, indices, data, np.ascontiguousarray(b), x, rounds, thread_count(threads))
    return x


def _diffuse(rig: Rig, tri: Tensor, bary: Tensor, values: Tensor, weight: Tensor, threshold: float,
             iterations: int, threads: Optional[int] = None) -> Tensor:
    """Colour for never-seen texels: the seen texels' colour per vertex, spread over the mesh (the
    rounds on up to ``threads`` threads, `_rounds`). -> (N, 3)."""
    triangles = rig.head_triangles.long()
    n = rig.n_head_vertices
    dtype = values.dtype
    corners = triangles[tri]
    w = (bary * weight[:, None]).reshape(-1)
    total = torch.zeros(n, dtype=dtype).index_add_(0, corners.reshape(-1), w)
    acc = torch.zeros(n, 3, dtype=dtype).index_add_(0, corners.reshape(-1),
                                                     (values[:, None, :] * (bary * weight[:, None])[..., None]).reshape(-1, 3))
    known = total > threshold
    colour = torch.where(known[:, None], acc / total.clamp(min=1e-9)[:, None],
                         (acc.sum(0) / total.sum().clamp(min=1e-9)).expand(n, 3))
    free = ~known
    if bool(free.any()) and iterations > 0:
        # One-ring means of the free vertices: x <- A x + b, with A the free-to-free part of the ring
        # operator and b what the known neighbours (fixed) add, formed once (`_rounds`).
        neighbours = vertex_neighbours(triangles, n)
        valid = neighbours >= 0
        rows = torch.arange(n)[:, None].expand_as(neighbours)[valid].numpy()
        cols = neighbours[valid].numpy()
        count = valid.sum(1).clamp(min=1).to(dtype).numpy()
        free_np = free.numpy()
        ids = np.flatnonzero(free_np)
        row_of = np.full(n, -1, np.int64)
        row_of[ids] = np.arange(len(ids))
        on_free = free_np[rows]
        row, col = row_of[rows[on_free]], cols[on_free]
        share = (1.0 / count[rows[on_free]]).astype(count.dtype)
        order = np.lexsort((col, row))  # row by row, each row's columns ascending
        row, col, share = row[order], col[order], share[order]
        start = colour.numpy()
        to_free = free_np[col]
        fixed = np.zeros((len(ids), start.shape[1]), start.dtype)  # what the known neighbours add
        np.add.at(fixed, row[~to_free], share[~to_free, None] * start[col[~to_free]])
        ring = _csr(row[to_free], row_of[col[to_free]], share[to_free], len(ids))
        x = _rounds(ring, fixed, start[ids], iterations, threads)
        colour[torch.from_numpy(ids)] = torch.from_numpy(np.ascontiguousarray(x, dtype=start.dtype))
    return _at_texels(colour, corners.t().contiguous(), bary.t().contiguous())


def estimate_texture(rig: Rig, images: Tensor, expression: Tensor, pose: WeakPerspective, sh: Tensor,
                     config: TextureConfig = TextureConfig(), jawline: Optional[Tensor] = None,
                     valid: Optional[Tensor] = None, threads: Optional[int] = None) -> TextureFit:
    """The skin's albedo texture from photos with their fitted expressions, head poses and lighting.

    Args:
        rig: a rig with parts and a texture atlas (`core.rig.head.whole_head`); its painted texture
            (or a freshly painted one) supplies the parts the photos do not show.
        images: the photos (or face crops), RGB in [0, 1].
        expression: each photo's expression weights (``RigBuildResult.params["expression"]``).
        pose: each photo's head pose in that photo's pixels (crop pixels for crops).
        sh: each photo's camera-space SH lighting (``RigBuildResult.sh``).
        config: see `TextureConfig`.
        jawline: (J, 2) the jaw's (x, y) on the rig's neutral (mm; e.g. its landmarks 0-16), below
            which the neck takes no photo colour (``config.neck_margin``); None: no such limit.
        valid: (G, H, W) bool, the photos' pixels that hold the photo (not a crop's padding), or None.
        threads: the photos, the weighted median and the diffusion run on up to this many threads
            (None: the usable cores, `core.cpus.parallel_map`); the texture is the same to the bit
            for any count.

    Shape:
        images (G, 3, H, W); expression (G, K); pose of batch G; sh (G, 9, 3).
    """
    if rig.uvs is None or rig.uv_triangles is None:
        raise ValueError("estimate_texture: the rig has no texture atlas; grow it with core.rig.head.whole_head")
    g = images.shape[0]
    if images.ndim != 4 or images.shape[1] != 3 or expression.shape != (g, rig.n_expression) \
            or sh.shape != (g, 9, 3) or pose.rotation.shape[0] != g:
        raise ValueError(f"estimate_texture: images (G, 3, H, W), expression (G, {rig.n_expression}), sh (G, 9, 3) "
                         f"and a pose of batch G expected; got {tuple(images.shape)}, {tuple(expression.shape)}, "
                         f"{tuple(sh.shape)}, batch {pose.rotation.shape[0]}")
    height = int(config.height)
    dtype = images.dtype
    base = rig.texture
    if base is None or base.shape[:2] != (height, 2 * height):
        base = paint_texture(rig, height)
    base = base.to(dtype)
    texels = texel_map(rig.uvs, rig.uv_triangles, height)
    tri_map, bary_map = texels.tri_id[0], texels.bary[0].to(dtype)
    skin_tri = skin_triangles(rig)
    skin = (tri_map >= 0) & skin_tri[tri_map.clamp(min=0)]
    tri, bary = tri_map[skin], bary_map[skin]

    values, weights, active = _photo_estimates(rig, images, expression, pose, sh, tri, bary, config, jawline,
                                               valid, threads)
    every = torch.zeros(len(weights), len(tri), dtype=dtype)
    every[:, active] = weights
    total = every.sum(0)  # over all texels: the sum of a (G, M) part may round otherwise
    estimate = torch.zeros(len(tri), 3, dtype=dtype)  # where no photo counts it counts for nothing (total 0)
    if config.median:
        estimate[active] = (_median_in_pieces(values, weights + 1e-12, threads) if values.shape[1]
                            else values[0])
    else:
        estimate[active] = (values * weights[..., None]).sum(0) / total[active].clamp(min=1e-9)[:, None]

    # Weak texels: their mirror image's estimate, in proportion to what they lack.
    estimate_map = torch.zeros(height, 2 * height, 3, dtype=dtype)
    weight_map = torch.zeros(height, 2 * height, dtype=dtype)
    estimate_map[skin] = estimate * total[:, None]
    weight_map[skin] = total
    # tri and bary are the skin texels of the atlas: the layout and the skin triangles say which.
    layout = (rig.uvs, rig.uv_triangles.long(), rig.head_triangles.long(), int(rig.n_head_vertices),
              None if rig.parts is None else rig.parts.mirror, skin_tri, height, str(dtype))
    uv_m, found = _MIRRORS.recall(layout, lambda: mirror_uvs(rig, tri, bary))
    mirrored_weight = sample_texture(weight_map[..., None], uv_m)[:, 0]
    mirrored = sample_texture(estimate_map, uv_m) / mirrored_weight.clamp(min=1e-9)[:, None]
    borrowed = mirrored_weight * found.to(dtype) * (1.0 - total / config.seen).clamp(0.0, 1.0)
    combined = (estimate * total[:, None] + mirrored * borrowed[:, None]) / (total + borrowed).clamp(min=1e-9)[:, None]
    seen_weight = total + borrowed
    # Never seen on either side: the seen colour spread over the mesh.
    spread = _diffuse(rig, tri, bary, combined, seen_weight, 0.2 * config.seen, config.diffusion_iterations,
                      threads)
    share = (seen_weight / config.seen).clamp(0.0, 1.0)[:, None]
    skin_colour = share * combined + (1.0 - share) * spread

    texture = base.clone()
    texture[skin] = skin_colour.clamp(0.0, 1.0)
    covered = texels.mask[0]
    texture = torch.from_numpy(np.ascontiguousarray(fill_empty(texture.numpy(), covered.numpy())))
    weight_out = torch.zeros(height, 2 * height, dtype=dtype)
    weight_out[skin] = total
    seen_fraction = float((total >= config.seen).to(dtype).mean()) if len(total) else 0.0
    logger.info("texture from %d photos: %.0f %% of %d skin texels seen (%.0f %% with their mirror images)", g,
                100 * seen_fraction, len(total), 100 * float((seen_weight >= config.seen).to(dtype).mean()))
    return TextureFit(rig=replace(rig, texture=texture), texture=texture, weight=weight_out, skin=skin,
                      seen_fraction=seen_fraction)
