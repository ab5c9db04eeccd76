"""Who builds a rig from crops: the one place the pipelines and benchmarks get a rig builder from.

A rig builder is any callable ``(crops (G, 3, H, W) in [0, 1], landmarks (G, 68, 2) crop pixels) ->
RigBuildResult``: the classical solver (`classical_builder`, landmarks weighted by the detector's
measured noise) or the network's ``INORig.build_rig`` (made by the caller from ``models``, which
``utils`` does not import).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from core.face_model.model import MorphableModel
from core.rig.builder import RigBuildConfig, RigBuildResult, build_rig
from utils.landmarks.noise import detector_weights

__all__ = ["RigBuilder", "classical_builder"]

RigBuilder = Callable[[torch.Tensor, torch.Tensor], RigBuildResult]


def classical_builder(model: MorphableModel, config: RigBuildConfig = RigBuildConfig(),
                      detector: Optional[str] = None) -> RigBuilder:
    """`core.rig.builder.build_rig` on ``model`` with ``config``, the landmarks weighted by
    ``detector``'s noise profile (`utils.landmarks.noise.detector_weights`; None or a detector
    without a profile: unweighted)."""

    def build(images: torch.Tensor, landmarks: torch.Tensor) -> RigBuildResult:
        confidence = None if detector is None else detector_weights(detector, torch.as_tensor(landmarks))
        return build_rig(model, images.to(model.dtype), landmarks.to(model.dtype), config=config,
                         confidence=confidence)

    return build
