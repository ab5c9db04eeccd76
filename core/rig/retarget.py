"""Retargeting: a source's expression weights drive a target rig, rendered with its own albedo.

Both rigs hold the same face model's blendshapes (each transferred to its person's face), so the
source's weights carry over by expression name; the target's blendshapes make the expression its
own (a smile on a wider face is wider). The result is rendered with the target's per-vertex albedo
under SH lighting (the source frame's, or a fixed frontal light) in the source's head pose or a
fixed frontal one.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from core.camera import WeakPerspective
from core.lighting import shade
from core.mesh import vertex_normals
from core.render.rasterize import rasterize
from core.render.shade import composite, default_sh, render_vertex_colors
from core.rig.rig import Rig

__all__ = ["RetargetError", "expression_map", "retarget", "frontal_pose", "face_window", "render_rig"]


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


def retarget(target: Rig, expression: Tensor, source_names: Optional[Sequence[str]] = None) -> Tensor:
    """The target's meshes for the source's expression weights (object space, mm).

    Args:
        target: the rig to drive.
        expression: the source's weights.
        source_names: the source's expression names (default: the target's, in its order).

    Shape:
        expression (B, K_source) -> (B, V_target, 3).
    """
    if expression.ndim != 2:
        raise ValueError(f"expression must be (B, K), got {tuple(expression.shape)}")
    if source_names is not None:
        if len(source_names) != expression.shape[1]:
            raise ValueError(f"expression has {expression.shape[1]} weights for {len(source_names)} names")
        index = expression_map(source_names, target.expression_names)
        if index is not None:
            expression = expression[:, index]
    return target.vertices(expression)


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


def render_rig(rig: Rig, vertices: Tensor, pose: WeakPerspective, background: Tensor,
               sh: Optional[Tensor] = None) -> Tensor:
    """Render meshes of a rig with its albedo under SH lighting over a background.

    Only the window around the face is rasterized (`face_window`).

    Args:
        rig: supplies the albedo and triangles.
        vertices: object-space meshes (e.g. `retarget`'s).
        pose: the head poses in the frame's pixels.
        background: frames to draw on, [0, 1].
        sh: camera-space SH lighting; None = a fixed white light from the front (`default_sh`).

    Shape:
        vertices (B, V, 3); pose of batch B; background (B, 3, H, W); sh (B, 9, 3) or None
        -> (B, 3, H, W).
    """
    b, v = vertices.shape[:2]
    if vertices.shape != (b, rig.n_vertices, 3):
        raise ValueError(f"vertices must be (B, {rig.n_vertices}, 3), got {tuple(vertices.shape)}")
    if background.ndim != 4 or background.shape[:2] != (b, 3):
        raise ValueError(f"background must be ({b}, 3, H, W), got {tuple(background.shape)}")
    dtype = vertices.dtype
    if sh is None:
        sh = default_sh(b, dtype=dtype)
    pose = pose.to(dtype)
    screen = pose.screen(vertices)
    colors = shade(rig.albedo.to(dtype)[None].expand(b, -1, -1),
                   vertex_normals(pose.camera_points(vertices), rig.triangles), sh.to(dtype))
    colors = colors.clamp(0.0, 1.0)
    height, width = background.shape[-2:]
    out = background.clone()
    for i in range(b):
        box = face_window(screen[i], height, width)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        local = screen[i:i + 1] - torch.tensor([x0, y0, 0.0], dtype=dtype)
        fragments = rasterize(local, rig.triangles, y1 - y0, x1 - x0, cull_backfaces=True)
        image = render_vertex_colors(fragments, rig.triangles, colors[i:i + 1])
        out[i:i + 1, :, y0:y1, x0:x1] = composite(image, fragments.mask, background[i:i + 1, :, y0:y1, x0:x1])
    return out
