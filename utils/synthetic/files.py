"""Synthetic subjects on disk: ``write_subject`` / ``load_subject`` / ``generate_dataset``.

``DIR/subject_XXX/`` holds ``subject.json`` (seed, identity, expression names, config),
``subject.npz`` (albedo, neutral, vertex_ids, triangles, landmark_indices), ``neutral.obj`` and per
image ``image_YY.png``, ``image_YY.json`` (parameters, ``landmarks_2d``, visibility),
``image_YY_mask.png``, ``image_YY_mesh.npz`` (object and camera-space vertices, per-vertex
visibility) and ``image_YY.obj`` (object space).
"""
from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path
from typing import List, Sequence, Union

import numpy as np

from core.face_model.model import MorphableModel
from utils.io.images import read_image
from utils.io.meshes import save_mesh
from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator, SyntheticSubject

__all__ = ["generate_dataset", "write_subject", "load_subject"]

# Arrays stored once per subject (subject.npz) and per image (image_YY_mesh.npz / json).
_SUBJECT_ARRAYS = ("albedo", "neutral", "vertex_ids", "triangles", "landmark_indices")
_MESH_ARRAYS = ("vertices", "vertices_camera", "vertex_visibility")
_JSON_ARRAYS = ("expression", "rotation", "rotation_matrix", "scale", "trans2d", "sh", "landmarks",
                "landmark_visibility")
# Names in image_YY.json, close to the demo's params/<stem>.json.
_JSON_NAMES = {"landmarks": "landmarks_2d"}
#: Subject folders: 1 (no ``format_version`` in subject.json; up to 0.6) names the Euler angles
#: ``angles``, the rotation matrix ``rotation`` and the 2-D offset ``translation``; 2 uses the
#: fitters' names ``rotation``, ``rotation_matrix``, ``trans2d``.
SUBJECT_FORMAT_VERSION = 2
_VERSION1_NAMES = {"rotation": "angles", "rotation_matrix": "rotation", "trans2d": "translation"}


# --------------------------------------------------------------------------- on disk
def _subject_dir_name(index: int) -> str:
    return f"subject_{index:03d}"


def _write_json(path: Path, content: dict) -> None:
    """JSON with one key per line and each value (arrays included) on its line."""
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in content.items()]
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n")


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image).save(path)


def write_subject(subject: SyntheticSubject, folder: Union[str, Path], obj: bool = True) -> Path:
    """Write a subject to ``folder`` (created): the files listed in the module docstring.

    Args:
        obj: also write ``image_YY.obj`` meshes (object space) besides the exact ``.npz`` arrays.

    Returns:
        the folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {
        "format_version": SUBJECT_FORMAT_VERSION,
        "seed": subject.seed,
        "model": subject.model_name,
        "n_images": subject.n_images,
        "identity": subject.identity.tolist(),
        "expression_names": subject.expression_names,
        "config": asdict(subject.config),
    }
    _write_json(folder / "subject.json", meta)
    np.savez(folder / "subject.npz", **{k: getattr(subject, k) for k in _SUBJECT_ARRAYS})
    save_mesh(folder / "neutral.obj", subject.neutral, subject.triangles)
    for k in range(subject.n_images):
        stem = f"image_{k:02d}"
        params = {_JSON_NAMES.get(name, name): getattr(subject, name)[k].tolist()
                  for name in _JSON_ARRAYS}
        params.update(expression_label=subject.expression_labels[k],
                      background=subject.background_kinds[k],
                      image_size=int(subject.images.shape[1]))
        _write_json(folder / f"{stem}.json", params)
        _write_png(folder / f"{stem}.png", subject.images[k])
        _write_png(folder / f"{stem}_mask.png", subject.masks[k].astype(np.uint8) * 255)
        np.savez(folder / f"{stem}_mesh.npz", **{n: getattr(subject, n)[k] for n in _MESH_ARRAYS})
        if obj:
            save_mesh(folder / f"{stem}.obj", subject.vertices[k], subject.triangles)
    return folder


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing file of a synthetic subject")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc


def _read_npz(path: Path, names: Sequence[str]) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing file of a synthetic subject")
    with np.load(path) as data:
        missing = [n for n in names if n not in data]
        if missing:
            raise ValueError(f"{path}: missing arrays {missing}")
        return {n: data[n] for n in names}


def load_subject(folder: Union[str, Path]) -> SyntheticSubject:
    """Read a subject written by `write_subject` (``backgrounds`` is None: not written)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such synthetic subject folder")
    meta = _read_json(folder / "subject.json")
    arrays = _read_npz(folder / "subject.npz", _SUBJECT_ARRAYS)
    per_image: dict = {name: [] for name in (*_JSON_ARRAYS, *_MESH_ARRAYS, "images", "masks",
                                             "expression_labels", "background_kinds")}
    dtypes = {"landmark_visibility": bool}
    names = dict(_JSON_NAMES, **(_VERSION1_NAMES if int(meta.get("format_version", 1)) == 1 else {}))
    for k in range(int(meta["n_images"])):
        stem = f"image_{k:02d}"
        params = _read_json(folder / f"{stem}.json")
        for name in _JSON_ARRAYS:
            key = names.get(name, name)
            if key not in params:
                raise ValueError(f"{folder / stem}.json: missing {key!r}")
            per_image[name].append(np.asarray(params[key], dtype=dtypes.get(name, np.float32)))
        per_image["expression_labels"].append(str(params.get("expression_label", "")))
        per_image["background_kinds"].append(str(params.get("background", "")))
        per_image["images"].append(read_image(folder / f"{stem}.png"))
        per_image["masks"].append(read_image(folder / f"{stem}_mask.png")[..., 0] > 127)
        for name, value in _read_npz(folder / f"{stem}_mesh.npz", _MESH_ARRAYS).items():
            per_image[name].append(value)
    stacked = {name: (values if name in ("expression_labels", "background_kinds")
                      else np.stack(values)) for name, values in per_image.items()}
    config_fields = {f.name for f in fields(SyntheticConfig)}
    config = SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v
                                for k, v in meta.get("config", {}).items() if k in config_fields})
    return SyntheticSubject(
        seed=[int(s) for s in meta["seed"]],
        model_name=str(meta["model"]),
        expression_names=[str(n) for n in meta["expression_names"]],
        identity=np.asarray(meta["identity"], dtype=np.float32),
        config=config,
        backgrounds=None,
        **arrays,
        **stacked,
    )


def generate_dataset(model: MorphableModel, out: Union[str, Path], n_subjects: int,
                     n_images: int, seed: int = 0, config: SyntheticConfig = SyntheticConfig(),
                     obj: bool = True) -> List[Path]:
    """Generate and write ``n_subjects`` subjects (subject ``i`` from seed ``(seed, i)``)."""
    from tqdm import tqdm

    out = Path(out)
    generator = SyntheticGenerator(model, config)
    folders = []
    for i in tqdm(range(int(n_subjects)), desc="synthetic subjects", unit="subject"):
        subject = generator.subject(n_images, seed=(int(seed), i))
        folders.append(write_subject(subject, out / _subject_dir_name(i), obj=obj))
    return folders
