"""Robust costs of residuals: Huber (the solver's blocks and the landmark terms) and Geman-McClure
(the shading stage's colour residuals). Each works on residuals of any shape.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

__all__ = ["huber", "geman_mcclure"]


def huber(r: Tensor, delta: Optional[float]) -> Tuple[Tensor, Tensor]:
    """(rho(r^2), IRLS weight) per residual; plain least squares when ``delta`` is None.

    ``rho = r^2`` inside ``|r| <= delta`` and ``2 delta |r| - delta^2`` outside (continuous, with a
    continuous slope), the same robust cost the solver's blocks use; any shape.
    """
    if delta is None:
        return r * r, torch.ones_like(r)
    a = r.abs()
    inside = a <= delta
    rho = torch.where(inside, r * r, 2 * delta * a - delta * delta)
    w = torch.where(inside, torch.ones_like(r), delta / torch.where(inside, torch.ones_like(a), a))
    return rho, w


def geman_mcclure(r: Tensor, sigma: float) -> Tensor:
    """Geman-McClure cost ``sigma^2 r^2 / (sigma^2 + r^2)`` per residual, any shape.

    Quadratic (``r^2``) for ``|r| << sigma``, bounded by ``sigma^2``, its pull largest at
    ``|r| = sigma / sqrt(3)`` and fading beyond: outliers neither dominate the sum nor steer.
    """
    s2 = sigma * sigma
    r2 = r * r
    return s2 * r2 / (s2 + r2)
