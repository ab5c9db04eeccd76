"""A built rig made to look like its person: the whole head, its parts, a de-lit texture; files out.

After `utils.pipelines.rig.build_rig_from_folder` (the face rig and each photo's fit), one call
makes the rig a whole head (`core.rig.head.whole_head`: head and neck, mouth interior, teeth,
eyeballs, lashes) with a texture atlas estimated from the same photos
(`core.rig.texture_fit.estimate_texture`), and writes it:

- ``rig/rig.npz`` (format 3, the parts included) and ``rig/rig_texture.png`` beside it (where the
  whole head cannot be made, the face rig's archive, so that a caller passing
  ``build_rig_from_folder(save_rig=False)`` loses nothing);
- ``mesh/rig_textured.obj`` (+ ``.mtl``, ``.png``): the neutral whole head with the texture;
- ``mesh/textured/<photo>.obj``: each photo's fitted head, sharing ``rig_texture.png``;
- ``rig/rig.glb``: the textured whole head with its morph targets (`utils.export`).

In the demo (after the rig is built, before the video)::

    from utils.pipelines.appearance import head_rig, write_appearance
    made = write_appearance(rig_run, model, args.out)     # model: the full face model
    target = made.rig                                     # drive this one (textured whole head)
    source = head_rig(source, model)                      # the video person's rig: parts for the overlay
"""
from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import cv2
import numpy as np
import torch

from core.face_model.model import MorphableModel
from core.rig.head import whole_head
from core.rig.rig import Rig, texture_file
from core.rig.texture_fit import TextureConfig, TextureFit, estimate_texture
from utils.background import FILES_NICE, BackgroundWorker
from utils.crop import FaceCrop, crop_batch
from utils.export.gltf import GltfOptions, RigGlbDraft
from utils.export.outputs import prepare_rig_glb, write_rig_glb_draft
from utils.io.meshes import save_textured_obj
from utils.pipelines.rig import RigRun

logger = logging.getLogger(__name__)

__all__ = ["AppearanceRun", "head_rig", "textured_rig", "jawline", "crop_content", "write_appearance", "write_textured_meshes"]



@dataclass
class AppearanceRun:
    """What `write_appearance` made: the rig (whole head, textured), files, timings (s) and the texture fit."""

    rig: Rig
    outputs: Dict[str, Path] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    fit: Optional[TextureFit] = None


def head_rig(rig: Rig, model: MorphableModel) -> Rig:
    """The rig as a whole head with parts and a painted (per-vertex) texture; unchanged when it has parts.

    ``model`` is the full face model (not its face region). Used for a rig without photos of its own
    texture, e.g. the video person's (the overlay fills the eyes and mouth with its parts).
    """
    return rig if rig.parts is not None else whole_head(rig, model)


def textured_rig(rig_run: RigRun, model: MorphableModel, config: TextureConfig = TextureConfig(),
                 head: Optional[Rig] = None) -> TextureFit:
    """The photos' rig as a textured whole head (the texture from the rig's crops, each photo's fit and light).

    Without lighting in the fit (no photometric stage) the texture is the painted per-vertex albedo.
    ``head``: the rig's whole head where already made (`head_rig`), else made here.
    """
    result = rig_run.result
    if result is None:
        raise ValueError("textured_rig: the rig run holds no build result")
    rig = head_rig(result.rig, model) if head is None else head
    if result.sh is None or not rig_run.crops:
        logger.info("no per-photo lighting (photometric stage off): the texture is the per-vertex albedo")
        return TextureFit(rig=rig, texture=rig.texture, weight=torch.zeros(rig.texture.shape[:2]),
                          skin=torch.zeros(rig.texture.shape[:2], dtype=torch.bool), seen_fraction=0.0)
    images, _ = crop_batch(rig_run.crops)
    dtype = rig.neutral.dtype
    return estimate_texture(rig, images.to(dtype), result.params["expression"].to(dtype), result.pose.to(dtype),
                            result.sh.to(dtype), config, jawline=jawline(rig, model),
                            valid=crop_content(rig_run.crops))


def crop_content(crops: List[FaceCrop], margin: int = 2) -> torch.Tensor:
    """(G, S, S) bool: the crop pixels that come from the photo, not the black padding beyond its
    edges (`utils.crop.crop_face`), shrunk by ``margin`` pixels (resampling blends the edge)."""
    masks = []
    for crop in crops:
        content = (crop.image.max(axis=-1) > 0).astype(np.uint8)
        masks.append(cv2.erode(content, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)) > 0)
    return torch.from_numpy(np.stack(masks))


def jawline(rig: Rig, model: MorphableModel) -> Optional[torch.Tensor]:
    """(17, 2) the (x, y) of the jawline landmarks (iBUG 0-16) on the rig's neutral, mm; None where unknown."""
    if model.landmark_indices is None or len(model.landmark_indices) != 68:
        return None
    position = {int(v): i for i, v in enumerate(rig.vertex_ids.long().tolist())}
    ids = [position.get(int(v)) for v in model.landmark_indices[:17].tolist()]
    return None if None in ids else rig.neutral[ids, :2].clone()


def write_textured_meshes(rig: Rig, out_dir: Path, expression: Optional[torch.Tensor] = None,
                          names: Optional[list] = None) -> Dict[str, Path]:
    """``mesh/rig_textured.obj`` (neutral whole head) and, given per-photo expressions,
    ``mesh/textured/<name>.obj``, all with the rig's texture ``rig/rig_texture.png`` (written with the
    rig by `Rig.save`: one PNG, encoded once)."""
    texture = texture_file(Path(out_dir) / "rig" / "rig.npz")
    if not texture.is_file():
        raise ValueError(f"write_textured_meshes: {texture} is missing (save the rig first)")
    return _textured_objs(rig, Path(out_dir), texture.name, expression, names)


def _textured_objs(rig: Rig, out_dir: Path, texture_name: str, expression: Optional[torch.Tensor],
                   names: Optional[list], texture_written_later: bool = False) -> Dict[str, Path]:
    """`write_textured_meshes`' files, naming the texture ``rig/<texture_name>`` (with
    ``texture_written_later``, before it is written: their geometry and UVs do not depend on its pixels)."""
    if rig.uvs is None or rig.uv_triangles is None or rig.texture is None:
        raise ValueError("write_textured_meshes: the rig has no texture atlas")
    mesh_dir = out_dir / "mesh"
    dtype = rig.neutral.dtype
    # The shared arrays once, as the writer takes them (not converted again for every mesh).
    triangles = rig.head_triangles.cpu().numpy().astype(np.int64)
    uvs = rig.uvs.detach().cpu().numpy().astype(np.float64)
    uv_triangles = rig.uv_triangles.cpu().numpy().astype(np.int64)

    def obj(path: Path, mesh, to_rig: str) -> Path:
        return save_textured_obj(path, mesh, triangles, uvs, uv_triangles, texture_file=f"{to_rig}/{texture_name}",
                                 texture_written_later=texture_written_later)

    written = {"rig_textured": obj(mesh_dir / "rig_textured.obj",
                                   rig.head_vertices(torch.zeros(1, rig.n_expression, dtype=dtype))[0], "../rig")}
    if expression is not None and names:
        meshes = rig.head_vertices(expression.to(dtype)).detach().cpu().numpy().astype(np.float64)
        for name, mesh in zip(names, meshes):
            obj(mesh_dir / "textured" / f"{name}.obj", mesh, "../../rig")
        written["textured_meshes"] = mesh_dir / "textured"
    return written


class _GlbFile:
    """``rig.glb`` on the worker: its geometry and targets from the whole head's shape and UVs while
    the texture is estimated (`prepare_rig_glb`), the file once the texture is saved."""

    def __init__(self, head: Rig, options: Optional[GltfOptions]) -> None:
        self.head, self.options = head, options
        self.draft: Optional[RigGlbDraft] = None

    def prepare(self) -> None:
        self.draft = prepare_rig_glb(self.head, options=self.options)

    def write(self, rig: Rig, path: Path, rig_path: Path) -> None:
        if self.draft is None:
            raise RuntimeError("rig.glb: written before it was prepared")
        write_rig_glb_draft(self.draft, rig, path, source=rig_path)


def write_appearance(rig_run: RigRun, model: MorphableModel, out_dir: Path,
                     config: TextureConfig = TextureConfig(), glb: bool = True,
                     glb_options: Optional[GltfOptions] = None,
                     writer: Optional[BackgroundWorker] = None) -> AppearanceRun:
    """Make the photos' rig a textured whole head and write its files (module docstring).

    Args:
        rig_run: `build_rig_from_folder`'s run (its result and crops).
        model: the full face model (e.g. ``load_face_model("ict", ...)``, not its face region).
        out_dir: the same output folder as the rig run's.
        config: texture settings (`TextureConfig`).
        glb: also write ``rig/rig.glb``.
        glb_options: how its targets are stored (None: sparse, `utils.export.outputs.glb_options`).
        writer: the worker thread the rig run's files were queued on (`build_rig_from_folder`'s
            ``writer``): where the rig run's own ``rig.npz`` is queued there (``archive_queued``),
            the whole head's is queued after it, so that it replaces the face rig's; None: the
            files are written on workers of this call's. The whole head's archive (otherwise), the
            textured OBJs and ``rig.glb`` are written on a worker of this call's, done when it
            returns.
    """
    out_dir = Path(out_dir)
    result = rig_run.result
    if result is None:
        raise ValueError("write_appearance: the rig run holds no build result")
    rig_path = out_dir / "rig" / "rig.npz"
    worker = (BackgroundWorker("rig-archive", nice=FILES_NICE) if writer is None
              else contextlib.nullcontext(writer))
    with worker as files, BackgroundWorker("head-files", nice=FILES_NICE) as head_files:
        start = time.perf_counter()
        try:
            head = head_rig(result.rig, model)
        except Exception:
            files.submit(result.rig.save, rig_path)  # the rig built is kept (`build_rig_from_folder(save_rig=)`)
            raise
        # The archive (~0.15 s), the textured OBJs (text, ~0.15 s) and rig.glb's geometry and
        # targets (~0.1 s) need the head's shape and UVs, not its texture's pixels (the files name
        # the PNG written below, or the painted one where the texture fails): they are made while
        # the texture is estimated, and rig.glb once the PNG is written, on a worker of their own,
        # so that they need not wait for the rig run's pictures and meshes (on 16 video frames
        # those keep ``files`` busy for about a second). Only where the rig run's own archive is
        # queued on ``files`` does the head's wait for it there (it replaces that file).
        (files if rig_run.archive_queued else head_files).submit_beside(head.save, rig_path, False)
        # The OBJs beside rig.glb's geometry (on two cores, neither is left to run alone at the end);
        # started first, they are written even where the glTF export fails.
        head_files.submit_beside(_textured_objs, head, out_dir, texture_file(rig_path).name,
                                 result.params["expression"], rig_run.used, True)
        glb_file = _GlbFile(head, glb_options) if glb else None
        if glb_file is not None:
            head_files.submit(glb_file.prepare)
        try:
            fit = textured_rig(rig_run, model, config, head=head)
        except Exception:
            head.save_texture(rig_path)  # the painted texture, which the archive and the OBJs then name
            raise
        run = AppearanceRun(rig=fit.rig, fit=fit, outputs={"rig": rig_path})
        run.timings["texture"] = time.perf_counter() - start
        start = time.perf_counter()
        run.outputs["rig_texture"] = fit.rig.save_texture(rig_path) or texture_file(rig_path)
        run.outputs["rig_textured"] = out_dir / "mesh" / "rig_textured.obj"
        if rig_run.used:
            run.outputs["textured_meshes"] = out_dir / "mesh" / "textured"
        if glb_file is not None:
            run.outputs["rig_glb"] = out_dir / "rig" / "rig.glb"
            head_files.submit(glb_file.write, fit.rig, run.outputs["rig_glb"], rig_path)
    run.timings["writing textured outputs"] = time.perf_counter() - start
    logger.info("textured whole-head rig: %s", ", ".join(f"{k} {v}" for k, v in run.outputs.items()))
    return run
