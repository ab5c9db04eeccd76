"""Training losses of the network: vertex errors against synthetic ground truth, per stage.

Every stage of the forward pass (the regression, then each unrolled solver level) is supervised,
so the regression learns a good start and the solver's learned behaviour a good refinement; the
final stage includes the rig decoder's correctives. A photometric term (`photometric_loss`, needs
no ground truth) compares the images with the fitted meshes' shaded albedo.
"""
from __future__ import annotations

from typing import Dict, Sequence

import torch
from torch import Tensor

from core.camera import WeakPerspective
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D
from core.lighting import sh_shading
from core.rig.builder import observe_appearance
from core.robust import huber as huber_cost
from core.sampling import sample_points
from models.inorig import INORig, NetworkOutput

__all__ = ["LossWeights", "network_losses", "photometric_loss"]


class LossWeights:
    """Relative weights: per stage (regression, levels...) and of the auxiliary terms."""

    def __init__(self, stages: Sequence[float] = (0.5, 0.5, 1.0), neutral: float = 1.0,
                 landmarks: float = 0.05, rotation: float = 5.0, rig_code: float = 1e-3,
                 photometric: float = 0.0) -> None:
        self.stages, self.neutral, self.landmarks = list(stages), neutral, landmarks
        self.rotation, self.rig_code, self.photometric = rotation, rig_code, photometric


def _mean_distance(a: Tensor, b: Tensor) -> Tensor:
    return (a - b).norm(dim=-1).mean()


def network_losses(net: INORig, out: NetworkOutput, batch: Dict[str, Tensor],
                   weights: LossWeights = LossWeights()) -> Dict[str, Tensor]:
    """Losses for a batch of P persons x G images (mm for vertices, px for landmarks).

    ``batch`` holds the ground truth: ``identity`` (P, n_id), ``expression`` (P, G, K), ``angles``
    (P, G, 3), ``landmarks_true`` (P, G, 68, 2) (noise-free, sliding-contour rule); and ``images``
    (P, G, 3, S, S) for the photometric term (computed only when its weight is not 0).

    Returns ``total`` plus, per stage ``s``, ``vertex_s`` and ``neutral_s`` (mean distance, mm),
    and the solver's weighted cost per level ``l`` and iteration ``t``, ``cost_l_t`` (logged only).
    """
    gt_neutral, gt_vertices = net.meshes(batch["identity"], batch["expression"])
    losses: Dict[str, Tensor] = {}
    total = out.neutral.new_zeros(())
    n_stages = len(out.stages)
    stage_w = list(weights.stages)[-n_stages:] if len(weights.stages) >= n_stages else [1.0] * n_stages
    for s, params in enumerate(out.stages):
        last = s == n_stages - 1
        if last:
            neutral, vertices = out.neutral, out.vertices
        else:
            neutral, vertices = net.meshes(params[IDENTITY], params[EXPRESSION])
        v = _mean_distance(vertices, gt_vertices)
        n = _mean_distance(neutral, gt_neutral)
        losses[f"vertex_{s}"], losses[f"neutral_{s}"] = v.detach(), n.detach()
        total = total + stage_w[s] * (v + weights.neutral * n)
    rot = (out.stages[0][ROTATION] - batch["rotation"]).abs().mean()
    lm = (net.projected_landmarks(out.params) - batch["landmarks_true"]).norm(dim=-1).mean()
    code = out.rig_code.pow(2).mean()
    losses["rotation_0"], losses["landmarks"] = rot.detach(), lm.detach()
    for level, history in enumerate(out.cost_history):  # solver cost per level and iteration (logged)
        for t, cost in enumerate(history.mean(0)):
            losses[f"cost_{level}_{t}"] = cost.detach()
    total = total + weights.rotation * rot + weights.landmarks * lm + weights.rig_code * code
    if weights.photometric:
        photo = photometric_loss(net, out, batch["images"])
        losses["photometric"] = photo.detach()
        total = total + weights.photometric * photo
    losses["total"] = total
    return losses


def photometric_loss(net: INORig, out: NetworkOutput, images: Tensor, huber: float = 0.1) -> Tensor:
    """Mean robust colour error between the images and the final meshes' shaded albedo.

    Per person, albedo (per vertex, shared by the images) and SH lighting (per image) are
    estimated in closed form at the fitted meshes and held fixed (`core.rig.builder.
    observe_appearance`: visible vertices above the chin); the loss is the visibility-weighted
    Huber error of the image colours sampled at the projected vertices, so its gradient moves the
    geometry and the pose to where the image agrees with the shading. Needs no ground truth (the
    self-supervised term for real images).

    Shape:
        images (P, G, 3, S, S) in [0, 1] -> scalar (colour units).
    """
    p, g = images.shape[:2]
    face = net.face
    neighbours = net.neighbours()
    params = out.params
    total, weight = images.new_zeros(()), images.new_zeros(())
    for i in range(p):
        verts = out.vertices[i]
        pose = WeakPerspective(params[ROTATION][i], params[SCALE][i], params[TRANS2D][i])
        with torch.no_grad():
            obs, albedo, sh = observe_appearance(face, images[i], verts.detach(), pose.detach(), neighbours=neighbours)
            target = albedo[None] * sh_shading(obs.normals, sh)
        uv = pose.project(verts)
        rho = huber_cost(sample_points(images[i], uv) - target, huber)[0] / (2.0 * huber)
        total = total + (obs.weights[..., None] * rho).sum()
        weight = weight + 3.0 * obs.weights.sum()
    return total / weight.clamp(min=1.0)
