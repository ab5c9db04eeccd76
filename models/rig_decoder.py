"""Neural rig decoder: per-person corrective expression blendshapes from fused image features.

The rig code ``z`` is encoded from the per-image features pooled over all images of the person
(mean and max: any number of images, order-free); an MLP decodes ``z`` and the identity code
into coefficients of `core.rig.rig.CorrectiveBasis` (local, face-like shape directions per
expression), so the output is a full (K, V, 3) blendshape correction from a network of a few
hundred kilobytes. The last layer starts at zero: an untrained decoder adds nothing.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor, nn

from core.rig.rig import CorrectiveBasis

__all__ = ["NeuralRigDecoder"]


class NeuralRigDecoder(nn.Module):
    """Fused features (+ identity) -> rig code -> corrective blendshapes.

    Args:
        basis: the corrective basis (directions (R, V, 3), masks (K, V)), held as buffers.
        feature_dim: size of the per-image pooled features.
        n_identity: identity code size.
        code_dim: rig code size.
        hidden: hidden width.

    Shape:
        pooled (P, G, D), identity (P, n_id), mask (P, G) bool or None
        -> rig_code (P, code_dim), correctives (P, K, V, 3).
    """

    def __init__(self, basis: CorrectiveBasis, feature_dim: int, n_identity: int, code_dim: int = 32,
                 hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("directions", basis.directions.float().clone(), persistent=False)
        self.register_buffer("masks", basis.masks.float().clone(), persistent=False)
        k, r = basis.code_shape
        self.k, self.r = k, r
        self.encoder = nn.Sequential(nn.Linear(2 * feature_dim, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, code_dim))
        self.decoder = nn.Sequential(nn.Linear(code_dim + n_identity, hidden), nn.ReLU(inplace=True),
                                     nn.Linear(hidden, k * r))
        nn.init.zeros_(self.decoder[-1].weight)
        nn.init.zeros_(self.decoder[-1].bias)

    def fuse(self, pooled: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        """Order-free fusion over the images: mean and max. Shape: (P, G, D) -> (P, 2D)."""
        if mask is None:
            return torch.cat([pooled.mean(1), pooled.amax(1)], dim=-1)
        m = mask[..., None].to(pooled.dtype)
        mean = (pooled * m).sum(1) / m.sum(1).clamp(min=1.0)
        peak = pooled.masked_fill(~mask[..., None], float("-inf")).amax(1)
        return torch.cat([mean, peak], dim=-1)

    def coefficients(self, rig_code: Tensor, identity: Tensor) -> Tensor:
        """Shape: rig_code (P, Z), identity (P, n_id) -> (P, K, R)."""
        return self.decoder(torch.cat([rig_code, identity.to(rig_code.dtype)], -1)).reshape(-1, self.k, self.r)

    def forward(self, pooled: Tensor, identity: Tensor, mask: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        rig_code = self.encoder(self.fuse(pooled, mask))
        coeff = self.coefficients(rig_code, identity)
        correctives = torch.einsum("pkr,rvc,kv->pkvc", coeff, self.directions.to(coeff.dtype),
                                   self.masks.to(coeff.dtype))
        return rig_code, correctives
