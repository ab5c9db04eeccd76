"""Build a person's rig from N >= 1 face crops with 68 landmarks each (the classical solver path).

Coarse to fine (method.md, "Ours"):

1. ``init``: each image alone, pose then pose + identity + expression from its landmarks
   (`core.fitting.fit_landmarks`).
2. ``landmarks``: all images together, one identity shared by all, expression and pose per image
   (the solver's per-group arrow structure), contour landmarks re-slid between rounds; from the
   second round on, the expression basis is the generic one transferred to the current identity
   (`core.rig`), so the per-image meshes are exactly the rig's.
3. ``photometric``: the identity from how the skin's shading varies across the images (normals of
   the current shape, albedo eliminated in closed form, SH lighting per image; `core.fitting.shading_refine`),
   refined together with the poses and expressions, which the colours' positions pin better than
   68 landmarks do; albedo and lighting in closed form.
4. ``rig code``: the per-person corrective blendshapes (`core.rig.rig.CorrectiveBasis`) from all images'
   landmarks, in closed form with expressions and poses held (`fit_rig_code`).

Everything is batched over the images of the one person; crops are square (usually 256 px) in a
weak-perspective camera, as the original.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from core.camera import WeakPerspective, euler_to_matrix
from core.face_model.model import MorphableModel
from core.fitting.fit_landmarks import LandmarkFitConfig, fit_landmarks
from core.fitting.landmark_geometry import Correspondence, LandmarkGeometry, landmark_points, update_contour
from core.fitting.photometric import SKIN_PRIOR, Observation, estimate_appearance, observe
from core.fitting.residuals import expression_bounds, landmark_block, prior_block
from core.fitting.shading_refine import ShadingConfig, refine_from_shading
from core.fitting.solver import SolverConfig, solve
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D
from core.mesh import vertex_neighbours
from core.rig.rig import CorrectiveBasis, Rig
from core.rig.transfer import transfer_deltas

logger = logging.getLogger(__name__)

__all__ = [
    "RigBuildConfig", "RigBuildResult", "build_rig", "check_rig_inputs", "fit_rig_code",
    "observe_appearance", "above_chin_mask", "albedo_prior", "project_rig_landmarks",
]

_PER_IMAGE = (EXPRESSION, ROTATION, SCALE, TRANS2D)


@dataclass(frozen=True)
class RigBuildConfig:
    """Settings of `build_rig`.

    Attributes:
        landmark_sigma: landmark noise in crop pixels (term weight 1 / sigma^2).
        contour_weight: relative weight of the jawline landmarks 0-16 (detectors place them on the
            silhouette less reliably than the inner points).
        landmark_huber: Huber threshold of the landmark residuals, crop pixels (None: least squares).
        identity_weight, expression_weight: weights of the N(0, 1) / zero-mean priors (the
            expressions' prior is firm: weaker, the per-image expressions absorb landmark noise
            and pull the shared identity; the identity's is a little below 1 because the 2 px
            Huber already caps what a wild landmark can pull; docs/benchmarks.md, rig building).
        rounds, iterations: joint landmark stage (contour updates x LM iterations).
        photometric: run the photometric stage (identity, poses and expressions from shading,
            `core.fitting.shading_refine`).
        shading: settings of that stage.
        neck_margin: vertices lower than this many mm below the chin are left out of the albedo,
            lighting and photometric terms (they take the skin prior).
        rig_rank: shape directions per expression of the rig's corrective (0 = no corrective).
        rig_code_weight: weight of the zero-mean prior on the rig code.
    """

    landmark_sigma: float = 4.0
    contour_weight: float = 1.0
    landmark_huber: Optional[float] = 2.0
    identity_weight: float = 0.7
    expression_weight: float = 5.0
    rounds: int = 3
    iterations: int = 8
    photometric: bool = True
    shading: ShadingConfig = field(default_factory=ShadingConfig)
    neck_margin: float = 5.0
    rig_rank: int = 4
    rig_code_weight: float = 20.0
    solver: SolverConfig = field(default_factory=lambda: SolverConfig(ftol=1e-6, xtol=1e-7))


@dataclass
class RigBuildResult:
    """Output of `build_rig` (and of the network's ``INORig.build_rig``).

    Attributes:
        rig: the person's `Rig`.
        params: per image ``expression`` (G, K), ``rotation`` (G, 3), ``scale`` (G,), ``trans2d``
            (G, 2) (the pose in crop pixels), and the shared ``identity`` (n_id,).
        sh: (G, 9, 3) camera-space SH lighting per image (None without the photometric stage).
        landmarks_2d: (G, 68, 2) projected model landmarks in crop pixels.
        reprojection_error: (G,) mean landmark distance, crop pixels.
        timings: stage -> seconds.
        meshes: (G, V, 3) the rig's mesh of each image (``rig.vertices(params["expression"])``,
            object space, mm), computed once here for whoever writes or renders them.
    """

    rig: Rig
    params: Dict[str, Tensor]
    sh: Optional[Tensor]
    landmarks_2d: Tensor
    reprojection_error: Tensor
    timings: Dict[str, float]
    meshes: Optional[Tensor] = None

    @property
    def pose(self) -> WeakPerspective:
        """The per-image head poses (batch G) in crop pixels."""
        return WeakPerspective.from_params(self.params)

    def image_meshes(self) -> Tensor:
        """(G, V, 3) per-image meshes: `meshes`, or evaluated from the rig where a builder gave none."""
        return self.meshes if self.meshes is not None else self.rig.vertices(self.params[EXPRESSION])


def _grouped(params: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """Per-image fits (G, ...) -> one person's problem: identity (1, n), the rest (1, G, ...)."""
    out = {n: params[n][None] for n in _PER_IMAGE}
    out[IDENTITY] = params[IDENTITY].mean(0, keepdim=True)
    return out


def _flat(params: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """One person's problem -> per image (G, ...), identity repeated."""
    g = params[EXPRESSION].shape[1]
    out = {n: params[n][0] for n in _PER_IMAGE}
    out[IDENTITY] = params[IDENTITY].expand(g, -1)
    return out


def _contour(geometry: LandmarkGeometry, params: Dict[str, Tensor]) -> Correspondence:
    flat = _flat(params)
    pts = geometry.points(flat[IDENTITY], flat[EXPRESSION])
    return update_contour(geometry, pts, euler_to_matrix(flat[ROTATION]))


def _landmark_blocks(geometry: LandmarkGeometry, targets: Tensor, corr: Correspondence,
                     config: RigBuildConfig, confidence: Optional[Tensor]) -> list:
    landmarks = landmark_block(geometry, targets[None], "weak", correspondence=corr,
                               confidence=None if confidence is None else confidence[None],
                               weight=1.0 / config.landmark_sigma ** 2)
    return [
        dataclasses.replace(landmarks, huber=config.landmark_huber),
        prior_block(IDENTITY, weight=config.identity_weight),
        prior_block(EXPRESSION, weight=config.expression_weight, per_group=True),
    ]


def above_chin_mask(model: MorphableModel, margin: float) -> Tensor:
    """1 for vertices above the chin minus ``margin`` mm on the neutral face, else 0: (V,).

    Below the chin the images mostly show the neck's shadow, a collar or a shirt; those vertices
    take the skin prior (smoothed in from above) and do not steer the lighting.
    """
    if model.landmark_indices is None:
        return torch.ones(model.n_vertices, dtype=model.dtype)
    chin_y = model.neutral[model.landmark_indices[8], 1]
    return (model.neutral[:, 1] > chin_y - margin).to(model.dtype)


def _with_transferred_expressions(model: MorphableModel, identity: Tensor) -> MorphableModel:
    """The model with its expression basis carried onto the face of ``identity`` (n_id,)."""
    neutral = model.vertices(identity[None])
    basis = transfer_deltas(model.expression_basis, model.neutral, neutral, model.triangles)[0]
    return dataclasses.replace(model, expression_basis=basis)


def albedo_prior(model: MorphableModel) -> Tensor:
    """The model's mean albedo (V, 3), or the skin colour `SKIN_PRIOR` (3,) for a model without one."""
    return model.albedo_mean if model.albedo_mean is not None else torch.tensor(SKIN_PRIOR, dtype=model.dtype)


def observe_appearance(model: MorphableModel, images: Tensor, vertices: Tensor, pose: WeakPerspective, *,
                       neck_margin: float = 5.0, neighbours: Optional[Tensor] = None
                       ) -> Tuple[Observation, Tensor, Tensor]:
    """Observe the images at a fit, then per-vertex albedo and per-image SH lighting in closed form.

    Vertices more than ``neck_margin`` mm below the chin are left out (see `above_chin_mask`); the
    albedo prior is the model's mean albedo or `SKIN_PRIOR`.

    Shape:
        images (G, 3, H, W); vertices (G, V, 3); pose of batch G -> Observation over (G, V),
        albedo (V, 3), sh (G, 9, 3).
    """
    if neighbours is None:
        neighbours = vertex_neighbours(model.triangles, model.n_vertices)
    prior = albedo_prior(model).to(vertices.dtype)
    obs = observe(images.to(vertices.dtype), vertices, model.triangles, pose)
    obs.weights = obs.weights * above_chin_mask(model, neck_margin).to(obs.weights.dtype)
    return (obs, *estimate_appearance(obs, prior, neighbours))


def check_rig_inputs(images: Tensor, landmarks: Tensor) -> int:
    """Raise ValueError unless images are (G, 3, H, W) and landmarks (G, 68, 2); returns G."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (G, 3, H, W), got {tuple(images.shape)}")
    g = images.shape[0]
    if landmarks.shape != (g, 68, 2):
        raise ValueError(f"landmarks must be ({g}, 68, 2), got {tuple(landmarks.shape)}")
    return g


def build_rig(model: MorphableModel, images: Tensor, landmarks: Tensor, *,
              confidence: Optional[Tensor] = None,
              config: RigBuildConfig = RigBuildConfig()) -> RigBuildResult:
    """Fit one person's rig and per-image parameters to face crops.

    Args:
        model: the face model region to fit (e.g. ``load_face_model('ict', ...).region('face')``).
        images: the crops, RGB in [0, 1].
        landmarks: 68 detected landmarks per crop, crop pixels.
        confidence: optional per-landmark weights (0 = missing).
        config: see `RigBuildConfig`.

    Shape:
        images (G, 3, H, W); landmarks (G, 68, 2); confidence (G, 68) or None.
    """
    g = check_rig_inputs(images, landmarks)
    dtype = model.dtype
    images, landmarks = images.to(dtype), landmarks.to(dtype)
    if config.contour_weight != 1.0:
        confidence = torch.ones(g, 68, dtype=dtype) if confidence is None else confidence.to(dtype).clone()
        confidence[:, :17] *= config.contour_weight
    timings: Dict[str, float] = {}
    bounds = expression_bounds(model)

    start = time.perf_counter()
    geometry = LandmarkGeometry(model)
    init = fit_landmarks(geometry, landmarks, confidence=confidence,
                         config=LandmarkFitConfig(landmark_sigma=config.landmark_sigma,
                                                  identity_weight=config.identity_weight,
                                                  expression_weight=config.expression_weight,
                                                  rounds=2, iterations=6))
    params = _grouped(init.params)
    timings["coarse fit"] = time.perf_counter() - start

    start = time.perf_counter()
    free = [IDENTITY, *_PER_IMAGE]
    solver_config = dataclasses.replace(config.solver, max_iterations=config.iterations)
    for r in range(config.rounds):
        if r > 0:  # from the second round on, the expressions as the rig will hold them
            geometry = LandmarkGeometry(_with_transferred_expressions(model, params[IDENTITY][0]))
        corr = _contour(geometry, params)
        result = solve(_landmark_blocks(geometry, landmarks, corr, config, confidence), params, free=free,
                       per_group=list(_PER_IMAGE), bounds=bounds, config=solver_config)
        params = result.params
    timings["landmark fit"] = time.perf_counter() - start

    start = time.perf_counter()
    sh = None
    albedo = model.albedo_mean
    final_model = None
    if config.photometric:
        current = _with_transferred_expressions(model, params[IDENTITY][0])
        geometry_r = LandmarkGeometry(current)
        identity, _, per_image = refine_from_shading(
            current, images, _flat(params), geometry_r, _contour(geometry_r, params), landmarks,
            prior_albedo=albedo_prior(model), mask=above_chin_mask(model, config.neck_margin),
            landmark_sigma=config.landmark_sigma, landmark_huber=config.landmark_huber,
            identity_weight=config.identity_weight, expression_weight=config.expression_weight,
            bounds=bounds.get(EXPRESSION), confidence=confidence, config=config.shading)
        params = {IDENTITY: identity[None], **{k: per_image[k][None] for k in _PER_IMAGE}}
        final_model = _with_transferred_expressions(model, identity)
        if not config.shading.per_image:
            # Poses and expressions follow the refined face (identity held: this is the rig's model).
            geometry = LandmarkGeometry(final_model)
            params = solve(_landmark_blocks(geometry, landmarks, _contour(geometry, params), config, confidence),
                           params, free=list(_PER_IMAGE), per_group=list(_PER_IMAGE), bounds=bounds,
                           config=solver_config).params
        flat = _flat(params)
        _, albedo, sh = observe_appearance(model, images, final_model.vertices(flat[IDENTITY], flat[EXPRESSION]),
                                           WeakPerspective.from_params(flat), neck_margin=config.neck_margin)
    timings["photometric refinement"] = time.perf_counter() - start

    start = time.perf_counter()
    identity = params[IDENTITY][0].detach()
    flat = {k: v.detach() for k, v in _flat(params).items()}
    if final_model is None:
        final_model = _with_transferred_expressions(model, identity)
    final_geometry = LandmarkGeometry(final_model)
    corr = _contour(final_geometry, params)
    corrective = rig_code = None
    if config.rig_rank > 0:
        corrective = CorrectiveBasis.from_model(model, rank=config.rig_rank)
        rig_code = fit_rig_code(final_geometry, corrective, flat, corr, landmarks, confidence,
                                sigma=config.landmark_sigma, weight=config.rig_code_weight)
    # final_model's expressions are already transferred to this identity: no second transfer.
    rig = Rig.from_model(final_model, identity, rig_code=rig_code, corrective=corrective,
                         albedo=None if albedo is None else albedo.detach(), transfer=False)
    meshes = rig.vertices(flat[EXPRESSION])
    uv = WeakPerspective.from_params(flat).project(landmark_points(meshes[:, final_geometry.vertex_ids], corr))
    timings["rig code"] = time.perf_counter() - start
    err = (uv - landmarks).norm(dim=-1).mean(-1)
    out_params = {n: flat[n] for n in _PER_IMAGE}
    out_params[IDENTITY] = identity
    logger.info("rig from %d images: landmark error %.2f crop px (mean), stages %s", g, float(err.mean()),
                ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
    return RigBuildResult(rig=rig, params=out_params, sh=None if sh is None else sh.detach(),
                          landmarks_2d=uv.detach(), reprojection_error=err.detach(), timings=timings,
                          meshes=meshes.detach())


def project_rig_landmarks(rig: Rig, geometry: LandmarkGeometry, flat: Dict[str, Tensor],
                          corr: Correspondence) -> Tensor:
    """Projected 68 landmarks of the rig's per-image meshes. Shape: -> (G, 68, 2)."""
    points = rig.vertices(flat[EXPRESSION])[:, geometry.vertex_ids]
    return WeakPerspective.from_params(flat).project(landmark_points(points, corr))


def fit_rig_code(geometry: LandmarkGeometry, corrective: CorrectiveBasis, flat: Dict[str, Tensor],
                 corr: Correspondence, landmarks: Tensor, confidence: Optional[Tensor], sigma: float,
                 weight: float) -> Tensor:
    """The rig code (per-person corrective blendshapes) from all images' landmarks, in closed form.

    With expressions and poses held, the landmarks are linear in the code (the corrective is
    linear in it and weak perspective is linear in the points), so the regularised least squares
    ``sum_g |r_g + A_g z|^2 / sigma^2 + weight |z|^2`` is solved directly.

    Shape:
        flat: per image (G, ...) parameters; landmarks (G, 68, 2) -> code (K, R).
    """
    vids = geometry.vertex_ids
    directions = corrective.directions[:, vids].to(landmarks.dtype)  # (R, N, 3)
    masks = corrective.masks[:, vids].to(landmarks.dtype)  # (K, N)
    expression = flat[EXPRESSION]
    # d(point n of image g)/d z[k, r] = e_gk * mask_k[n] * U_r[n]  -> (G, N, 3, K, R)
    d_vertex = torch.einsum("gk,kn,rnc->gnckr", expression, masks, directions)
    g = expression.shape[0]
    idx = corr.indices.reshape(g, 136)
    gathered = d_vertex[torch.arange(g)[:, None], idx].reshape(g, 68, 2, *d_vertex.shape[2:])
    d_landmark = (gathered * corr.weights[..., None, None, None].to(gathered.dtype)).sum(2)  # (G, 68, 3, K, R)
    pose = WeakPerspective.from_params(flat)
    A = torch.einsum("gij,gnjkr->gnikr", pose.jacobian(), d_landmark)
    pts = landmark_points(geometry.points(flat[IDENTITY], flat[EXPRESSION]), corr)
    r = pose.project(pts) - landmarks
    c = torch.ones(g, 68, dtype=r.dtype) if confidence is None else confidence.to(r.dtype)
    k, rank = corrective.code_shape
    A = (A * c[..., None, None, None].sqrt()).reshape(-1, k * rank)
    b = (r * c[..., None].sqrt()).reshape(-1)
    lhs = A.T @ A / sigma ** 2 + weight * torch.eye(k * rank, dtype=A.dtype)
    return torch.linalg.solve(lhs, -(A.T @ b) / sigma ** 2).reshape(k, rank)
