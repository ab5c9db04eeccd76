"""Evaluation protocols shared by the rig benchmarks (bench_rig.py, bench_network.py).

A rig builder is any callable ``builder(images, landmarks) -> RigBuildResult`` over one person's
crops: the classical `core.rig.builder.build_rig` with a config, or the network's
`models.inorig.INORig.build_rig`. The inputs (synthetic subjects with their landmark sources,
detected and cropped photos, video frame sets) are prepared once and fed to every builder, so
methods are compared on the same data.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from core.face_model.model import MorphableModel
from core.fitting.photometric import SKIN_PRIOR
from core.metrics import aligned_mesh_error
from core.rig.builder import RigBuildConfig, RigBuildResult, build_rig
from core.rig.head import whole_head
from core.rig.rig import Rig
from utils.crop import FaceCrop, crop_batch, crop_face
from utils.io.images import to_float_batch
from utils.io.video import VideoReader
from utils.landmarks.detect import FaceLandmarker, detect_folder
from utils.landmarks.noise import detector_weights
from utils.pipelines.appearance import textured_rig
from utils.pipelines.rig import RigRun
from utils.synthetic.generator import SyntheticGenerator, SyntheticSubject
from utils.synthetic.truth import detector_landmarks

__all__ = ["Builder", "SHARED", "SOURCES", "SOURCE_DETECTOR", "detector_weighted", "SyntheticCase",
           "synthetic_cases", "timed", "synthetic_row", "print_synthetic_table", "RetargetPairs", "crop_batch",
           "detect_crops", "folder_crops", "video_frame_sets", "identity_consistency"]

Builder = Callable[[Tensor, Tensor], RigBuildResult]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
SOURCES = ("gt + 1.5 px noise", "detected (dlib)")
SOURCE_DETECTOR = {SOURCES[0]: None, SOURCES[1]: "dlib"}  # whose noise profile weights the landmarks
SYNTHETIC_COLUMNS = ("images used", "rig neutral error", "mean-face baseline", "ratio", "per-image mesh error",
                     "baseline", "ratio", "s per rig")


def detector_weighted(builder: Callable[..., RigBuildResult], detector: Optional[str]) -> Builder:
    """``builder`` with the landmarks weighted by ``detector``'s noise profile (`utils.landmarks.noise`),
    as the pipelines do for their landmarker; unchanged for None or a detector without a profile."""
    if detector is None:
        return builder
    return lambda images, landmarks: builder(images, landmarks, confidence=detector_weights(detector, landmarks))


def textured(crops: List[FaceCrop], model: MorphableModel, face: MorphableModel, detector: str) -> Rig:
    """A textured whole-head rig from face crops (the classical builder, as the pipelines).

    ``model`` is the full face model, ``face`` its fitted region; ``detector`` names the landmarks."""
    images, landmarks = crop_batch(crops)
    result = detector_weighted(partial(build_rig, face, config=RigBuildConfig()), detector)(images, landmarks)
    return textured_rig(RigRun(result=result, crops=crops), model).rig


def mean_face(model: MorphableModel, face: MorphableModel) -> Rig:
    """The model's mean face as a whole-head rig with the skin prior's colour: a rig without identity."""
    rig = Rig.from_model(face, torch.zeros(face.n_identity), albedo=torch.tensor(SKIN_PRIOR).expand(face.n_vertices, 3))
    return whole_head(rig, model)


@dataclass
class SyntheticCase:
    """One held-out synthetic subject with its ground truth and builder inputs.

    Attributes:
        subject: the generated subject (ICT face region ground truth).
        truth_neutral: (1, V, 3) neutral shape, mm. truth_meshes: (M, V, 3) per-image meshes, mm.
        base_neutral: aligned error of the model's mean face vs the neutral (mm).
        base_meshes: (M,) aligned error of the mean face vs each image's mesh (mm).
        inputs: landmark source -> crops (G, 3, S, S), landmarks (G, 68, 2), image indices used;
            a source without any usable image is absent.
    """

    subject: SyntheticSubject
    truth_neutral: Tensor
    truth_meshes: Tensor
    base_neutral: float
    base_meshes: Tensor
    inputs: Dict[str, Tuple[Tensor, Tensor, List[int]]]


def synthetic_cases(model: MorphableModel, face: MorphableModel, subjects: int, images: int,
                    landmarker: FaceLandmarker) -> Iterator[SyntheticCase]:
    """Held-out subjects (plain int seeds 1000+; training uses seed lists), default generator.

    Two landmark sources per subject: ground truth as a detector places it (contour points on the
    silhouette, `detector_landmarks`) + 1.5 px Gaussian noise, and the landmarker's detections on
    the renders (images without a detection dropped).
    """
    generator = SyntheticGenerator(model)
    rng = np.random.default_rng(0)
    for s in tqdm(range(subjects), desc="synthetic subjects", disable=None):
        subj = generator.subject(images, seed=1000 + s)
        truth_neutral = torch.from_numpy(subj.neutral).float()[None]
        truth_meshes = torch.from_numpy(subj.vertices).float()
        contour_truth = detector_landmarks(face, subj)
        noisy = contour_truth + rng.normal(0.0, 1.5, contour_truth.shape)
        detected, keep = [], []
        for k, image in enumerate(subj.images):
            faces = landmarker.detect(image)
            if faces:
                detected.append(faces[0].landmarks)
                keep.append(k)
        inputs = {}
        for source, lms, idx in ((SOURCES[0], noisy, list(range(images))), (SOURCES[1], detected, keep)):
            if idx:
                inputs[source] = (to_float_batch(subj.images[idx]), torch.from_numpy(np.asarray(lms)).float(), idx)
        yield SyntheticCase(
            subject=subj, truth_neutral=truth_neutral, truth_meshes=truth_meshes,
            base_neutral=float(aligned_mesh_error(face.neutral[None], truth_neutral)),
            base_meshes=aligned_mesh_error(face.neutral[None].expand_as(truth_meshes), truth_meshes),
            inputs=inputs)


def timed(builder: Builder, images: Tensor, landmarks: Tensor) -> Tuple[RigBuildResult, float]:
    """The builder's result and the seconds the call took."""
    start = time.perf_counter()
    result = builder(images, landmarks)
    return result, time.perf_counter() - start


def synthetic_row(case: SyntheticCase, source: str, result: RigBuildResult, seconds: float) -> tuple:
    """(rig neutral error, baseline, mean per-image mesh error, baseline, images used, seconds)."""
    idx = case.inputs[source][2]
    rig = result.rig
    err_neutral = float(aligned_mesh_error(rig.neutral[None], case.truth_neutral))
    err_meshes = aligned_mesh_error(rig.vertices(result.params["expression"]), case.truth_meshes[idx])
    return (err_neutral, case.base_neutral, float(err_meshes.mean()), float(case.base_meshes[idx].mean()),
            len(idx), seconds)


def print_synthetic_table(rows: Dict[Tuple[str, ...], list], key_columns: Sequence[str], total_images: int) -> None:
    """Markdown table of `synthetic_row` rows averaged over subjects, one line per key."""
    print("| " + " | ".join([*key_columns, *SYNTHETIC_COLUMNS]) + " |")
    print("|" + "---|" * (len(key_columns) + len(SYNTHETIC_COLUMNS)))
    for key, r in rows.items():
        if not r:
            continue
        a = np.asarray(r)
        print("| " + " | ".join(key) + f" | {a[:, 4].sum():.0f}/{total_images} | {a[:, 0].mean():.2f} | "
              f"{a[:, 1].mean():.2f} | {a[:, 0].mean() / a[:, 1].mean():.2f} | {a[:, 2].mean():.2f} | "
              f"{a[:, 3].mean():.2f} | {a[:, 2].mean() / a[:, 3].mean():.2f} | {a[:, 5].mean():.2f} |")


class RetargetPairs:
    """Retargeting errors over subject pairs (s, s + 1 mod S), fed one subject at a time.

    Subject s's estimated expression weights drive subject s + 1's rig; the truth is the face model
    with s + 1's identity and s's true expressions (generic expression basis). Only the first and
    the previous subject's rigs are held.

    Args:
        face: the model the ground truth belongs to (ICT face region).
    """

    def __init__(self, face: MorphableModel) -> None:
        self.face = face
        self.first: Tuple | None = None
        self.previous: Tuple | None = None
        self.errors: List[Tuple[float, float]] = []

    def add(self, rig: Rig, identity: np.ndarray, estimated: Tensor, truth: np.ndarray) -> None:
        """One subject: its rig, true identity (n_id,), estimated and true expressions (G, K)."""
        entry = (rig, torch.as_tensor(identity, dtype=torch.float32), estimated.float(),
                 torch.as_tensor(truth, dtype=torch.float32))
        if self.previous is None:
            self.first = entry
        else:
            self.errors.append(self._error(self.previous, entry))
        self.previous = entry

    def close(self) -> List[Tuple[float, float]]:
        """Adds the wrap-around pair (last, first); returns (error, mean-face baseline) per pair (mm)."""
        if self.first is not None and self.previous is not self.first:
            self.errors.append(self._error(self.previous, self.first))
            self.first = self.previous = None
        return self.errors

    def _error(self, source: Tuple, target: Tuple) -> Tuple[float, float]:
        _, _, estimated, truth_expression = source
        rig, identity, _, _ = target
        n = len(truth_expression)
        truth = self.face.vertices(identity[None].expand(n, -1), truth_expression)
        mean_face = self.face.vertices(None, truth_expression)
        return (float(aligned_mesh_error(rig.vertices(estimated), truth).mean()),
                float(aligned_mesh_error(mean_face, truth).mean()))


def detect_crops(frames: Sequence[np.ndarray], landmarker: FaceLandmarker) -> List[FaceCrop]:
    """The largest face of each frame, cropped as the rig pipeline does; faceless frames dropped."""
    crops = []
    for frame in frames:
        faces = landmarker.detect(frame)
        if faces:
            crops.append(crop_face(frame, faces[0].landmarks))
    return crops


def folder_crops(folder: Path, landmarker: FaceLandmarker) -> List[FaceCrop]:
    """Crops of every usable photo in ``folder``, detected and cropped as `utils.pipelines.rig` does."""
    found = detect_folder(folder, landmarker)
    return [crop_face(image, face.landmarks) for _, image, face in found.faces]


def _video_frames(path: Path, indices: list) -> list:
    wanted, frames = set(indices), []
    with VideoReader(path) as reader:
        for i, frame in enumerate(reader):
            if i in wanted:
                frames.append(frame)
            if i >= max(indices):
                break
    return frames


def video_frame_sets(videos: Sequence[Path], landmarker: FaceLandmarker, count: int = 16
                     ) -> Dict[str, Tuple[List[FaceCrop], List[FaceCrop]]]:
    """Per video (by stem): crops of alternate frames of ``count`` spread over the clip, two disjoint sets."""
    sets = {}
    for path in tqdm(videos, desc="video frames", disable=None):
        with VideoReader(path) as reader:
            n = reader.info.frame_count or 0
        n = max(n, count)
        frames = _video_frames(path, np.linspace(0, n - 1, count).round().astype(int).tolist())
        sets[path.stem] = (detect_crops(frames[0::2], landmarker), detect_crops(frames[1::2], landmarker))
    return sets


def identity_consistency(builder: Builder, sets: Dict[str, Tuple[List[FaceCrop], List[FaceCrop]]]
                         ) -> Tuple[Dict[str, float], List[float]]:
    """Aligned neutral differences (mm): per video between its two sets' rigs, and between the
    first sets' rigs of all pairs of different videos (people)."""
    rigs = {name: tuple(builder(*crop_batch(crops)).rig for crops in pair) for name, pair in sets.items()}
    within = {k: float(aligned_mesh_error(a.neutral[None], b.neutral[None])) for k, (a, b) in rigs.items()}
    names = list(rigs)
    between = [float(aligned_mesh_error(rigs[p][0].neutral[None], rigs[q][0].neutral[None]))
               for i, p in enumerate(names) for q in names[i + 1:]]
    return within, between
