"""Deformation transfer: carry generic expression deltas onto a person's face.

Each vertex's one-ring (edges and normal) on the generic face is mapped onto the same ring on the
person's face by a local 3x3 map; its similarity part (rotation x isotropic scale) carries the
delta. This is how the rig's blendshapes follow the person's shape (method.md, "Ours").
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from core.cache import StoredResults
from core.mesh import vertex_neighbours


def _frames(vertices: torch.Tensor, neighbours: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Edge vectors to the one-ring plus the scaled normal: (B, V, D+1, 3), zeros at padding."""
    valid = (neighbours >= 0)
    idx = neighbours.clamp(min=0)
    # index_select on the flattened ring: fancy indexing's values, several times quicker
    ring = vertices.index_select(1, idx.reshape(-1)).view(vertices.shape[0], *idx.shape, 3)
    edges = ring - vertices.unsqueeze(2)  # (B, V, D, 3)
    edges = edges * valid[None, :, :, None]
    scale = edges.norm(dim=-1).sum(-1) / valid.sum(-1).clamp(min=1)  # mean edge length (B, V)
    return torch.cat([edges, (normals * scale.unsqueeze(-1)).unsqueeze(2)], dim=2)


def local_affine_maps(source: torch.Tensor, target: torch.Tensor, triangles: torch.Tensor,
                      neighbours: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-vertex 3x3 maps A with A @ (x_j - x_i) ~ (y_j - y_i) over each one-ring (normal included).

    A single ``source`` (the template, the same in every call of a rig build) has its side of the
    least squares (rings, frames, inverted normal matrices) kept for the next calls
    (`_template_side`).

    Shape:
        source (V, 3) or (B, V, 3), target (B, V, 3) -> (B, V, 3, 3).
    """
    from core.mesh import vertex_normals

    if target.ndim != 3 or target.shape[-1] != 3:
        raise ValueError(f"target must be (B, V, 3), got {tuple(target.shape)}")
    if source.shape[-2:] != target.shape[-2:] or (source.ndim == 3 and source.shape != target.shape):
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    if source.ndim == 2 and neighbours is None and not source.requires_grad:
        nb, e, inverse = _template_side(source, triangles)
    else:
        source = source.expand_as(target) if source.ndim == 2 else source
        nb = vertex_neighbours(triangles, source.shape[1]) if neighbours is None else neighbours
        e = _frames(source, nb, vertex_normals(source, triangles))
        eye = torch.eye(3, dtype=source.dtype, device=source.device)
        inverse = torch.linalg.inv(e.transpose(-1, -2) @ e + 1e-9 * eye)
    f = _frames(target, nb, vertex_normals(target, triangles))
    return (f.transpose(-1, -2) @ e) @ inverse


#: The last few templates' side of `local_affine_maps`, by (template, triangles), also kept on disk.
_TEMPLATES: StoredResults[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = StoredResults(
    4, "transfer-template")


def _template_side(source: torch.Tensor, triangles: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(one-ring table (V, D), frames (V, D+1, 3), inverted frame products (V, 3, 3)) of a template
    mesh, kept by value for the last few and on disk (the same values as computed per call, batch by
    batch; a face model's template is the same in every run)."""
    from core.mesh import vertex_normals

    def compute() -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        nb = vertex_neighbours(triangles, source.shape[0])
        e = _frames(source[None], nb, vertex_normals(source[None], triangles))[0]
        eye = torch.eye(3, dtype=source.dtype, device=source.device)
        return nb, e, torch.linalg.inv(e.transpose(-1, -2) @ e + 1e-9 * eye)

    return _TEMPLATES.recall((source, triangles), compute)


def similarity_part(maps: torch.Tensor) -> torch.Tensor:
    """The nearest rotation times the isotropic scale (geometric mean of the singular values).

    Shear and anisotropic stretch of a local map are dropped: on thin, strongly curved parts
    (the lips) they amplify deltas, while rotation and size are what an expression should follow.

    The rotation is the polar factor by Newton's iteration (`_polar_rotation`: a few dozen batched
    elementwise products, several times faster than a batched SVD); maps where it does not apply
    (a reflection, nearly singular, not converged) take the SVD's rotation with the last axis
    flipped as needed. Both give the same rotation to float rounding.

    Shape:
        maps (..., 3, 3) -> (..., 3, 3).
    """
    rotation, ok = _polar_rotation(maps)
    scale = _det3(maps).abs().clamp(min=1e-36).pow(1.0 / 3.0)  # the singular values' product is |det|
    if not bool(ok.all()):
        rotation, scale = rotation.clone(), scale.clone()
        rotation[~ok], scale[~ok] = _svd_similarity(maps[~ok])
    return rotation * scale[..., None, None]


def _svd_similarity(maps: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(rotation, scale) of ``maps`` (N, 3, 3) by SVD: U diag(1, 1, sign det) V^T and the geometric
    mean of the singular values (floored at 1e-12)."""
    u, sv, vh = torch.linalg.svd(maps)
    fix = torch.ones_like(sv)
    fix[..., 2] = torch.sign(torch.det(u @ vh))
    return u @ torch.diag_embed(fix) @ vh, sv.clamp(min=1e-12).log().mean(-1).exp()


def _det3(m: torch.Tensor) -> torch.Tensor:
    """Determinants of (..., 3, 3) matrices (the rows' triple product)."""
    return (m[..., 0, :] * torch.linalg.cross(m[..., 1, :], m[..., 2, :])).sum(-1)


def _polar_rotation(maps: torch.Tensor, iterations: int = 12, tolerance: float = 1e-6
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
    """The orthogonal polar factor of each map by scaled Newton iteration (Higham, Functions of
    Matrices, 2008, section 8.6): ``X <- (g X + X^-T / g) / 2`` with ``g = |det X|^(-1/3)``, which is
    the nearest rotation where the determinant is positive.

    Returns:
        (rotation (..., 3, 3), ok (...) bool): ok where the map has a positive determinant well away
        from zero and the iteration converged; the rotation elsewhere is not to be used.
    """
    det = _det3(maps)
    size = maps.flatten(-2).norm(dim=-1)
    ok = det > 1e-6 * size.pow(3)
    x = maps / det.abs().clamp(min=1e-36).pow(1.0 / 3.0)[..., None, None]
    change = torch.full_like(det, float("inf"))
    for _ in range(iterations):
        r0, r1, r2 = x[..., 0, :], x[..., 1, :], x[..., 2, :]
        cofactor = torch.stack([torch.linalg.cross(r1, r2), torch.linalg.cross(r2, r0), torch.linalg.cross(r0, r1)], -2)
        d = (r0 * cofactor[..., 0, :]).sum(-1)                                 # det X
        g = d.abs().clamp(min=1e-36).pow(-1.0 / 3.0)[..., None, None]
        new = 0.5 * (g * x + cofactor / (d[..., None, None] * g))          # X^-T = cofactor / det
        change = (new - x).flatten(-2).abs().amax(-1)
        x = new
        if bool((change[ok] <= tolerance).all()):
            break
    return x, ok & (change <= tolerance)


def transfer_deltas(deltas: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
                    triangles: torch.Tensor) -> torch.Tensor:
    """Carry generic per-vertex deltas from the source face onto the target face.

    Each delta is rotated with the local surface and scaled with its local size: the similarity
    part (`similarity_part`) of the one-ring map from source to target.

    Shape:
        deltas (K, V, 3), source (V, 3), target (B, V, 3) -> (B, K, V, 3).
    """
    maps = similarity_part(local_affine_maps(source, target, triangles))  # (B, V, 3, 3)
    return torch.einsum("bvij,kvj->bkvi", maps, deltas)
