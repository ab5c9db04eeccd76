"""Regression heads of the network: the solver's starting point from features and landmarks.

`InitHead` regresses, per image, the head rotation, the expression weights, an identity
estimate with a confidence (the person's identity is the confidence-weighted mean over the
images) and a confidence per landmark (the solver's landmark term weighs each detected point by
it: detectors err more on some points, e.g. the jawline of a turned head). Scale and 2D
translation follow in closed form from the landmarks (`fit_similarity`), so the start is aligned
with the detections whatever the regression's error.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import Tensor, nn

from core.camera import euler_to_matrix

__all__ = ["InitHead", "fit_similarity", "normalize_landmarks", "INNER_LANDMARKS"]

# Landmarks used for the closed-form scale / translation: brows, nose, eyes, mouth (not the
# contour, whose model points slide with the head pose).
INNER_LANDMARKS = tuple(range(17, 68))
# Bounds of the regressed Euler angles (pitch, yaw, roll), radians.
_ANGLE_LIMITS = (0.8, 1.4, 0.8)


def normalize_landmarks(landmarks: Tensor, size: int) -> Tensor:
    """Crop pixels -> [-1, 1] about the crop centre. Shape: (..., 68, 2) -> (..., 68, 2)."""
    half = 0.5 * (size - 1)
    return (landmarks - half) / half


def fit_similarity(points: Tensor, rotation: Tensor, targets: Tensor) -> Dict[str, Tensor]:
    """Weak-perspective scale and translation that best map rotated model points onto 2D targets.

    Least squares over ``u = s x_c + t_u``, ``v = -s y_c + t_v`` (the camera's convention), in
    closed form and differentiable.

    Shape:
        points (N, L, 3) object space; rotation (N, 3) Euler; targets (N, L, 2) pixels
        -> {"scale": (N,), "trans2d": (N, 2)}.
    """
    xc = points @ euler_to_matrix(rotation).transpose(1, 2)
    p = torch.stack([xc[..., 0], -xc[..., 1]], dim=-1)
    p0, q0 = p - p.mean(1, keepdim=True), targets - targets.mean(1, keepdim=True)
    scale = (p0 * q0).sum((1, 2)) / (p0 * p0).sum((1, 2)).clamp(min=1e-9)
    scale = scale.clamp(min=1e-3)
    trans = targets.mean(1) - scale[:, None] * p.mean(1)
    return {"scale": scale, "trans2d": trans}


class InitHead(nn.Module):
    """MLP from pooled image features and normalized landmarks to a start for the solver.

    Args:
        feature_dim: size of the pooled CNN features.
        n_identity, n_expression: code sizes of the face model.
        hidden: width of the hidden layers.

    Shape:
        pooled (P, G, D); landmarks (P, G, 68, 2) normalized to [-1, 1] ->
        identity (P, n_id), expression (P, G, K) in [0, 1], rotation (P, G, 3) radians,
        identity_weights (P, G) (softmax over the images), landmark_confidence (P, G, 68) in
        (0, 2) (1 when untrained).
    """

    def __init__(self, feature_dim: int, n_identity: int, n_expression: int, hidden: int = 256) -> None:
        super().__init__()
        self.n_identity, self.n_expression = n_identity, n_expression
        self.trunk = nn.Sequential(nn.Linear(feature_dim + 136, hidden), nn.ReLU(inplace=True),
                                   nn.Linear(hidden, hidden), nn.ReLU(inplace=True))
        self.rotation = nn.Linear(hidden, 3)
        self.expression = nn.Linear(hidden, n_expression)
        self.identity = nn.Linear(hidden, n_identity + 1)
        self.confidence = nn.Linear(hidden, 68)
        for layer in (self.rotation, self.identity, self.confidence):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.expression.weight)
        nn.init.constant_(self.expression.bias, -3.0)
        self.register_buffer("angle_limits", torch.tensor(_ANGLE_LIMITS))

    def forward(self, pooled: Tensor, landmarks: Tensor,
                mask: Optional[Tensor] = None) -> Dict[str, Tensor]:
        p, g = pooled.shape[:2]
        if landmarks.shape != (p, g, 68, 2):
            raise ValueError(f"landmarks must be ({p}, {g}, 68, 2), got {tuple(landmarks.shape)}")
        h = self.trunk(torch.cat([pooled, landmarks.reshape(p, g, 136)], dim=-1))
        rotation = torch.tanh(self.rotation(h)) * self.angle_limits.to(h.dtype)
        expression = torch.sigmoid(self.expression(h))
        out = self.identity(h)
        logits = out[..., -1]
        if mask is not None:
            logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1)
        identity = (weights[..., None] * out[..., :-1]).sum(1)
        return {"identity": identity, "expression": expression, "rotation": rotation,
                "identity_weights": weights, "landmark_confidence": 2.0 * torch.sigmoid(self.confidence(h))}
