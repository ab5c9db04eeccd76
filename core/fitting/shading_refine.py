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
effect, `ShadingConfig.steps`), with the landmark term and the priors; each round's L-BFGS keeps
the curvature the last one learnt (`ShadingConfig.carry_memory`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from core.camera import WeakPerspective, euler_to_matrix, euler_to_matrix_jacobian
from core.face_model.model import MorphableModel
from core.fitting.colour_term import (active_triangles, colour_term, compiled_applies, compiled_colour_term,
                                      kernel_threads)
from core.fitting.landmark_geometry import (Correspondence, LandmarkGeometry, landmark_points,
                                            project_landmarks)
from core.fitting.lbfgs import minimize_lbfgs
from core.fitting.photometric import estimate_appearance, observe
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D
from core.mesh import PatchNormals
from core.robust import huber

logger = logging.getLogger(__name__)

__all__ = ["ShadingConfig", "ObservedPatch", "eye_region_mask", "refine_from_shading"]

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
        iterations: L-BFGS iterations per round. 45 with the curvature carried over
            (`carry_memory`) gave better synthetic rigs than 60 without it, in three quarters of
            the evaluations (docs/benchmarks.md, issue 20, session 11).
        albedo_reg: ridge of the closed-form albedo towards the prior, relative to the data term.
        per_image: also refine each image's pose and expressions (else only the identity).
        steps: the change of rotation (radians), relative scale, translation (pixels) and
            expression coefficient that one optimiser unit stands for: about a pixel's effect
            each, so that L-BFGS sees a well-scaled problem.
        identity_step: the identity code's optimiser unit, per component: this many pixels of RMS
            vertex motion (at the images' mean scale), at most this many standard deviations (the
            first components move the face by ~4 mm per standard deviation, the last by ~0.1 mm:
            in code units L-BFGS sees curvatures 1,000x apart); None: code units (the default).
            0.5 reaches in 60 iterations the cost code units reach in ~100, with better synthetic
            rigs but per-image poses that follow the colours less (docs/benchmarks.md, issue 20).
        vertex_fraction: share of the model's vertices the colour term samples (a fixed,
            spread-out random subset; 1: every observed vertex). The term's total weight and the
            albedo prior's weight do not depend on it.
        carry_memory: start each round's L-BFGS with the previous round's curvature pairs (the
            unknowns are the same, offsets in the same units; the lighting and weights change a
            little) instead of a short gradient step and no curvature. The second round then
            starts with quasi-Newton steps at once (docs/benchmarks.md, issue 20, session 11).
    """

    weight: float = 2.0
    sigma: float = 0.02
    grazing: Tuple[float, float] = (0.3, 0.6)
    eye_margin: float = 14.0
    rounds: int = 2
    iterations: int = 45
    albedo_reg: float = 0.01
    per_image: bool = True
    steps: Tuple[float, float, float, float] = (0.01, 0.01, 1.0, 0.1)
    identity_step: Optional[float] = None
    vertex_fraction: float = 1.0
    carry_memory: bool = True


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


class ObservedPatch:
    """What one round's colour term reads, and only that: the vertices with a weight in some image
    and, for their normals, the triangles around them (`core.mesh.PatchNormals`). Exact: a vertex
    of weight 0 in every image adds nothing to the term, and a vertex's normal depends on its
    incident triangles only (on real photos about 55 % of the face region's vertices, 60 % of its
    triangles). The identity's shape is evaluated once for all images, not once per image.

    Shape:
        weights (G, V) of the round (visibility x grazing x usable); prior (V, 3) or (3,); sampled
        (V,) bool or None (every vertex may take part) -> ``weights`` (G, U), ``prior`` (U, 3) or
        (3,) of the U observed vertices.
    """

    def __init__(self, model: MorphableModel, weights: Tensor, prior: Tensor, albedo_reg: float,
                 sampled: Optional[Tensor] = None) -> None:
        seen = (weights > 0).any(0)
        # estimate_albedo leans on the prior relative to the mean over all vertices (the unseen at 0).
        self.albedo_weight = albedo_reg * float(seen.sum()) / model.n_vertices
        ids = torch.nonzero(seen if sampled is None else seen & sampled)[:, 0]
        self.normals = PatchNormals(model.triangles, ids, model.n_vertices)
        support = self.normals.support  # the observed vertices first
        self.neutral = model.neutral[support].reshape(1, -1)
        # index_select: the same rows as fancy indexing, 3x quicker along the middle axis
        self.identity_basis = model.identity_basis.index_select(1, support).reshape(model.n_identity, -1)
        self.expression_basis = model.expression_basis.index_select(1, support).reshape(
            model.n_expression, -1)
        self.weights = weights[:, ids]  # (G, U)
        self.prior = prior[ids] if prior.ndim == 2 else prior
        self.scratch: dict = {}  # the compiled colour term's working arrays, kept between its calls
        self.active = active_triangles(self.normals, self.weights)  # each image's triangles that count

    def object_points(self, identity: Tensor, per_image: Dict[str, Tensor]) -> Tensor:
        """The support's positions per image in object space (current shape), mm.

        Shape:
            identity (n_id,); per_image as `refine_from_shading`'s -> (G, N, 3), the observed vertices first.
        """
        g = per_image[EXPRESSION].shape[0]
        points = (self.neutral + identity[None] @ self.identity_basis
                  + per_image[EXPRESSION] @ self.expression_basis)  # (G, 3N)
        return points.reshape(g, -1, 3)

    def cost(self, images: Tensor, identity: Tensor, per_image: Dict[str, Tensor], sh: Tensor, sigma: float,
             compiled: Optional[bool] = None, threads: Optional[int] = None,
             rotation: Optional[Tensor] = None) -> Tensor:
        """The round's colour term at the current shape (`core.fitting.colour_term`; ``compiled`` and
        ``threads`` as there; ``rotation``: the images' rotation matrices where the caller has them,
        else made from ``per_image``'s angles).

        Shape:
            images (G, 3, H, W); identity (n_id,); per_image as `refine_from_shading`'s; sh (G, 9, 3);
            rotation (G, 3, 3) -> ().
        """
        if rotation is None:
            rotation = euler_to_matrix(per_image[ROTATION])
        return colour_term(self.object_points(identity, per_image), rotation,
                           per_image[SCALE], per_image[TRANS2D], images, self.normals, self.weights, sh,
                           self.prior, self.albedo_weight, sigma, compiled=compiled, threads=threads,
                           scratch=self.scratch)

    def cost_and_gradient(self, images: Tensor, identity: Tensor, per_image: Dict[str, Tensor], sh: Tensor,
                          sigma: float, threads: int, rotation: Tensor) -> Tuple[float, Dict[str, Tensor]]:
        """`cost` by the compiled pass, with its gradient in the identity code (key ``identity``),
        the expressions, the rotation matrices (key ``matrix``), the scales and the translations,
        chained by hand through the linear object points (no autograd graph).

        Shape:
            as `cost`'s -> (), {identity (n_id,), expression (G, K), matrix (G, 3, 3), scale (G,),
            trans2d (G, 2)}.
        """
        points = self.object_points(identity, per_image)
        prior = self.prior.to(points.dtype).expand(self.weights.shape[1], 3)
        cost, d_points, d_matrix, d_scale, d_trans = compiled_colour_term(
            points, rotation, per_image[SCALE], per_image[TRANS2D], images, self.normals, self.weights, sh,
            prior, self.albedo_weight, sigma, threads, self.scratch, self.active)
        flat = d_points.reshape(d_points.shape[0], -1)  # (G, 3N), as the bases' columns
        return cost, {IDENTITY: flat.sum(0) @ self.identity_basis.T,
                      EXPRESSION: flat @ self.expression_basis.T, "matrix": d_matrix, SCALE: d_scale,
                      TRANS2D: d_trans}


def _identity_unit(model: MorphableModel, scale: Tensor, step: Optional[float]) -> Optional[Tensor]:
    """Per identity component, the code change that moves the vertices ``step`` pixels RMS at the
    images' mean ``scale`` (pixels per mm), capped at ``step``; None without a step."""
    if step is None:
        return None
    rms = model.identity_basis.pow(2).sum(-1).mean(-1).sqrt() * float(scale.mean())  # pixels per unit code
    return step * (1.0 / rms.clamp(min=1e-12)).clamp(max=1.0)


def _vertex_sample(n_vertices: int, fraction: float) -> Optional[Tensor]:
    """A fixed, spread-out random ``fraction`` of the vertices as a mask (V,), or None for all."""
    if fraction >= 1.0:
        return None
    if not 0.0 < fraction:
        raise ValueError(f"vertex_fraction: expected a value in (0, 1], got {fraction}")
    order = torch.randperm(n_vertices, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(n_vertices, dtype=torch.bool)
    mask[order[:max(1, round(fraction * n_vertices))]] = True
    return mask


class _Unknowns:
    """The optimiser's flat vector: the identity code, then (when free) each image's change of pose
    and expressions in `ShadingConfig.steps` units (zeros at the start of a round)."""

    def __init__(self, identity: Tensor, fixed: Dict[str, Tensor], free: bool,
                 steps: Tuple[float, float, float, float], bounds: Optional[Tuple[float, float]],
                 expression_weight: float, identity_unit: Optional[Tensor] = None) -> None:
        self.fixed, self.free, self.bounds, self.expression_weight = fixed, free, bounds, expression_weight
        self.units = {ROTATION: steps[0], SCALE: steps[1] * fixed[SCALE], TRANS2D: steps[2],
                      EXPRESSION: steps[3]}
        held = _PER_IMAGE if free else ()
        self.identity = identity
        self.identity_unit = torch.ones_like(identity) if identity_unit is None else identity_unit
        self.sizes = [identity.numel()] + [fixed[k].numel() for k in held]
        self.start = torch.zeros(sum(self.sizes), dtype=identity.dtype)

    def unpack(self, x: Tensor) -> Tuple[Tensor, Dict[str, Tensor], Tensor]:
        """(identity code, per-image parameters with expressions clamped to the bounds, their prior and
        bound penalty (zero when held)) at ``x``."""
        parts = torch.split(x, self.sizes)
        code = self.identity + self.identity_unit * parts[0]
        if not self.free:
            return code, self.fixed, x.new_zeros(())
        values = {k: self.fixed[k] + self.units[k] * part.view_as(self.fixed[k])
                  for k, part in zip(_PER_IMAGE, parts[1:])}
        raw = values[EXPRESSION]
        penalty = raw.new_zeros(())
        if self.bounds is not None:
            values[EXPRESSION] = raw.clamp(*self.bounds)
            penalty = _BOUND_PENALTY * ((raw - values[EXPRESSION]) ** 2).sum()
        return code, values, penalty + self.expression_weight * (values[EXPRESSION] ** 2).sum()

    def gradient(self, x: Tensor, d_code: Tensor, d_values: Dict[str, Tensor]) -> Tensor:
        """d loss / d ``x`` from the loss's gradient in `unpack`'s code and per-image values (the
        expressions after the clamp), with the gradient of `unpack`'s own prior and bound penalty
        added: what autograd gives through `unpack` (torch's clamp passes its gradient strictly inside
        the bounds: none for an expression at a bound, as many are at the start)."""
        out = [self.identity_unit * d_code]
        if self.free:
            parts = torch.split(x, self.sizes)
            raw = self.fixed[EXPRESSION] + self.units[EXPRESSION] * parts[1].view_as(self.fixed[EXPRESSION])
            clamped = raw if self.bounds is None else raw.clamp(*self.bounds)
            d_expression = d_values[EXPRESSION] + 2.0 * self.expression_weight * clamped
            if self.bounds is not None:
                inside = (raw > self.bounds[0]) & (raw < self.bounds[1])
                d_expression = torch.where(inside, d_expression, 2.0 * _BOUND_PENALTY * (raw - clamped))
            for k in _PER_IMAGE:
                out.append((self.units[k] * (d_expression if k == EXPRESSION else d_values[k])).reshape(-1))
        return torch.cat(out)


def _landmark_term(geometry: LandmarkGeometry, correspondence: Correspondence, code: Tensor,
                   expression: Tensor, matrix: Tensor, scale: Tensor, trans: Tensor, targets: Tensor,
                   confidence: Tensor, sigma: float, delta: Optional[float]
                   ) -> Tuple[Tensor, Dict[str, Tensor]]:
    """``sum conf huber(project(X) - y) / sigma^2`` of the 68 landmarks (weak perspective, the round's
    contour correspondence) and its gradient by hand, keyed as `ObservedPatch.cost_and_gradient`'s:
    the value `refine_from_shading`'s autograd objective computes (`project_landmarks`).

    Shape:
        code (n_id,); expression (G, K); matrix (G, 3, 3); scale (G,); trans (G, 2); targets (G, 68, 2);
        confidence (G, 68, 1) -> (), gradients.
    """
    g = expression.shape[0]
    points = geometry.points(code[None].expand(g, -1), expression)        # (G, P, 3)
    marks = landmark_points(points, correspondence)                      # (G, 68, 3)
    camera = marks @ matrix.transpose(1, 2)
    flip = torch.tensor((1.0, -1.0), dtype=marks.dtype)
    residual = scale[:, None, None] * camera[..., :2] * flip + trans[:, None] - targets
    rho, weight = huber(residual, delta)
    value = (confidence * rho).sum() / sigma ** 2
    d_uv = confidence * (2.0 / sigma ** 2) * weight * residual           # d rho / d r = 2 w r
    d_camera = torch.zeros_like(camera)
    d_camera[..., :2] = d_uv * flip * scale[:, None, None]
    d_marks = d_camera @ matrix                                          # camera = marks R^T
    index = correspondence.indices.reshape(g, 136, 1).expand(g, 136, 3)
    spread = d_marks[:, :, None, :] * correspondence.weights.to(marks.dtype)[..., None]
    d_points = torch.zeros_like(points).scatter_add_(1, index, spread.reshape(g, 136, 3))
    return value, {IDENTITY: torch.einsum("pj,pjn->n", d_points.sum(0), geometry.identity_basis),
                   EXPRESSION: torch.einsum("bpj,pjn->bn", d_points, geometry.expression_basis),
                   "matrix": d_camera.transpose(1, 2) @ marks,
                   SCALE: (d_uv * flip * camera[..., :2]).sum((1, 2)), TRANS2D: d_uv.sum(1)}


@dataclass
class _RoundObjective:
    """One shading round's loss over the optimiser's unknowns (`_Unknowns`) and its gradient: the
    colour term (weighted by ``weight``), the landmark term and the priors.

    `by_hand` chains the compiled colour pass's gradient and the landmark term's through the
    unknowns without an autograd graph (a tenth of each evaluation on rig_case1); `autograd` is the
    reference and the path wherever the compiled pass does not apply (no build, float64, another
    device). The two agree to float rounding (tests/test_shading_refine.py).
    """

    unknowns: _Unknowns
    patch: ObservedPatch
    images: Tensor
    sh: Tensor
    sigma: float
    threads: int
    geometry: LandmarkGeometry
    correspondence: Correspondence
    landmarks: Tensor
    confidence: Tensor
    landmark_sigma: float
    landmark_huber: Optional[float]
    weight: Tensor
    identity_weight: float

    def autograd(self, x: Tensor) -> Tuple[float, Tensor]:
        x = x.detach().requires_grad_(True)
        code, per_image, penalty = self.unknowns.unpack(x)
        rotation = euler_to_matrix(per_image[ROTATION])  # one rotation for both terms
        photo = self.patch.cost(self.images, code, per_image, self.sh, self.sigma, threads=self.threads,
                                rotation=rotation)
        flat = dict(per_image, **{IDENTITY: code[None].expand(self.images.shape[0], -1)})
        uv = project_landmarks(self.geometry, flat, correspondence=self.correspondence, rotation=rotation)
        rho = huber(uv - self.landmarks, self.landmark_huber)[0]
        marks = (self.confidence * rho).sum() / self.landmark_sigma ** 2
        loss = self.weight * photo + marks + self.identity_weight * (code * code).sum() + penalty
        return float(loss.detach()), torch.autograd.grad(loss, x)[0]

    def by_hand(self, x: Tensor) -> Tuple[float, Tensor]:
        x = x.detach()
        code, per_image, penalty = self.unknowns.unpack(x)
        angles = per_image[ROTATION]
        matrix = euler_to_matrix(angles)
        photo, d_photo = self.patch.cost_and_gradient(self.images, code, per_image, self.sh, self.sigma,
                                                      self.threads, matrix)
        marks, d_marks = _landmark_term(self.geometry, self.correspondence, code, per_image[EXPRESSION],
                                        matrix, per_image[SCALE], per_image[TRANS2D], self.landmarks,
                                        self.confidence, self.landmark_sigma, self.landmark_huber)
        loss = self.weight * photo + marks + self.identity_weight * (code * code).sum() + penalty
        d = {k: self.weight * d_photo[k] + d_marks[k] for k in d_photo}
        d[ROTATION] = torch.einsum("bij,bijk->bk", d.pop("matrix"), euler_to_matrix_jacobian(angles))
        d_code = d.pop(IDENTITY) + 2.0 * self.identity_weight * code
        return float(loss), self.unknowns.gradient(x, d_code, d)


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
    images, landmarks = images.to(dtype).contiguous(), landmarks.to(dtype)  # the colour term reads them ~100 times
    conf = (torch.ones(g, 68, dtype=dtype) if confidence is None else confidence.to(dtype))[..., None]
    usable = mask.to(dtype) * eye_region_mask(model, config.eye_margin)
    sampled = _vertex_sample(model.n_vertices, config.vertex_fraction)
    prior = prior_albedo.to(dtype)
    sh = None
    memory = None  # L-BFGS's curvature pairs, carried into the next round (module docstring)
    for _ in range(config.rounds):
        with torch.no_grad():
            vertices, pose = _shape(model, identity, fixed)
            seen = observe(images, vertices, model.triangles, pose, grazing=config.grazing)
            seen.weights = weights = seen.weights * usable
            _, sh = estimate_appearance(seen, prior, prior_weight=config.albedo_reg)
        patch = ObservedPatch(model, weights, prior, config.albedo_reg, sampled)
        scale = (config.weight * (2.0 * float(conf.sum())) / (3.0 * patch.weights.sum().clamp(min=1.0))
                 / config.sigma ** 2)
        threads = kernel_threads()  # once per round: the cores free now (the result does not depend on it)
        unknowns = _Unknowns(identity, fixed, config.per_image, config.steps, bounds, expression_weight,
                             _identity_unit(model, fixed[SCALE], config.identity_step))

        terms = _RoundObjective(unknowns, patch, images, sh, config.sigma, threads, geometry, correspondence,
                                landmarks, conf, landmark_sigma, landmark_huber, scale, identity_weight)
        by_hand = compiled_applies(patch.neutral, images)
        found = minimize_lbfgs(terms.by_hand if by_hand else terms.autograd, unknowns.start,
                               max_iterations=config.iterations,
                               memory=memory if config.carry_memory else None)
        memory = found.memory
        logger.debug("shading round: loss %.4g after %d iterations, %d evaluations", found.loss,
                     found.iterations, found.evaluations)
        with torch.no_grad():
            identity, per_image, _ = unknowns.unpack(found.x)
            fixed = {k: v.detach() for k, v in per_image.items()}
    return identity, sh, fixed
