"""Training data for the network: a cached set of synthetic subjects with ground truth.

Rendering (`utils.synthetic`) and landmark detection are too slow to do per training step, so
`build_cache` renders them once into one compressed ``.npz`` file and `SyntheticFaceDataset` reads
it, picks a few images per subject and augments them (`models.training.augment`) on the fly::

    python -m models.training.data --out cache/train_synth.npz --subjects 600 --images 6

Seeds: subject ``i`` is ``SyntheticGenerator.subject(images, seed=(seed, i, 1))``, a seed *list*
ending in 1, so that training subjects never coincide with the evaluation subjects of the
benchmarks, which use the plain ints 1000, 1001, ... NumPy's ``SeedSequence`` pads its entropy
with zeros, so a plain ``(seed, i)`` would not do: ``(1000, 0)`` is the same stream as ``1000``.
The trailing 1 keeps every training seed apart from any int below 2**64 and from the ``(seed, i)``
subjects of ``python -m utils.synthetic``.

The cache (one ``.npz``; S subjects, M images each, H x W crops; everything is loaded into memory,
S * M * H * W * 3 bytes of images, about 0.7 GB for 600 x 6 x 256 x 256):

- ``images`` uint8 (S, M, H, W, 3): the renders, RGB.
- ``identity`` (S, n_id), ``expression`` (S, M, K), ``rotation`` (S, M, 3) Euler (pitch, yaw, roll)
  radians, ``scale`` (S, M) pixels per mm, ``trans2d`` (S, M, 2) pixels, ``sh`` (S, M, 9, 3):
  the generator's ground truth (weak-perspective camera, docs/conventions.md).
- ``landmarks`` (S, M, 68, 2): ground-truth landmarks as a detector sees them
  (`detector_landmarks`: the jawline on the silhouette).
- ``landmarks_detected`` (S, M, 68, 2): the dlib landmarker's points on the render (NaN where it
  found no face, or when built with ``detect=False``); ``detected_ok`` (S, M) bool.
- ``meta``: a JSON string: format version, model name, image size, seed and per-subject seeds,
  expression names, the `SyntheticConfig`, whether detection ran.

Ground truth is defined on the ICT face region (``model.region('face')``, 9,409 vertices): meshes
are ``face.vertices(identity, expression)``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import numpy as np
import torch
from torch.utils.data import Dataset

from core.face_model.model import MorphableModel
from models.training.augment import AugmentConfig, augment_images, augment_landmarks
from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator
from utils.synthetic.truth import detector_landmarks

__all__ = [
    "CACHE_FORMAT", "TrainingCacheError", "build_cache", "load_cache", "SyntheticFaceDataset", "main",
]

logger = logging.getLogger(__name__)

#: ``meta["format"]`` of the caches this module writes. Version 1 (up to 0.6) named the Euler
#: angles ``angles`` and the 2-D offset ``translation``; `load_cache` reads both.
CACHE_FORMAT = "inorig-synthetic-training-cache/2"
_READABLE_FORMATS = {"inorig-synthetic-training-cache/1": {"rotation": "angles", "trans2d": "translation"},
                     CACHE_FORMAT: {}}

# Trailing shape of each per-image array after (S, M); "n": the number of expression names.
_PER_IMAGE = {"expression": ("n",), "rotation": (3,), "scale": (), "trans2d": (2,),
              "sh": (9, 3), "landmarks": (68, 2), "landmarks_detected": (68, 2),
              "detected_ok": ()}
_ARRAYS = ("images", "identity", *_PER_IMAGE, "meta")


class TrainingCacheError(ValueError):
    """A training cache file that is missing arrays, has inconsistent shapes or cannot be read."""


def _subject_seed(seed: int, index: int) -> List[int]:
    """Seed list of training subject ``index`` (see the module docstring)."""
    return [int(seed), int(index), 1]


def _detect(landmarker, image: np.ndarray) -> Optional[np.ndarray]:
    """The largest face's 68 points, or None where the landmarker finds no face."""
    from utils.landmarks.detect import select_face

    faces = landmarker.detect(image)
    return select_face(faces, image.shape).landmarks if faces else None


def build_cache(model: MorphableModel, out: Union[str, Path], subjects: int, images: int,
                seed: int = 2026, detect: bool = True,
                synthetic_config: SyntheticConfig = SyntheticConfig(supersample=1)) -> Path:
    """Render ``subjects`` x ``images`` synthetic crops with ground truth into one ``.npz``.

    Args:
        model: the full ICT model (the generator renders head, eyes and mouth); ground truth is
            taken on its face region.
        out: the ``.npz`` file to write (parent folders are created; written atomically).
        subjects: number of subjects S.
        images: images per subject M.
        seed: subject ``i`` is drawn from the seed list ``(seed, i, 1)`` (never the stream of a
            plain int evaluation seed; see the module docstring).
        detect: run the dlib landmarker on every render (about 20 ms per image); else
            ``landmarks_detected`` is all NaN and ``detected_ok`` all False.
        synthetic_config: rendering settings (default: the generator's, without supersampling).

    Returns:
        ``out``.
    """
    from tqdm import tqdm

    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"out: expected a .npz file name, got {out}")
    if subjects < 1 or images < 1 or seed < 0:
        raise ValueError(f"subjects, images: expected >= 1 and seed >= 0, got {subjects}, "
                         f"{images}, {seed}")
    generator = SyntheticGenerator(model, synthetic_config)
    face = model.region("face") if "face" in model.regions else model
    landmarker = None
    if detect:
        from utils.landmarks.detect import FaceLandmarker

        landmarker = FaceLandmarker(backend="dlib")
    size, S, M = int(synthetic_config.image_size), int(subjects), int(images)
    arrays = {"images": np.zeros((S, M, size, size, 3), np.uint8),
              "identity": np.zeros((S, face.n_identity), np.float32),
              "landmarks_detected": np.full((S, M, 68, 2), np.nan, np.float32),
              "detected_ok": np.zeros((S, M), bool)}
    per_image = {name: [] for name in ("expression", "rotation", "scale", "trans2d", "sh",
                                       "landmarks")}
    start = time.perf_counter()
    for i in tqdm(range(S), desc="training subjects", unit="subject"):
        subject = generator.subject(M, seed=_subject_seed(seed, i))
        arrays["images"][i] = subject.images
        arrays["identity"][i] = subject.identity
        for name in ("expression", "rotation", "scale", "trans2d", "sh"):
            per_image[name].append(getattr(subject, name).astype(np.float32))
        per_image["landmarks"].append(detector_landmarks(face, subject))
        for k in range(M if landmarker is not None else 0):
            points = _detect(landmarker, subject.images[k])
            if points is not None:
                arrays["landmarks_detected"][i, k] = points
                arrays["detected_ok"][i, k] = True
    arrays.update({name: np.stack(values) for name, values in per_image.items()})
    meta = {"format": CACHE_FORMAT, "model": model.name, "image_size": size, "subjects": S,
            "images": M, "seed": int(seed), "subject_seeds": [_subject_seed(seed, i) for i in range(S)],
            "expression_names": list(model.expression_names), "ground_truth_region": face.name,
            "detect": bool(detect), "landmarker": "dlib" if detect else None,
            "synthetic_config": asdict(synthetic_config)}
    logger.info("rendered %d subjects x %d images in %.1f s", S, M, time.perf_counter() - start)
    if detect:
        logger.info("dlib found %d of %d faces", int(arrays["detected_ok"].sum()), S * M)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=out.parent, suffix=".npz.part", delete=False) as handle:
        try:
            np.savez_compressed(handle, meta=np.array(json.dumps(meta)), **arrays)
        except BaseException:
            os.unlink(handle.name)
            raise
    os.replace(handle.name, out)
    logger.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    return out


def load_cache(path: Union[str, Path]) -> Dict[str, object]:
    """Read and check a cache written by `build_cache`: its arrays and ``meta`` (a dict).

    Raises:
        FileNotFoundError: no such file.
        TrainingCacheError: unreadable file, missing arrays or inconsistent shapes (the message
            names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such training cache (build one with "
                                f"`python -m models.training.data --out {path}`)")
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"])) if "meta" in data.files else {}
            stored = _READABLE_FORMATS.get(meta.get("format") if isinstance(meta, dict) else None, {})
            missing = [name for name in _ARRAYS if stored.get(name, name) not in data.files]
            if missing:
                raise TrainingCacheError(f"{path}: not a training cache, missing arrays {missing}")
            arrays: Dict[str, object] = {name: data[stored.get(name, name)] for name in _ARRAYS}
        arrays["meta"] = meta
    except TrainingCacheError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise TrainingCacheError(f"{path}: cannot read the training cache ({exc})") from exc
    _check_shapes(path, arrays)
    return arrays


def _check_shapes(path: Path, arrays: Dict[str, object]) -> None:
    meta = arrays["meta"]
    if not isinstance(meta, dict) or meta.get("format") not in _READABLE_FORMATS or \
            not isinstance(meta.get("expression_names"), list):
        raise TrainingCacheError(f"{path}: meta: expected a JSON object with format "
                                 f"{CACHE_FORMAT!r} (or an older one) and expression_names")
    images = arrays["images"]
    if images.ndim != 5 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise TrainingCacheError(f"{path}: images: expected uint8 (S, M, H, W, 3), got "
                                 f"{images.dtype} {images.shape}")
    S, M = images.shape[:2]
    identity = arrays["identity"]
    if identity.ndim != 2 or identity.shape[0] != S:
        raise TrainingCacheError(f"{path}: identity: expected ({S}, n_id), got {identity.shape}")
    n_expression = len(meta["expression_names"])
    for name, trailing in _PER_IMAGE.items():
        expected = (S, M, *(n_expression if t == "n" else t for t in trailing))
        if arrays[name].shape != expected:
            raise TrainingCacheError(f"{path}: {name}: expected shape {expected}, got "
                                     f"{arrays[name].shape}")
    if arrays["detected_ok"].dtype != bool:
        raise TrainingCacheError(f"{path}: detected_ok: expected bool, got "
                                 f"{arrays['detected_ok'].dtype}")


class SyntheticFaceDataset(Dataset):
    """Subjects of a training cache; item ``i`` is a group of G augmented images of subject ``i``.

    Per item, G of the subject's M images are drawn without replacement; each image's landmarks
    are the dlib detection with probability ``detected_probability`` (where dlib found the face),
    else the ground truth (`detector_landmarks`); then images and landmarks are augmented. All
    of it is deterministic given ``(seed, epoch, i)``: call `set_epoch` before each epoch (with
    ``persistent_workers=True`` DataLoader workers keep the epoch they were started with).

    Args:
        cache: a file written by `build_cache` (loaded into memory).
        images_per_subject: G, at most the cache's M.
        augment: augmentation settings; None: no augmentation of images or landmarks.
        detected_probability: chance of the detected landmarks where there are some.
        seed: base seed of the draws.

    Items are dicts of tensors: ``images`` float32 (G, 3, H, W) in [0, 1], ``landmarks`` float32
    (G, 68, 2), ``identity`` (n_id,), ``expression`` (G, K), ``rotation`` (G, 3), ``scale`` (G,),
    ``trans2d`` (G, 2), ``sh`` (G, 9, 3), ``subject`` () int64. The DataLoader's default
    collate stacks them into (P, G, ...).
    """

    def __init__(self, cache: Union[str, Path], images_per_subject: int = 4,
                 augment: Optional[AugmentConfig] = AugmentConfig(),
                 detected_probability: float = 0.5, seed: int = 0) -> None:
        self.path = Path(cache)
        self.arrays = load_cache(self.path)
        self.meta: dict = self.arrays["meta"]  # type: ignore[assignment]
        n_images = self.arrays["images"].shape[1]
        if not 1 <= images_per_subject <= n_images:
            raise ValueError(f"images_per_subject: expected 1..{n_images} (images per subject in "
                             f"{self.path}), got {images_per_subject}")
        if not 0.0 <= detected_probability <= 1.0:
            raise ValueError(f"detected_probability: expected a value in [0, 1], got "
                             f"{detected_probability}")
        if seed < 0:
            raise ValueError(f"seed: expected a non-negative int, got {seed}")
        self.images_per_subject = int(images_per_subject)
        self.augment = augment
        self.detected_probability = float(detected_probability)
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw the next items for this epoch (a different image subset and augmentation)."""
        if epoch < 0:
            raise ValueError(f"epoch: expected a non-negative int, got {epoch}")
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self.arrays["images"].shape[0])

    def __getitem__(self, index: int) -> Dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} subjects")
        index = int(index) % len(self)
        a = self.arrays
        rng = np.random.default_rng([self.seed, self.epoch, index])
        pick = np.sort(rng.choice(a["images"].shape[1], self.images_per_subject, replace=False))
        use_detected = (rng.random(len(pick)) < self.detected_probability) & \
            a["detected_ok"][index, pick]
        landmarks = np.where(use_detected[:, None, None], a["landmarks_detected"][index, pick],
                             a["landmarks"][index, pick])
        images = a["images"][index, pick]
        if self.augment is not None:
            images = augment_images(images, rng, self.augment)
            landmarks = augment_landmarks(landmarks, rng, self.augment)

        def tensor(name: str) -> torch.Tensor:
            return torch.as_tensor(a[name][index, pick], dtype=torch.float32)

        return {
            "images": torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255.0).contiguous(),
            "landmarks": torch.as_tensor(landmarks, dtype=torch.float32),
            "identity": torch.as_tensor(a["identity"][index], dtype=torch.float32),
            "expression": tensor("expression"),
            "rotation": tensor("rotation"),
            "scale": tensor("scale"),
            "trans2d": tensor("trans2d"),
            "sh": tensor("sh"),
            "subject": torch.tensor(index, dtype=torch.int64),
        }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI: ``python -m models.training.data --out FILE.npz --subjects S --images M``."""
    from core.face_model.load import load_face_model
    from utils.get_face_model import DEFAULT_PATHS

    parser = argparse.ArgumentParser(prog="python -m models.training.data",
                                     description="Render a cached synthetic training set.")
    parser.add_argument("--out", type=Path, required=True, help="output .npz file")
    parser.add_argument("--subjects", type=int, default=600, help="number of subjects")
    parser.add_argument("--images", type=int, default=6, help="images per subject")
    parser.add_argument("--seed", type=int, default=2026,
                        help="subject i is drawn from the seed list (seed, i, 1)")
    parser.add_argument("--no-detect", action="store_true",
                        help="skip the dlib landmarker (landmarks_detected all NaN)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="ICT-FaceKit folder (default: external/ICT-FaceKit)")
    parser.add_argument("--size", type=int, default=256, help="crop side in pixels")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name in ("subjects", "images", "size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.seed < 0:
        parser.error(f"--seed must be non-negative, got {args.seed}")
    if args.out.suffix != ".npz":
        parser.error(f"--out must name a .npz file, got {args.out}")
    model = load_face_model("ict", args.model_dir or DEFAULT_PATHS["ict"])
    build_cache(model, args.out, args.subjects, args.images, seed=args.seed,
                detect=not args.no_detect,
                synthetic_config=SyntheticConfig(image_size=args.size, supersample=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
