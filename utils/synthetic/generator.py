"""Synthetic face images with ground truth: random subjects rendered as 256x256 face crops.

A subject is a random identity with an albedo (the model's albedo basis where it has one, BFM;
else the procedural skin of `utils.synthetic.skin_albedo`, ICT). Each of its images gets a random
expression, head pose, SH lighting and background (`utils.synthetic.scene`) and is rendered with a
weak-perspective camera (as the original) through `core.camera`, `core.lighting` and
`core.render`, framed like a 1.2x crop around the 68 landmarks. Everything is deterministic given
the seed: image ``k`` of a subject depends only on ``(seed, k)``, not on how many are generated.

Ground truth per image: parameters (expression, rotation as Euler angles and as a matrix, scale, 2D offset ``trans2d``,
SH), the mesh in object space and in camera space (``R @ X``, mm), the 68 landmark vertices
projected into crop pixels with their visibility, per-vertex visibility, the face mask and the
image. Per subject: identity, albedo and neutral mesh. Meshes are over ``gt_region`` (the ICT face
area by default) in the model's vertex order; ``vertex_ids`` maps them into the model.

In memory (build one `SyntheticGenerator` per model to draw many subjects quickly)::

    generator = SyntheticGenerator(load_face_model("ict", "external/ICT-FaceKit"))
    subject = generator.subject(8, seed=0)      # or generate_subject(model, 8, seed=0)

The faces are lit per vertex (albedo x SH shading of the vertex normal, interpolated across
triangles), which is the photometric model the fitting uses.

On disk (``write_subject`` / ``load_subject``)::

    python -m utils.synthetic --out DIR --subjects N --images M --seed S

writes ``DIR/subject_XXX/`` with ``subject.json`` (seed, identity, expression names, config),
``subject.npz`` (albedo, neutral, vertex_ids, triangles, landmark_indices), ``neutral.obj`` and per
image ``image_YY.png``, ``image_YY.json`` (parameters, ``landmarks_2d``, visibility),
``image_YY_mask.png``, ``image_YY_mesh.npz`` (object and camera-space vertices, per-vertex
visibility) and ``image_YY.obj`` (object space).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from core.camera import (WeakPerspective, euler_to_matrix, square_box, transform_points,
                         weak_perspective_screen)
from core.face_model.model import MorphableModel
from core.lighting import shade
from core.mesh import subset_index, triangles_within, vertex_normals
from core.render.rasterize import Fragments, rasterize
from core.render.shade import render_vertex_colors
from core.render.visibility import vertex_visibility
from utils.synthetic.scene import expose, sample_background, sample_expression, sample_pose, sample_sh
from utils.synthetic.skin_albedo import SkinAlbedoSampler

__all__ = [
    "DEFAULT_RENDER_REGIONS", "SyntheticConfig", "SyntheticSubject", "SyntheticGenerator",
    "generate_subject", "crop_camera", "region_triangles", "supersampled_screen", "shade_and_resolve",
]

logger = logging.getLogger(__name__)

Seed = Union[int, Sequence[int]]

#: Parts of the ICT mesh rendered (those the model has): the face with the rest of the head, and
#: eyes and mouth interior so that eye sockets and open mouths show no holes.
DEFAULT_RENDER_REGIONS: Tuple[str, ...] = (
    "face", "head_and_neck", "eyeball_left", "eyeball_right", "eye_socket_left",
    "eye_socket_right", "mouth_socket", "teeth", "gums_and_tongue", "eyelashes")


@dataclass(frozen=True)
class SyntheticConfig:
    """How synthetic subjects and images are drawn and rendered.

    Attributes:
        image_size: side of the square crops, pixels.
        pose_limits_deg: maximum absolute (pitch, yaw, roll), degrees.
        pose_spread: standard deviation of the truncated-normal pose as a fraction of the limits.
        identity_scale: identity coefficients are N(0, 1) times a per-subject factor in this range.
        albedo_scale: albedo coefficients (BFM) are N(0, 1) times this.
        crop_scale: crop side over the larger side of the projected landmarks' box.
        crop_jitter: relative random change of the crop size and shift of its centre.
        neutral_probability: chance that an image has no expression (gaze only).
        exposure: range of the brightness a frontal patch of median skin albedo is exposed to
            (the lighting is scaled per image, as a camera's auto-exposure).
        render_regions: model regions to render (all triangles when the model has none of them).
        see_through_regions: rendered regions that do not hide vertices from the visibility
            ground truth: eyelashes (they would hide the eyelid landmarks) and the eyes and
            mouth interior (behind the face surface, they only poke through it where the rigid
            parts and the skin intersect).
        gt_region: region whose vertices the ground-truth meshes hold (None or absent: all).
        supersample: render at this many times the resolution and average (anti-aliasing).
        face_noise: standard deviation of pixel noise added to the rendered face.
        visibility_tol: depth tolerance of vertex visibility, crop pixels (a visible vertex
            also needs a camera-facing triangle).
        landmark_visibility_tol: depth tolerance of landmark visibility, crop pixels: a landmark
            is visible unless the surface in front of it is farther ahead than this (so eyelid
            and inner-lip landmarks, on rims facing away, count as seen; a far-side jawline
            behind the face does not).
    """

    image_size: int = 256
    pose_limits_deg: Tuple[float, float, float] = (20.0, 60.0, 15.0)
    pose_spread: float = 0.5
    identity_scale: Tuple[float, float] = (0.8, 1.0)
    albedo_scale: float = 0.7
    crop_scale: float = 1.2
    crop_jitter: float = 0.04
    neutral_probability: float = 0.15
    exposure: Tuple[float, float] = (0.35, 0.6)
    render_regions: Tuple[str, ...] = DEFAULT_RENDER_REGIONS
    see_through_regions: Tuple[str, ...] = (
        "eyelashes", "eyeball_left", "eyeball_right", "eye_socket_left", "eye_socket_right",
        "mouth_socket", "teeth", "gums_and_tongue")
    gt_region: Optional[str] = "face"
    supersample: int = 2
    face_noise: float = 0.01
    visibility_tol: float = 1.0
    landmark_visibility_tol: float = 3.0


@dataclass
class SyntheticSubject:
    """One synthetic person with M images and their ground truth (numpy arrays).

    Per subject: ``identity`` (n_id,), ``albedo`` (V, 3) in [0, 1], ``neutral`` (V, 3) mm,
    ``vertex_ids`` (V,) ids of these vertices in the generating model, ``triangles`` (F, 3) over
    them, ``landmark_indices`` (68,) into them, ``expression_names``.
    Per image (first axis M): ``images`` (M, H, W, 3) uint8 RGB, ``masks`` (M, H, W) bool (pixels
    the head covers), ``expression`` (M, n_exp), ``rotation`` (M, 3) Euler (pitch, yaw, roll) radians,
    ``rotation_matrix`` (M, 3, 3), ``scale`` (M,) pixels per mm, ``trans2d`` (M, 2) pixels, ``sh``
    (M, 9, 3), ``vertices`` (M, V, 3) object space mm, ``vertices_camera`` (M, V, 3) = R X mm,
    ``landmarks`` (M, 68, 2) crop pixels (u, v), ``landmark_visibility`` (M, 68) bool,
    ``vertex_visibility`` (M, V) bool, ``expression_labels`` and ``background_kinds`` (M str),
    ``backgrounds`` (M, H, W, 3) uint8 (in memory only; None after `load_subject`).
    """

    seed: List[int]
    model_name: str
    expression_names: List[str]
    identity: np.ndarray
    albedo: np.ndarray
    neutral: np.ndarray
    vertex_ids: np.ndarray
    triangles: np.ndarray
    landmark_indices: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    expression: np.ndarray
    rotation: np.ndarray
    rotation_matrix: np.ndarray
    scale: np.ndarray
    trans2d: np.ndarray
    sh: np.ndarray
    vertices: np.ndarray
    vertices_camera: np.ndarray
    landmarks: np.ndarray
    landmark_visibility: np.ndarray
    vertex_visibility: np.ndarray
    expression_labels: List[str]
    background_kinds: List[str]
    config: SyntheticConfig = field(default_factory=SyntheticConfig)
    backgrounds: Optional[np.ndarray] = None

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def pose(self) -> WeakPerspective:
        """The images' head poses (batch M) in crop pixels."""
        return WeakPerspective(torch.from_numpy(self.rotation), torch.from_numpy(self.scale),
                               torch.from_numpy(self.trans2d))


def _seed_list(seed: Seed) -> List[int]:
    values = [int(seed)] if isinstance(seed, (int, np.integer)) else [int(s) for s in seed]
    if not values or any(v < 0 for v in values):
        raise ValueError(f"seed: expected a non-negative int or a sequence of them, got {seed!r}")
    return values


def _rng(seed: List[int], stream: int) -> np.random.Generator:
    """Independent generator number ``stream`` of a seed (0: the subject, k+1: image k)."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(stream,)))


def _region_ids(model: MorphableModel, names: Sequence[str]) -> Optional[torch.Tensor]:
    """Sorted unique vertex ids of the named regions the model has (None when it has none)."""
    parts = [model.regions[n] for n in names if n in model.regions and len(model.regions[n])]
    return torch.unique(torch.cat(parts)) if parts else None


def region_triangles(model: MorphableModel, names: Sequence[str]) -> torch.Tensor:
    """The model's triangles whose vertices all lie in the named regions (all triangles when
    the model has none of them)."""
    ids = _region_ids(model, names)
    return model.triangles if ids is None else \
        model.triangles[triangles_within(model.triangles, subset_index(ids, model.n_vertices))[1]]


def crop_camera(landmarks_3d: torch.Tensor, R: torch.Tensor, size: int, crop_scale: float = 1.2,
                jitter: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Weak-perspective scale and translation framing the landmarks in a square crop.

    The crop side is ``crop_scale`` times the larger side of the box around the rotated
    landmarks, centred on the box centre, as a 1.2x landmark-box face crop.

    Args:
        landmarks_3d: landmark vertices in object space, mm.
        R: rotations.
        size: crop side, pixels.
        crop_scale: crop side over the landmark box side.
        jitter: optional (B, 3): relative change of the scale, then the shift of the centre
            (u, v) as fractions of the crop side.

    Shape:
        - landmarks_3d: (B, 68, 3); R: (B, 3, 3); jitter: (B, 3)
        - output: scale (B,) pixels per mm, translation (B, 2) pixels
    """
    if landmarks_3d.ndim != 3 or landmarks_3d.shape[-1] != 3:
        raise ValueError(f"landmarks_3d: expected shape (B, N, 3), got {tuple(landmarks_3d.shape)}")
    rotated = transform_points(landmarks_3d, R)
    uv = torch.stack([rotated[..., 0], -rotated[..., 1]], dim=-1)       # at scale 1, no shift
    centre, side = square_box(uv, crop_scale)  # the crops' square (`core.camera.square_frame`)
    if jitter is None:
        jitter = torch.zeros(len(uv), 3, dtype=uv.dtype)
    scale = size / side * (1.0 + jitter[:, 0])
    translation = (size - 1) / 2.0 - scale[:, None] * centre + size * jitter[:, 1:]
    return scale, translation


def _merge_nearer(a: Fragments, b: Fragments, offset: int) -> Fragments:
    """Per pixel the nearer of two rasterizations; ``b``'s triangle ids are shifted by
    ``offset`` (they index a second triangle list appended to ``a``'s)."""
    take_b = b.depth > a.depth
    return Fragments(torch.where(take_b, b.tri_id + offset, a.tri_id),
                     torch.where(take_b[..., None], b.bary, a.bary),
                     torch.where(take_b, b.depth, a.depth))


def supersampled_screen(screen: torch.Tensor, supersample: int) -> torch.Tensor:
    """Screen vertices in the pixels of a ``supersample`` times finer image.

    Crop pixel j (centre u = j) is the block of fine pixels ss*j .. ss*j + ss - 1, whose centre
    is u_fine = ss*j + (ss - 1) / 2; depth scales with the pixels.

    Shape:
        - screen: (B, V, 3) (u, v, depth); output: (B, V, 3)
    """
    ss = supersample
    offset = torch.tensor([(ss - 1) / 2.0, (ss - 1) / 2.0, 0.0], dtype=screen.dtype)
    return screen * ss + offset


def shade_and_resolve(fragments: Fragments, triangles: torch.Tensor, albedo: torch.Tensor,
                      normals: torch.Tensor, sh: torch.Tensor,
                      supersample: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gouraud SH shading of a supersampled rasterization, box-filtered to the output size.

    Lambertian SH colours per vertex (as the photometric model of the fitting), interpolated.

    Shape:
        - fragments: of (B, ss*H, ss*W) pixels; albedo, normals: (B, V, 3); sh: (B, 9, 3)
        - output: colours premultiplied by coverage (B, 3, H, W), coverage (B, H, W) in [0, 1]
    """
    colour = render_vertex_colors(fragments, triangles, shade(albedo, normals, sh).clamp(0, 1))
    coverage = fragments.mask.to(colour.dtype)
    if supersample > 1:
        colour = F.avg_pool2d(colour, supersample)
        coverage = F.avg_pool2d(coverage[:, None], supersample)[:, 0]
    return colour, coverage


def _render(screen: torch.Tensor, occluders: torch.Tensor, see_through: torch.Tensor,
            normals: torch.Tensor, albedo: torch.Tensor, sh: torch.Tensor, size: int,
            supersample: int, visibility_tol: float, landmark_ids: torch.Tensor,
            landmark_tol: float) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Render SH-lit meshes at ``supersample`` times the crop resolution and box-filter down.

    Args:
        screen: crop-pixel screen vertices (u, v, depth) from ``weak_perspective_screen``.
        occluders: triangles that are drawn and hide what is behind them from visibility.
        see_through: triangles that are drawn but do not hide vertices (eyelashes), (0, 3) if none.
        normals: camera-space unit vertex normals.

    Returns:
        colours premultiplied by coverage (B, 3, H, W), coverage (B, H, W) in [0, 1],
        per-vertex visibility (B, V) bool (``visibility_tol``, camera-facing), and landmark
        visibility (B, L) bool of the vertices ``landmark_ids`` (``landmark_tol``, any facing).
    """
    ss = supersample
    fine = supersampled_screen(screen, ss)
    fragments = rasterize(fine, occluders, size * ss, size * ss)
    visible = vertex_visibility(fine, occluders, fragments, tol=visibility_tol * ss)
    landmarks_visible = vertex_visibility(fine, occluders, fragments, tol=landmark_tol * ss,
                                          front_facing_only=False)[:, landmark_ids]
    triangles = occluders
    if len(see_through):
        fragments = _merge_nearer(fragments, rasterize(fine, see_through, size * ss, size * ss),
                                  len(occluders))
        triangles = torch.cat([occluders, see_through])
    colour, coverage = shade_and_resolve(fragments, triangles, albedo, normals, sh, ss)
    return colour, coverage, visible, landmarks_visible


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


class SyntheticGenerator:
    """Generates synthetic subjects of one face model; per-model preparation is done once.

    Args:
        model: the face model (the full ICT model renders eyes, mouth and head; its face region
            alone renders only the face).
        config: sampling and rendering settings.

    Example:
        >>> from core.face_model import load_face_model
        >>> generator = SyntheticGenerator(load_face_model("ict", "external/ICT-FaceKit"))
        >>> subject = generator.subject(2, seed=0)
        >>> subject.images.shape, subject.landmarks.shape
        ((2, 256, 256, 3), (2, 68, 2))
    """

    def __init__(self, model: MorphableModel, config: SyntheticConfig = SyntheticConfig()) -> None:
        if model.landmark_indices is None or len(model.landmark_indices) != 68:
            raise ValueError(f"model {model.name}: synthetic data needs 68 landmark_indices")
        if config.supersample < 1 or config.image_size < 8:
            raise ValueError(f"config: supersample must be >= 1 and image_size >= 8, got "
                             f"{config.supersample} and {config.image_size}")
        self.model = model.to(device="cpu", dtype=torch.float32)
        self.config = config
        n = self.model.n_vertices
        triangles = region_triangles(self.model, config.render_regions)
        see_ids = _region_ids(self.model, [r for r in config.see_through_regions
                                           if r in config.render_regions])
        see = torch.zeros(len(triangles), dtype=torch.bool) if see_ids is None else \
            torch.isin(triangles, see_ids).all(dim=1)
        self._triangles, self._see_through = triangles[~see], triangles[see]
        gt_ids = _region_ids(self.model, [config.gt_region] if config.gt_region else [])
        self._gt_ids = torch.arange(n) if gt_ids is None else gt_ids
        remap = subset_index(self._gt_ids, n)
        self._gt_landmarks = remap[self.model.landmark_indices]
        if (self._gt_landmarks < 0).any():
            raise ValueError(f"config.gt_region {config.gt_region!r} does not contain the 68 "
                             f"landmark vertices of {model.name}")
        self._gt_triangles = triangles_within(self.model.triangles, remap)[0]
        self._albedo_sampler = None if self.model.albedo_mean is not None else \
            SkinAlbedoSampler(self.model)

    def _albedo(self, rng: np.random.Generator) -> torch.Tensor:
        if self._albedo_sampler is not None:
            return self._albedo_sampler(rng)
        coeffs = rng.normal(size=(1, self.model.n_albedo)) * self.config.albedo_scale
        return self.model.albedo(torch.as_tensor(coeffs, dtype=torch.float32))[0].clamp(0.0, 1.0)

    def _sample_image(self, rng: np.random.Generator, skin_luminance: float) -> dict:
        """Random parameters of one image (numpy values)."""
        config, size = self.config, int(self.config.image_size)
        limits = tuple(math.radians(a) for a in config.pose_limits_deg)
        expression, label = sample_expression(self.model.expression_names, rng,
                                              self.model.expression_range is not None,
                                              config.neutral_probability)
        angles = sample_pose(rng, limits, config.pose_spread)
        sh = expose(sample_sh(rng), skin_luminance, rng.uniform(*config.exposure))
        background, kind = sample_background(rng, size)
        return dict(expression=expression, label=label, rotation=angles, sh=sh,
                    background=background, kind=kind,
                    jitter=rng.uniform(-1.0, 1.0, size=3) * config.crop_jitter,
                    noise=rng.normal(0.0, config.face_noise, size=(3, size, size)))

    def subject(self, n_images: int, seed: Seed = 0) -> SyntheticSubject:
        """One random subject and ``n_images`` rendered crops with their ground truth.

        Args:
            n_images: number of images (>= 1).
            seed: int or sequence of ints; image ``k`` depends only on the seed and ``k``.
        """
        if int(n_images) < 1:
            raise ValueError(f"n_images: expected at least 1, got {n_images}")
        model, config, gt = self.model, self.config, self._gt_ids
        seed_list = _seed_list(seed)
        size = int(config.image_size)

        rng = _rng(seed_list, 0)
        identity = rng.normal(size=model.n_identity) * rng.uniform(*config.identity_scale)
        albedo = self._albedo(rng)
        luminance = albedo[gt] @ torch.tensor([0.299, 0.587, 0.114])
        samples = [self._sample_image(_rng(seed_list, k + 1), float(luminance.median()))
                   for k in range(int(n_images))]

        def stack(key: str) -> torch.Tensor:
            return torch.as_tensor(np.stack([x[key] for x in samples]), dtype=torch.float32)

        expression, angles, sh = stack("expression"), stack("rotation"), stack("sh")
        identity_t = torch.as_tensor(identity, dtype=torch.float32)[None]
        vertices = model.vertices(identity_t.expand(n_images, -1), expression)
        R = euler_to_matrix(angles)
        scale, translation = crop_camera(vertices[:, model.landmark_indices], R, size,
                                         config.crop_scale, stack("jitter"))
        screen = weak_perspective_screen(vertices, R, scale, translation)
        camera_space = transform_points(vertices, R)
        normals = vertex_normals(camera_space, torch.cat([self._triangles, self._see_through]))
        colour, coverage, visible, landmarks_visible = _render(
            screen, self._triangles, self._see_through, normals,
            albedo[None].expand(n_images, -1, -1), sh, size, config.supersample,
            config.visibility_tol, model.landmark_indices, config.landmark_visibility_tol)
        backgrounds = np.stack([x["background"] for x in samples])
        background = torch.as_tensor(backgrounds).permute(0, 3, 1, 2).float() / 255.0
        image = colour + coverage[:, None] * stack("noise") + (1.0 - coverage[:, None]) * background
        images = torch.round(image.clamp(0.0, 1.0) * 255.0).to(torch.uint8).permute(0, 2, 3, 1)

        return SyntheticSubject(
            seed=seed_list,
            model_name=model.name,
            expression_names=list(model.expression_names),
            identity=identity.astype(np.float32),
            albedo=_to_numpy(albedo[gt]),
            neutral=_to_numpy(model.vertices(identity_t)[0, gt]),
            vertex_ids=_to_numpy(gt),
            triangles=_to_numpy(self._gt_triangles),
            landmark_indices=_to_numpy(self._gt_landmarks),
            images=_to_numpy(images),
            masks=_to_numpy(coverage > 0),
            expression=_to_numpy(expression),
            rotation=_to_numpy(angles),
            rotation_matrix=_to_numpy(R),
            scale=_to_numpy(scale),
            trans2d=_to_numpy(translation),
            sh=_to_numpy(sh),
            vertices=_to_numpy(vertices[:, gt]),
            vertices_camera=_to_numpy(camera_space[:, gt]),
            landmarks=_to_numpy(screen[:, model.landmark_indices, :2]),
            landmark_visibility=_to_numpy(landmarks_visible),
            vertex_visibility=_to_numpy(visible[:, gt]),
            expression_labels=[x["label"] for x in samples],
            background_kinds=[x["kind"] for x in samples],
            config=config,
            backgrounds=backgrounds,
        )


def generate_subject(model: MorphableModel, n_images: int, seed: Seed = 0,
                     config: SyntheticConfig = SyntheticConfig()) -> SyntheticSubject:
    """One random subject and ``n_images`` rendered crops with their ground truth.

    A shortcut for ``SyntheticGenerator(model, config).subject(n_images, seed)``; build a
    `SyntheticGenerator` once to draw many subjects of one model.

    Args:
        model: the face model (the full ICT model renders eyes, mouth and head; its face region
            alone renders only the face).
        n_images: number of images (>= 1).
        seed: int or sequence of ints; image ``k`` depends only on the seed and ``k``.
        config: sampling and rendering settings.
    """
    return SyntheticGenerator(model, config).subject(n_images, seed)

