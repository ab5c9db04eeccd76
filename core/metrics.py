"""Accuracy measures for reconstructions: similarity alignment, mesh, landmark and head-pose errors."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from core.camera import euler_to_matrix

__all__ = ["similarity_align", "aligned_mesh_error", "normalized_landmark_error", "rotation_error_deg"]


def similarity_align(source: Tensor, target: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """``source`` moved by the least-squares similarity (scale, rotation, translation) onto ``target``.

    Umeyama's closed form, reflections excluded.

    Shape:
        source, target (B, V, 3); weights (V,) or None -> (B, V, 3).
    """
    if source.shape != target.shape or source.ndim != 3 or source.shape[-1] != 3:
        raise ValueError(f"source and target must be the same (B, V, 3), got {tuple(source.shape)} "
                         f"and {tuple(target.shape)}")
    w = torch.ones(source.shape[1], dtype=source.dtype, device=source.device) if weights is None else weights
    w = (w / w.sum()).to(source.dtype)[None, :, None]
    mu_s, mu_t = (w * source).sum(1, keepdim=True), (w * target).sum(1, keepdim=True)
    s, t = source - mu_s, target - mu_t
    cov = (w * t).transpose(1, 2) @ s  # (B, 3, 3)
    u, sv, vh = torch.linalg.svd(cov)
    d = torch.ones_like(sv)
    d[:, 2] = torch.sign(torch.det(u @ vh))
    rotation = u @ torch.diag_embed(d) @ vh
    var_s = (w * s * s).sum((1, 2))
    scale = (sv * d).sum(-1) / var_s.clamp(min=1e-12)
    return scale[:, None, None] * s @ rotation.transpose(1, 2) + mu_t


def aligned_mesh_error(prediction: Tensor, truth: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """Mean per-vertex distance after similarity alignment of the prediction onto the truth (mm).

    Shape:
        prediction, truth (B, V, 3) -> (B,).
    """
    aligned = similarity_align(prediction, truth, weights)
    return (aligned - truth).norm(dim=-1).mean(-1)


def normalized_landmark_error(predicted: Tensor, detected: Tensor) -> Tensor:
    """Mean landmark distance divided by the outer-eye-corner distance (iBUG points 36 and 45).

    Shape:
        predicted, detected (B, 68, 2) -> (B,).
    """
    if predicted.shape != detected.shape or predicted.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must be (B, 68, 2), got {tuple(predicted.shape)} and {tuple(detected.shape)}")
    eyes = (detected[:, 36] - detected[:, 45]).norm(dim=-1)
    return (predicted - detected).norm(dim=-1).mean(-1) / eyes


def rotation_error_deg(rotation: Tensor, truth: Tensor) -> Tensor:
    """Angle (degrees) of the rotation between two head poses given as Euler angles (the fitters').

    Shape: rotation, truth (B, 3) radians -> (B,).
    """
    relative = euler_to_matrix(rotation).transpose(1, 2) @ euler_to_matrix(truth)
    cos = ((relative.diagonal(dim1=1, dim2=2).sum(-1) - 1.0) / 2.0).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.arccos(cos))
