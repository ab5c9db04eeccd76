"""Photos of one person in, rig and per-image reconstructions out (files under an output folder).

Images -> landmarks and crops (`utils.landmarks`, `utils.crop`) -> rig building (`core.rig.builder`)
-> ``rig/rig.npz``, ``mesh/*.obj``, ``params/*.json``, ``visualization/*.png``. Every file is
written as soon as it is computed (encoded and written by a worker thread while the next picture
is rendered; all are on disk when `build_rig_from_folder` returns); bad images are reported and
skipped, never fatal unless no usable image is left.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from core.face_model.model import MorphableModel
from core.rig.builder import RigBuildConfig, RigBuildResult
from utils.background import BackgroundWorker
from utils.crop import FaceCrop, crop_batch, crop_face
from utils.io.meshes import save_mesh
from utils.landmarks.detect import FaceLandmarker, detect_folder
from utils.pipelines.builders import RigBuilder, classical_builder
from utils.process import single_thread
from utils.visualization import draw_landmark_pair, overlay_mesh, save_png, side_by_side

logger = logging.getLogger(__name__)

__all__ = ["PARAMS_FORMAT_VERSION", "RigInputError", "RigRun", "build_rig_from_folder"]

#: zlib level of the visualization PNGs: 1 encodes ~4x faster than PIL's default 6, files ~15 % larger.
PNG_COMPRESSION = 1

#: ``params/*.json``: 1 (no ``format_version`` key) until 0.6; 2 adds ``format_version``, full
#: ``units`` and ``conventions`` (the other keys are unchanged).
PARAMS_FORMAT_VERSION = 2


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


def _params_json(stem: str, i: int, result: RigBuildResult, crop: FaceCrop, names: List[str]) -> dict:
    """One image's ``params/<stem>.json`` (format `PARAMS_FORMAT_VERSION`; units in ``units``)."""
    p = result.params
    crop_pose = result.pose[i]
    pose = crop.pose_in_image(crop_pose)
    projected = crop.to_image(result.landmarks_2d[i].numpy())
    return {
        "format_version": PARAMS_FORMAT_VERSION,
        "image": stem,
        "camera": "weak_perspective",
        "rotation_euler_xyz_rad": pose.rotation[0].tolist(),
        "rotation_matrix": pose.matrix()[0].tolist(),
        "scale": float(pose.scale[0]),
        "trans2d": pose.trans2d[0].tolist(),
        "crop": {"crop_to_image": crop.crop_to_image.tolist(), "scale": float(crop_pose.scale[0]),
                 "trans2d": crop_pose.trans2d[0].tolist()},
        "expression": dict(zip(names, p["expression"][i].tolist())),
        "expression_coefficients": p["expression"][i].tolist(),
        "sh": None if result.sh is None else result.sh[i].tolist(),
        "landmarks_2d": projected.tolist(),
        "landmarks_detected": crop.landmarks_image.tolist(),
        "landmark_error_px": float(np.linalg.norm(projected - crop.landmarks_image, axis=1).mean()),
        "units": {"scale": "pixels per mm", "trans2d": "pixels of the photo", "rotation":
                  "Euler (pitch, yaw, roll) about x, y, z in radians, R = Rz Ry Rx",
                  "landmarks": "pixels of the photo, pixel centres at integer coordinates",
                  "landmark_error_px": "pixels of the photo", "mesh": "millimetres, object space "
                  "(+y up, +z towards the viewer), the face model's vertex order"},
        "conventions": "u = scale * (R X).x + trans2d[0], v = -scale * (R X).y + trans2d[1] (docs/conventions.md)",
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

    ``builder`` replaces the classical solver (`utils.pipelines.builders.classical_builder` with
    ``config`` and the landmarker's noise profile), e.g. the network's ``INORig.build_rig``.

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
    run.timings["landmark detection"] = time.perf_counter() - start

    images, landmarks = crop_batch(crops)
    builder = builder or classical_builder(model, config, landmarker.backend)
    with single_thread():  # many small tensor operations: a second thread only waits (utils.process)
        result = builder(images, landmarks)
    run.timings.update(result.timings)
    run.result = result

    start = time.perf_counter()
    rig = result.rig
    meshes = result.image_meshes()
    # Files are encoded and written on a worker thread while the next image's pictures are rendered.
    with BackgroundWorker("rig-outputs") as writer:
        run.outputs["rig"] = rig.save(out_dir / "rig" / "rig.npz")
        run.outputs["rig_neutral"] = out_dir / "mesh" / "rig_neutral.obj"
        writer.submit(save_mesh, run.outputs["rig_neutral"], rig.neutral, rig.triangles, rig.albedo)
        (out_dir / "params").mkdir(parents=True, exist_ok=True)
        for i, (stem, (_, image, _)) in enumerate(tqdm(list(zip(stems, faces)), desc="writing outputs",
                                                        disable=None)):
            writer.submit(save_mesh, out_dir / "mesh" / f"{stem}.obj", meshes[i], rig.triangles)
            params = _params_json(stem, i, result, crops[i], rig.expression_names)
            writer.submit(Path.write_text, out_dir / "params" / f"{stem}.json", json.dumps(params, indent=1))
            run.used.append(stem)
            run.landmark_error[stem] = params["landmark_error_px"]
            if visualize:
                screen = crops[i].pose_in_image(result.pose[i]).screen(meshes[i:i + 1])[0]
                picture = _visualization(image, screen, rig.triangles, crops[i].landmarks_image,
                                         np.asarray(params["landmarks_2d"]))
                writer.submit(save_png, out_dir / "visualization" / f"{stem}.png", picture, PNG_COMPRESSION)
    for sub in ("mesh", "params", "visualization"):
        if (out_dir / sub).is_dir():
            run.outputs[sub] = out_dir / sub
    run.timings["writing outputs"] = time.perf_counter() - start
    return run
