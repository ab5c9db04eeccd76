"""Track a video with a fixed rig: per-frame expression, head pose, gaze and SH lighting, streaming.

The rig (one person's neutral + blendshapes + albedo) is fixed; each frame with landmarks gets

1. expression weights and a weak-perspective pose by Levenberg-Marquardt (`core.fitting.solver`),
   warm-started from the previous frame, over these residual blocks:

   - the landmarks: MediaPipe's dense mesh points where the frame has them (``dense``), each tied
     to the rig's surface by a calibrated correspondence (`DenseTies`) and weighted by its measured
     noise, the face-outline points sliding along the outline (only their distance across it
     counts), the lid points counting across the eye only (a closing eye's points slide along
     the lid in MediaPipe's mesh; `TrackerConfig.lid_across`); else the 68 iBUG points, the
     jawline sliding with the pose (`update_contour`) and down-weighted
     (`core.fitting.points.point_block` in both cases);
   - the expression model (`core.fitting.expression_priors`): a sparsity prior (L1 + L2: small
     evidence leaves a shape at 0), exclusive pairs, left/right agreement with a Huber threshold
     (a wink pays little), ARKit's mouthClose never above jawOpen (a penalty, then a clamp);
   - temporal smoothness: the difference to the previous frame's weights (per shape: blinks are
     fast, so they are held back less).

   The weights are bounded to [0, 1] (per-shape upper bounds in `TrackerConfig.upper_bounds`).
2. the gaze (`core.fitting.gaze`) from MediaPipe's iris points: each eyeball's rotation centre
   placed from the rig's eye landmarks (`EyeModel`), the iris centre's offset from it inverted for
   the direction; held while the eye is closed. The eyeLook* weights are then fixed (not fitted)
   to the gaze's values, so that a lowered gaze lowers the lids through eyeLookDown instead of
   reading as a blink. Without iris points the eyeLook* weights stay 0 and the gaze is None.
3. second-order SH lighting in closed form from the frame's colours at a fixed subset of visible
   vertices, given the rig's albedo (`core.lighting.solve_sh`).

The person's rest face is the zero of their expressions: `RigTracker.calibrate_rest` fits the
head pose alone (weights 0) on frames spread over the video and keeps, per landmark (and per iris),
the median of the residual taken back into object space; later fits add these offsets to the
rig's points. A face at rest then reads all zeros even where the detector or the rig place the
points differently from the rig's neutral (a detector's bias is the same on every frame of a
person; an expression is not).

The fit runs in a normalised frame around the frame's 68 landmarks (their bounding square, grown
by 1.2, spans ``crop_size`` pixels, as the rig builder's crops), so the landmark noise and the
priors weigh the same whatever the face's size in the video; the pose is reported in the video's
pixels (the normalisation is a scale and a shift, so weak perspective stays exact).

Frames without landmarks, or whose fit fails (68-point reprojection error above ``max_error`` eye
distances), carry the previous frame's parameters over and are flagged (``detected`` False); the
next good frame starts afresh (closed-form pose, full fit). Only the previous frame is kept, so
memory does not grow with the video.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from core.camera import WeakPerspective, euler_to_matrix, square_frame
from core.face_model.model import MorphableModel
from core.fitting.expression_priors import ExpressionPriors, coupling_block, sparsity_block, symmetry_block
from core.fitting.fit_landmarks import LandmarkFitConfig, fit_landmarks
from core.fitting.gaze import (EYE_LANDMARKS, ICT_EYES, EyeModel, estimate_gaze, gaze_from_weights,
                               gaze_weights)
from core.fitting.landmark_geometry import LandmarkGeometry, landmark_points, update_contour
from core.fitting.photometric import observe, sample_vertex_subset
from core.fitting.points import outline_normals, point_block, project_points, surface_points
from core.fitting.residuals import prior_block
from core.fitting.solver import SolverConfig, solve
from core.fitting.variables import EXPRESSION, ROTATION, SCALE, TRANS2D
from core.lighting import solve_sh
from core.rig.rig import Rig

logger = logging.getLogger(__name__)

__all__ = ["TrackerConfig", "FrameTrack", "DenseTies", "RigTracker"]

_POSE = (ROTATION, SCALE, TRANS2D)
_FREE = (EXPRESSION, ROTATION, SCALE, TRANS2D)
_GAZE_PREFIX = "eyeLook"


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of `RigTracker` (measured effects: docs/benchmarks.md, "Expression fidelity").

    Attributes:
        crop_size: side (pixels) of the normalised frame spanned by 1.2x the landmarks' box.
        landmark_sigma: 68-point landmark noise in normalised pixels (weight 1 / sigma^2).
        dense_sigma: noise (normalised pixels) of a typical dense mesh point; larger than the
            points' own noise because neighbouring points share their errors.
        expression_weight: quadratic part (l2) of the sparsity prior on the weights.
        sparsity: linear part (l1) of the sparsity prior: the slope at 0 that evidence must beat.
        quiet_shapes: (name prefix, factor): shapes whose sparsity prior is multiplied by the
            factor (rarely used shapes that soak up detector bias when free).
        exclusive_weight: weight of the exclusive-pair penalty (`EXCLUSIVE_PAIRS`).
        dependent_weight: weight of the dependent-pair penalty (mouthClose above jawOpen).
        symmetry_weight: weight of left/right agreement; ``symmetry_huber`` its Huber threshold.
        temporal_weight: weight of the difference to the previous frame's weights (0 = none).
        fast_shapes: (name prefix, factor) shapes whose temporal weight is multiplied by factor.
        upper_bounds: (name prefix, upper bound) per-shape caps below 1.
        iterations: LM iterations per frame after the first (warm start). 2 and 3 gave the same
            fidelity figures to 0.01 on every row (docs/benchmarks.md); 2 is a third faster.
        first: fit of the first frame and of frames after a gap (closed-form pose, then coarse to
            fine as `fit_landmarks`) before the full fit.
        first_iterations: LM iterations of the full fit on such a frame.
        max_error: a fit whose mean 68-point reprojection error exceeds this fraction of the
            outer-eye-corner distance is rejected (frame flagged, parameters carried over).
        held_expressions: expressions held at 0 unless the iris gaze sets them (name prefixes).
        lid_gaze: gaze shapes fitted from the lids like any other shape (not held): MediaPipe's
            iris follows the upper lid vertically (on the renders it moves about half as far as
            the lid, in a blink as in a lowered gaze), so the vertical gaze is told from a blink
            by the lids' shape (eyeLookDown lowers both lids, eyeBlink the upper one).
        contour_confidence: weight of the jawline landmarks (0-16) of the 68-point fit.
        use_dense: fit the dense mesh points where a frame has them (else the 68).
        lid_across: the dense lid points (`DenseTies.eyes`, corners excepted) count only across the
            eye, perpendicular to the line through its corners: on a closing eye MediaPipe moves
            them along the lid in ways the rig's shapes do not, and that sideways residual held a
            real blink at about half its weight.
        lid_weight: weight of those lid points relative to the other dense points.
        gaze: estimate the gaze from iris points where a frame has them.
        conjugate_gaze: both eyes share one gaze (the mean of the two estimates).
        blink_hold: an eye whose eyeBlink exceeds this keeps its previous gaze (the iris is hidden).
        gaze_smoothing: weight of the previous frame's gaze in an exponential smoother, applied
            only to changes smaller than ``gaze_saccade`` radians (saccades pass at once).
        lighting: estimate SH lighting per frame (needs the frame's image).
        light_vertices, light_raster, sh_reg: the lighting's vertex sample, z-buffer side and
            ridge weight (`solve_sh`).
    """

    crop_size: float = 256.0
    landmark_sigma: float = 3.0
    dense_sigma: float = 6.0
    expression_weight: float = 2.0
    sparsity: float = 1.0
    quiet_shapes: Tuple[Tuple[str, float], ...] = (
        ("cheekPuff", 4.0), ("noseSneer", 2.0), ("jawLeft", 3.0), ("jawRight", 3.0), ("jawForward", 3.0),
        ("mouthLeft", 2.0), ("mouthRight", 2.0), ("mouthRoll", 2.0), ("mouthShrug", 2.0), ("mouthClose", 2.0),
        ("mouthDimple", 2.0), ("mouthPress", 2.0))
    exclusive_weight: float = 64.0
    dependent_weight: float = 256.0
    symmetry_weight: float = 8.0
    symmetry_huber: Optional[float] = 0.5
    temporal_weight: float = 32.0
    fast_shapes: Tuple[Tuple[str, float], ...] = (("eyeBlink", 0.15), ("eyeSquint", 0.5), ("eyeWide", 0.5))
    upper_bounds: Tuple[Tuple[str, float], ...] = ()
    iterations: int = 2
    first: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    first_iterations: int = 8
    max_error: float = 0.2
    held_expressions: Tuple[str, ...] = (_GAZE_PREFIX,)
    lid_gaze: Tuple[str, ...] = ("eyeLookUp", "eyeLookDown")
    contour_confidence: float = 0.3
    use_dense: bool = True
    lid_across: bool = True
    lid_weight: float = 4.0
    gaze: bool = True
    conjugate_gaze: bool = True
    blink_hold: float = 0.5
    gaze_smoothing: float = 0.5
    gaze_saccade: float = math.radians(4.0)
    lighting: bool = True
    light_vertices: int = 1000
    light_raster: int = 128
    sh_reg: float = 1e-3

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.crop_size <= 0 or self.temporal_weight < 0:
            raise ValueError(f"TrackerConfig: expected iterations >= 1, crop_size > 0, temporal_weight >= 0; "
                             f"got {self.iterations}, {self.crop_size}, {self.temporal_weight}")
        if self.expression_weight <= 0 or self.sparsity < 0:
            raise ValueError(f"TrackerConfig: expected expression_weight > 0 and sparsity >= 0, got "
                             f"{self.expression_weight}, {self.sparsity}")


@dataclass
class FrameTrack:
    """One frame's tracking result (tensors without a batch axis, pixels of the video frame).

    Attributes:
        index: frame number.
        detected: parameters were fitted to this frame (False: no face or a failed fit; the
            parameters are the previous frame's).
        valid: the frame has parameters (False only before the first fitted frame).
        expression: (K,) rig expression weights (eyeLook* from the gaze).
        rotation: (3,) Euler angles (pitch, yaw, roll), radians.
        scale: () pixels per mm (weak perspective).
        trans2d: (2,) pixels.
        sh: (9, 3) camera-space SH lighting, or None (no image, or lighting off).
        landmarks_2d: (68, 2) projected rig landmarks, or None where the frame was not fitted.
        landmarks: (68, 2) the frame's landmarks, or None.
        error: mean 68-point reprojection error / outer-eye-corner distance (NaN if not fitted).
        vertices: (V, 3) the rig's mesh at ``expression`` (object space, mm), computed once by the
            tracker for whoever renders the frame; None before the first fitted frame.
        gaze: (2, 2) eyes (left, right) x (yaw, pitch) radians (`core.fitting.gaze`), or None where
            the frame had no iris points.
    """

    index: int
    detected: bool
    valid: bool
    expression: Tensor
    rotation: Tensor
    scale: Tensor
    trans2d: Tensor
    sh: Optional[Tensor] = None
    landmarks_2d: Optional[Tensor] = None
    landmarks: Optional[Tensor] = None
    error: float = float("nan")
    vertices: Optional[Tensor] = None
    gaze: Optional[Tensor] = None

    @property
    def pose(self) -> WeakPerspective:
        """The head pose as a batch of one, in the video frame's pixels."""
        return WeakPerspective(self.rotation[None], self.scale[None], self.trans2d[None])

    def params(self) -> Dict[str, Tensor]:
        """Batched (1, ...) ``expression``, ``rotation``, ``scale``, ``trans2d``."""
        return {EXPRESSION: self.expression[None], **self.pose.as_params()}


# MediaPipe's lid outlines (the openings between the lids), each starting at a corner with the other
# corner at position 8: the subject's right eye (image left on a frontal face), then the left eye.
MEDIAPIPE_EYES = ((33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
                  (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466))


@dataclass(frozen=True)
class DenseTies:
    """Dense landmark points tied to the surface of the rig's face region (MediaPipe's 478).

    Attributes:
        triangle: (P, 3) int64 vertex ids of the face region; barycentric: (P, 3) weights.
        sigma: (P,) noise spread of each point, eye distances.
        contour: (P,) bool face-outline points (they slide along the outline).
        iris: (2, I) int64 the iris points of the eyes (left, right): centre and rim.
        n_vertices: vertex count of the region the ids refer to.
        eyes: (2, E) int64 each eye's lid outline (the opening between the lids), a corner first
            and the other corner at ``E // 2``, or None.
    """

    triangle: Tensor
    barycentric: Tensor
    sigma: Tensor
    contour: Tensor
    iris: Tensor
    n_vertices: int
    eyes: Optional[Tensor] = None

    @classmethod
    def from_correspondence(cls, corr: Any, iris_centres: Tuple[int, int] = (473, 468),
                            eyes: Optional[Sequence[Sequence[int]]] = MEDIAPIPE_EYES) -> "DenseTies":
        """From a `utils.landmarks.mesh.MeshCorrespondence`-like object (``triangle``,
        ``barycentric``, ``sigma``, ``contour``, ``iris``, ``n_vertices``). ``iris_centres``: the
        centre point of the left and of the right eye's iris (MediaPipe: 473, 468), each followed
        by its four rim points; ``eyes``: the lid outlines (MediaPipe's, `MEDIAPIPE_EYES`)."""
        iris = torch.tensor([list(range(c, c + 5)) for c in iris_centres], dtype=torch.long)
        return cls(torch.as_tensor(np.asarray(corr.triangle), dtype=torch.long),
                   torch.as_tensor(np.asarray(corr.barycentric), dtype=torch.float32),
                   torch.as_tensor(np.asarray(corr.sigma), dtype=torch.float32),
                   torch.as_tensor(np.asarray(corr.contour), dtype=torch.bool), iris, int(corr.n_vertices),
                   None if eyes is None else torch.tensor(eyes, dtype=torch.long))

    @property
    def n_points(self) -> int:
        return int(self.sigma.shape[0])


def _eye_distance(landmarks: Tensor) -> float:
    return float((landmarks[36] - landmarks[45]).norm())


def _matching(names: Sequence[str], prefixes: Sequence[Tuple[str, float]], base: float) -> Tensor:
    """(K,) ``base`` times the factor of the first prefix each name starts with (1 for none)."""
    out = torch.full((len(names),), float(base))
    for i, n in enumerate(names):
        factor = next((float(v) for prefix, v in prefixes if n.startswith(prefix)), 1.0)
        out[i] = base * factor
    return out


def _backproject(residual: Tensor, rotation: Tensor, scale: Tensor) -> Tensor:
    """Minimum-norm object-space offsets whose weak-perspective images are the residuals.

    Shape: residual (B, P, 2) pixels; rotation (B, 3); scale (B,) -> (B, P, 3) mm.
    """
    R = euler_to_matrix(rotation)
    D = scale[:, None, None] * torch.tensor([1.0, -1.0], dtype=R.dtype)[None, :, None] * R[:, :2]  # (B, 2, 3)
    pinv = torch.linalg.pinv(D)  # (B, 3, 2)
    return residual @ pinv.transpose(1, 2)


class _LightProbe:
    """Closed-form SH lighting of one frame from a fixed subset of the rig's vertices."""

    def __init__(self, rig_model: MorphableModel, config: TrackerConfig) -> None:
        self.model = rig_model
        self.config = config
        self.subset = sample_vertex_subset(rig_model, config.light_vertices)
        self.albedo = rig_model.albedo_mean[self.subset][None]
        # The normals of the subset need only the triangles around it (a third of the mesh).
        tris = rig_model.triangles
        touched = torch.zeros(rig_model.n_vertices, dtype=torch.bool)
        touched[self.subset] = True
        self.incident = tris[touched[tris].any(1)]

    def __call__(self, image: Tensor, vertices: Tensor, pose: WeakPerspective) -> Tensor:
        """Shape: image (1, 3, H, W) in [0, 1]; vertices (1, V, 3) -> sh (1, 9, 3)."""
        seen = observe(image, vertices, self.model.triangles, pose, subset=self.subset,
                       normal_triangles=self.incident, raster_size=self.config.light_raster)
        return solve_sh(self.albedo, seen.normals, seen.colors, seen.weights, reg=self.config.sh_reg)


class RigTracker:
    """Streaming tracker of one rig over video frames (call `step` once per frame, in order).

    Args:
        rig: the person's rig (fixed).
        template: the face model region the rig was built on (landmarks, jawlines, regions).
        config: see `TrackerConfig`.
        dense: how dense landmarks tie to the rig's surface (`DenseTies`), or None (68 points only).
        eyes: where the eyeballs turn (`EyeModel`); default `ICT_EYES` for ICT rigs, else no gaze.

    Example (a video's frames come from `utils.landmarks.tracking.track_video`):
        >>> from core.face_model import load_face_model
        >>> face = load_face_model("ict", "external/ICT-FaceKit").region("face")
        >>> rig = Rig.from_model(face, torch.zeros(face.n_identity))
        >>> tracker = RigTracker(rig, face, TrackerConfig(lighting=False))
        >>> turned = WeakPerspective(torch.tensor([[0.0, 0.3, 0.0]]), torch.tensor([2.0]), torch.tensor([[256.0, 256.0]]))
        >>> landmarks = turned.project(rig.neutral[None, face.landmark_indices])[0]  # (68, 2) pixels
        >>> track = tracker.step(landmarks)
        >>> track.detected, round(float(track.rotation[1]), 1), round(float(track.scale), 1)
        (True, 0.3, 2.0)
    """

    def __init__(self, rig: Rig, template: MorphableModel, config: TrackerConfig = TrackerConfig(),
                 dense: Optional[DenseTies] = None, eyes: Optional[EyeModel] = None) -> None:
        self.rig = rig
        self.config = config
        self.model = rig.as_model(template)
        dtype = self.model.dtype
        names = list(rig.expression_names)
        K = rig.n_expression
        self.geometry = LandmarkGeometry(self.model)
        self._confidence68 = torch.ones(68, dtype=dtype)
        self._confidence68[:17] = config.contour_confidence
        self._first = replace(config.first, landmark_sigma=config.landmark_sigma,
                              expression_weight=config.expression_weight)
        self._light = _LightProbe(self.model, config) if config.lighting else None
        self._identity = torch.zeros(1, self.model.n_identity, dtype=dtype)
        # The expression model.
        lid = tuple(config.lid_gaze)
        self._held = torch.tensor([n.startswith(tuple(config.held_expressions)) and not n.startswith(lid)
                                   for n in names])
        self._gaze_mask = torch.tensor([n.startswith(_GAZE_PREFIX) and not n.startswith(lid) for n in names])
        self._lid_pitch = any(p in lid for p in ("eyeLookUp", "eyeLookDown"))
        self._l2 = _matching(names, config.quiet_shapes, config.expression_weight).to(dtype)
        self._l1 = _matching(names, config.quiet_shapes, config.sparsity).to(dtype)
        self._temporal_std = (1.0 / _matching(names, config.fast_shapes, 1.0).sqrt()).to(dtype)
        self._upper = torch.ones(K, dtype=dtype)
        for i, n in enumerate(names):
            for prefix, cap in config.upper_bounds:
                if n.startswith(prefix):
                    self._upper[i] = min(float(self._upper[i]), float(cap))
        self._priors = ExpressionPriors.for_names(names)
        self._blink = [names.index(f"eyeBlink{s}") if f"eyeBlink{s}" in names else None for s in ("_L", "_R")]
        self._dependent = self._priors.dependent
        # Dense points on the rig's surface.
        self.dense = dense if (dense is not None and config.use_dense and dense.n_vertices == rig.n_vertices) else None
        if dense is not None and self.dense is None and config.use_dense:
            logger.warning("dense ties over %d vertices do not fit the rig's %d: 68 points only",
                           dense.n_vertices, rig.n_vertices)
        if self.dense is not None:
            d = self.dense
            fitted = torch.ones(d.n_points, dtype=torch.bool)
            fitted[d.iris.flatten()] = False  # the irises follow the gaze, not the surface
            self._dense_ids = torch.nonzero(fitted).flatten()
            tri, bary = d.triangle[self._dense_ids], d.barycentric[self._dense_ids]
            self._dense_neutral = surface_points(rig.neutral.to(dtype), tri, bary)  # (P, 3)
            self._dense_basis = surface_points(rig.blendshapes.to(dtype).permute(1, 2, 0), tri, bary)  # (P, 3, K)
            sigma = d.sigma[self._dense_ids].to(dtype)
            reference = float(sigma[~d.contour[self._dense_ids]].median())
            self._dense_confidence = (reference / sigma).clamp(max=1.0) ** 2
            self._lids: List[Tuple[Tensor, Tensor]] = []  # per eye: local ids of its lid points, of its corners
            if d.eyes is not None and config.lid_across:
                local = {int(k): i for i, k in enumerate(self._dense_ids)}
                for outline in d.eyes.tolist():
                    half = len(outline) // 2
                    corners = torch.tensor([local[outline[0]], local[outline[half]]])
                    lids = torch.tensor([local[k] for j, k in enumerate(outline) if j not in (0, half)])
                    self._lids.append((lids, corners))
                    self._dense_confidence[lids] *= config.lid_weight
            contour = d.contour[self._dense_ids]
            self._contour_local = torch.nonzero(contour).flatten()
            # Outline order: by angle around the outline points' centre on the neutral face.
            pts = self._dense_neutral[self._contour_local, :2]
            angle = torch.atan2(pts[:, 1] - pts[:, 1].mean(), pts[:, 0] - pts[:, 0].mean())
            self._contour_local = self._contour_local[angle.argsort()]
        # Eyes.
        self.eyes = eyes if eyes is not None else (ICT_EYES if str(rig.model).startswith("ict") else None)
        self._eye_centres = None
        if self.eyes is not None and config.gaze:
            ids = self.model.landmark_indices[torch.tensor(EYE_LANDMARKS)]  # (2, 6)
            self._eye_centres = self.eyes.centres(rig.neutral.to(dtype)[ids][None])[0]  # (2, 3)
        self.rest_offsets: Dict[str, Tensor] = {}
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Forget the past: the next frame is fitted from scratch (the rest calibration stays)."""
        self._last: Optional[FrameTrack] = None
        self._fresh = True  # the next fit starts from scratch (first frame, or after a gap)
        self._index = 0
        self._gaze: Optional[Tensor] = None

    @property
    def last(self) -> Optional[FrameTrack]:
        """The latest result."""
        return self._last

    def _carry(self, index: int, landmarks: Optional[Tensor]) -> FrameTrack:
        """A flagged frame: the previous parameters (neutral and no pose before the first fit)."""
        self._fresh = True
        last = self._last
        if last is None or not last.valid:
            k, dtype = self.model.n_expression, self.model.dtype
            return FrameTrack(index, False, False, torch.zeros(k, dtype=dtype), torch.zeros(3, dtype=dtype),
                              torch.tensor(float("nan"), dtype=dtype), torch.full((2,), float("nan"), dtype=dtype),
                              landmarks=landmarks)
        return FrameTrack(index, False, True, last.expression, last.rotation, last.scale, last.trans2d, last.sh,
                          None, landmarks, vertices=last.vertices, gaze=last.gaze)

    # ------------------------------------------------------------------ inputs
    def _check(self, landmarks: Any, dense: Any) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        dtype = self.model.dtype
        if landmarks is None:
            return None, None
        lms = torch.as_tensor(np.asarray(landmarks), dtype=dtype)
        if lms.shape != (68, 2):
            raise ValueError(f"landmarks: expected shape (68, 2), got {tuple(lms.shape)}")
        if not bool(torch.isfinite(lms).all()):
            return None, None
        pts = None
        if dense is not None and self.dense is not None:
            pts = torch.as_tensor(np.asarray(dense), dtype=dtype)
            if pts.shape != (self.dense.n_points, 2):
                raise ValueError(f"dense: expected shape ({self.dense.n_points}, 2), got {tuple(pts.shape)}")
            if not bool(torch.isfinite(pts).all()):
                pts = None
        return lms, pts

    def _points68(self, params: Dict[str, Tensor]) -> Tuple[Tensor, Tensor]:
        """The 68 landmarks as linear points at the current contour: neutral (1, 68, 3), basis (68, 3, K)."""
        g = self.geometry
        pts = g.points(None, params[EXPRESSION])
        corr = update_contour(g, pts, euler_to_matrix(params[ROTATION]))
        neutral = landmark_points(g.neutral[None], corr)
        idx, w = corr.indices[0], corr.weights[0].to(g.dtype)
        basis = (g.expression_basis[idx] * w[:, :, None, None]).sum(1)  # (68, 3, K)
        offset = self.rest_offsets.get("landmarks")
        if offset is not None:
            neutral = neutral + offset[None]
        return neutral, basis

    def _dense_block(self, target: Tensor) -> Any:
        """The dense points' block for normalised targets (1, P_all, 2)."""
        y = target[:, self._dense_ids]
        neutral = self._dense_neutral[None]
        offset = self.rest_offsets.get("dense")
        if offset is not None:
            neutral = neutral + offset[None]
        P = len(self._dense_ids)
        projector = torch.eye(2, dtype=y.dtype).repeat(1, P, 1, 1)
        normals = outline_normals(y[:, self._contour_local])
        projector[:, self._contour_local] = normals[..., :, None] * normals[..., None, :]
        for lids, corners in self._lids:  # across the eye only (TrackerConfig.lid_across)
            line = y[:, corners[1]] - y[:, corners[0]]                                  # (1, 2)
            across = torch.stack([-line[:, 1], line[:, 0]], -1) / line.norm(dim=-1, keepdim=True).clamp_min(1e-9)
            projector[:, lids] = (across[:, :, None] * across[:, None, :])[:, None]
        return point_block(neutral, self._dense_basis, y, confidence=self._dense_confidence[None],
                           projector=projector, weight=1.0 / self.config.dense_sigma ** 2, name="dense")

    # ------------------------------------------------------------------ fitting
    def _blocks(self, params: Dict[str, Tensor], target68: Tensor, dense: Optional[Tensor],
                previous: Optional[Tensor]) -> list:
        c = self.config
        if dense is not None:
            blocks = [self._dense_block(dense)]
        else:
            neutral, basis = self._points68(params)
            blocks = [point_block(neutral, basis, target68, confidence=self._confidence68[None],
                                  weight=1.0 / c.landmark_sigma ** 2, name="landmarks")]
        blocks.append(sparsity_block(self._l1, self._l2))
        if len(self._priors.exclusive) or len(self._priors.dependent):
            blocks.append(coupling_block(self._priors, c.exclusive_weight, c.dependent_weight))
        if len(self._priors.symmetric) and c.symmetry_weight > 0:
            blocks.append(symmetry_block(self._priors, torch.full((len(self._priors.symmetric),), c.symmetry_weight),
                                         huber=c.symmetry_huber))
        if previous is not None and c.temporal_weight > 0:
            blocks.append(prior_block(EXPRESSION, mean=previous, std=self._temporal_std, weight=c.temporal_weight,
                                      name="expression_temporal"))
        return blocks

    def _bounds(self, looks: Optional[Tensor]) -> Dict[str, Tuple[Tensor, Tensor]]:
        lo = torch.zeros(1, self.rig.n_expression, dtype=self.model.dtype)
        hi = self._upper[None].clone()
        fixed = torch.zeros_like(lo)
        if looks is not None:
            fixed[:, self._gaze_mask] = looks[:, self._gaze_mask].to(lo.dtype)
        lo[:, self._held] = fixed[:, self._held]
        hi[:, self._held] = fixed[:, self._held]
        return {EXPRESSION: (lo, hi)}

    def _solve(self, params: Dict[str, Tensor], target68: Tensor, dense: Optional[Tensor],
               previous: Optional[Tensor], looks: Optional[Tensor], iterations: int) -> Dict[str, Tensor]:
        bounds = self._bounds(looks)
        lo, hi = bounds[EXPRESSION]
        params = dict(params)
        params[EXPRESSION] = torch.minimum(torch.maximum(params[EXPRESSION], lo), hi)
        config = SolverConfig(max_iterations=iterations, ftol=1e-6, xtol=1e-7)
        blocks = self._blocks(params, target68, dense, previous)
        result = solve(blocks, params, free=list(_FREE), bounds=bounds, config=config)
        out = result.params
        expr = out[EXPRESSION].clone()
        dep = self._dependent
        if len(dep):  # ARKit: the dependent shape never exceeds its base
            expr[:, dep[:, 0]] = torch.minimum(expr[:, dep[:, 0]], expr[:, dep[:, 1]])
        out[EXPRESSION] = expr
        return out

    def _project68(self, params: Dict[str, Tensor]) -> Tensor:
        neutral, basis = self._points68(params)
        pts = neutral + torch.einsum("pjk,bk->bpj", basis, params[EXPRESSION])
        return project_points(pts, params[ROTATION], params[SCALE], params[TRANS2D])

    # ------------------------------------------------------------------ gaze
    def _iris(self, dense: Optional[Tensor]) -> Optional[Tensor]:
        """(1, 2, 2) iris centres (mean of centre and rim points) of the eyes (left, right)."""
        if dense is None or self._eye_centres is None:
            return None
        return dense[:, self.dense.iris].mean(2)

    def _estimate_gaze(self, iris: Tensor, params: Dict[str, Tensor]) -> Tensor:
        centres = self._eye_centres[None]
        offset = self.rest_offsets.get("iris")
        if offset is not None:
            centres = centres + offset[None]
        gaze = estimate_gaze(iris, centres, params[ROTATION], params[SCALE], params[TRANS2D], self.eyes.depth)
        if self.config.conjugate_gaze:
            gaze = gaze.mean(1, keepdim=True).expand_as(gaze).clone()
        return gaze

    def _filter_gaze(self, gaze: Tensor, expression: Tensor) -> Tensor:
        """Hold the gaze of closed eyes; smooth small changes (saccades pass)."""
        previous = self._gaze
        if previous is None:
            return gaze
        closed = torch.tensor([b is not None and float(expression[0, b]) > self.config.blink_hold
                               for b in self._blink])
        if self.config.conjugate_gaze:
            closed = closed.any().expand(2)
        gaze = torch.where(closed[None, :, None], previous, gaze)
        small = (gaze - previous).norm(dim=-1, keepdim=True) < self.config.gaze_saccade
        a = self.config.gaze_smoothing
        return torch.where(small, a * previous + (1 - a) * gaze, gaze)

    # ------------------------------------------------------------------ public
    def calibrate_rest(self, landmarks: Sequence[Any], dense: Optional[Sequence[Any]] = None,
                       quantile: float = 0.1, min_frames: int = 5) -> int:
        """Make the person's rest face the zero of the expressions (module docstring).

        The frames are tracked in order as in `step` (without offsets); those that are both least
        expressive and stillest (the sum of the weights and the landmarks' change from the previous
        sample, each over its median; the ``quantile`` lowest, at least ``min_frames``) are taken as
        the rest face: a person who smiles through most of a video keeps the smile, and a talker's
        pauses count more than her least expressive words. On those frames the
        head pose alone is fitted with all weights 0, and the median of each point's residual,
        taken back into object space, becomes its offset.

        Args:
            landmarks: (68, 2) landmarks of frames spread over the video, in order (None entries skipped).
            dense: the same frames' dense points (or None).

        Returns:
            The number of frames the offsets come from.
        """
        self.rest_offsets = {}
        saved = (self._last, self._fresh, self._index, self._gaze)
        zero = torch.zeros(1, self.rig.n_expression, dtype=self.model.dtype)
        frames = []
        self.reset()
        before = None
        for k, lm in enumerate(landmarks):  # tracked in order (warm starts), without offsets
            lms, pts = self._check(lm, None if dense is None else dense[k])
            if lms is None:
                before = None
                continue
            # Motion: the 68 points' mean change from the previous sample, in eye distances (rest is still).
            motion = float("nan") if before is None else float((lms - before).norm(dim=-1).mean()) / _eye_distance(lms)
            before = lms
            track = self.step(lms, dense=pts)
            if not track.detected:
                continue
            step, offset = square_frame(lms[None], size=self.config.crop_size)
            target = (lms[None] - offset[:, None]) / step
            target_dense = None if pts is None else (pts[None] - offset[:, None]) / step
            pose = track.pose.reframed(1.0 / step, -offset / step).as_params()
            activity = float(track.expression[~self._gaze_mask].sum())
            frames.append((activity, target, target_dense, pose, motion))
        self._last, self._fresh, self._index, self._gaze = saved
        if not frames:
            return 0
        activity = torch.tensor([f[0] for f in frames])
        motion = torch.tensor([f[4] for f in frames])
        motion = torch.where(torch.isfinite(motion), motion, motion[torch.isfinite(motion)].median()
                             if bool(torch.isfinite(motion).any()) else torch.zeros(()))
        score = activity / activity.median().clamp_min(1e-6) + motion / motion.median().clamp_min(1e-6)
        keep = max(min(min_frames, len(frames)), int(round(quantile * len(frames))))
        chosen = score.argsort()[:keep].tolist()
        offsets: Dict[str, list] = {"landmarks": [], "dense": [], "iris": []}
        for k in chosen:
            _, target, target_dense, pose, _ = frames[k]
            params = {EXPRESSION: zero, **pose}
            blocks = [point_block(*self._points68(params), target, confidence=self._confidence68[None],
                                  weight=1.0 / self.config.landmark_sigma ** 2)]
            params = solve(blocks, params, free=list(_POSE), config=SolverConfig(max_iterations=8)).params
            rot, s = params[ROTATION], params[SCALE]
            offsets["landmarks"].append(_backproject(target - self._project68(params), rot, s)[0])
            if target_dense is not None:
                moved = project_points(self._dense_neutral[None], rot, s, params[TRANS2D])
                offsets["dense"].append(_backproject(target_dense[:, self._dense_ids] - moved, rot, s)[0])
                iris = self._iris(target_dense)
                if iris is not None:
                    ahead = self._eye_centres + torch.tensor([0.0, 0.0, self.eyes.depth], dtype=rot.dtype)
                    seen = project_points(ahead[None], rot, s, params[TRANS2D])
                    offsets["iris"].append(_backproject(iris - seen, rot, s)[0])
        self.rest_offsets = {k: torch.stack(v).median(0).values for k, v in offsets.items() if v}
        logger.info("rest face from %d of %d frames (weights sum %.2f-%.2f; mean landmark offset %.2f mm)",
                    keep, len(frames), float(activity[chosen].min()), float(activity[chosen].max()),
                    float(self.rest_offsets["landmarks"].norm(dim=-1).mean()))
        return keep

    def step(self, landmarks: Optional[np.ndarray | Tensor], image: Optional[np.ndarray] = None,
             dense: Optional[np.ndarray | Tensor] = None) -> FrameTrack:
        """Track one frame.

        Args:
            landmarks: (68, 2) the frame's landmarks in its pixels, or None where no face was found.
            image: (H, W, 3) uint8 RGB frame, for the lighting (None: no lighting this frame).
            dense: (P, 2) the frame's dense mesh points (`DenseTies`), or None.

        Returns:
            The frame's `FrameTrack` (also kept as `last`).
        """
        index = self._index
        self._index += 1
        lms, pts = self._check(landmarks, dense)
        if lms is None:
            self._last = self._carry(index, None)
            return self._last
        step, offset = square_frame(lms[None], size=self.config.crop_size)  # normalised -> frame pixels
        target = (lms[None] - offset[:, None]) / step
        target_dense = None if pts is None else (pts[None] - offset[:, None]) / step
        iris = self._iris(target_dense)
        if self._fresh or self._last is None or not self._last.valid:
            fit = fit_landmarks(self.geometry, target, config=self._first, identity=self._identity,
                                confidence=self._confidence68[None])
            params = {EXPRESSION: fit.params[EXPRESSION], **{n: fit.params[n] for n in _POSE}}
            previous, iterations = None, self.config.first_iterations
            self._gaze = None
        else:
            params = self._last.pose.reframed(1.0 / step, -offset / step).as_params()
            params[EXPRESSION] = self._last.expression[None]
            previous, iterations = params[EXPRESSION], self.config.iterations
        looks = None
        if iris is not None:
            looks = gaze_weights(self._filter_gaze(self._estimate_gaze(iris, params), params[EXPRESSION]),
                                 self.rig.expression_names)
        params = self._solve(params, target, target_dense, previous, looks, iterations)
        gaze = None
        if iris is not None:
            gaze = self._filter_gaze(self._estimate_gaze(iris, params), params[EXPRESSION])
            if self._lid_pitch:  # the vertical gaze is the lids' (see TrackerConfig.lid_gaze)
                gaze = torch.stack([gaze[..., 0], gaze_from_weights(params[EXPRESSION], self.rig.expression_names)[..., 1]],
                                   -1)
            expression = params[EXPRESSION].clone()
            expression[:, self._gaze_mask] = gaze_weights(gaze, self.rig.expression_names)[:, self._gaze_mask]
            params[EXPRESSION] = expression
        uv68 = self._project68(params)
        error = float((uv68 - target).norm(dim=-1).mean()) / max(_eye_distance(target[0]), 1e-6)
        if not error <= self.config.max_error:
            logger.debug("frame %d: landmark fit rejected (error %.1f%% of the eye distance)", index, 100 * error)
            self._last = self._carry(index, lms)
            return self._last
        self._gaze = gaze
        pose = WeakPerspective.from_params(params).reframed(step, offset)
        expression = params[EXPRESSION]
        vertices = self.model.vertices(None, expression)
        sh = None
        if self._light is not None and image is not None:
            frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.model.dtype) / 255.0
            sh = self._light(frame, vertices, pose)[0]
        self._fresh = False
        self._last = FrameTrack(index, True, True, expression[0], pose.rotation[0], pose.scale[0], pose.trans2d[0],
                                sh, uv68[0] * step + offset[0], lms, error, vertices=vertices[0],
                                gaze=None if gaze is None else gaze[0])
        return self._last
