"""Vertex normals and 2nd-order spherical-harmonics (SH) Lambertian shading.

The SH basis here is the irradiance basis: the nine real spherical harmonics ``Y_lm(n)`` (no
Condon-Shortley phase, order ``1, y, z, x, xy, yz, 3z^2-1, xz, x^2-y^2``) multiplied by the
Lambertian kernel's band factors ``A_0 = pi, A_1 = 2 pi / 3, A_2 = pi / 4``. Lighting is nine
coefficients per RGB channel, ``sh (B, 9, 3)``, and the shaded colour of a vertex is
``albedo * (sh_basis(n) @ sh)``. With only the constant band set, ``sh[:, 0] = c``, every vertex
is lit by ``pi * Y_00 * c = 0.8862 c`` whatever its normal.

Normals are expected in the space the lighting is defined in (camera space for image fitting).
"""
from __future__ import annotations

import math

import torch

from core.checks import check_batch, check_shape

__all__ = ["SH_CONSTANT", "SH_FACTORS", "sh_basis", "sh_shading", "shade", "solve_sh"]

_Y0 = 0.5 * math.sqrt(1.0 / math.pi)
_Y1 = math.sqrt(3.0 / (4.0 * math.pi))
_Y2 = 0.5 * math.sqrt(15.0 / math.pi)
_Y20 = 0.25 * math.sqrt(5.0 / math.pi)
_Y22 = 0.25 * math.sqrt(15.0 / math.pi)
_A0, _A1, _A2 = math.pi, 2.0 * math.pi / 3.0, math.pi / 4.0

#: Value of the constant basis function: ``sh_basis(n)[..., 0]`` for every normal.
SH_CONSTANT = _A0 * _Y0
#: The nine factors ``c_k`` of the basis, ``(c0, c1 y, c2 z, c3 x, c4 x y, c5 y z, c6 (3 z^2 - 1), c7 x z,
#: c8 (x^2 - y^2))``, for code that evaluates it (or its derivative) by hand.
SH_FACTORS = (SH_CONSTANT, _A1 * _Y1, _A1 * _Y1, _A1 * _Y1, _A2 * _Y2, _A2 * _Y2, _A2 * _Y20, _A2 * _Y2, _A2 * _Y22)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """The nine SH irradiance basis functions evaluated at unit normals.

    Shape:
        - normals: (B, V, 3) unit vectors
        - output: (B, V, 9)
    """
    check_shape("normals", normals, (None, None, 3))
    x, y, z = normals.unbind(-1)
    c = SH_FACTORS
    if normals.requires_grad and torch.is_grad_enabled():
        return torch.stack([
            torch.full_like(x, c[0]), c[1] * y, c[2] * z, c[3] * x,
            c[4] * x * y, c[5] * y * z, c[6] * (3.0 * z * z - 1.0), c[7] * x * z, c[8] * (x * x - y * y),
        ], dim=-1)
    # Without a gradient: the same products written into their columns (no stacked copy; twice as fast).
    out = torch.empty(normals.shape[:-1] + (9,), dtype=normals.dtype, device=normals.device)
    out[..., 0] = c[0]
    torch.mul(y, c[1], out=out[..., 1])
    torch.mul(z, c[2], out=out[..., 2])
    torch.mul(x, c[3], out=out[..., 3])
    torch.mul(c[4] * x, y, out=out[..., 4])
    torch.mul(c[5] * y, z, out=out[..., 5])
    torch.mul(3.0 * z * z - 1.0, c[6], out=out[..., 6])
    torch.mul(c[7] * x, z, out=out[..., 7])
    torch.mul(x * x - y * y, c[8], out=out[..., 8])
    return out


def sh_shading(normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Irradiance per vertex and colour channel from SH lighting ``sh_basis(n) @ sh``.

    Shape:
        - normals: (B, V, 3) unit vectors
        - sh: (B, 9, 3)
        - output: (B, V, 3)
    """
    check_shape("sh", sh, (None, 9, 3))
    basis = sh_basis(normals)
    check_batch(basis.shape[0], sh=sh)
    return basis @ sh


def shade(albedo: torch.Tensor, normals: torch.Tensor, sh: torch.Tensor) -> torch.Tensor:
    """Lambertian colour ``albedo * sh_shading(normals, sh)``.

    Shape:
        - albedo: (B, V, 3)
        - normals: (B, V, 3)
        - sh: (B, 9, 3)
        - output: (B, V, 3)
    """
    check_shape("albedo", albedo, (None, normals.shape[1], 3))
    return albedo * sh_shading(normals, sh)


def solve_sh(albedo: torch.Tensor, normals: torch.Tensor, observed: torch.Tensor,
             mask: torch.Tensor | None = None, reg: float = 1e-4) -> torch.Tensor:
    """Closed-form least-squares SH lighting explaining ``observed`` as ``shade(albedo, n, sh)``.

    Per image and channel c this solves
    ``min_sh sum_v m_v (a_vc b_v . sh_c - o_vc)^2 + reg * W * |sh_c|^2`` with ``b_v`` the SH basis,
    ``m_v`` the mask and ``W`` the mask's total weight, so ``reg`` is independent of the vertex
    count. Differentiable (a batched linear solve), as the original solves lighting at each
    optimisation step.

    Args:
        albedo: per-vertex albedo.
        normals: unit normals in the lighting's space.
        observed: per-vertex observed colours (e.g. image colours sampled at projected vertices).
        mask: weight or boolean per vertex (e.g. visibility); None uses every vertex.
        reg: ridge weight keeping the system well-posed when few normals are seen.

    Shape:
        - albedo, normals, observed: (B, V, 3)
        - mask: (B, V) or None
        - output: (B, 9, 3)
    """
    check_shape("albedo", albedo, (None, None, 3))
    batch, n_vertices = albedo.shape[:2]
    for name, x in (("normals", normals), ("observed", observed)):
        check_shape(name, x, (batch, n_vertices, 3))
    if mask is None:
        weight = torch.ones(batch, n_vertices, dtype=albedo.dtype, device=albedo.device)
    else:
        check_shape("mask", mask, (batch, n_vertices))
        weight = mask.to(albedo.dtype)
    basis = sh_basis(normals)                                      # (B, V, 9)
    # sum_v m a_c^2 b b^T and sum_v m a_c o_c b as two batched products (four times faster than
    # forming the (B, 3, V, 9) design matrix and multiplying it with itself).
    weighted = weight[..., None] * albedo                          # (B, V, 3)
    lhs = torch.einsum("bvc,bvi,bvj->bcij", weighted * albedo, basis, basis)  # (B, 3, 9, 9)
    rhs = torch.einsum("bvc,bvi->bci", weighted * observed, basis)            # (B, 3, 9)
    total = weight.sum(-1).clamp(min=1.0)[:, None, None, None]
    eye = torch.eye(9, dtype=albedo.dtype, device=albedo.device)
    sh = torch.linalg.solve(lhs + reg * total * eye, rhs[..., None])[..., 0]  # (B, 3, 9)
    return sh.transpose(1, 2)
