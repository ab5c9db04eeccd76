"""The face from shading across a person's images: the photometric stage of the rig builder.

After the landmark stage the face's shape is known only as far as 68 noisy points say (on the
synthetic benchmark, even true poses and expressions leave 35 % of the mean face's error with
1.5 px landmark noise). The images say more: a skin patch seen under several head poses and
lights changes brightness with its normal, so the normals - hence the identity - are constrained
by how the colours vary across the images, and the poses and expressions by where the colours lie.

The residual per visible vertex ``m`` and image ``g`` is ``I_g(project(X_m)) - a_m * shade_g(n_m)``
with the normals ``n_m`` of the *current* mesh (so a change of shape changes the predicted shading,
which a target held fixed would miss) and the albedo ``a_m`` eliminated in closed form from all
images at the current shape (variable projection): only the part of the colours that one albedo
per vertex cannot explain steers the shape. Per-image SH lighting is solved in closed form between
rounds. Vertices near the eyes (lashes, the eyes' rims and sockets do not follow skin shading), at
grazing angles or hidden are left out, and the colour residuals take a redescending robust cost
(Geman-McClure): a few vertices whose colour no shape explains (an eye corner's lashes, a
silhouette against the background) would otherwise pull the face towards hiding them. Minimised
by L-BFGS over the identity code and, per image, the pose and expressions (in steps of comparable
effect, `ShadingConfig.steps`), with the landmark term and the priors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import Tensor

from core.camera import WeakPerspective
from core.face_model.model import MorphableModel
from core.fitting.landmark_geometry import Correspondence, LandmarkGeometry, project_landmarks
from core.fitting.photometric import estimate_albedo, estimate_appearance, observe
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D
from core.lighting import sh_shading
from core.mesh import vertex_normals
from core.robust import geman_mcclure, huber
from core.sampling import sample_points

__all__ = ["ShadingConfig", "eye_region_mask", "refine_from_shading"]

_PER_IMAGE = (EXPRESSION, ROTATION, SCALE, TRANS2D)
# Weight of the quadratic pull back inside the expression bounds (the fit uses the clamped values).
_BOUND_PENALTY = 1e3


@dataclass(frozen=True)
class ShadingConfig:
    """Settings of `refine_from_shading`.

    Attributes:
        weight: weight of the shading term relative to the landmark term (1: the colour residuals
            together count like all landmark residuals at their noise levels and confidences, so
            landmarks weighted down as a noisy detector's leave the balance of the two terms alone
            and only strengthen the priors). 2 was better than 1 on the synthetic renders (both
            landmark sources, also on subjects never used for choosing) and on real video frames
            (hair, speculars, compression); much higher weights made real rigs frame-set dependent
            (docs/benchmarks.md, rig building).
        sigma: scale of the robust colour cost ([0, 1] units; residuals well beyond it stop pulling).
        grazing: camera-space normal z below which a vertex is left out, and above which it
            counts fully (ramp in between).
        eye_margin: vertices closer than this (mm, neutral face) to an eye landmark are left out.
        rounds: lighting re-estimations (each followed by an L-BFGS run).
        iterations: L-BFGS iterations per round.
        albedo_reg: ridge of the closed-form albedo towards the prior, relative to the data term.
        per_image: also refine each image's pose and expressions (else only the identity).
        steps: the change of rotation (radians), relative scale, translation (pixels) and
            expression coefficient that one optimiser unit stands for: about a pixel's effect
            each, so that L-BFGS sees a well-scaled problem.
    """

    weight: float = 2.0
    sigma: float = 0.02
    grazing: Tuple[float, float] = (0.3, 0.6)
    eye_margin: float = 14.0
    rounds: int = 2
    iterations: int = 60
    albedo_reg: float = 0.01
    per_image: bool = True
    steps: Tuple[float, float, float, float] = (0.01, 0.01, 1.0, 0.1)


def eye_region_mask(model: MorphableModel, margin: float) -> Tensor:
    """0 for vertices within ``margin`` mm of an eye landmark (36-47) on the neutral face, else 1: (V,)."""
    if model.landmark_indices is None or margin <= 0:
        return torch.ones(model.n_vertices, dtype=model.dtype)
    eyes = model.neutral[model.landmark_indices[36:48]]
    return (torch.cdist(model.neutral, eyes).min(1).values > margin).to(model.dtype)


def _shape(model: MorphableModel, identity: Tensor, fixed: Dict[str, Tensor]) -> Tuple[Tensor, WeakPerspective]:
    """Per-image meshes (G, V, 3) at ``identity`` (n_id,) and the images' poses."""
    g = fixed[EXPRESSION].shape[0]
    return model.vertices(identity[None].expand(g, -1), fixed[EXPRESSION]), WeakPerspective.from_params(fixed)


def _per_image_parameters(fixed: Dict[str, Tensor], free: bool, steps: Tuple[float, float, float, float],
                          bounds: Optional[Tuple[float, float]], expression_weight: float
                          ) -> Tuple[Dict[str, Tensor], Callable[[], Tuple[Dict[str, Tensor], Tensor]]]:
    """Optimiser variables (zeros, in `ShadingConfig.steps` units; none unless ``free``) and a
    function giving the current per-image parameters (expressions clamped to ``bounds``) with their
    prior and bound penalty (zero when held)."""
    units = {ROTATION: steps[0], SCALE: steps[1] * fixed[SCALE], TRANS2D: steps[2], EXPRESSION: steps[3]}
    delta = {k: torch.zeros_like(fixed[k], requires_grad=True) for k in _PER_IMAGE} if free else {}

    def current() -> Tuple[Dict[str, Tensor], Tensor]:
        if not free:
            return fixed, fixed[SCALE].new_zeros(())
        values = {k: fixed[k] + units[k] * delta[k] for k in _PER_IMAGE}
        raw = values[EXPRESSION]
        penalty = raw.new_zeros(())
        if bounds is not None:
            values[EXPRESSION] = raw.clamp(*bounds)
            penalty = _BOUND_PENALTY * ((raw - values[EXPRESSION]) ** 2).sum()
        return values, penalty + expression_weight * (values[EXPRESSION] ** 2).sum()

    return delta, current


def refine_from_shading(model: MorphableModel, images: Tensor, params: Dict[str, Tensor],
                        geometry: LandmarkGeometry, correspondence: Correspondence, landmarks: Tensor, *,
                        prior_albedo: Tensor, mask: Tensor, landmark_sigma: float,
                        landmark_huber: Optional[float], identity_weight: float,
                        expression_weight: float, bounds: Optional[Tuple[float, float]] = None,
                        confidence: Optional[Tensor] = None, config: ShadingConfig = ShadingConfig()
                        ) -> Tuple[Tensor, Tensor, Dict[str, Tensor]]:
    """Refine the shared identity (and per image pose and expressions) by shading + landmarks + priors.

    Args:
        model: the face model whose expression basis the per-image expressions use.
        images: the crops, RGB in [0, 1].
        params: per image ``expression`` (G, K), ``rotation`` (G, 3), ``scale`` (G,), ``trans2d``
            (G, 2), and ``identity`` (G, n_id) (the same row per image).
        geometry, correspondence: the landmark geometry of ``model`` and the contour correspondence.
        landmarks: detected landmarks (G, 68, 2), crop pixels; confidence (G, 68) or None.
        prior_albedo: (V, 3) or (3,) albedo the closed form leans on where colours say little.
        mask: (V,) vertices that may take part (e.g. above the chin).
        identity_weight, expression_weight: weights of the zero-mean priors, as in the landmark stage.
        bounds: (low, high) of the expression coefficients, or None.

    Returns:
        identity (n_id,), the SH lighting (G, 9, 3) of the last round, and the per-image
        ``expression``, ``rotation``, ``scale``, ``trans2d`` (unchanged unless ``config.per_image``).
    """
    g = images.shape[0]
    dtype = model.dtype
    fixed = {k: params[k].detach().to(dtype) for k in _PER_IMAGE}
    identity = params[IDENTITY][0].detach().to(dtype).clone()
    images, landmarks = images.to(dtype), landmarks.to(dtype)
    conf = (torch.ones(g, 68, dtype=dtype) if confidence is None else confidence.to(dtype))[..., None]
    usable = mask.to(dtype) * eye_region_mask(model, config.eye_margin)
    prior = prior_albedo.to(dtype)
    sh = None
    for _ in range(config.rounds):
        with torch.no_grad():
            vertices, pose = _shape(model, identity, fixed)
            seen = observe(images, vertices, model.triangles, pose, grazing=config.grazing)
            seen.weights = weights = seen.weights * usable
            _, sh = estimate_appearance(seen, prior, prior_weight=config.albedo_reg)
        scale = config.weight * (2.0 * float(conf.sum())) / (3.0 * weights.sum().clamp(min=1.0)) / config.sigma ** 2
        code = identity.clone().requires_grad_(True)
        delta, current = _per_image_parameters(fixed, config.per_image, config.steps, bounds, expression_weight)
        optimiser = torch.optim.LBFGS([code, *delta.values()], max_iter=config.iterations,
                                      line_search_fn="strong_wolfe")

        def closure() -> Tensor:
            optimiser.zero_grad()
            per_image, penalty = current()
            vertices, pose = _shape(model, code, per_image)
            observed = sample_points(images, pose.project(vertices))
            shading = sh_shading(vertex_normals(pose.camera_points(vertices), model.triangles), sh)
            a = estimate_albedo(observed, shading, weights, prior, prior_weight=config.albedo_reg)
            photo = (weights[..., None] * geman_mcclure(observed - a * shading, config.sigma)).sum()
            flat = dict(per_image, **{IDENTITY: code[None].expand(g, -1)})
            uv = project_landmarks(geometry, flat, correspondence=correspondence)
            marks = (conf * huber(uv - landmarks, landmark_huber)[0]).sum() / landmark_sigma ** 2
            loss = scale * photo + marks + identity_weight * (code * code).sum() + penalty
            loss.backward()
            return loss

        optimiser.step(closure)
        identity = code.detach()
        with torch.no_grad():
            fixed = {k: v.detach() for k, v in current()[0].items()}
    return identity, sh, fixed
