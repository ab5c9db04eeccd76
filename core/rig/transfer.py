"""Deformation transfer: carry generic expression deltas onto a person's face.

Each vertex's one-ring (edges and normal) on the generic face is mapped onto the same ring on the
person's face by a local 3x3 map; its similarity part (rotation x isotropic scale) carries the
delta. This is how the rig's blendshapes follow the person's shape (method.md, "Ours").
"""
from __future__ import annotations

from typing import Optional

import torch

from core.mesh import vertex_neighbours


def _frames(vertices: torch.Tensor, neighbours: torch.Tensor, normals: torch.Tensor) -> torch.Tensor:
    """Edge vectors to the one-ring plus the scaled normal: (B, V, D+1, 3), zeros at padding."""
    valid = (neighbours >= 0)
    idx = neighbours.clamp(min=0)
    edges = vertices[:, idx] - vertices.unsqueeze(2)  # (B, V, D, 3)
    edges = edges * valid[None, :, :, None]
    scale = edges.norm(dim=-1).sum(-1) / valid.sum(-1).clamp(min=1)  # mean edge length (B, V)
    return torch.cat([edges, (normals * scale.unsqueeze(-1)).unsqueeze(2)], dim=2)


def local_affine_maps(source: torch.Tensor, target: torch.Tensor, triangles: torch.Tensor,
                      neighbours: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Per-vertex 3x3 maps A with A @ (x_j - x_i) ~ (y_j - y_i) over each one-ring (normal included).

    Shape:
        source (V, 3) or (B, V, 3), target (B, V, 3) -> (B, V, 3, 3).
    """
    from core.mesh import vertex_normals

    if target.ndim != 3 or target.shape[-1] != 3:
        raise ValueError(f"target must be (B, V, 3), got {tuple(target.shape)}")
    source = source.expand_as(target) if source.ndim == 2 else source
    if source.shape != target.shape:
        raise ValueError(f"source {tuple(source.shape)} and target {tuple(target.shape)} differ")
    nb = vertex_neighbours(triangles, source.shape[1]) if neighbours is None else neighbours
    e = _frames(source, nb, vertex_normals(source, triangles))
    f = _frames(target, nb, vertex_normals(target, triangles))
    eet = e.transpose(-1, -2) @ e  # (B, V, 3, 3)
    fet = f.transpose(-1, -2) @ e
    eye = torch.eye(3, dtype=source.dtype, device=source.device)
    return fet @ torch.linalg.inv(eet + 1e-9 * eye)


def similarity_part(maps: torch.Tensor) -> torch.Tensor:
    """The nearest rotation times the isotropic scale (geometric mean of the singular values).

    Shear and anisotropic stretch of a local map are dropped: on thin, strongly curved parts
    (the lips) they amplify deltas, while rotation and size are what an expression should follow.

    Shape:
        maps (..., 3, 3) -> (..., 3, 3).
    """
    u, sv, vh = torch.linalg.svd(maps)
    det = torch.det(u @ vh)
    fix = torch.ones_like(sv)
    fix[..., 2] = torch.sign(det)
    rotation = u @ torch.diag_embed(fix) @ vh
    scale = sv.clamp(min=1e-12).log().mean(-1).exp()
    return rotation * scale[..., None, None]


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
