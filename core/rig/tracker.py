"""Track a video with a fixed rig: per-frame expression, head pose and SH lighting, streaming.

The rig (one person's neutral + blendshapes + albedo) is fixed; each frame with 68 landmarks gets

1. expression weights and a weak-perspective pose from the landmarks (`core.fitting.fit_landmarks` on the
   rig presented as a model, `Rig.as_model`), warm-started from the previous frame, with a
   temporal prior pulling the expression weights towards the previous frame's (smoothness);
2. second-order SH lighting in closed form from the frame's colours at a fixed subset of visible
   vertices, given the rig's albedo (`core.lighting.solve_sh`).

The landmark fit runs in a normalised frame around the frame's landmarks (their bounding square,
grown by 1.2, spans ``crop_size`` pixels, as the rig builder's crops), so the landmark noise and
the priors weigh the same whatever the face's size in the video; the pose is reported in the
video's pixels (the normalisation is a scale and a shift, so weak perspective stays exact).

Frames without landmarks, or whose fit fails (reprojection error above ``max_error`` eye
distances), carry the previous frame's parameters over and are flagged (``detected`` False); the
next good frame starts afresh (closed-form pose, full fit). Only the previous frame is kept, so
memory does not grow with the video.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from core.camera import WeakPerspective, square_frame
from core.face_model.model import MorphableModel
from core.fitting.fit_landmarks import LandmarkFitConfig, fit_landmarks
from core.fitting.landmark_geometry import LandmarkGeometry
from core.fitting.photometric import observe, sample_vertex_subset
from core.fitting.variables import EXPRESSION, ROTATION, SCALE, TRANS2D
from core.lighting import solve_sh
from core.rig.rig import Rig

logger = logging.getLogger(__name__)

__all__ = ["TrackerConfig", "FrameTrack", "RigTracker"]

_POSE = (ROTATION, SCALE, TRANS2D)


@dataclass(frozen=True)
class TrackerConfig:
    """Settings of `RigTracker`.

    Attributes:
        crop_size: side (pixels) of the normalised frame spanned by 1.2x the landmarks' box.
        landmark_sigma: landmark noise in normalised pixels (landmark term weight 1 / sigma^2).
        expression_weight: weight of the prior pulling expression weights to 0.
        temporal_weight: weight of the difference to the previous frame's values of
            ``temporal_variables`` (0 = no temporal prior).
        temporal_variables: what the temporal prior holds back. Expression weights by default:
            the head pose is well determined by the (filtered) landmarks, and a prior on it
            lags fast head turns.
        iterations: LM iterations per frame after the first (warm start).
        first: fit of the first frame and of frames after a gap (closed-form pose, then coarse to
            fine as `fit_landmarks`).
        max_error: a fit whose mean reprojection error exceeds this fraction of the
            outer-eye-corner distance is rejected (frame flagged, parameters carried over).
        lighting: estimate SH lighting per frame (needs the frame's image).
        held_expressions: expressions held at 0 (names, or name prefixes): the 68 landmarks do
            not see the gaze, so its blendshapes would only soak up landmark noise.
        contour_confidence: weight of the jawline landmarks (0-16), the least reliable ones (the
            detector follows the silhouette, whatever the face's shape there).
        light_vertices: vertices sampled for the lighting (fixed subset of the narrow face).
        light_raster: side (pixels) of the coarse z-buffer that decides their visibility.
        sh_reg: ridge weight of the SH solve (`solve_sh`).
    """

    crop_size: float = 256.0
    landmark_sigma: float = 3.0
    expression_weight: float = 16.0
    temporal_weight: float = 32.0
    temporal_variables: Tuple[str, ...] = (EXPRESSION,)
    iterations: int = 3
    first: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    max_error: float = 0.2
    held_expressions: Tuple[str, ...] = ("eyeLook",)
    contour_confidence: float = 0.3
    lighting: bool = True
    light_vertices: int = 1000
    light_raster: int = 128
    sh_reg: float = 1e-3

    def __post_init__(self) -> None:
        if self.iterations < 1 or self.crop_size <= 0 or self.temporal_weight < 0:
            raise ValueError(f"TrackerConfig: expected iterations >= 1, crop_size > 0, temporal_weight >= 0; "
                             f"got {self.iterations}, {self.crop_size}, {self.temporal_weight}")


@dataclass
class FrameTrack:
    """One frame's tracking result (tensors without a batch axis, pixels of the video frame).

    Attributes:
        index: frame number.
        detected: parameters were fitted to this frame (False: no face or a failed fit; the
            parameters are the previous frame's).
        valid: the frame has parameters (False only before the first fitted frame).
        expression: (K,) rig expression weights.
        rotation: (3,) Euler angles (pitch, yaw, roll), radians.
        scale: () pixels per mm (weak perspective).
        trans2d: (2,) pixels.
        sh: (9, 3) camera-space SH lighting, or None (no image, or lighting off).
        landmarks_2d: (68, 2) projected rig landmarks, or None where the frame was not fitted.
        landmarks: (68, 2) the frame's landmarks, or None.
        error: mean landmark reprojection error / outer-eye-corner distance (NaN if not fitted).
        vertices: (V, 3) the rig's mesh at ``expression`` (object space, mm), computed once by the
            tracker for whoever renders the frame; None before the first fitted frame.
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

    @property
    def pose(self) -> WeakPerspective:
        """The head pose as a batch of one, in the video frame's pixels."""
        return WeakPerspective(self.rotation[None], self.scale[None], self.trans2d[None])

    def params(self) -> Dict[str, Tensor]:
        """Batched (1, ...) ``expression``, ``rotation``, ``scale``, ``trans2d``."""
        return {EXPRESSION: self.expression[None], **self.pose.as_params()}


def _eye_distance(landmarks: Tensor) -> float:
    return float((landmarks[36] - landmarks[45]).norm())


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

    def __init__(self, rig: Rig, template: MorphableModel, config: TrackerConfig = TrackerConfig()) -> None:
        self.rig = rig
        self.config = config
        self.model = rig.as_model(template)
        held = [i for i, n in enumerate(rig.expression_names) if n.startswith(tuple(config.held_expressions))]
        self._free = torch.tensor([i for i in range(rig.n_expression) if i not in held], dtype=torch.long)
        fitted = replace(self.model, expression_basis=self.model.expression_basis[self._free],
                         expression_std=self.model.expression_std[self._free],
                         expression_names=[rig.expression_names[i] for i in self._free.tolist()])
        self.geometry = LandmarkGeometry(fitted)
        self._confidence = torch.ones(1, 68, dtype=self.model.dtype)
        self._confidence[:, :17] = config.contour_confidence
        self._warm = LandmarkFitConfig(landmark_sigma=config.landmark_sigma,
                                       expression_weight=config.expression_weight,
                                       temporal_weight=config.temporal_weight, pose_rounds=0, rounds=1,
                                       iterations=config.iterations)
        self._first = replace(config.first, landmark_sigma=config.landmark_sigma,
                              expression_weight=config.expression_weight)
        self._light = _LightProbe(self.model, config) if config.lighting else None
        self._identity = torch.zeros(1, self.model.n_identity, dtype=self.model.dtype)
        self.reset()

    def reset(self) -> None:
        """Forget the past: the next frame is fitted from scratch."""
        self._last: Optional[FrameTrack] = None
        self._fresh = True  # the next fit starts from scratch (first frame, or after a gap)
        self._index = 0

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
                          None, landmarks, vertices=last.vertices)

    def step(self, landmarks: Optional[np.ndarray | Tensor], image: Optional[np.ndarray] = None) -> FrameTrack:
        """Track one frame.

        Args:
            landmarks: (68, 2) the frame's landmarks in its pixels, or None where no face was found.
            image: (H, W, 3) uint8 RGB frame, for the lighting (None: no lighting this frame).

        Returns:
            The frame's `FrameTrack` (also kept as `last`).
        """
        index = self._index
        self._index += 1
        if landmarks is None:
            self._last = self._carry(index, None)
            return self._last
        lms = torch.as_tensor(np.asarray(landmarks), dtype=self.model.dtype)
        if lms.shape != (68, 2):
            raise ValueError(f"landmarks: expected shape (68, 2), got {tuple(lms.shape)}")
        if not bool(torch.isfinite(lms).all()):
            self._last = self._carry(index, None)
            return self._last
        step, offset = square_frame(lms[None], size=self.config.crop_size)  # normalised -> frame pixels
        target = (lms[None] - offset[:, None]) / step
        if self._fresh or self._last is None or not self._last.valid:
            fit = fit_landmarks(self.geometry, target, config=self._first, identity=self._identity,
                                confidence=self._confidence)
        else:
            previous = self._last.pose.reframed(1.0 / step, -offset / step).as_params()
            previous[EXPRESSION] = self._last.expression[None, self._free]
            held = {n: previous[n] for n in self.config.temporal_variables}
            fit = fit_landmarks(self.geometry, target, config=self._warm, identity=self._identity,
                                confidence=self._confidence, init=previous,
                                previous=held if self.config.temporal_weight > 0 else None)
        error = float(fit.reprojection_error[0]) / max(_eye_distance(target[0]), 1e-6)
        if not error <= self.config.max_error:
            logger.debug("frame %d: landmark fit rejected (error %.1f%% of the eye distance)", index, 100 * error)
            self._last = self._carry(index, lms)
            return self._last
        pose = WeakPerspective.from_params(fit.params).reframed(step, offset)
        expression = torch.zeros(1, self.rig.n_expression, dtype=self.model.dtype)
        expression[:, self._free] = fit.params[EXPRESSION]
        vertices = self.model.vertices(None, expression)
        sh = None
        if self._light is not None and image is not None:
            frame = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.model.dtype) / 255.0
            sh = self._light(frame, vertices, pose)[0]
        self._fresh = False
        self._last = FrameTrack(index, True, True, expression[0], pose.rotation[0], pose.scale[0], pose.trans2d[0],
                                sh, fit.landmarks_2d[0] * step + offset[0], lms, error, vertices=vertices[0])
        return self._last
