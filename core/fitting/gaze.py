"""Eye rotation (gaze): its angles, the ARKit eyeLook* weights that name it, and its estimate from the irises.

Angles follow the head's convention (docs/conventions.md): per eye ``(yaw, pitch)`` in radians,
the gaze direction in the head's object space being ``Ry(yaw) @ Rx(pitch) @ (0, 0, 1)``, so yaw +
turns the gaze towards +x (the face's own left) and pitch + turns it down. Eyes are ordered
(left, right): the subject's left eye (object +x) first, as ``gaze_left`` / ``gaze_right`` of
``tracking.npz``.

eyeLook* weights: ARKit does not publish the angle a weight of 1 stands for. This project fixes
`GAZE_RANGE_DEG` (30 degrees in and out, 20 up, 25 down), chosen from the ICT-FaceKit shapes: at
eyeLookDown 1 the upper lid drops about 6.3 mm on a 16 mm lid shell, about 23 degrees of arc, and
at eyeLookUp 1 it rises about 12 degrees (lids follow an upward gaze less than one to one).
Looking towards +x is eyeLookOut for the left eye and eyeLookIn for the right one.

`EyeModel` places each eyeball's rotation centre relative to the model's eye landmarks and gives
the depth of the iris in front of it; `estimate_gaze` inverts the weak-perspective projection of
the iris centre (``centre + depth * direction``) for the direction.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import torch
from torch import Tensor

from core.camera import euler_to_matrix
from core.face_model.model import MorphableModel

__all__ = ["GAZE_RANGE_DEG", "EYES", "EyeModel", "ICT_EYES", "gaze_weights", "gaze_from_weights",
           "gaze_direction", "gaze_angles", "estimate_gaze", "EYE_LANDMARKS"]

#: Angle (degrees) a weight of 1 of eyeLookIn / Out / Up / Down stands for (module docstring).
GAZE_RANGE_DEG: Dict[str, float] = {"In": 30.0, "Out": 30.0, "Up": 20.0, "Down": 25.0}
#: Eye order of every (2, ...) gaze array, and the name suffix of each eye's blendshapes.
EYES: Tuple[Tuple[str, str], ...] = (("left", "_L"), ("right", "_R"))
#: iBUG landmarks around each eye (left = the subject's left, object +x: 42-47; right: 36-41).
EYE_LANDMARKS: Tuple[Tuple[int, ...], Tuple[int, ...]] = (tuple(range(42, 48)), tuple(range(36, 42)))


def gaze_weights(gaze: Tensor, names: Sequence[str]) -> Tensor:
    """eyeLook* weights of a gaze (other entries 0).

    Shape: gaze (B, 2, 2) per eye (yaw, pitch) radians -> (B, K) weights in [0, 1], K = len(names).
    """
    if gaze.dim() != 3 or tuple(gaze.shape[1:]) != (2, 2):
        raise ValueError(f"gaze: expected shape (B, 2, 2), got {tuple(gaze.shape)}")
    index = {n: i for i, n in enumerate(names)}
    out = torch.zeros(gaze.shape[0], len(names), dtype=gaze.dtype, device=gaze.device)
    for e, (eye, suffix) in enumerate(EYES):
        yaw, pitch = gaze[:, e, 0], gaze[:, e, 1]
        towards_x = "Out" if eye == "left" else "In"  # +yaw: left eye outwards, right eye inwards
        away_x = "In" if eye == "left" else "Out"
        for word, value in ((towards_x, yaw), (away_x, -yaw), ("Down", pitch), ("Up", -pitch)):
            name = f"eyeLook{word}{suffix}"
            if name in index:
                out[:, index[name]] = (value / math.radians(GAZE_RANGE_DEG[word])).clamp(0.0, 1.0)
    return out


def gaze_from_weights(expression: Tensor, names: Sequence[str]) -> Tensor:
    """The gaze eyeLook* weights stand for (inverse of `gaze_weights` within range).

    Shape: expression (B, K) -> (B, 2, 2) per eye (yaw, pitch) radians.
    """
    index = {n: i for i, n in enumerate(names)}

    def w(name: str) -> Tensor:
        return expression[:, index[name]] if name in index else torch.zeros_like(expression[:, 0])

    rows = []
    for eye, suffix in EYES:
        towards_x, away_x = ("Out", "In") if eye == "left" else ("In", "Out")
        yaw = (w(f"eyeLook{towards_x}{suffix}") * math.radians(GAZE_RANGE_DEG[towards_x])
               - w(f"eyeLook{away_x}{suffix}") * math.radians(GAZE_RANGE_DEG[away_x]))
        pitch = (w(f"eyeLookDown{suffix}") * math.radians(GAZE_RANGE_DEG["Down"])
                 - w(f"eyeLookUp{suffix}") * math.radians(GAZE_RANGE_DEG["Up"]))
        rows.append(torch.stack([yaw, pitch], -1))
    return torch.stack(rows, 1)


def gaze_direction(gaze: Tensor) -> Tensor:
    """Unit gaze directions in object space, ``Ry(yaw) Rx(pitch) (0, 0, 1)``.

    Shape: gaze (..., 2) (yaw, pitch) -> (..., 3).
    """
    yaw, pitch = gaze[..., 0], gaze[..., 1]
    return torch.stack([torch.sin(yaw) * torch.cos(pitch), -torch.sin(pitch),
                        torch.cos(yaw) * torch.cos(pitch)], -1)


def gaze_angles(direction: Tensor) -> Tensor:
    """(yaw, pitch) of object-space directions (inverse of `gaze_direction`).

    Shape: direction (..., 3) -> (..., 2).
    """
    x, y, z = direction.unbind(-1)
    return torch.stack([torch.atan2(x, z), torch.atan2(-y, torch.sqrt(x * x + z * z))], -1)


@dataclass(frozen=True)
class EyeModel:
    """Where the eyeballs turn, relative to the eye landmarks of a face model.

    Attributes:
        offsets: (2, 3) mm, each eyeball's rotation centre minus the mean of its six eye
            landmarks (`EYE_LANDMARKS`) on the neutral face (object space, eyes (left, right)).
        depth: mm from the rotation centre to the centre of the visible iris disc.
    """

    offsets: Tuple[Tuple[float, float, float], Tuple[float, float, float]]
    depth: float

    @classmethod
    def from_model(cls, model: MorphableModel, regions: Tuple[str, str] = ("eyeball_left", "eyeball_right"),
                   iris_radius_mm: float = 5.9) -> "EyeModel":
        """Measure it on a full face model with eyeball regions (ICT-FaceKit), at the mean identity.

        The rotation centre is the centre of the eyeball mesh's bounding box; the iris is the
        front cap within ``iris_radius_mm`` of the eye's front axis.
        """
        missing = [r for r in regions if r not in model.regions or not len(model.regions[r])]
        if missing or model.landmark_indices is None:
            raise ValueError(f"model {model.name}: needs the regions {list(regions)} and 68 landmarks for an EyeModel")
        offsets, depths = [], []
        for region, landmarks in zip(regions, EYE_LANDMARKS):
            points = model.neutral[model.regions[region]].double()
            centre = 0.5 * (points.min(0).values + points.max(0).values)
            anchor = model.neutral[model.landmark_indices[list(landmarks)]].double().mean(0)
            offsets.append(tuple(float(v) for v in centre - anchor))
            radial = (points[:, :2] - centre[:2]).norm(dim=1)
            iris = (points[:, 2] > centre[2]) & (radial < iris_radius_mm)
            depths.append(float((points[iris].mean(0) - centre).norm()))
        return cls(offsets=(offsets[0], offsets[1]), depth=sum(depths) / 2)

    def centres(self, eye_landmarks: Tensor) -> Tensor:
        """Rotation centres from the eye landmarks' model points.

        Shape: eye_landmarks (B, 2, 6, 3) -> (B, 2, 3), object space mm.
        """
        return eye_landmarks.mean(2) + torch.tensor(self.offsets, dtype=eye_landmarks.dtype)


#: `EyeModel.from_model` of ICT-FaceKit (tests/test_gaze.py checks it against the model).
ICT_EYES = EyeModel(offsets=((-1.62, 1.72, -12.28), (1.62, 1.72, -12.28)), depth=15.22)


def estimate_gaze(iris: Tensor, centres: Tensor, rotation: Tensor, scale: Tensor, trans2d: Tensor,
                  depth: float) -> Tensor:
    """Eye rotation from the iris centres seen under a weak-perspective head pose.

    The iris centre projects at ``project(centre + depth * g)``; its offset from the projected
    rotation centre, divided by ``scale * depth``, is the camera-space (x, -y) of the gaze ``g``,
    whose z (towards the camera) follows from unit length; ``g`` is then taken back to object
    space. Offsets longer than 0.98 of the radius are shortened to it.

    Shape:
        - iris: (B, 2, 2) pixels (eyes (left, right))
        - centres: (B, 2, 3) object space mm
        - rotation: (B, 3) Euler; scale: (B,); trans2d: (B, 2)
        - output: (B, 2, 2) per eye (yaw, pitch) radians
    """
    R = euler_to_matrix(rotation.to(centres.dtype))
    cam = centres @ R.transpose(1, 2)  # (B, 2, 3)
    s = scale.to(centres.dtype)[:, None]
    centre_uv = torch.stack([s * cam[..., 0] + trans2d[:, None, 0], -s * cam[..., 1] + trans2d[:, None, 1]], -1)
    offset = (iris.to(centres.dtype) - centre_uv) / (s[..., None] * depth)
    xy = torch.stack([offset[..., 0], -offset[..., 1]], -1)
    norm = xy.norm(dim=-1, keepdim=True)
    xy = torch.where(norm > 0.98, xy * (0.98 / norm.clamp_min(1e-9)), xy)
    z = torch.sqrt((1.0 - (xy ** 2).sum(-1)).clamp_min(1e-6))
    g_cam = torch.cat([xy, z[..., None]], -1)
    g_obj = g_cam @ R  # R^T g for row vectors
    return gaze_angles(g_obj)
