"""Pictures a person looks at: mesh overlays on photos, landmark comparisons, grids, demo renders.

Images here are numpy ``(H, W, 3)`` uint8 RGB (I/O convention); the rendering itself is
``core.render``. ``python -m utils.visualization --demo [--out DIR]`` renders the ICT neutral face
and a random identity / expression into PNGs under a folder it prints.
"""
from __future__ import annotations

import argparse
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Tuple

import cv2
import numpy as np
import torch
from PIL import Image

from core.camera import (WeakPerspective, camera_to_screen, euler_to_matrix, rotate_points,
                         weak_perspective_screen)
from core.face_model.ict import ICT_REGIONS
from core.lighting import sh_shading
from core.mesh import vertex_normals
from core.render.rasterize import Fragments, interpolate, rasterize
from core.render.shade import (default_sh, render_depth, render_normals, render_shaded)
from core.rig.parts import surface_distance
from core.rig.retarget import OpeningGroups, face_window
from core.rig.rig import Rig
from utils.io.images import check_image, to_uint8
from utils.landmarks.drawing import draw_landmarks

__all__ = [
    "overlay_mesh", "fit_pictures", "FitOverlay", "overlay_weights", "draw_landmark_pair", "image_grid",
    "side_by_side", "blend_pixels",
    "frame_mesh", "render_mesh", "save_png", "save_jpeg", "demo", "main",
]

logger = logging.getLogger(__name__)

DETECTED_COLOR = (0, 255, 0)
PROJECTED_COLOR = (255, 64, 64)
RENDER_MODES = ("shaded", "normals", "depth")
# ICT parts drawn as see-through layers in the original (eye blend / occlusion shells, tear film,
# eyelashes): left out of opaque renders.
_ICT_OVERLAY_REGIONS = ("eye_blend", "eye_occlusion", "lacrimal_fluid", "eyelashes")
# The fit overlay: the ICT face without scalp, ears and neck (its "narrow face"), faded out over a
# few millimetres inside its border; the parts seen through the eye and mouth openings.
_OVERLAY_CORE = ICT_REGIONS["narrow_face"]
_OVERLAY_PARTS = ("mouth_socket", "eye_socket_left", "eye_socket_right", "gums_and_tongue", "teeth",
                  "eyeball_left", "eyeball_right")
_SKIN_GREY = 0.8


def _single(x: np.ndarray | torch.Tensor, name: str, cols: int) -> torch.Tensor:
    """One (N, cols) array or tensor as a (1, N, cols) float tensor."""
    t = torch.as_tensor(x).detach()
    if t.dim() != 2 or t.shape[1] != cols:
        raise ValueError(f"{name}: expected shape (N, {cols}), got {tuple(t.shape)}")
    return t[None].float()


def overlay_mesh(image_rgb: np.ndarray, vertices_px: np.ndarray | torch.Tensor,
                 triangles: np.ndarray | torch.Tensor, alpha: float = 0.6,
                 normals: np.ndarray | torch.Tensor | None = None,
                 vertex_alpha: np.ndarray | torch.Tensor | None = None,
                 colors: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """The fitted mesh, shaded grey at ``alpha`` over the photo (how papers show fits).

    Args:
        image_rgb: (H, W, 3) uint8 photo.
        vertices_px: (V, 3) screen vertices (u, v, depth), e.g. ``weak_perspective_screen``.
        triangles: (F, 3) vertex indices.
        alpha: opacity of the mesh.
        normals: (V, 3) camera-space unit normals, or None to derive them from the screen geometry
            ``(u, -v, depth)``, exact for ``weak_perspective_screen`` (a scaled camera space).
        vertex_alpha: (V,) per-vertex opacity in [0, 1] (times ``alpha``), interpolated: soft edges.
        colors: (V, 3) per-vertex albedo in [0, 1] instead of the grey.
    """
    out = check_image(image_rgb, "image_rgb").copy()
    drawn = _shaded_window(vertices_px, triangles, out.shape[:2], normals, colors, vertex_alpha)
    if drawn is not None:
        (y0, y1), (x0, x1) = drawn.window
        out[y0:y1, x0:x1] = blend_pixels(out[y0:y1, x0:x1], drawn.colour, alpha * drawn.weight)
    return out


def fit_pictures(image_rgb: np.ndarray, vertices_px: np.ndarray | torch.Tensor,
                 triangles: np.ndarray | torch.Tensor, vertex_alpha: np.ndarray | torch.Tensor | None = None,
                 alpha: float = 0.6) -> Tuple[np.ndarray, np.ndarray]:
    """A fit's two pictures from one rasterization and shading: the shaded mesh over the photo
    (``overlay_mesh(image_rgb, vertices_px, triangles, alpha, vertex_alpha=vertex_alpha)``) and the
    shaded geometry alone on white (``overlay_mesh(white, vertices_px, triangles, alpha=1.0)``), the
    same pixels as those two calls.

    Shape:
        image_rgb (H, W, 3) uint8; vertices_px (V, 3); triangles (F, 3); vertex_alpha (V,) -> two (H, W, 3).
    """
    image_rgb = check_image(image_rgb, "image_rgb")
    over, geometry = image_rgb.copy(), np.full_like(image_rgb, 255)
    drawn = _shaded_window(vertices_px, triangles, image_rgb.shape[:2], vertex_alpha=vertex_alpha)
    if drawn is None:  # the mesh covers no pixel centre
        return over, geometry
    (y0, y1), (x0, x1) = drawn.window
    over[y0:y1, x0:x1] = blend_pixels(over[y0:y1, x0:x1], drawn.colour, alpha * drawn.weight)
    covered = drawn.mask.astype(np.float32)
    geometry[y0:y1, x0:x1] = blend_pixels(geometry[y0:y1, x0:x1], drawn.colour, covered)
    return over, geometry


def _mesh_window(vertices_px: torch.Tensor, height: int, width: int
                 ) -> Tuple[Tuple[int, int], Tuple[int, int]] | None:
    """The rows and columns (start, stop) of the pixel centres the screen vertices' bounding box
    holds, within the image; None where it holds none. Pixels outside it are never drawn on, so a
    fit's pictures are rendered there only (a face in a large photo covers a small part of it).

    Shape:
        vertices_px (V, 3).
    """
    finite = vertices_px[torch.isfinite(vertices_px[:, :2]).all(1), :2]
    if len(finite) == 0:
        return None
    lo, hi = finite.amin(0), finite.amax(0)
    x0, y0 = max(int(math.ceil(float(lo[0]))), 0), max(int(math.ceil(float(lo[1]))), 0)
    x1 = min(int(math.floor(float(hi[0]))), width - 1) + 1
    y1 = min(int(math.floor(float(hi[1]))), height - 1) + 1
    return ((y0, y1), (x0, x1)) if x1 > x0 and y1 > y0 else None


@dataclass
class _Drawn:
    """A mesh shaded over the window of a picture it covers (`_shaded_window`).

    window: ((y0, y1), (x0, x1)) rows and columns; colour (h, w, 3) float in [0, 1]; weight (h, w):
    coverage times the interpolated vertex opacity; mask (h, w) bool: coverage.
    """

    window: Tuple[Tuple[int, int], Tuple[int, int]]
    colour: np.ndarray
    weight: np.ndarray
    mask: np.ndarray


def _shaded_window(vertices_px: np.ndarray | torch.Tensor, triangles: np.ndarray | torch.Tensor,
                   size: Tuple[int, int], normals: np.ndarray | torch.Tensor | None = None,
                   colors: np.ndarray | torch.Tensor | None = None,
                   vertex_alpha: np.ndarray | torch.Tensor | None = None) -> _Drawn | None:
    """The mesh rasterized (back faces culled) over the window of an (H, W) = ``size`` picture that
    its screen vertices span (`_mesh_window`; None where it spans no pixel centre), shaded per vertex
    (grey or ``colors`` lit by ``default_sh``, as `FitOverlay` shades video frames) and interpolated
    with the vertex opacities in one pass. The screen points are shifted to the window in float64,
    where the shift of a float32 point by a whole number of pixels is exact: each pixel gets the
    values of a whole-frame rendering."""
    verts = _single(vertices_px, "vertices_px", 3)
    window = _mesh_window(verts[0], *size)
    if window is None:
        return None
    (y0, y1), (x0, x1) = window
    tris = torch.as_tensor(triangles).long()
    # The kernel works in float64 either way; its barycentrics and depth then in the points' dtype.
    local = verts.double() - torch.tensor([float(x0), float(y0), 0.0], dtype=torch.float64)
    shifted = rasterize(local, tris, y1 - y0, x1 - x0, cull_backfaces=True)
    fragments = Fragments(shifted.tri_id, shifted.bary.to(verts.dtype), shifted.depth.to(verts.dtype))
    if normals is None:
        normals_t = vertex_normals(verts * torch.tensor([1.0, -1.0, 1.0]), tris)
    else:
        normals_t = _single(normals, "normals", 3)
    albedo = _SKIN_GREY if colors is None else _single(colors, "colors", 3)
    light = sh_shading(normals_t, default_sh(1, dtype=verts.dtype))
    attributes = [(albedo * light).clamp(0.0, 1.0)]
    if vertex_alpha is not None:
        va = torch.as_tensor(vertex_alpha).detach().float().reshape(1, -1, 1)
        if va.shape[1] != verts.shape[1]:
            raise ValueError(f"vertex_alpha: expected {verts.shape[1]} values, got {va.shape[1]}")
        attributes.append(va.clamp(0.0, 1.0))
    values = interpolate(fragments, tris, torch.cat(attributes, -1))[0].numpy()  # (h, w, 3 or 4); 0 off it
    mask = fragments.mask[0].numpy()
    weight = values[..., 3] if vertex_alpha is not None else mask.astype(np.float32)
    return _Drawn(window, values[..., :3], weight, mask)


def blend_pixels(under: np.ndarray, colour: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """``weight`` of ``colour`` over ``under``, as uint8 pixels.

    Shape:
        under (h, w, 3) uint8; colour (h, w, 3) float in [0, 1]; weight (h, w) in [0, 1] -> (h, w, 3) uint8.
    """
    out = np.multiply(colour, 255.0, dtype=np.float32)   # in float32, in place: under + w (c - under)
    out -= under
    out *= weight[..., None]
    out += under
    return np.clip(np.rint(out, out=out), 0, 255, out=out).astype(np.uint8)


def overlay_weights(rig: Rig, soft_mm: float = 3.0) -> torch.Tensor:
    """Per whole-head vertex opacity of the fit overlay: 1 over the face proper (ICT's narrow face,
    without scalp, ears and neck), fading to 0 over ``soft_mm`` inside its border (distance along
    the mesh's edges, `core.rig.parts.surface_distance`; 3 mm is the width the pictures have had
    since issue 19: that distance counted each edge twice until session 20, and this read 6), 1 on
    the parts seen through the eye and mouth openings, 0 elsewhere.

    Shape:
        -> (V + P,) float in [0, 1].
    """
    ids = rig.head_vertex_ids.long()
    core = (ids >= _OVERLAY_CORE[0]) & (ids < _OVERLAY_CORE[1])
    parts = torch.zeros(rig.n_head_vertices, dtype=torch.bool)
    if rig.parts is not None:
        for name in _OVERLAY_PARTS:
            parts[rig.n_vertices + rig.parts.ids(name)] = True
    points = rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=rig.neutral.dtype))[0]
    distance = surface_distance(points, rig.head_triangles, ~core & ~parts, soft_mm)
    t = (distance / soft_mm).clamp(0.0, 1.0).float()
    fade = t * t * (3.0 - 2.0 * t)                                   # smoothstep
    fade[~core] = 0.0
    fade[parts] = 1.0
    return fade


class FitOverlay:
    """The fitted face over video frames: grey skin with a soft edge, the eyes and mouth interior
    filled by the rig's parts in their own colours (no scalp, ears or neck), at ``alpha``.

    Shaded per vertex (the default white light) and interpolated; only the window around the face
    is rasterized. A rig without parts is drawn as its face with the soft edge (the eye and mouth
    openings stay open).

    Args:
        rig: the fitted person's rig (whole head from `core.rig.head.whole_head` for the parts).
        alpha: opacity of the overlay.
    """

    def __init__(self, rig: Rig, alpha: float = 0.6) -> None:
        self.rig, self.alpha = rig, float(alpha)
        weights = overlay_weights(rig)
        tris = rig.head_triangles.long()
        self.groups = OpeningGroups(rig, tris[(weights[tris] > 0).any(1)])
        self.weights = weights
        self.drawn = weights > 0
        colours = torch.full((rig.n_head_vertices, 3), _SKIN_GREY)
        if rig.parts is not None:
            colours[rig.n_vertices:] = rig.parts.albedo.float()
        self.colors = colours

    def __call__(self, image_rgb: np.ndarray, expression: torch.Tensor, pose: WeakPerspective,
                 gaze: torch.Tensor | None = None, face: torch.Tensor | None = None) -> np.ndarray:
        """The overlay on one frame.

        ``face``: the rig's face mesh at ``expression`` where already computed (`FrameTrack.vertices`).

        Shape:
            image_rgb (H, W, 3) uint8; expression (K,); pose of batch 1; gaze (2, 2) or None; face (V, 3).
        """
        dtype = self.rig.neutral.dtype
        verts = self.rig.head_vertices(expression[None].to(dtype), None if gaze is None else gaze[None],
                                       None if face is None else face[None].to(dtype))
        pose = pose.to(verts.dtype)
        camera = pose.camera_points(verts)
        screen = camera_to_screen(camera, pose.scale, pose.trans2d)[0]
        height, width = image_rgb.shape[:2]
        box = face_window(screen[self.drawn], height, width)
        if box is None:
            return image_rgb
        x0, y0, x1, y1 = box
        _, triangles, fragments = self.groups.rasterize_window(screen, box)
        light = sh_shading(self.groups.normals(camera, pose.matrix()), default_sh(1, dtype=verts.dtype))[0]
        shaded = (self.colors.to(verts.dtype) * light).clamp(0.0, 1.0)
        attributes = torch.cat([shaded, self.weights.to(verts.dtype)[:, None]], 1)   # (N, 4)
        # Colour and weight at every pixel of the window (0 where nothing is drawn, which leaves the
        # frame's pixel as it is), blended over the whole window in NumPy.
        values = interpolate(fragments, triangles, attributes[None])[0].numpy()          # (h, w, 4)
        out = image_rgb.copy()
        weight = self.alpha * np.clip(values[..., 3], 0.0, 1.0)
        out[y0:y1, x0:x1] = blend_pixels(out[y0:y1, x0:x1], values[..., :3], weight)
        return out


def draw_landmark_pair(image_rgb: np.ndarray, detected: np.ndarray | None,
                       projected: np.ndarray | None, radius: int = 2) -> np.ndarray:
    """Detected landmarks (green) and projected model landmarks (red) on one image.

    Either set may be None. Points are (x, y) pixels, shape (68, 2).
    """
    out = check_image(image_rgb, "image_rgb")
    for points, color in ((detected, DETECTED_COLOR), (projected, PROJECTED_COLOR)):
        if points is not None:
            out = draw_landmarks(out, np.asarray(torch.as_tensor(points).detach().cpu()),
                                 color=color, radius=radius)
    return out


def image_grid(images: Sequence[np.ndarray], ncols: int | None = None, pad: int = 4,
               labels: Sequence[str] | None = None, background: int = 255) -> np.ndarray:
    """Tile images (any sizes) in rows of ``ncols``, top-left aligned in equal cells.

    Args:
        images: (H_i, W_i, 3) uint8 images.
        ncols: images per row (default: all in one row).
        pad: gap between cells and around the border, in pixels.
        labels: optional caption drawn at each cell's top-left corner.
        background: grey level of the gaps.
    """
    if not images:
        raise ValueError("images: expected at least one image, got none")
    images = [check_image(im, f"images[{i}]") for i, im in enumerate(images)]
    if labels is not None and len(labels) != len(images):
        raise ValueError(f"labels: expected {len(images)} captions, got {len(labels)}")
    ncols = len(images) if ncols is None else max(1, min(int(ncols), len(images)))
    nrows = -(-len(images) // ncols)
    cell_h = max(im.shape[0] for im in images)
    cell_w = max(im.shape[1] for im in images)
    grid = np.full((nrows * (cell_h + pad) + pad, ncols * (cell_w + pad) + pad, 3), background,
                   dtype=np.uint8)
    for k, im in enumerate(images):
        top = pad + (k // ncols) * (cell_h + pad)
        left = pad + (k % ncols) * (cell_w + pad)
        grid[top:top + im.shape[0], left:left + im.shape[1]] = im
        if labels is not None and labels[k]:
            _caption(grid, labels[k], left, top, im.shape[1], im.shape[0])
    return grid


def _caption(grid: np.ndarray, text: str, left: int, top: int, width: int, height: int) -> None:
    """White text on a darkened band at the top of a cell (within its image), readable over any picture."""
    (w, h), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    band = grid[top:top + min(height, h + base + 6), left:left + min(width, w + 8)]
    band[:] = (band.astype(np.float32) * 0.4).astype(grid.dtype)
    cv2.putText(grid, text, (left + 4, top + h + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)


def side_by_side(*images: np.ndarray, pad: int = 4) -> np.ndarray:
    """Images in one row (e.g. photo | overlay | render)."""
    return image_grid(list(images), ncols=len(images), pad=pad)


def frame_mesh(vertices: torch.Tensor, size: int, angles: Sequence[float] = (0.0, 0.0, 0.0),
               margin: float = 0.08, reference: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Weak-perspective screen vertices that fit a mesh in a ``size`` x ``size`` image.

    Args:
        vertices: (B, V, 3) object-space meshes (mm).
        angles: (pitch, yaw, roll) radians applied to every mesh.
        margin: fraction of the image left free on each side.
        reference: (V, 3) mesh whose frontal bounding box fixes the framing (default: the first
            mesh), so that several meshes share one scale and centre.

    Returns:
        (B, V, 3) screen vertices and (B, 3, 3) the rotation used (for camera-space normals).
    """
    if vertices.dim() != 3 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices: expected shape (B, V, 3), got {tuple(vertices.shape)}")
    ref = vertices[0] if reference is None else reference
    lo, hi = ref.amin(0), ref.amax(0)
    centre = (lo + hi) / 2
    scale = (1.0 - 2.0 * margin) * size / float((hi - lo)[:2].max())
    batch = vertices.shape[0]
    R = euler_to_matrix(torch.tensor([list(angles)], dtype=vertices.dtype).expand(batch, 3))
    half = (size - 1) / 2.0
    screen = weak_perspective_screen(vertices - centre, R,
                                     torch.full((batch,), scale, dtype=vertices.dtype),
                                     torch.full((batch, 2), half, dtype=vertices.dtype))
    return screen, R


def render_mesh(vertices: torch.Tensor, triangles: torch.Tensor, size: int = 256,
                angles: Sequence[float] = (0.0, 0.0, 0.0), mode: str = "shaded",
                reference: torch.Tensor | None = None, background: int = 255
                ) -> list[np.ndarray]:
    """Render object-space meshes framed in square images, one uint8 image per mesh.

    Args:
        vertices: (B, V, 3) meshes in mm (object space, +y up, +z towards the viewer).
        triangles: (F, 3) vertex indices, counter-clockwise from outside.
        angles: (pitch, yaw, roll) head pose in radians.
        mode: 'shaded' (grey, lit), 'normals' (camera-space normals as colours) or 'depth'.
        reference: mesh fixing the framing (see ``frame_mesh``).
        background: grey level of uncovered pixels.
    """
    if mode not in RENDER_MODES:
        raise ValueError(f"mode: expected one of {RENDER_MODES}, got {mode!r}")
    screen, R = frame_mesh(vertices, size, angles, reference=reference)
    fragments = rasterize(screen, triangles, size, size, cull_backfaces=True)
    normals = vertex_normals(rotate_points(vertices, R), triangles)
    if mode == "shaded":
        images = render_shaded(fragments, triangles, normals)
    elif mode == "normals":
        images = render_normals(fragments, triangles, normals)
    else:
        images = render_depth(fragments)
    images = images.expand(-1, 3, -1, -1)
    images = torch.where(fragments.mask[:, None], images,
                         torch.full_like(images, background / 255.0))
    return [to_uint8(im) for im in images]


#: OpenCV builds that let a PNG's row filter be chosen (``IMWRITE_PNG_FILTER``, OpenCV 4.11 and later).
_PNG_FILTER = getattr(cv2, "IMWRITE_PNG_FILTER", None)


def save_png(path: str | Path, image_rgb: np.ndarray, compress_level: int = 6) -> Path:
    """Write a uint8 RGB image as PNG (parent folders created).

    ``compress_level`` is zlib's (0-9): 1 encodes about 4x faster than the default 6 for a
    15 % larger file (pictures written many at a time, e.g. a rig build's visualizations).
    Encoded by OpenCV with every row filtered against the row above ('up') where OpenCV lets the
    filter be chosen: Pillow tries five filters per row, which on a rig's pictures (1552 x 520) took
    two thirds of its 30 ms at level 1, for a file no smaller than 'up' alone gives (13 ms). Else
    (older OpenCV) Pillow's encoder. The pixels read back are the same either way.
    """
    image = check_image(image_rgb, "image_rgb")
    options = None if _PNG_FILTER is None else [
        cv2.IMWRITE_PNG_COMPRESSION, int(compress_level), _PNG_FILTER, cv2.IMWRITE_PNG_FILTER_UP]
    return _write_image(Path(path), image, ".png", options, compress_level=compress_level)


def _write_image(path: Path, image: np.ndarray, suffix: str, opencv: list | None, **pillow) -> Path:
    """Write the checked uint8 RGB ``image`` in the format of ``suffix`` (parent folders created): by
    OpenCV with the ``opencv`` options, or where they are None by Pillow with the ``pillow`` ones."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if opencv is None:
        Image.fromarray(image).save(path, **pillow)
        return path
    ok, encoded = cv2.imencode(suffix, np.ascontiguousarray(image[..., ::-1]), opencv)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the image as {suffix}")
    path.write_bytes(encoded.tobytes())
    return path


#: OpenCV builds that let a JPEG's chroma sampling be chosen (``IMWRITE_JPEG_SAMPLING_FACTOR``, 4.5.5+).
_JPEG_SAMPLING = getattr(cv2, "IMWRITE_JPEG_SAMPLING_FACTOR", None)


def save_jpeg(path: str | Path, image_rgb: np.ndarray, quality: int = 95) -> Path:
    """Write a uint8 RGB image as JPEG (parent folders created), colour at full resolution (4:4:4),
    so that small coloured marks (landmark dots) keep their hue.

    For pictures written many at a time (a rig build's visualizations, as the original release
    writes them): a 1552 x 520 picture takes about 2.5 ms and 170 KB at quality 95, against 14 ms and
    440 KB as the quickest PNG. Encoded by OpenCV where it lets the sampling be chosen, else Pillow.
    """
    image = check_image(image_rgb, "image_rgb")
    if not 1 <= int(quality) <= 100:
        raise ValueError(f"save_jpeg: quality {quality} is not within 1-100")
    options = None if _JPEG_SAMPLING is None else [
        cv2.IMWRITE_JPEG_QUALITY, int(quality), _JPEG_SAMPLING, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]
    return _write_image(Path(path), image, ".jpg", options, quality=int(quality), subsampling=0)


def demo(out_dir: str | Path, model_dir: str | Path | None = None, seed: int = 0,
         size: int = 256) -> list[Path]:
    """Render the ICT neutral face and one random identity + expression to PNGs in ``out_dir``.

    Writes, for each of the two faces, front and three-quarter shaded renders, normals and
    depth; an overlay of the random face (60 % grey) on the neutral render with both faces'
    projected landmarks; and ``summary.png`` with everything in a grid.
    """
    from core.face_model.load import load_face_model
    from utils.get_face_model import ICT_DIR

    model = load_face_model("ict", ICT_DIR if model_dir is None else model_dir)
    hidden = torch.cat([model.regions[name] for name in _ICT_OVERLAY_REGIONS
                        if name in model.regions])
    keep = torch.ones(model.n_vertices, dtype=torch.bool)
    keep[hidden] = False
    model = model.region(torch.nonzero(keep)[:, 0])
    generator = torch.Generator().manual_seed(seed)
    identity = torch.zeros(2, model.n_identity)
    identity[1] = torch.randn(model.n_identity, generator=generator)
    expression = torch.zeros(2, model.n_expression)
    active = torch.randperm(model.n_expression, generator=generator)[:6]
    expression[1, active] = torch.rand(6, generator=generator) * 0.8 + 0.2
    meshes = model.vertices(identity, expression)
    names = ["neutral", "random"]
    logger.info("random face: identity seed %d, expressions %s", seed,
                ", ".join(f"{model.expression_names[i]}={float(expression[1, i]):.2f}"
                          for i in active))

    out_dir = Path(out_dir)
    tiles, labels, written = [], [], []
    views = {"front": (0.0, 0.0, 0.0), "three_quarter": (0.1, 0.6, 0.0)}
    for view, angles in views.items():
        for mode in (("shaded", "normals", "depth") if view == "front" else ("shaded",)):
            images = render_mesh(meshes, model.triangles, size, angles, mode,
                                 reference=meshes[0])
            for name, image in zip(names, images):
                written.append(save_png(out_dir / f"{name}_{view}_{mode}.png", image))
                tiles.append(image)
                labels.append(f"{name} {view} {mode}")

    # Random face over the neutral render, landmarks of both (neutral green, random red).
    base = render_mesh(meshes[:1], model.triangles, size, reference=meshes[0])[0]
    screen, _ = frame_mesh(meshes, size, reference=meshes[0])
    overlay = overlay_mesh(base, screen[1], model.triangles, alpha=0.6)
    landmarks = screen[:, model.landmark_indices, :2]
    overlay = draw_landmark_pair(overlay, landmarks[0], landmarks[1])
    written.append(save_png(out_dir / "overlay_landmarks.png", overlay))
    tiles.append(overlay)
    labels.append("random over neutral")
    written.append(save_png(out_dir / "summary.png",
                            image_grid(tiles, ncols=4, labels=labels)))
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m utils.visualization --demo [--out DIR] [--model DIR]``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", action="store_true",
                        help="render the ICT neutral face and a random face to PNGs")
    parser.add_argument("--out", default="out/visualization_demo", help="output folder")
    parser.add_argument("--model", default=None,
                        help="ICT-FaceKit folder (default: external/ICT-FaceKit)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random face")
    args = parser.parse_args(argv)
    if not args.demo:
        parser.print_help()
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    written = demo(args.out, args.model, seed=args.seed)
    print(f"wrote {len(written)} PNGs to {Path(args.out).resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
