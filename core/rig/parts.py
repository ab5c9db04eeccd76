"""The parts of a head beyond a rig's fitted face region, and how they move.

A rig is fitted on the face region of a face model (ICT: 9,409 vertices). What shows around and
inside it comes from the model's other regions: the rest of the head and neck, the mouth socket,
the eye sockets, gums and tongue, teeth, the eyeballs and the eyelashes (hair is out of scope;
ICT's see-through layers, tear film and occlusion shells, are left out). `RigParts` holds them for
one person, appended after the rig's own vertices: the whole head is ``[rig vertices; part
vertices]``, so the face keeps its indices and every part vertex keeps its model id
(``vertex_ids``).

Parts move as the model defines: each has the model's expression deltas carried onto the person's
shape (teeth and jaw follow ``jawOpen``, lashes follow the lids), and the eyeballs, which no ICT
expression moves, turn rigidly about their centres by the gaze. The gaze is one ``(yaw, pitch)``
per eye in radians (yaw + turns the gaze towards +x, the subject's left; pitch + turns it down;
`utils.io.tracking`'s convention) and is tied to the ``eyeLook*`` weights, which move the lids:
a weight of 1 is `EYE_LOOK_ANGLE` radians of eye rotation. Given a gaze, the lids follow it (the
``eyeLook*`` weights are set from it); given none, the eyeballs follow the ``eyeLook*`` weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from core.camera import euler_to_matrix

__all__ = ["PART_REGIONS", "RIGID_PARTS", "EYEBALLS", "EYE_LOOK_ANGLE", "PART_COLOURS", "SCLERA", "IRIS",
           "PUPIL", "IRIS_RADIUS_MM", "PUPIL_RADIUS_MM", "RigParts", "look_names", "gaze_from_expression",
           "expression_with_gaze", "as_gaze", "eye_axis", "eye_colours", "sphere_centre", "surface_distance", "EyelidContact"]

#: The model regions a whole-head rig adds to its face (ICT names), in this order. ICT's eyelashes
#: (``"eyelashes"``, which can be added) are cards drawn with transparency in the original; opaque at
#: video resolution they read as a thick black eyeliner over the lids, so they are left out by default.
PART_REGIONS: Tuple[str, ...] = ("head_and_neck", "mouth_socket", "eye_socket_left", "eye_socket_right",
                                 "gums_and_tongue", "teeth", "eyeball_left", "eyeball_right")
#: Parts that move rigidly with their own expression deltas only (no skin correctives carried in).
RIGID_PARTS: Tuple[str, ...] = ("teeth", "eyeball_left", "eyeball_right")
#: The eyeballs, left (+x, the subject's left) then right.
EYEBALLS: Tuple[str, str] = ("eyeball_left", "eyeball_right")
#: Eye rotation (radians) at an ``eyeLook*`` weight of 1. ARKit gives no angle; 0.4 rad (23 degrees) is
#: a typical full gaze off-centre, and ICT's lids turn by about half of it at weight 1 (up 0.13, down 0.23
#: rad, fitted to the lid and tear-film deltas about the eye centre), as lids follow a vertical gaze.
EYE_LOOK_ANGLE = 0.4
#: Albedo of the parts without a photo of them (RGB in [0, 1], the rig's albedo convention). The
#: mouth's are darker than the tissue: renders have no occlusion shadow, which darkens a real mouth.
PART_COLOURS: Dict[str, Tuple[float, float, float]] = {
    "mouth_socket": (0.22, 0.07, 0.07),
    "gums_and_tongue": (0.50, 0.21, 0.21),
    "teeth": (0.80, 0.76, 0.68),
    "eyelashes": (0.10, 0.08, 0.07),
}
SCLERA = (0.88, 0.85, 0.82)
IRIS = (0.30, 0.19, 0.11)
PUPIL = (0.03, 0.03, 0.03)
IRIS_RADIUS_MM = 5.9
PUPIL_RADIUS_MM = 2.3
_LOOK = ("Up", "Down", "In", "Out")


def look_names(side: str) -> List[str]:
    """``eyeLookUp_L``, ``eyeLookDown_L``, ``eyeLookIn_L``, ``eyeLookOut_L`` for side ``"L"`` / ``"R"``."""
    return [f"eyeLook{d}_{side}" for d in _LOOK]


def _look_index(names: Sequence[str]) -> Optional[Tensor]:
    """(2, 4) positions of the eight eyeLook weights in ``names`` (left row first), or None if any is absent."""
    position = {n: i for i, n in enumerate(names)}
    rows = [[position.get(n, -1) for n in look_names(side)] for side in ("L", "R")]
    index = torch.tensor(rows, dtype=torch.long)
    return None if bool((index < 0).any()) else index


def gaze_from_expression(expression: Tensor, names: Sequence[str]) -> Tensor:
    """The eyes' ``(yaw, pitch)`` implied by the ``eyeLook*`` weights (zeros where the model has none).

    For the left eye (+x) looking out turns the gaze to +x; for the right eye looking in does.

    Shape:
        expression (B, K) -> gaze (B, 2, 2): [left, right] x (yaw, pitch), radians.
    """
    index = _look_index(names)
    gaze = expression.new_zeros(expression.shape[0], 2, 2)
    if index is None:
        return gaze
    w = expression[:, index]  # (B, 2, 4): up, down, in, out
    gaze[:, 0, 0] = (w[:, 0, 3] - w[:, 0, 2]) * EYE_LOOK_ANGLE
    gaze[:, 1, 0] = (w[:, 1, 2] - w[:, 1, 3]) * EYE_LOOK_ANGLE
    gaze[:, :, 1] = (w[:, :, 1] - w[:, :, 0]) * EYE_LOOK_ANGLE
    return gaze


def expression_with_gaze(expression: Tensor, gaze: Tensor, names: Sequence[str]) -> Tensor:
    """The expression with its ``eyeLook*`` weights set from the gaze (clipped to [0, 1]), so the lids follow it.

    Shape:
        expression (B, K); gaze (B, 2, 2) or (B, 2) (both eyes alike) -> (B, K).
    """
    gaze = as_gaze(gaze, expression.shape[0]).to(expression.dtype)
    index = _look_index(names)
    if index is None:
        return expression
    t = gaze / EYE_LOOK_ANGLE
    yaw_left, yaw_right, pitch = t[:, 0, 0], t[:, 1, 0], t[:, :, 1]
    w = torch.stack([
        torch.stack([(-pitch[:, 0]), pitch[:, 0], -yaw_left, yaw_left], -1),
        torch.stack([(-pitch[:, 1]), pitch[:, 1], yaw_right, -yaw_right], -1),
    ], 1).clamp(0.0, 1.0)  # (B, 2, 4)
    out = expression.clone()
    out[:, index.reshape(-1)] = w.reshape(w.shape[0], -1)
    return out


def as_gaze(gaze: Tensor, batch: int) -> Tensor:
    """A gaze as (B, 2, 2) [left, right] x (yaw, pitch); a (B, 2) gaze is both eyes'.

    Raises:
        ValueError: another shape.
    """
    if gaze.ndim == 2 and gaze.shape == (batch, 2):
        gaze = gaze[:, None].expand(batch, 2, 2)
    if gaze.shape != (batch, 2, 2):
        raise ValueError(f"gaze must be ({batch}, 2, 2) [left, right] x (yaw, pitch) or ({batch}, 2), "
                         f"got {tuple(gaze.shape)}")
    return gaze


def surface_distance(points: Tensor, triangles: Tensor, sources: Tensor, limit: float) -> Tensor:
    """Distance (mm) along the mesh's edges from each vertex to the nearest source vertex, up to ``limit``
    (``limit`` where farther or unreachable); each edge counts once, whichever triangles share it.

    Bellman-Ford rounds over the edges (torch's ``scatter_reduce``), relaxing only paths shorter than
    ``limit``: as many rounds as the longest such path has edges (about 15 on a head for 5-10 mm,
    ~10 ms), the same distances as Dijkstra's search without importing SciPy's graph package (~0.1 s).

    Shape:
        points (N, 3); triangles (F, 3); sources (N,) bool -> (N,).
    """
    n = len(points)
    p = points.detach().cpu().double()
    t = triangles.long().cpu()
    first, second = torch.cat([t[:, 0], t[:, 1], t[:, 2]]), torch.cat([t[:, 1], t[:, 2], t[:, 0]])
    key = torch.unique(torch.minimum(first, second) * n + torch.maximum(first, second))  # each edge once
    a, b = key // n, key % n
    length = (p[a] - p[b]).norm(dim=1)
    tail, head, step = torch.cat([a, b]), torch.cat([b, a]), torch.cat([length, length])
    sources = sources.cpu()
    into = ~sources[head]  # a source stays at 0: only the edges into the others are relaxed
    tail, head, step = tail[into], head[into], step[into]
    distance = torch.full((n,), float("inf"), dtype=torch.float64)
    distance[sources] = 0.0
    for _ in range(n):  # a shortest path has fewer than n edges
        reach = distance[tail] + step
        reach = torch.where(reach < limit, reach, float("inf"))
        nearer = distance.scatter_reduce(0, head, reach, "amin", include_self=True)
        if torch.equal(nearer, distance):
            break
        distance = nearer
    return distance.clamp(max=float(limit)).to(points.dtype)


def sphere_centre(points: Tensor) -> Tuple[Tensor, float]:
    """Least-squares sphere through the points behind their median depth (an eyeball's rear, without
    the cornea's bulge): centre (3,) and radius (mm).

    Shape:
        points (N, 3).
    """
    p = points.double()
    rear = p[p[:, 2] <= p[:, 2].median()]
    a = torch.cat([2.0 * rear, torch.ones(len(rear), 1, dtype=p.dtype)], 1)
    sol = torch.linalg.lstsq(a, (rear ** 2).sum(1, keepdim=True)).solution[:, 0]
    centre = sol[:3]
    return centre.to(points.dtype), float((sol[3] + centre.dot(centre)).sqrt())


def eye_axis(points: Tensor, centre: Tensor) -> Tensor:
    """An eyeball's front axis: the unit direction from its centre to its cornea's apex (the vertex
    farthest along +z). Shape: points (N, 3), centre (3,) -> (3,)."""
    apex = points[points[:, 2].argmax()] - centre
    return apex / apex.norm().clamp(min=1e-9)


def eye_colours(points: Tensor, centre: Tensor, iris: Sequence[float] = IRIS,
                axis: Optional[Tensor] = None) -> Tensor:
    """Sclera, iris (darker towards the limbus) and pupil at points of an eyeball.

    By the distance from the eye's front axis (``axis`` through ``centre``, default +z), as the
    synthetic subjects'.

    Shape:
        points (N, 3) mm; centre (3,); axis (3,) or None -> (N, 3) in [0, 1].
    """
    axis = torch.tensor([0.0, 0.0, 1.0], dtype=points.dtype) if axis is None else axis.to(points.dtype)
    d = points - centre
    along = d @ axis
    radial = (d - along[:, None] * axis).norm(dim=1)
    front = along > 0
    limbus = ((radial - (IRIS_RADIUS_MM - 1.0)) / 0.4).sigmoid()
    iris_t = torch.tensor(iris, dtype=points.dtype)
    colours = torch.where((front & (radial < IRIS_RADIUS_MM))[:, None], iris_t * (1.0 - 0.5 * limbus[:, None]),
                          torch.tensor(SCLERA, dtype=points.dtype))
    return torch.where((front & (radial < PUPIL_RADIUS_MM))[:, None], torch.tensor(PUPIL, dtype=points.dtype), colours)


class EyelidContact:
    """Keeps the lids outside the eyeballs: face vertices that an expression or a turned eye would
    put inside an eyeball are moved out along the ray from its centre to its surface plus a margin,
    so lids slide over the cornea instead of letting it through (linear blendshapes move a lid along
    a straight line, which cuts the eyeball's curve at partial blinks and turned gazes).

    The eyeball's surface is taken as its radius by the angle from its front axis (centre to
    cornea apex), in 1-degree bins, from the parts' neutral: an eyeball is round about its axis.

    Args:
        face: (V, 3) the rig's face at rest. parts: the rig's parts (with both eyeballs).
        margin: skin kept this far (mm) outside the eyeball.
    """

    def __init__(self, face: Tensor, parts: "RigParts", margin: float = 0.3) -> None:
        self.eyes = []
        for eye, name in enumerate(EYEBALLS):
            ids = parts.ids(name)
            if len(ids) == 0:
                continue
            centre = parts.eye_centres[eye].to(face.dtype)
            points = parts.neutral[ids].to(face.dtype) - centre
            axis = points[points[:, 2].argmax()]
            axis = axis / axis.norm()
            radius = points.norm(dim=1)
            angle = torch.rad2deg(torch.acos((points @ axis / radius).clamp(-1.0, 1.0)))
            profile = torch.zeros(181, dtype=face.dtype).scatter_reduce(0, angle.long().clamp(0, 180), radius,
                                                                       reduce="amax")
            profile = torch.maximum(profile, torch.roll(profile, 1)).maximum(torch.roll(profile, -1))  # bin edges
            near = torch.nonzero(((face - centre).norm(dim=1) < float(radius.max()) + 6.0)
                                 & ((face - centre) @ axis > -0.5 * float(radius.max())))[:, 0]
            self.eyes.append((eye, centre, axis, profile + margin, near))

    def __call__(self, face: Tensor, gaze: Optional[Tensor]) -> Tensor:
        """The face with its vertices moved out of the eyeballs (turned by ``gaze``).

        Shape:
            face (B, V, 3); gaze (B, 2, 2) or None -> (B, V, 3).
        """
        out = face
        for eye, centre, axis, profile, near in self.eyes:
            if len(near) == 0:
                continue
            turned = axis.expand(face.shape[0], 3)
            if gaze is not None:
                g = as_gaze(gaze, face.shape[0]).to(face.dtype)
                zero = torch.zeros_like(g[:, 0, 0])
                rotation = euler_to_matrix(torch.stack([g[:, eye, 1], g[:, eye, 0], zero], -1))
                turned = (rotation @ axis)
            d = face[:, near] - centre                                               # (B, M, 3)
            r = d.norm(dim=-1).clamp(min=1e-6)
            angle = torch.rad2deg(torch.acos(((d * turned[:, None]).sum(-1) / r).clamp(-1.0, 1.0)))
            floor = profile[angle.long().clamp(0, 180)]
            inside = r < floor
            if bool(inside.any()):
                if out is face:
                    out = face.clone()
                scale = torch.where(inside, floor / r, torch.ones_like(r))
                out[:, near] = centre + d * scale[..., None]
        return out


@dataclass
class RigParts:
    """One person's head parts beyond a rig's V vertices (P more vertices, appended after them).

    Attributes:
        neutral: (P, 3) mm. blendshapes: (K, P, 3) deltas per unit expression weight (the rig's K).
        albedo: (P, 3) in [0, 1]. vertex_ids: (P,) ids in the full face model.
        triangles: (F, 3) into the whole head ``[rig vertices; part vertices]`` (V + P): every model
            triangle of the head that is not one of the rig's own.
        region: (P,) index into ``names`` of each vertex's part. names: the part names (`PART_REGIONS`).
        eye_centres: (2, 3) the eyeballs' rotation centres in the neutral, left then right (mm).
        mirror: (V + P,) the whole head's vertex that is each vertex's mirror image (x -> -x) on the
            model's symmetric mean face, -1 where there is none; or None.
        neck_cut: height (y, mm, at rest) below which renders leave the neck and shoulders out
            (the face region's too), or None (everything drawn).
    """

    neutral: Tensor
    blendshapes: Tensor
    albedo: Tensor
    vertex_ids: Tensor
    triangles: Tensor
    region: Tensor
    names: List[str]
    eye_centres: Tensor
    mirror: Optional[Tensor] = None
    neck_cut: Optional[float] = None

    @property
    def n_vertices(self) -> int:
        return int(self.neutral.shape[0])

    def ids(self, name: str) -> Tensor:
        """Indices (into the P part vertices) of one part; empty when absent."""
        if name not in self.names:
            return torch.zeros(0, dtype=torch.long)
        return torch.nonzero(self.region == self.names.index(name))[:, 0]

    def vertices(self, expression: Tensor, gaze: Optional[Tensor] = None) -> Tensor:
        """The parts' vertices (object space, mm), the eyeballs turned by the gaze.

        Shape:
            expression (B, K); gaze (B, 2, 2) [left, right] x (yaw, pitch) radians, or None (straight
            ahead) -> (B, P, 3).
        """
        k = self.blendshapes.shape[0]
        if expression.ndim != 2 or expression.shape[1] != k:
            raise ValueError(f"expression must be (B, {k}), got {tuple(expression.shape)}")
        dtype = expression.dtype
        flat = self.neutral.reshape(1, -1).to(dtype) + expression @ self.blendshapes.reshape(k, -1).to(dtype)
        verts = flat.reshape(expression.shape[0], -1, 3)
        if gaze is None or not bool(gaze.any()):
            return verts
        gaze = as_gaze(gaze, expression.shape[0]).to(dtype)
        verts = verts.clone()
        zero = torch.zeros_like(gaze[:, 0, 0])
        for eye, name in enumerate(EYEBALLS):
            ids = self.ids(name)
            if len(ids) == 0:
                continue
            rotation = euler_to_matrix(torch.stack([gaze[:, eye, 1], gaze[:, eye, 0], zero], -1))  # (B, 3, 3)
            centre = self.eye_centres[eye].to(dtype)
            verts[:, ids] = (verts[:, ids] - centre) @ rotation.transpose(1, 2) + centre
        return verts

    def to_arrays(self) -> Dict[str, np.ndarray]:
        """The parts as ``parts_*`` arrays for ``rig.npz``."""
        out = {} if self.mirror is None else {"parts_mirror": self.mirror.cpu().numpy().astype(np.int64)}
        if self.neck_cut is not None:
            out["parts_neck_cut"] = np.array(float(self.neck_cut))
        return out | {
            "parts_neutral": self.neutral.detach().cpu().numpy().astype(np.float32),
            "parts_blendshapes": self.blendshapes.detach().cpu().numpy().astype(np.float32),
            "parts_albedo": self.albedo.detach().cpu().numpy().astype(np.float32),
            "parts_vertex_ids": self.vertex_ids.cpu().numpy().astype(np.int64),
            "parts_triangles": self.triangles.cpu().numpy().astype(np.int64),
            "parts_region": self.region.cpu().numpy().astype(np.int64),
            "parts_names": np.array(self.names),
            "parts_eye_centres": self.eye_centres.detach().cpu().numpy().astype(np.float32),
        }

    @classmethod
    def from_arrays(cls, a: Dict[str, np.ndarray], n_rig: int, n_expression: int) -> "RigParts":
        """The parts from ``parts_*`` arrays (`to_arrays`).

        Raises:
            ValueError: the arrays' shapes disagree with each other or with the rig's V and K.
        """
        neutral = a["parts_neutral"]
        p = neutral.shape[0] if neutral.ndim == 2 else -1
        names = [str(n) for n in a["parts_names"]]
        checks = [
            (neutral.shape == (p, 3), f"parts_neutral {neutral.shape}"),
            (a["parts_blendshapes"].shape == (n_expression, p, 3), f"parts_blendshapes {a['parts_blendshapes'].shape}"),
            (a["parts_albedo"].shape == (p, 3), f"parts_albedo {a['parts_albedo'].shape}"),
            (a["parts_vertex_ids"].shape == (p,), f"parts_vertex_ids {a['parts_vertex_ids'].shape}"),
            (a["parts_region"].shape == (p,) and (p == 0 or int(a["parts_region"].max()) < len(names)),
             "parts_region"),
            (a["parts_eye_centres"].shape == (2, 3), f"parts_eye_centres {a['parts_eye_centres'].shape}"),
            ("parts_mirror" not in a or a["parts_mirror"].shape == (n_rig + p,), "parts_mirror"),
            (a["parts_triangles"].ndim == 2 and a["parts_triangles"].shape[1] == 3
             and (a["parts_triangles"].size == 0 or 0 <= int(a["parts_triangles"].min())
                  and int(a["parts_triangles"].max()) < n_rig + p), "parts_triangles"),
        ]
        bad = [what for ok, what in checks if not ok]
        if bad:
            raise ValueError(f"inconsistent head parts for {p} part vertices, {n_rig} rig vertices and "
                             f"{n_expression} expressions: {', '.join(bad)}")
        return cls(neutral=torch.from_numpy(neutral), blendshapes=torch.from_numpy(a["parts_blendshapes"]),
                   albedo=torch.from_numpy(a["parts_albedo"]), vertex_ids=torch.from_numpy(a["parts_vertex_ids"]),
                   triangles=torch.from_numpy(a["parts_triangles"]), region=torch.from_numpy(a["parts_region"]),
                   names=names, eye_centres=torch.from_numpy(a["parts_eye_centres"]),
                   mirror=torch.from_numpy(a["parts_mirror"]) if "parts_mirror" in a else None,
                   neck_cut=float(a["parts_neck_cut"]) if "parts_neck_cut" in a else None)
