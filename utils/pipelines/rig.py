"""Photos of one person in, rig and per-image reconstructions out (files under an output folder).

Images -> landmarks and crops (`utils.landmarks`, `utils.crop`) -> rig building (`core.rig.builder`)
-> ``rig/rig.npz``, ``mesh/*.obj``, ``params/*.json``, ``visualization/*.png``. Every file is
written as soon as it is computed; bad images are reported and skipped, never fatal unless no
usable image is left.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from core.camera import euler_to_matrix, weak_perspective_screen
from core.face_model.model import MorphableModel
from core.rig.builder import RigBuildConfig, RigBuildResult, build_rig
from utils.crop import FaceCrop, crop_batch, crop_face
from utils.io.meshes import save_mesh
from utils.landmarks.detect import FaceLandmarker, detect_folder
from utils.visualization import draw_landmark_pair, overlay_mesh, save_png, side_by_side

logger = logging.getLogger(__name__)

__all__ = ["RigInputError", "RigRun", "RigBuilder", "build_rig_from_folder", "image_screen"]

# A rig builder other than the classical solver (e.g. the network's ``INORig.build_rig``):
# crops (G, 3, H, W) in [0, 1] and landmarks (G, 68, 2) crop pixels -> RigBuildResult.
RigBuilder = Callable[[torch.Tensor, torch.Tensor], RigBuildResult]


class RigInputError(ValueError):
    """No usable face in the rig images (the message names the folder and what went wrong)."""


@dataclass
class RigRun:
    """What a rig-building run did: images used and skipped, outputs, timings per stage (s)."""

    used: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    outputs: Dict[str, Path] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    landmark_error: Dict[str, float] = field(default_factory=dict)
    result: Optional[RigBuildResult] = None
    crops: List[FaceCrop] = field(default_factory=list)


def image_screen(vertices: torch.Tensor, rotation: torch.Tensor, scale: torch.Tensor,
                 trans2d: torch.Tensor, crop: FaceCrop) -> torch.Tensor:
    """Screen coordinates (u, v, depth) in the original image of a mesh fitted in a crop.

    The crop's transform is a scale and a shift, so the weak-perspective camera stays one.

    Shape:
        vertices (V, 3); rotation (3,); scale (); trans2d (2,) -> (V, 3).
    """
    screen = weak_perspective_screen(vertices[None], euler_to_matrix(rotation[None]), scale[None],
                                     trans2d[None])[0]
    m = torch.as_tensor(crop.crop_to_image, dtype=screen.dtype)
    step = m[0, 0]
    return torch.cat([screen[:, :2] * step + m[:, 2], screen[:, 2:] * step], dim=1)


def _params_json(stem: str, i: int, result: RigBuildResult, crop: FaceCrop, names: List[str]) -> dict:
    p = result.params
    m = crop.crop_to_image
    rot = p["rotation"][i]
    return {
        "image": stem,
        "camera": "weak_perspective",
        "rotation_euler_xyz_rad": rot.tolist(),
        "rotation_matrix": euler_to_matrix(rot[None])[0].tolist(),
        "scale": float(p["scale"][i]) * float(m[0, 0]),
        "trans2d": (m[:, :2] @ p["trans2d"][i].numpy() + m[:, 2]).tolist(),
        "crop": {"crop_to_image": m.tolist(), "scale": float(p["scale"][i]),
                 "trans2d": p["trans2d"][i].tolist()},
        "expression": dict(zip(names, p["expression"][i].tolist())),
        "expression_coefficients": p["expression"][i].tolist(),
        "sh": None if result.sh is None else result.sh[i].tolist(),
        "landmarks_2d": crop.to_image(result.landmarks_2d[i].numpy()).tolist(),
        "landmarks_detected": crop.landmarks_image.tolist(),
        "landmark_error_px": float(np.linalg.norm(crop.to_image(result.landmarks_2d[i].numpy())
                                                  - crop.landmarks_image, axis=1).mean()),
        "units": {"scale": "pixels per mm", "trans2d": "pixels", "rotation": "radians, R = Rz Ry Rx"},
    }


def _visualization(image: np.ndarray, screen: torch.Tensor, triangles: torch.Tensor, detected: np.ndarray,
                   projected: np.ndarray) -> np.ndarray:
    """input (with detected vs projected landmarks) | overlay | shaded geometry."""
    overlay = overlay_mesh(image, screen, triangles)
    geometry = overlay_mesh(np.full_like(image, 255), screen, triangles, alpha=1.0)
    radius = max(1, round(max(image.shape[:2]) / 256))
    marked = draw_landmark_pair(image, detected, projected, radius=radius)
    return side_by_side(marked, overlay, geometry)


def build_rig_from_folder(rig_dir: Path, out_dir: Path, model: MorphableModel,
                          landmarker: Optional[FaceLandmarker] = None,
                          config: RigBuildConfig = RigBuildConfig(), max_images: Optional[int] = None,
                          visualize: bool = True, builder: Optional[RigBuilder] = None) -> RigRun:
    """Build a rig from every usable photo in ``rig_dir`` and write the outputs under ``out_dir``.

    ``builder`` replaces the classical solver (``config`` is then unused), e.g. the network's
    ``INORig.build_rig``; its stage timings are reported as they come.

    Raises:
        RigInputError: the folder is missing, empty, or has no image with a detectable face.
    """
    run = RigRun()
    rig_dir, out_dir = Path(rig_dir), Path(out_dir)
    if not rig_dir.is_dir():
        raise RigInputError(f"rig image folder {rig_dir} does not exist")
    start = time.perf_counter()
    landmarker = landmarker or FaceLandmarker("auto")
    found = detect_folder(rig_dir, landmarker)
    run.skipped.update({p.name: why for p, why in found.skipped.items()})
    faces = found.faces[:max_images] if max_images else found.faces
    if not faces:
        detail = "; ".join(f"{k}: {v}" for k, v in run.skipped.items()) or "no image files"
        raise RigInputError(f"no usable face in {rig_dir} ({detail})")
    stems = [p.stem for p, _, _ in faces]
    crops = [crop_face(image, face.landmarks) for _, image, face in faces]
    run.crops = crops
    run.timings["landmarks"] = time.perf_counter() - start

    images, landmarks = crop_batch(crops)
    if builder is None:
        result = build_rig(model, images, landmarks, config=config,
                           confidence=landmarker.landmark_weights(landmarks))
        run.timings["coarse fit"] = result.timings["init"] + result.timings["landmarks"]
        run.timings["photometric refinement"] = result.timings["photometric"]
        run.timings["rig code"] = result.timings["rig code"]
    else:
        result = builder(images, landmarks)
        run.timings.update(result.timings)
    run.result = result

    start = time.perf_counter()
    rig = result.rig
    run.outputs["rig"] = rig.save(out_dir / "rig" / "rig.npz")
    run.outputs["rig_neutral"] = save_mesh(out_dir / "mesh" / "rig_neutral.obj", rig.neutral, rig.triangles,
                                           colors=rig.albedo)
    meshes = rig.vertices(result.params["expression"])
    for i, (stem, (_, image, _)) in enumerate(tqdm(list(zip(stems, faces)), desc="writing outputs",
                                                    disable=None)):
        save_mesh(out_dir / "mesh" / f"{stem}.obj", meshes[i], rig.triangles)
        params = _params_json(stem, i, result, crops[i], rig.expression_names)
        (out_dir / "params").mkdir(parents=True, exist_ok=True)
        (out_dir / "params" / f"{stem}.json").write_text(json.dumps(params, indent=1))
        run.used.append(stem)
        run.landmark_error[stem] = params["landmark_error_px"]
        if visualize:
            screen = image_screen(meshes[i], result.params["rotation"][i], result.params["scale"][i],
                                  result.params["trans2d"][i], crops[i])
            save_png(out_dir / "visualization" / f"{stem}.png",
                     _visualization(image, screen, rig.triangles, crops[i].landmarks_image,
                                    np.asarray(params["landmarks_2d"])))
    for sub in ("mesh", "params", "visualization"):
        if (out_dir / sub).is_dir():
            run.outputs[sub] = out_dir / sub
    run.timings["writing outputs"] = time.perf_counter() - start
    return run
