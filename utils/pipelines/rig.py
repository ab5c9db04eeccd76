"""Photos of one person in, rig and per-image reconstructions out (files under an output folder).

Images -> landmarks and crops (`utils.landmarks`, `utils.crop`) -> rig building (`core.rig.builder`)
-> ``rig/rig.npz``, ``rig/rig.glb`` (`utils.export`), ``mesh/*.obj``, ``params/*.json``,
``visualization/*.jpg``. Every file is written as soon as it is computed (encoded and written by a
worker thread while the next picture is rendered; all are on disk when `build_rig_from_folder`
returns); bad images are reported and skipped, never fatal unless no usable image is left.

One face per image: the one ``face`` chooses (largest, most central, most confident, or the N-th
from the left), landmarked again at a scale that suits it (`utils.landmarks.detect.detect_folder`).
An image whose landmark fit error is far above the others' (`outlier_images`: more than twice the
median of the other images' and at least 2 crop pixels above it) is flagged and, by default, left
out: the rig is built a second time without it.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from core.cpus import single_thread
from core.face_model.model import MorphableModel
from core.rig.builder import RigBuildConfig, RigBuildResult
from utils.background import FILES_NICE, BackgroundWorker
from utils.crop import FaceCrop, crop_batch, crop_face
from utils.export.errors import ExportError
from utils.export.outputs import export_rig
from utils.io.meshes import save_mesh
from utils.landmarks.detect import FaceChoice, FaceLandmarker, Selection, detect_folder
from utils.landmarks.prefetch import FolderPrefetch
from utils.pipelines.builders import RigBuilder, classical_builder
from utils.progress import progress_bar
from utils.visualization import draw_landmark_pair, fit_pictures, overlay_weights, save_jpeg, side_by_side

logger = logging.getLogger(__name__)

__all__ = ["PARAMS_FORMAT_VERSION", "OUTLIER_RATIO", "OUTLIER_MARGIN_PX", "RigInputError", "RigRun",
           "outlier_images", "build_rig_from_folder"]

#: An image is an outlier when its landmark fit error (crop pixels) exceeds OUTLIER_RATIO times the
#: median of the other images' and the median plus OUTLIER_MARGIN_PX (rig_case1's 14 photos spread
#: over 1.5x of their median).
OUTLIER_RATIO = 2.0
OUTLIER_MARGIN_PX = 2.0

#: JPEG quality of the visualizations (`utils.visualization.save_jpeg`, colour at full resolution).
PICTURE_QUALITY = 95

#: ``params/*.json``: 1 (no ``format_version`` key) until 0.6; 2 adds ``format_version``, full
#: ``units`` and ``conventions`` (the other keys are unchanged).
PARAMS_FORMAT_VERSION = 2


class RigInputError(ValueError):
    """No usable face in the rig images (the message names the folder and what went wrong)."""


@dataclass
class RigRun:
    """What a rig-building run did.

    Attributes:
        used: stems of the images in the rig. skipped: image file name -> why it was not used
            (unreadable, no face, no face of the number asked for).
        flagged: stem -> why its fit is an outlier (`outlier_images`); ``left_out`` those of them
            the rig was built without.
        choices: stem -> which face of the image was taken (`utils.landmarks.detect.FaceChoice`).
        landmark_error: stem -> mean landmark fit error in pixels of the photo;
            ``landmark_error_crop`` the same in crop pixels (the 256 px face crops the fit sees).
        outputs: name -> file or folder written. timings: stage -> seconds.
        archive_queued: this run's ``rig/rig.npz`` is queued on the caller's writer
            (`build_rig_from_folder` with ``writer`` and ``save_rig``): another archive at that path
            must be queued after it.
    """

    used: List[str] = field(default_factory=list)
    skipped: Dict[str, str] = field(default_factory=dict)
    flagged: Dict[str, str] = field(default_factory=dict)
    left_out: List[str] = field(default_factory=list)
    choices: Dict[str, FaceChoice] = field(default_factory=dict)
    outputs: Dict[str, Path] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)
    landmark_error: Dict[str, float] = field(default_factory=dict)
    landmark_error_crop: Dict[str, float] = field(default_factory=dict)
    result: Optional[RigBuildResult] = None
    crops: List[FaceCrop] = field(default_factory=list)
    archive_queued: bool = False


def outlier_images(errors: Sequence[float], ratio: float = OUTLIER_RATIO,
                   margin: float = OUTLIER_MARGIN_PX) -> List[int]:
    """Indices of fits far worse than the others': error > ``ratio`` x the median of the *other*
    images' errors and > that median + ``margin`` (crop pixels). Needs three images or more; never
    flags so many that fewer than two would be left.

    Example:
        >>> outlier_images([3.0, 3.4, 2.9, 9.5, 3.1])
        [3]
        >>> outlier_images([3.0, 4.4, 2.9])
        []
    """
    values = np.asarray(errors, dtype=np.float64)
    if len(values) < 3:
        return []
    flagged = []
    for i, value in enumerate(values):
        others = float(np.median(np.delete(values, i)))
        if value > ratio * others and value > others + margin:
            flagged.append(i)
    if len(values) - len(flagged) < 2:
        return []
    return flagged


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
                   projected: np.ndarray, weights: Optional[torch.Tensor] = None) -> np.ndarray:
    """input (with detected vs projected landmarks) | overlay (the face proper, soft edge: ``weights``) |
    shaded geometry."""
    overlay, geometry = fit_pictures(image, screen, triangles, vertex_alpha=weights)
    radius = max(1, round(max(image.shape[:2]) / 256))
    marked = draw_landmark_pair(image, detected, projected, radius=radius)
    return side_by_side(marked, overlay, geometry)


def build_rig_from_folder(rig_dir: Path, out_dir: Path, model: MorphableModel,
                          landmarker: Optional[FaceLandmarker] = None,
                          config: RigBuildConfig = RigBuildConfig(), max_images: Optional[int] = None,
                          visualize: bool = True, builder: Optional[RigBuilder] = None,
                          face: Selection = "largest", drop_outliers: bool = True,
                          export: bool = True, prefetched: Optional[FolderPrefetch] = None,
                          writer: Optional[BackgroundWorker] = None, save_rig: bool = True) -> RigRun:
    """Build a rig from every usable photo in ``rig_dir`` and write the outputs under ``out_dir``.

    Args:
        rig_dir: the photos (one person). out_dir: output folder.
        model: the face model region to fit.
        landmarker: default ``FaceLandmarker()`` (`utils.landmarks.base.DEFAULT_BACKEND`).
        config: the classical builder's settings. max_images: use at most this many photos.
        visualize: write ``visualization/*.jpg``.
        builder: replaces the classical solver (`utils.pipelines.builders.classical_builder` with
            ``config`` and the landmarker's noise profile), e.g. the network's ``INORig.build_rig``.
        face: which face of a photo with several (`utils.landmarks.detect.select_face`).
        drop_outliers: build the rig again without the images `outlier_images` flags.
        export: also write ``rig/rig.glb`` (glTF 2.0, ARKit-named morph targets, `utils.export`).
        prefetched: the folder's landmarks being detected in a child process since start-up
            (`utils.landmarks.prefetch`); its result is taken instead of detecting here.
        writer: where the files are written: a caller's worker thread (the call returns once the rig
            is built and the files are queued; they are complete when the caller closes the worker,
            which raises a writing error), or None: here, before returning.
        save_rig: write ``rig/rig.npz``; False where the caller writes another rig there, as
            `utils.pipelines.appearance.write_appearance` does (the whole head's, or this rig's where
            the whole head cannot be made): compressing an archive that is replaced costs ~0.2 s.

    Raises:
        RigInputError: the folder is missing, empty, or has no image with a detectable face.
    """
    run = RigRun()
    rig_dir, out_dir = Path(rig_dir), Path(out_dir)
    if not rig_dir.is_dir():
        raise RigInputError(f"rig image folder {rig_dir} does not exist")
    start = time.perf_counter()
    landmarker = landmarker or FaceLandmarker()
    if prefetched is not None:
        found = prefetched.faces(rig_dir, landmarker, face)
    else:
        found = detect_folder(rig_dir, landmarker, face)
    run.skipped.update({p.name: why for p, why in found.skipped.items()})
    run.choices = {p.stem: c for p, c in found.choices.items()}
    faces = found.faces[:max_images] if max_images else found.faces
    if not faces:
        detail = "; ".join(f"{k}: {v}" for k, v in run.skipped.items()) or "no image files"
        raise RigInputError(f"no usable face in {rig_dir} ({detail})")
    stems = [p.stem for p, _, _ in faces]
    crops = [crop_face(image, f.landmarks) for _, image, f in faces]
    run.timings["landmark detection"] = time.perf_counter() - start

    builder = builder or classical_builder(model, config, landmarker.backend)
    with single_thread():  # many small tensor operations: a second thread only waits (core.cpus)
        result = builder(*crop_batch(crops))
    run.timings.update(result.timings)
    errors = result.reprojection_error.detach().cpu().numpy().astype(float)
    for i in outlier_images(errors):
        others = float(np.median(np.delete(errors, i)))
        run.flagged[stems[i]] = (f"landmark fit error {errors[i]:.2f} crop px, {errors[i] / others:.1f}x the "
                                 f"other images' median {others:.2f}")
        logger.warning("%s: %s%s", stems[i], run.flagged[stems[i]],
                       ": left out of the rig (second pass)" if drop_outliers else "")
    if run.flagged and drop_outliers:
        keep = [i for i, stem in enumerate(stems) if stem not in run.flagged]
        run.left_out = [stems[i] for i in range(len(stems)) if i not in keep]
        faces, crops, stems = [faces[i] for i in keep], [crops[i] for i in keep], [stems[i] for i in keep]
        start = time.perf_counter()
        with single_thread():
            result = builder(*crop_batch(crops))
        run.timings["second pass (without outliers)"] = time.perf_counter() - start
    run.result, run.crops = result, crops
    errors_crop = result.reprojection_error.detach().cpu().numpy().astype(float)

    rig = result.rig
    meshes = result.image_meshes()
    pictures = []
    for i, (stem, (_, image, _)) in enumerate(zip(stems, faces)):
        params = _params_json(stem, i, result, crops[i], rig.expression_names)
        params["landmark_error_crop_px"] = float(errors_crop[i])
        params["units"]["landmark_error_crop_px"] = "pixels of the 256 px face crop the fit sees"
        run.used.append(stem)
        run.landmark_error[stem] = params["landmark_error_px"]
        run.landmark_error_crop[stem] = float(errors_crop[i])
        pictures.append((stem, image, params))
    run.outputs.update({"rig": out_dir / "rig" / "rig.npz", "rig_neutral": out_dir / "mesh" / "rig_neutral.obj",
                        "mesh": out_dir / "mesh", "params": out_dir / "params"})
    if visualize:
        run.outputs["visualization"] = out_dir / "visualization"
    if export:
        run.outputs["rig_glb"] = out_dir / "rig" / "rig.glb"
    if writer is None:
        _write_rig_outputs(run, result, crops, meshes, pictures, visualize, export, save_rig)
    else:
        writer.submit(_write_rig_outputs, run, result, crops, meshes, pictures, visualize, export, save_rig)
        run.archive_queued = save_rig
    return run


def _write_rig_outputs(run: RigRun, result: RigBuildResult, crops: List[FaceCrop], meshes: torch.Tensor,
                       pictures: List[tuple], visualize: bool, export: bool, save_rig: bool = True) -> None:
    """Write the rig's files at the paths ``run.outputs`` names: rig.npz (where ``save_rig``), rig.glb
    (where ``export``), the neutral and per-photo meshes, params/*.json and the visualizations
    ((stem, photo, params) per photo). Files are encoded and written on a second worker thread while
    the next photo's pictures are rendered; the time taken goes to ``run.timings["writing outputs"]``."""
    start = time.perf_counter()
    rig = result.rig
    weights = overlay_weights(rig)[:rig.n_vertices] if visualize else None  # no scalp or neck (issue 19)
    with BackgroundWorker("rig-files", nice=FILES_NICE) as files:
        if save_rig:
            files.submit(rig.save, run.outputs["rig"])  # compressing it (zlib) overlaps the pictures
        if export:
            try:
                export_rig(rig, run.outputs["rig_glb"], source=run.outputs["rig"] if save_rig else None)
            except ExportError as err:
                run.outputs.pop("rig_glb")
                logger.error("rig.glb not written: %s", err)
        files.submit(save_mesh, run.outputs["rig_neutral"], rig.neutral, rig.triangles, rig.albedo)
        run.outputs["params"].mkdir(parents=True, exist_ok=True)
        for i, (stem, image, params) in enumerate(progress_bar(pictures, desc="writing outputs", unit="image")):
            files.submit(save_mesh, run.outputs["mesh"] / f"{stem}.obj", meshes[i], rig.triangles)
            files.submit(Path.write_text, run.outputs["params"] / f"{stem}.json", json.dumps(params, indent=1))
            if visualize:
                screen = crops[i].pose_in_image(result.pose[i]).screen(meshes[i:i + 1])[0]
                picture = _visualization(image, screen, rig.triangles, crops[i].landmarks_image,
                                         np.asarray(params["landmarks_2d"]), weights)
                path = run.outputs["visualization"] / f"{stem}.jpg"
                files.submit(save_jpeg, path, picture, PICTURE_QUALITY)
    run.timings["writing outputs"] = time.perf_counter() - start
