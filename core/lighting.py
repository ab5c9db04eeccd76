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

__all__ = ["SH_CONSTANT", "SH_FACTORS", "ShSystem", "sh_basis", "sh_shading", "shade", "solve_sh"]

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


class ShSystem:
    """The per-image normal equations of SH lighting for fixed normals and vertex weights, solved
    for as many albedos and observed colours as asked (`solve_sh`; `core.fitting.photometric.
    estimate_appearance` alternates three lighting solves with albedo updates at the same normals).

    The basis and its 45 distinct pairwise products per vertex are formed once (as contiguous rows
    over the vertices, three times quicker to write than strided columns): each solve is then two
    batched products, ``sum_v m a_c^2 b_i b_j`` over the pairs and ``sum_v m a_c o_c b``.

    Shape:
        normals (B, V, 3) unit, in the lighting's space; mask (B, V) weights or bools, or None (all 1).
    """

    def __init__(self, normals: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        check_shape("normals", normals, (None, None, 3))
        batch, n_vertices = normals.shape[:2]
        if mask is None:
            self.weight = torch.ones(batch, n_vertices, dtype=normals.dtype, device=normals.device)
        else:
            check_shape("mask", mask, (batch, n_vertices))
            self.weight = mask.to(normals.dtype)
        self.basis = sh_basis(normals)                                          # (B, V, 9)
        rows = self.basis.transpose(1, 2).contiguous()                          # (B, 9, V)
        # (B, 45, V): pairs (i, i..8) in row order (_PAIR_ROWS, _PAIR_COLS), each a contiguous row
        if normals.requires_grad and torch.is_grad_enabled():
            self.products = torch.cat([rows[:, i:i + 1] * rows[:, i:] for i in range(9)], 1)
        else:  # the same products written in place
            self.products = torch.empty(batch, 45, n_vertices, dtype=normals.dtype, device=normals.device)
            for i, start in enumerate(_PAIR_STARTS):
                torch.mul(rows[:, i:i + 1], rows[:, i:], out=self.products[:, start:start + 9 - i])
        self.total = self.weight.sum(-1).clamp(min=1.0)                        # (B,)

    def solve(self, albedo: torch.Tensor, observed: torch.Tensor, reg: float = 1e-4) -> torch.Tensor:
        """`solve_sh` at these normals and weights. albedo, observed (B, V, 3) -> (B, 9, 3)."""
        shape = tuple(self.basis.shape[:2]) + (3,)
        check_shape("albedo", albedo, shape)
        check_shape("observed", observed, shape)
        weighted = self.weight[..., None] * albedo                             # (B, V, 3)
        pairs = torch.bmm((weighted * albedo).transpose(1, 2), self.products.transpose(1, 2))  # (B, 3, 45)
        lhs = pairs[..., _PAIR_INDEX]                                           # (B, 3, 9, 9), symmetric
        rhs = torch.bmm((weighted * observed).transpose(1, 2), self.basis)      # (B, 3, 9)
        eye = torch.eye(9, dtype=albedo.dtype, device=albedo.device)
        ridge = reg * self.total[:, None, None, None] * eye
        return torch.linalg.solve(lhs + ridge, rhs[..., None])[..., 0].transpose(1, 2)

    def shading(self, sh: torch.Tensor) -> torch.Tensor:
        """`sh_shading` at these normals. sh (B, 9, 3) -> (B, V, 3)."""
        check_shape("sh", sh, (self.basis.shape[0], 9, 3))
        return self.basis @ sh


_PAIR_ROWS, _PAIR_COLS = torch.triu_indices(9, 9)  # the 45 pairs (i <= j) of basis functions
_PAIR_INDEX = torch.zeros(9, 9, dtype=torch.long)  # (i, j) -> its pair, either way round
_PAIR_INDEX[_PAIR_ROWS, _PAIR_COLS] = torch.arange(45)
_PAIR_INDEX[_PAIR_COLS, _PAIR_ROWS] = torch.arange(45)
_PAIR_STARTS = [sum(9 - k for k in range(i)) for i in range(9)]  # where row i's pairs (i, i..8) begin


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
    check_shape("normals", normals, albedo.shape)
    return ShSystem(normals, mask).solve(albedo, observed, reg)
