"""The shading stage's colour term in one pass with a hand-written gradient.

``sum_g,m,c w_gm rho(o_gmc - a_mc s_gmc)`` with the SH shading ``s = sh_basis(n) @ sh`` of the
current normals, the albedo ``a`` eliminated in closed form from all images (`estimate_albedo`
without smoothing: ``(sum_g w s o + lam p) / (sum_g w s^2 + lam)`` clamped to [0, 1], ``lam`` the
prior weight times the mean of the denominators) and the Geman-McClure cost ``rho`` (`geman_mcclure`).
The same value as composing those functions, but the backward pass is a few dozen elementwise
products on whole arrays instead of the autograd graph of every small step, which an optimiser
that evaluates it about 100 times per rig pays for each time (`core.fitting.shading_refine`).
"""
from __future__ import annotations

import torch
from torch import Tensor

from core.checks import check_shape
from core.lighting import SH_FACTORS, sh_basis

__all__ = ["shading_cost"]

_EPS = 1e-6  # floor of the mean denominator, as estimate_albedo's


class _ShadingCost(torch.autograd.Function):

    @staticmethod
    def forward(ctx, normals: Tensor, observed: Tensor, weights: Tensor,  # type: ignore[override]
                sh: Tensor, prior: Tensor, prior_weight: float, sigma: float) -> Tensor:
        basis = sh_basis(normals)  # (G, M, 9)
        shading = basis @ sh
        w = weights[..., None]
        ws = w * shading
        num = (ws * observed).sum(0)
        den = (ws * shading).sum(0)
        mean = den.mean()
        lam = prior_weight * mean.clamp(min=_EPS)
        total = den + lam
        raw = (num + lam * prior) / total
        albedo = raw.clamp(0.0, 1.0)
        r = observed - albedo * shading
        s2 = sigma * sigma
        r2 = r * r
        cost = (w * (s2 * r2 / (s2 + r2))).sum()
        ctx.save_for_backward(normals, observed, weights, sh, prior, shading, raw, albedo, total, r)
        ctx.constants = (prior_weight, sigma, bool(mean > _EPS))
        return cost

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        normals, observed, weights, sh, prior, shading, raw, albedo, total, r = ctx.saved_tensors
        prior_weight, sigma, lam_free = ctx.constants
        w = weights[..., None]
        s2 = sigma * sigma
        d_r = grad * w * (2.0 * s2 * s2) * r / (s2 + r * r) ** 2  # d cost / d residual
        d_observed = d_r.clone()
        d_shading = -d_r * albedo
        d_raw = -(d_r * shading).sum(0) * ((raw >= 0.0) & (raw <= 1.0)).to(raw.dtype)  # through the clamp
        d_num = d_raw / total
        d_den = -d_raw * raw / total
        if lam_free:  # lam = prior_weight * mean(den) also moves with the denominators
            d_lam = (d_raw * (prior - raw) / total).sum()
            d_den = d_den + d_lam * prior_weight / total.numel()
        ws = w * shading
        d_shading = d_shading + w * observed * d_num + 2.0 * ws * d_den
        d_observed = d_observed + ws * d_num
        d_basis = d_shading @ sh.transpose(1, 2)  # (G, M, 9)
        return _basis_backward(normals, d_basis), d_observed, None, None, None, None, None


def _basis_backward(normals: Tensor, d_basis: Tensor) -> Tensor:
    """d cost / d normals from d cost / d `sh_basis` values (G, M, 9) (the basis is a quadratic)."""
    x, y, z = normals.unbind(-1)
    g = d_basis.unbind(-1)
    _, c1, c2, c3, c4, c5, c6, c7, c8 = SH_FACTORS
    d_x = c3 * g[3] + c4 * y * g[4] + c7 * z * g[7] + 2.0 * c8 * x * g[8]
    d_y = c1 * g[1] + c4 * x * g[4] + c5 * z * g[5] - 2.0 * c8 * y * g[8]
    d_z = c2 * g[2] + c5 * y * g[5] + 6.0 * c6 * z * g[6] + c7 * x * g[7]
    return torch.stack([d_x, d_y, d_z], -1)


def shading_cost(normals: Tensor, observed: Tensor, weights: Tensor, sh: Tensor, prior: Tensor,
                 prior_weight: float, sigma: float) -> Tensor:
    """The robust colour cost of observed colours against albedo x SH shading, albedo in closed form.

    Args:
        normals: unit camera-space normals of the observed vertices (differentiable).
        observed: the colours sampled at them (differentiable), [0, 1].
        weights: visibility x grazing weights (held).
        sh: per-image SH lighting (held).
        prior: albedo prior, per vertex or one colour (held).
        prior_weight: the prior's weight relative to the mean of the albedo's denominators.
        sigma: scale of the Geman-McClure cost.

    Shape:
        normals, observed (G, M, 3); weights (G, M); sh (G, 9, 3); prior (M, 3) or (3,) -> ().
    """
    check_shape("normals", normals, (None, None, 3))
    check_shape("observed", observed, tuple(normals.shape))
    check_shape("weights", weights, tuple(normals.shape[:2]))
    check_shape("sh", sh, (normals.shape[0], 9, 3))
    prior = prior.to(observed.dtype).expand(normals.shape[1], 3)
    return _ShadingCost.apply(normals, observed, weights.to(observed.dtype), sh.to(observed.dtype), prior,
                              float(prior_weight), float(sigma))
