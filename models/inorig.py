"""The network: CNN features, a regressed start, learned in-network optimization, neural rig decoder.

``INORig(face)(images, landmarks)`` for P persons with G crops each:

1. `models.backbone.FeatureExtractor` on every crop: a dense feature map (stride 4) and a pooled
   vector.
2. `models.heads.InitHead`: rotation, expression and identity regressed from the pooled features
   and the landmarks, with a confidence per landmark; scale and translation in closed form from
   the landmarks.
3. ``levels`` x ``iterations`` unrolled Gauss-Newton steps of `core.fitting.solver.solve` (identity shared
   by the person's images, the rest per image) over: 68-point landmarks with sliding contour
   (weighted by the learned confidences),
   priors centred on the regression, and from the second level on the feature-metric terms
   (learned features sampled at projected vertices must agree across the images and with the
   rig's canonical per-vertex features, `core.fitting.photometric.sampled_block`). Damping and block
   weights per iteration come from `models.solver_control.SolverControlNet`. In training the
   steps are differentiable, so everything is trained end to end.
4. `models.rig_decoder.NeuralRigDecoder`: fused features + identity -> corrective blendshapes.

The rig is the model's neutral moved by the identity code, with the generic expression basis plus
the decoded correctives (the synthetic ground truth the network learns from has the generic
expressions; the network's correctives learn any person-specific change on top).
``build_rig`` wraps it for one person and returns the classical builder's `RigBuildResult`
(albedo and lighting estimated in closed form afterwards), so the pipeline and demo take either.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from core.camera import WeakPerspective, euler_to_matrix
from core.face_model.model import MorphableModel, VertexSubset
from core.fitting.landmark_geometry import Correspondence, LandmarkGeometry, project_landmarks, update_contour
from core.fitting.photometric import sample_vertex_subset, sampled_block
from core.fitting.residuals import expression_bounds, landmark_block, prior_block
from core.fitting.solver import SolverConfig, SolveResult, solve
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D
from core.mesh import vertex_neighbours
from core.render.visibility import vertex_visibility
from core.rig.builder import RigBuildResult, check_rig_inputs, observe_appearance
from core.rig.rig import CorrectiveBasis, Rig
from core.sampling import sample_points
from models.backbone import FEATURE_STRIDE, FeatureExtractor
from models.heads import INNER_LANDMARKS, InitHead, fit_similarity, normalize_landmarks
from models.rig_decoder import NeuralRigDecoder
from models.solver_control import SolverControlNet

logger = logging.getLogger(__name__)

__all__ = ["NetworkConfig", "NetworkOutput", "INORig", "BLOCK_NAMES"]

_PER_IMAGE = (EXPRESSION, ROTATION, SCALE, TRANS2D)
# Crop pixels -> feature-map pixels (pixel centres at integers in both): u_map = u / 4 - 3/8.
_MAP_SCALE = 1.0 / FEATURE_STRIDE
_MAP_OFFSET = -0.5 * (FEATURE_STRIDE - 1) / FEATURE_STRIDE
BLOCK_NAMES = ("landmarks", "identity_prior", "expression_prior", "feature_consistency",
               "feature_canonical")


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture and unrolled-solver settings (saved with the weights).

    Attributes:
        image_size: side of the square crops.
        widths, blocks: backbone stages (channels, BasicBlocks).
        feature_channels: channels of the dense feature map used by the feature-metric term.
        feature_vertices: vertices (of the narrow face) carrying feature-metric residuals.
        levels, iterations: unrolled solver levels x iterations per level; the feature-metric
            term is on from level ``feature_level`` on.
        landmark_sigma: base landmark noise (px; block weight 1 / sigma^2), Huber threshold in px.
        base_damping: damping before the learned multiplier.
        rig_rank, rig_code_dim: corrective basis rank per expression and rig code size.
        head_hidden: hidden width of the regression head and rig decoder.
    """

    image_size: int = 256
    widths: Tuple[int, ...] = (32, 64, 128, 256)
    blocks: Tuple[int, ...] = (1, 1, 1, 1)
    feature_channels: int = 8
    feature_vertices: int = 192
    levels: int = 2
    iterations: int = 3
    feature_level: int = 1
    landmark_sigma: float = 4.0
    landmark_huber: Optional[float] = 4.0
    base_damping: float = 1e-2
    rig_rank: int = 6
    rig_code_dim: int = 32
    head_hidden: int = 256

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> "NetworkConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - names
        if unknown:
            raise ValueError(f"network config: unknown entries {sorted(unknown)}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in values.items()})


@dataclass
class NetworkOutput:
    """What the network returns for P persons x G images.

    Attributes:
        params: final ``identity`` (P, n_id), ``expression`` (P, G, K), ``rotation`` (P, G, 3),
            ``scale`` (P, G), ``trans2d`` (P, G, 2).
        stages: the same after the regression and after each solver level (deep supervision).
        rig_code: (P, Z). correctives: (P, K, V, 3) corrective blendshapes.
        neutral: (P, V, 3) mm. vertices: (P, G, V, 3) per-image meshes, object space, mm.
        block_costs: per level, block name -> (P,) unweighted final cost.
        cost_history: per level, (P, iterations + 1) weighted solver cost before and after each
            iteration (logged per level and iteration in training).
    """

    params: Dict[str, Tensor]
    stages: List[Dict[str, Tensor]]
    rig_code: Tensor
    correctives: Tensor
    neutral: Tensor
    vertices: Tensor
    block_costs: List[Dict[str, Tensor]] = field(default_factory=list)
    cost_history: List[Tensor] = field(default_factory=list)


def _flat(params: Dict[str, Tensor]) -> Dict[str, Tensor]:
    """(P, G, ...) per image, identity (P, n) -> everything per image (P*G, ...)."""
    g = params[EXPRESSION].shape[1]
    out = {n: params[n].reshape(-1, *params[n].shape[2:]) for n in _PER_IMAGE}
    ident = params[IDENTITY]
    out[IDENTITY] = ident[:, None].expand(ident.shape[0], g, ident.shape[1]).reshape(-1, ident.shape[1])
    return out


class INORig(nn.Module):
    """Riggable face reconstruction network with in-network optimization (see module docstring).

    Args:
        face: the face model region it reconstructs (e.g. ICT ``region('face')``).
        config: `NetworkConfig`.
    """

    def __init__(self, face: MorphableModel, config: NetworkConfig = NetworkConfig()) -> None:
        super().__init__()
        if face.landmark_indices is None:
            raise ValueError(f"face model {face.name}: the network needs 68 landmark indices")
        self.config = config
        self.backbone = FeatureExtractor(config.widths, config.blocks, feature_channels=config.feature_channels)
        d = self.backbone.out_dim
        self.head = InitHead(d, face.n_identity, face.n_expression, config.head_hidden)
        corrective = CorrectiveBasis.from_model(face.to(dtype=torch.float32), rank=config.rig_rank)
        self.rig_decoder = NeuralRigDecoder(corrective, d, face.n_identity, config.rig_code_dim, config.head_hidden)
        self.control = SolverControlNet(BLOCK_NAMES, config.levels, config.iterations, config.base_damping)
        ids = sample_vertex_subset(face, config.feature_vertices)
        self.register_buffer("feature_ids", ids)
        self.canonical = nn.Parameter(torch.zeros(len(ids), config.feature_channels))
        self._set_face(face.to(dtype=torch.float32))

    # ------------------------------------------------------------------ face model data
    def _set_face(self, face: MorphableModel) -> None:
        self.face = face
        self._neighbours: Optional[Tensor] = None
        self.geometry = LandmarkGeometry(face)
        self.subset = VertexSubset(face, self.feature_ids.cpu().to(face.device))
        self.bounds = expression_bounds(face)

    def place(self, device: torch.device | str) -> "INORig":
        """Move the network and its face model data to ``device``."""
        self.to(device)
        self._set_face(self.face.to(device))
        return self

    def neighbours(self) -> Tensor:
        """One-ring vertex neighbours of the face (albedo smoothing), computed once (~0.1 s)."""
        if self._neighbours is None:
            self._neighbours = vertex_neighbours(self.face.triangles, self.face.n_vertices)
        return self._neighbours

    @property
    def device(self) -> torch.device:
        return self.canonical.device

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, landmarks: Tensor, confidence: Optional[Tensor] = None,
                solve_steps: bool = True) -> NetworkOutput:
        """Reconstruct P persons from G crops each.

        Args:
            images: crops, RGB in [0, 1].
            landmarks: 68 landmarks per crop, crop pixels.
            confidence: optional per-landmark weights (0 = missing).
            solve_steps: run the unrolled solver (False: regression only).

        Shape:
            images (P, G, 3, S, S); landmarks (P, G, 68, 2); confidence (P, G, 68) -> NetworkOutput.
        """
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must be (P, G, 3, H, W), got {tuple(images.shape)}")
        p, g, _, h, w = images.shape
        if h != self.config.image_size or w != self.config.image_size:
            raise ValueError(f"images must be {self.config.image_size} x {self.config.image_size} crops "
                             f"(the size the network was trained on), got {h} x {w}")
        if landmarks.shape != (p, g, 68, 2):
            raise ValueError(f"landmarks must be ({p}, {g}, 68, 2), got {tuple(landmarks.shape)}")
        if confidence is not None and confidence.shape != (p, g, 68):
            raise ValueError(f"confidence must be ({p}, {g}, 68), got {tuple(confidence.shape)}")
        feats, pooled = self.backbone(images.reshape(p * g, 3, h, w))
        feats = feats.reshape(p, g, *feats.shape[1:])
        pooled = pooled.reshape(p, g, -1)
        init = self.head(pooled, normalize_landmarks(landmarks, h))
        params = {IDENTITY: init["identity"], EXPRESSION: init["expression"], ROTATION: init["rotation"]}
        inner = list(INNER_LANDMARKS)
        identity_flat = init["identity"][:, None].expand(p, g, -1).reshape(p * g, -1)
        pts = self.geometry.points(identity_flat, init["expression"].reshape(p * g, -1))
        sim = fit_similarity(pts[:, self.geometry.default_indices[inner]], params[ROTATION].reshape(-1, 3),
                             landmarks.reshape(p * g, 68, 2)[:, inner])
        params[SCALE] = sim["scale"].reshape(p, g)
        params[TRANS2D] = sim["trans2d"].reshape(p, g, 2)
        stages = [dict(params)]
        costs: List[Dict[str, Tensor]] = []
        history: List[Tensor] = []
        if solve_steps:
            for level in range(self.config.levels):
                result = self._solve_level(level, params, init, feats, landmarks, confidence, (h, w))
                params = dict(result.params)
                stages.append(dict(params))
                costs.append(result.block_costs)
                history.append(result.history.detach())
        rig_code, correctives = self.rig_decoder(pooled, params[IDENTITY])
        neutral, vertices = self.meshes(params[IDENTITY], params[EXPRESSION], correctives)
        return NetworkOutput(params=params, stages=stages, rig_code=rig_code, correctives=correctives,
                             neutral=neutral, vertices=vertices, block_costs=costs, cost_history=history)

    def meshes(self, identity: Tensor, expression: Tensor, correctives: Optional[Tensor] = None
               ) -> Tuple[Tensor, Tensor]:
        """Neutral and per-image meshes of the rig (object space, mm).

        Shape:
            identity (P, n_id); expression (P, G, K); correctives (P, K, V, 3) or None
            -> neutral (P, V, 3), vertices (P, G, V, 3).
        """
        face = self.face
        neutral = face.neutral + torch.einsum("pi,ivc->pvc", identity, face.identity_basis)
        vertices = neutral[:, None] + torch.einsum("pgk,kvc->pgvc", expression, face.expression_basis)
        if correctives is not None:
            vertices = vertices + torch.einsum("pgk,pkvc->pgvc", expression, correctives)
        return neutral, vertices

    # ------------------------------------------------------------------ in-network optimization
    def _contour(self, params: Dict[str, Tensor]) -> Correspondence:
        flat = _flat(params)
        pts = self.geometry.points(flat[IDENTITY], flat[EXPRESSION])
        return update_contour(self.geometry, pts, euler_to_matrix(flat[ROTATION]))

    def _feature_terms(self, params: Dict[str, Tensor], feats: Tensor, size: Tuple[int, int]
                       ) -> Tuple[Tensor, Tensor, Tensor]:
        """Visibility of the feature vertices and the two feature-metric targets.

        Shape: -> weights (P, G, M), consistency targets (P, G, M, C), canonical (P, G, M, C).
        """
        p, g, c = feats.shape[:3]
        flat = _flat(params)
        with torch.no_grad():
            face = self.face
            verts = face.vertices(flat[IDENTITY].detach(), flat[EXPRESSION].detach())
            screen = WeakPerspective.from_params(flat).detach().screen(verts)
            visible = vertex_visibility(screen.cpu(), face.triangles.cpu(), size).to(feats.device)
            weights = visible[:, self.feature_ids].to(feats.dtype).reshape(p, g, -1)
        uv = WeakPerspective.from_params(flat).project(self.subset.points(flat[IDENTITY], flat[EXPRESSION]))
        sampled = sample_points(feats.reshape(p * g, *feats.shape[2:]), uv * _MAP_SCALE + _MAP_OFFSET)
        sampled = sampled.reshape(p, g, -1, c)
        mean = (weights[..., None] * sampled).sum(1, keepdim=True) / weights.sum(1)[:, None, :, None].clamp(min=1e-6)
        canonical = self.canonical[None, None].expand(p, g, -1, -1)
        return weights, mean.expand(-1, g, -1, -1), canonical

    def _solve_level(self, level: int, params: Dict[str, Tensor], init: Dict[str, Tensor], feats: Tensor,
                     landmarks: Tensor, confidence: Optional[Tensor], size: Tuple[int, int]) -> SolveResult:
        cfg = self.config
        learned = init["landmark_confidence"]
        conf = learned if confidence is None else learned * confidence.to(learned.dtype)
        lm = landmark_block(self.geometry, landmarks, "weak", correspondence=self._contour(params),
                            confidence=conf, weight=1.0 / cfg.landmark_sigma ** 2, name="landmarks")
        blocks = [dataclasses.replace(lm, huber=cfg.landmark_huber),
                  prior_block(IDENTITY, mean=init["identity"], name="identity_prior"),
                  prior_block(EXPRESSION, mean=init["expression"], per_group=True, name="expression_prior")]
        if level >= cfg.feature_level:
            weights, mean, canonical = self._feature_terms(params, feats, size)
            m, c = mean.shape[2], mean.shape[3]
            base = 136.0 / (m * c)
            for name, target in (("feature_consistency", mean), ("feature_canonical", canonical)):
                blocks.append(sampled_block(self.subset, feats, target, weights, weight=base, blur_sigma=0.5,
                                            uv_scale=_MAP_SCALE, uv_offset=_MAP_OFFSET, name=name))
        base_weights = {b.name: torch.as_tensor(b.weight, dtype=feats.dtype, device=feats.device)
                        for b in blocks}
        differentiable = self.training and torch.is_grad_enabled()
        config = SolverConfig(max_iterations=cfg.iterations, mode="fixed", adaptive=False,
                              damping=cfg.base_damping, differentiable=differentiable)
        return solve(blocks, params, free=[IDENTITY, *_PER_IMAGE], per_group=list(_PER_IMAGE),
                     bounds=self.bounds, config=config, control=self.control.controller(level, base_weights))

    # ------------------------------------------------------------------ one person -> rig
    def projected_landmarks(self, params: Dict[str, Tensor]) -> Tensor:
        """Projected model landmarks (sliding contour). Shape: params of P x G -> (P, G, 68, 2)."""
        uv = project_landmarks(self.geometry, _flat(params), "weak", "dynamic")
        return uv.reshape(*params[EXPRESSION].shape[:2], 68, 2)

    @torch.no_grad()
    def build_rig(self, images: Tensor, landmarks: Tensor, *, confidence: Optional[Tensor] = None,
                  solve_steps: bool = True, appearance: bool = True) -> RigBuildResult:
        """One person's rig and per-image parameters from G crops (the classical builder's result type).

        Shape:
            images (G, 3, S, S) in [0, 1]; landmarks (G, 68, 2) crop pixels; confidence (G, 68) or None.
        """
        g = check_rig_inputs(images, landmarks)
        was_training = self.training
        self.eval()
        timings: Dict[str, float] = {}
        start = time.perf_counter()
        dev = self.device
        out = self(images[None].to(dev, torch.float32), landmarks[None].to(dev, torch.float32),
                   None if confidence is None else confidence[None].to(dev, torch.float32), solve_steps)
        self.train(was_training)
        timings["network"] = time.perf_counter() - start
        start = time.perf_counter()
        face = self.face
        flat = {n: v.cpu() for n, v in _flat(out.params).items()}
        blend = (face.expression_basis + out.correctives[0]).cpu()
        albedo = sh = None
        verts = out.vertices[0].cpu()
        if appearance:
            _, albedo, sh = observe_appearance(face.to("cpu"), images.float(), verts, WeakPerspective.from_params(flat),
                                               neighbours=self.neighbours().cpu())
        timings["appearance"] = time.perf_counter() - start
        if albedo is None:
            albedo = torch.full_like(out.neutral[0].cpu(), 0.6)
        identity = out.params[IDENTITY][0].cpu()
        rig = Rig(neutral=out.neutral[0].cpu(), blendshapes=blend, albedo=albedo.float(),
                  triangles=face.triangles.cpu(), vertex_ids=face.vertex_ids.cpu(),
                  expression_names=list(face.expression_names), model=face.name,
                  expression_range=face.expression_range,
                  codes={"identity": identity.clone(), "rig_code": out.rig_code[0].cpu().clone()})
        uv = self.projected_landmarks(out.params)[0].cpu()
        err = (uv - landmarks.to(uv.dtype)).norm(dim=-1).mean(-1)
        params = {n: flat[n] for n in _PER_IMAGE}
        params[IDENTITY] = identity
        logger.info("network rig from %d images: landmark error %.2f crop px (mean), stages %s", g, float(err.mean()),
                    ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        return RigBuildResult(rig=rig, params=params, sh=sh, landmarks_2d=uv, reprojection_error=err,
                              timings=timings, meshes=verts.float())
