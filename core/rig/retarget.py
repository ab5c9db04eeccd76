"""Retargeting: a source's expression weights drive a target rig, rendered with its own appearance.

Both rigs hold the same face model's blendshapes (each transferred to its person's face), so the
source's weights carry over by expression name; the target's blendshapes make the expression its
own (a smile on a wider face is wider). A rig with parts (`core.rig.head.whole_head`) is driven and
rendered as a whole head, eyeballs turned by the gaze where one is given, teeth following the jaw.

`render_rig` renders it with the target's texture (or per-vertex albedo) under SH lighting: by
default a neutral white light (`neutral_sh`), so the target looks like itself whatever the video;
the source frame's light on request, with its colour cast taken out (`white_balanced`), in the
source's head pose or a fixed frontal one.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from core.camera import WeakPerspective, camera_to_screen
from core.lighting import sh_shading
from core.render.rasterize import Fragments, rasterize
from core.render.shade import default_sh, render_vertex_colors
from core.render.textured import VertexNormals, shade_texels
from core.rig.rig import Rig

__all__ = ["RetargetError", "expression_map", "retarget", "frontal_pose", "face_window", "render_rig",
           "neutral_sh", "white_balanced", "render_mesh_of", "neck_offsets", "OpeningGroups", "RigRenderer"]

#: Luminance weights of the RGB channels (Rec. 601), for `white_balanced`.
_LUMA = (0.299, 0.587, 0.114)


class RetargetError(ValueError):
    """The source's expressions cannot drive the target rig (the message says which are missing)."""


def expression_map(source_names: Sequence[str], target_names: Sequence[str]) -> Optional[Tensor]:
    """Index of each target expression among the source's, or None when the lists are equal.

    Raises:
        RetargetError: a target expression has no source expression of that name.
    """
    source_names, target_names = list(source_names), list(target_names)
    if source_names == target_names:
        return None
    position = {name: i for i, name in enumerate(source_names)}
    missing = [n for n in target_names if n not in position]
    if missing:
        raise RetargetError(f"the target rig's expressions {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                            f"are not among the source's {len(source_names)} expressions (rigs of different "
                            f"face models?)")
    return torch.tensor([position[n] for n in target_names], dtype=torch.long)


def retarget(target: Rig, expression: Tensor, source_names: Optional[Sequence[str]] = None, *,
             head: bool = False, gaze: Optional[Tensor] = None) -> Tensor:
    """The target's meshes for the source's expression weights (object space, mm).

    Args:
        target: the rig to drive.
        expression: the source's weights.
        source_names: the source's expression names (default: the target's, in its order).
        head: the whole head (`Rig.head_vertices`: V + P vertices, the face first) instead of the face.
        gaze: with ``head``, the eyes' (yaw, pitch) per eye (`Rig.head_vertices`), or None.

    Shape:
        expression (B, K_source); gaze (B, 2, 2) or None -> (B, V_target, 3), or (B, V + P, 3) with ``head``.
    """
    if expression.ndim != 2:
        raise ValueError(f"expression must be (B, K), got {tuple(expression.shape)}")
    if source_names is not None:
        if len(source_names) != expression.shape[1]:
            raise ValueError(f"expression has {expression.shape[1]} weights for {len(source_names)} names")
        index = expression_map(source_names, target.expression_names)
        if index is not None:
            expression = expression[:, index]
    return target.head_vertices(expression, gaze) if head else target.vertices(expression)


def frontal_pose(neutral: Tensor, height: int, width: int, fill: float = 0.6) -> WeakPerspective:
    """A frontal weak-perspective pose centring a face so that its height fills ``fill`` of the frame.

    Shape:
        neutral (V, 3) -> a pose of batch 1.
    """
    lo, hi = neutral.amin(0), neutral.amax(0)
    centre = (lo + hi) / 2
    scale = fill * min(height, width) / float((hi - lo)[:2].max())
    trans = torch.tensor([[(width - 1) / 2 - scale * float(centre[0]), (height - 1) / 2 + scale * float(centre[1])]],
                         dtype=neutral.dtype)
    return WeakPerspective(torch.zeros(1, 3, dtype=neutral.dtype), torch.tensor([scale], dtype=neutral.dtype), trans)


def face_window(screen: Tensor, height: int, width: int, margin: int = 2) -> Optional[Tuple[int, int, int, int]]:
    """Pixel box ``(x0, y0, x1, y1)`` (exclusive ends) around screen vertices, clipped to the frame.

    None when the face is entirely outside the frame. Rendering only this window is what keeps
    full-frame video renders cheap.

    Shape:
        screen (V, 2 or 3).
    """
    lo = torch.floor(screen[:, :2].amin(0)).long() - margin
    hi = torch.ceil(screen[:, :2].amax(0)).long() + margin + 1
    x0, y0 = max(int(lo[0]), 0), max(int(lo[1]), 0)
    x1, y1 = min(int(hi[0]), width), min(int(hi[1]), height)
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1, y1


def neutral_sh(batch: int = 1, dtype: torch.dtype = torch.float32) -> Tensor:
    """A neutral white light for showing a rig's own colours: mostly ambient, a soft key light from
    the front and a little above, so a frontal surface is lit at about 1 (its albedo shows as is).

    Shape:
        -> (batch, 9, 3).
    """
    return default_sh(batch, ambient=0.55, diffuse=0.5, direction=(0.15, 0.3, 1.0), dtype=dtype)


def white_balanced(sh: Tensor) -> Tensor:
    """SH lighting with its colour taken out: every channel gets the luminance of the three
    (direction and brightness kept, no colour cast).

    Shape:
        sh (B, 9, 3) -> (B, 9, 3).
    """
    luma = torch.tensor(_LUMA, dtype=sh.dtype, device=sh.device)
    return (sh @ luma)[..., None].expand_as(sh).clone()


def render_mesh_of(rig: Rig, n_vertices: int) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
    """Triangles, per-vertex albedo and per-corner uv ids of the rig's face (``n_vertices`` = V) or
    whole head (V + P) as renders draw them: without the neck below the rig's `RigParts.neck_cut`.

    Raises:
        ValueError: ``n_vertices`` is neither.
    """
    if n_vertices == rig.n_head_vertices:
        triangles, albedo, uv = rig.head_triangles.long(), rig.head_albedo, rig.uv_triangles
    elif n_vertices == rig.n_vertices:
        triangles, albedo = rig.triangles.long(), rig.albedo
        uv = None if rig.uv_triangles is None else rig.uv_triangles[:len(rig.triangles)]
    else:
        raise ValueError(f"vertices must be (B, {rig.n_vertices}, 3) (the face) or (B, {rig.n_head_vertices}, 3) "
                         f"(the whole head), got {n_vertices} vertices")
    if rig.parts is not None and rig.parts.neck_cut is not None:
        rest = rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=rig.neutral.dtype))[0, :n_vertices]
        keep = rest[triangles][..., 1].amax(1) > rig.parts.neck_cut
        triangles = triangles[keep]
        uv = None if uv is None else uv[keep]
    return triangles, albedo, uv


def neck_offsets(rig: Rig, n_vertices: int) -> Optional[Tensor]:
    """Offsets lifting the vertices below the rig's neck cut onto it (at rest), so that renders end
    the neck with a clean level edge; None without a cut.

    Shape:
        -> (n_vertices, 3) or None.
    """
    if rig.parts is None or rig.parts.neck_cut is None:
        return None
    rest = rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=rig.neutral.dtype))[0, :n_vertices]
    offsets = torch.zeros_like(rest)
    offsets[:, 1] = (rig.parts.neck_cut - rest[:, 1]).clamp(min=0.0)
    return offsets


#: Head parts seen only through an opening of the face, by opening: drawn where that opening's rim
#: (the face vertices bordering them) shows on screen.
_OPENINGS = {"mouth": ("mouth_socket", "teeth", "gums_and_tongue"),
             "eyes": ("eye_socket_left", "eye_socket_right", "eyeball_left", "eyeball_right")}


class OpeningGroups:
    """A rig's triangles grouped for culling and shading: the face, each opening's interior (mouth,
    eyes), and the rest of the head.

    The mouth interior and the eyes are seen only through their openings, so per frame only their
    triangles whose screen box meets the box of the opening's rim (the face vertices bordering
    them) are rasterized. Only the face deforms much: per frame its vertex normals come from its
    triangles, while the other parts' are their rest normals turned with the head (a jaw-turned
    tooth or a gaze-turned eye is shaded as at rest: small, dim parts).

    Args:
        rig: the rig (its parts name the interiors).
        triangles: the triangles to group (e.g. `render_mesh_of`'s), over the whole head or the face.
    """

    def __init__(self, rig: Rig, triangles: Tensor) -> None:
        triangles = triangles.long()
        n = rig.n_vertices if int(triangles.max()) < rig.n_vertices else rig.n_head_vertices
        group = torch.zeros(len(triangles), dtype=torch.long)
        self.rims: list = []
        static = torch.zeros(n, dtype=torch.bool)
        if rig.parts is not None and n == rig.n_head_vertices:
            static[rig.n_vertices:] = True
            for k, names in enumerate(_OPENINGS.values(), start=1):
                inside = torch.zeros(n, dtype=torch.bool)
                for name in names:
                    inside[rig.n_vertices + rig.parts.ids(name)] = True
                member = inside[triangles]
                group[member.all(1)] = k
                bridge = member.any(1) & ~member.all(1)
                self.rims.append(torch.unique(triangles[bridge][~inside[triangles[bridge]]]))
            group[static[triangles].all(1) & (group == 0)] = len(_OPENINGS) + 1  # the rest of the head
        self.order = torch.argsort(group, stable=True)
        self.triangles = triangles[self.order]
        sorted_group = group[self.order]
        self.starts = [int((sorted_group < k).sum()) for k in range(len(_OPENINGS) + 3)]
        self.starts = [min(x, len(triangles)) for x in self.starts]
        # Per opening, its interior's vertices and its triangles over them (`visible` tests only those).
        self._interiors = []
        for k in range(1, len(self.rims) + 1):
            ids, local = torch.unique(self.triangles[self.starts[k]:self.starts[k + 1]], return_inverse=True)
            self._interiors.append((ids, local))
        face = self.triangles[:self.starts[1]]
        self._face_normals = VertexNormals(face, n)
        dynamic = torch.zeros(n, dtype=torch.bool)
        dynamic[face.reshape(-1)] = True
        self._static = ~dynamic
        rest = rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=rig.neutral.dtype))[:, :n]
        self._rest_normals = VertexNormals(self.triangles, n)(rest)[0]           # object space

    def visible(self, screen: Tensor) -> Tensor:
        """Positions (in `triangles`) to rasterize for one screen mesh (V, 3)."""
        keep = [torch.arange(self.starts[0], self.starts[1]), torch.arange(self.starts[-2], self.starts[-1])]
        for k, (rim, (ids, local)) in enumerate(zip(self.rims, self._interiors), start=1):
            lo_t, hi_t = self.starts[k], self.starts[k + 1]
            if hi_t == lo_t or len(rim) == 0:
                continue
            lo = screen[rim, :2].amin(0) - 2.0
            hi = screen[rim, :2].amax(0) + 2.0
            inside = screen[ids, :2]
            near = ((inside >= lo) & (inside <= hi)).all(1)  # the interior's vertices in the rim's box
            hit = near[local].any(1)
            keep.append(lo_t + torch.nonzero(hit)[:, 0])
        return torch.cat(keep)

    def rasterize_window(self, screen: Tensor, box: Tuple[int, int, int, int]) -> Tuple[Tensor, Tensor, Fragments]:
        """Rasterize one screen mesh inside the pixel window ``box`` = (x0, y0, x1, y1) (`face_window`),
        back faces culled, the eyes and mouth interior only behind their openings (`visible`).

        Shape:
            screen (V, 3) -> (positions in `triangles` drawn (T,), their triangles (T, 3), `Fragments`
            of the window (1, y1 - y0, x1 - x0)).
        """
        x0, y0, x1, y1 = box
        drawn = self.visible(screen)
        triangles = self.triangles[drawn]
        local = screen - torch.tensor([x0, y0, 0.0], dtype=screen.dtype)
        return drawn, triangles, rasterize(local[None], triangles, y1 - y0, x1 - x0, cull_backfaces=True)

    def normals(self, camera: Tensor, rotation: Tensor) -> Tensor:
        """Unit camera-space vertex normals: the face's from its triangles, the rest turned from rest.

        Shape:
            camera (B, V, 3) the posed vertices; rotation (B, 3, 3) the head pose -> (B, V, 3).
        """
        face = self._face_normals(camera)
        turned = self._rest_normals.to(camera.dtype) @ rotation.transpose(1, 2)  # (B, V, 3)
        return torch.where(self._static[None, :, None], turned, face)


class RigRenderer:
    """Renders one rig's meshes (its face, or its whole head) with its appearance, fast.

    What does not change from frame to frame is prepared once: the triangles, the vertex-triangle
    incidences that sum triangle normals into vertex normals (sparse products), the per-corner
    texture coordinates and the texture. Per frame: normals, SH shading per vertex, a windowed
    rasterization (the mouth interior and the eyes only behind their openings, `OpeningGroups`),
    and per covered pixel one texture lookup times the interpolated shading.

    Args:
        rig: the rig.
        n_vertices: render its face (``rig.n_vertices``) or whole head (``rig.n_head_vertices``, the default).
        textured: use the rig's texture where it has one (else its per-vertex albedo).
        bilinear: sample the texture bilinearly (default: the nearest texel, faster; the default
            atlas has several texels per pixel of a video's face).
    """

    def __init__(self, rig: Rig, n_vertices: Optional[int] = None, textured: bool = True,
                 bilinear: bool = False) -> None:
        n = rig.n_head_vertices if n_vertices is None else int(n_vertices)
        triangles, albedo, uv_triangles = render_mesh_of(rig, n)
        self.n_vertices = n
        self.bilinear = bool(bilinear)
        self._neck = neck_offsets(rig, n)
        self.albedo = albedo
        self.groups = OpeningGroups(rig, triangles)
        self.triangles = self.groups.triangles
        self.textured = bool(textured and rig.texture is not None and uv_triangles is not None and rig.uvs is not None)
        if self.textured:
            self._corner_uv = rig.uvs[uv_triangles.long()[self.groups.order]]  # (F, 3, 2)
            self._texture = rig.texture.contiguous()                               # (Ht, Wt, 3)

    def __call__(self, vertices: Tensor, pose: WeakPerspective, background: Tensor,
                 sh: Optional[Tensor] = None) -> Tensor:
        """See `render_rig`. Shape: vertices (B, V_render, 3); background (B, 3, H, W) -> (B, 3, H, W)."""
        b = vertices.shape[0]
        if vertices.ndim != 3 or vertices.shape[1:] != (self.n_vertices, 3):
            raise ValueError(f"vertices must be (B, {self.n_vertices}, 3), got {tuple(vertices.shape)}")
        if background.ndim != 4 or background.shape[:2] != (b, 3):
            raise ValueError(f"background must be ({b}, 3, H, W), got {tuple(background.shape)}")
        dtype = vertices.dtype
        if self._neck is not None:
            vertices = vertices + self._neck.to(dtype)
        sh = neutral_sh(b, dtype=dtype) if sh is None else sh.to(dtype)
        pose = pose.to(dtype)
        camera = pose.camera_points(vertices)
        screen = camera_to_screen(camera, pose.scale, pose.trans2d)
        height, width = background.shape[-2:]
        out = background.clone()
        for i in range(b):
            box = face_window(screen[i], height, width)
            if box is None:
                continue
            x0, y0, x1, y1 = box
            drawn, triangles, fragments = self.groups.rasterize_window(screen[i], box)
            light = sh_shading(self.groups.normals(camera[i:i + 1], pose[i].matrix()), sh[i:i + 1])[0]
            window = out[i, :, y0:y1, x0:x1]
            if self.textured:
                shade_texels(fragments, triangles, light, self._corner_uv[drawn], self._texture, window,
                             bilinear=self.bilinear)
            else:
                colors = (self.albedo.to(dtype) * light).clamp(0.0, 1.0)[None]
                image = render_vertex_colors(fragments, triangles, colors)[0]
                window.copy_(torch.where(fragments.mask[0][None], image.to(out.dtype), window))
        return out


def render_rig(rig: Rig, vertices: Tensor, pose: WeakPerspective, background: Tensor,
               sh: Optional[Tensor] = None, textured: bool = True) -> Tensor:
    """Render meshes of a rig with its appearance under SH lighting over a background.

    The rig's texture where it has one (and ``textured``), else its per-vertex albedo, times the
    SH shading of the vertex normals (interpolated). Only the window around the mesh is rasterized
    (`face_window`); the texture is sampled bilinearly. A video renders many frames of one rig:
    keep a `RigRenderer` instead.

    Args:
        rig: supplies the appearance and triangles.
        vertices: object-space meshes of the face (`retarget`, `Rig.vertices`) or of the whole head
            (``retarget(..., head=True)``, `Rig.head_vertices`).
        pose: the head poses in the frame's pixels.
        background: frames to draw on, [0, 1].
        sh: camera-space SH lighting; None = `neutral_sh`.
        textured: use the texture where the rig has one.

    Shape:
        vertices (B, V, 3) or (B, V + P, 3); pose of batch B; background (B, 3, H, W); sh (B, 9, 3)
        or None -> (B, 3, H, W).
    """
    if vertices.ndim != 3 or vertices.shape[2] != 3:
        raise ValueError(f"vertices must be (B, V, 3), got {tuple(vertices.shape)}")
    return RigRenderer(rig, vertices.shape[1], textured, bilinear=True)(vertices, pose, background, sh)
