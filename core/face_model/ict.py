"""ICT-FaceKit loader (open, MIT): the generic neutral mesh, 100 identity and 53 expression OBJ
files, converted to millimetres and cached as one ``.npz`` beside the files.

Returns a dict of numpy arrays for `core.face_model.model.model_from_arrays`; the vertex ranges of
the model's parts (face, head, eyes, teeth, ...) become named regions. File layout: ../shared/docs/
method.md ("Face models"). Every problem raises `FaceModelError` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from core.face_model.model import FaceModelError
from core.face_model.obj import read_obj

logger = logging.getLogger(__name__)

ICT_CM_TO_MM = 10.0
ICT_CACHE_VERSION = 2
ICT_DOWNLOAD_HINT = (
    "Get the ICT Face Model (MIT licence) from https://github.com/ICT-VGL/ICT-FaceKit and put it at "
    "external/ICT-FaceKit/ (so that external/ICT-FaceKit/FaceXModel/generic_neutral_mesh.obj exists), "
    "or run `python -m utils.get_face_model ict` (set INORIG_ICT_SOURCE to a local archive or folder to "
    "work offline).")

# ICT vertex ranges (0-based, end exclusive) from the upstream README's topology tables.
ICT_REGIONS: Dict[str, Tuple[int, int]] = {
    "face": (0, 9409),
    "narrow_face": (0, 6706),
    "head_and_neck": (9409, 11248),
    "face_and_head": (0, 11248),
    "mouth_socket": (11248, 13294),
    "eye_socket_left": (13294, 13678),
    "eye_socket_right": (13678, 14062),
    "gums_and_tongue": (14062, 17039),
    "teeth": (17039, 21451),
    "eyeball_left": (21451, 23021),
    "eyeball_right": (23021, 24591),
    "lacrimal_fluid": (24591, 24999),
    "eye_blend": (24999, 25047),
    "eye_occlusion": (25047, 25351),
    "eyelashes": (25351, 26719),
}
# Sliding contour candidates for ICT (method.md): extended jawlines, in the order listed there,
# supersets of the per-landmark candidates of landmarks 0-7 and 9-16.
ICT_JAWLINE_RIGHT = [1280, 1278, 1275, 1272, 1248, 12, 820, 1834, 1902, 243, 844, 781, 1673, 2199,
                     801, 1447, 800]
# Per-landmark jawline vertices of contour landmarks 0-7 and 9-16 (method.md), each in the lines above.
ICT_CONTOUR_RIGHT = [1278, 1272, 12, 1834, 243, 781, 2199, 1447]
ICT_CONTOUR_LEFT = [3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496]
ICT_JAWLINE_LEFT = [3041, 3661, 3042, 4390, 3880, 3022, 3085, 2484, 4102, 4036, 3061, 2253, 3466,
                    3490, 3493, 3496, 3498]


# --------------------------------------------------------------------------- ICT
def ict_model_dir(path: Path) -> Path:
    """The ``FaceXModel`` folder for a path to ``ICT-FaceKit/`` or to ``FaceXModel/`` itself."""
    for candidate in (path / "FaceXModel", path):
        if (candidate / "generic_neutral_mesh.obj").is_file():
            return candidate
    raise FaceModelError(f"no ICT-FaceKit model at {path}: FaceXModel/generic_neutral_mesh.obj not found. "
                         + ICT_DOWNLOAD_HINT)


def _ict_sources(model_dir: Path) -> Tuple[List[str], List[Path], List[Path]]:
    index_file = model_dir / "vertex_indices.json"
    if not index_file.is_file():
        raise FaceModelError(f"missing {index_file} (the ICT model's expression names and landmarks). "
                             + ICT_DOWNLOAD_HINT)
    try:
        index = json.loads(index_file.read_text())
        names = [str(n) for n in index["expressions"]]
    except (ValueError, KeyError, TypeError) as err:
        raise FaceModelError(f"malformed {index_file}: expected a JSON object with an 'expressions' "
                             f"list ({err})") from err
    identities = sorted(model_dir.glob("identity[0-9][0-9][0-9].obj"))
    if not identities:
        raise FaceModelError(f"no identity###.obj files in {model_dir}. " + ICT_DOWNLOAD_HINT)
    expressions = [model_dir / f"{n}.obj" for n in names]
    for p in expressions:
        if not p.is_file():
            raise FaceModelError(f"missing expression file {p} (listed in {index_file}). " + ICT_DOWNLOAD_HINT)
    return names, identities, expressions


def _cache_key(files: List[Path]) -> str:
    h = hashlib.sha1(f"ict-cache-v{ICT_CACHE_VERSION}".encode())
    for p in files:
        st = p.stat()
        h.update(f"{p.name}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def _cache_path(model_dir: Path, cache_dir: Optional[Path]) -> Path:
    if cache_dir is None:
        local = model_dir.parent / ".inorig_cache"
        if os.access(model_dir.parent, os.W_OK) or os.access(local, os.W_OK):
            cache_dir = local
        else:
            digest = hashlib.sha1(str(model_dir.resolve()).encode()).hexdigest()[:12]
            cache_dir = Path.home() / ".cache" / "inorig" / digest
    return Path(cache_dir) / "ict_model.npz"


def load_ict(path: Path, cache_dir: Optional[Path] = None) -> dict:
    """Load the ICT-FaceKit light model (26,719 vertices, 100 identity, 53 expression components).

    The 155 OBJ files take seconds to parse, so the converted arrays are cached (`.npz`) keyed by
    the source files' names, sizes and modification times; a changed file rebuilds the cache.
    """
    model_dir = ict_model_dir(path)
    names, identities, expressions = _ict_sources(model_dir)
    neutral_file = model_dir / "generic_neutral_mesh.obj"
    index_file = model_dir / "vertex_indices.json"
    sources = [neutral_file, index_file] + identities + expressions
    key = _cache_key(sources)
    cache = _cache_path(model_dir, cache_dir)
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                if str(z["cache_key"]) == key:
                    logger.debug("ICT model from cache %s", cache)
                    return _ict_arrays_from_cache(z)
        except (OSError, ValueError, KeyError) as err:
            logger.warning("ignoring unreadable ICT cache %s (%s); rebuilding it", cache, err)
    arrays = _parse_ict(model_dir, names, identities, expressions)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(cache.stem + f".{os.getpid()}.tmp.npz")
        np.savez(tmp, cache_key=np.array(key), **_ict_arrays_to_cache(arrays))
        os.replace(tmp, cache)
        logger.info("cached the converted ICT model at %s", cache)
    except OSError as err:
        logger.warning("could not write the ICT cache %s (%s); the next load parses the OBJ files again",
                       cache, err)
    return arrays


def _parse_ict(model_dir: Path, names: List[str], identities: List[Path], expressions: List[Path]) -> dict:
    neutral_obj = read_obj(model_dir / "generic_neutral_mesh.obj")
    neutral = neutral_obj["v"]

    def deltas(files: List[Path]) -> np.ndarray:
        out = np.empty((len(files), len(neutral), 3), dtype=np.float32)
        for i, p in enumerate(files):
            v = read_obj(p, with_faces=False)["v"]
            if v.shape != neutral.shape:
                raise FaceModelError(f"OBJ file {p} has {len(v)} vertices, but the neutral mesh "
                                     f"generic_neutral_mesh.obj has {len(neutral)}")
            out[i] = (v - neutral) * ICT_CM_TO_MM
        return out

    logger.info("parsing %d ICT-FaceKit OBJ files in %s (cached afterwards)",
                1 + len(identities) + len(expressions), model_dir)
    index = json.loads((model_dir / "vertex_indices.json").read_text())
    n = len(neutral)
    landmarks = np.asarray(index.get("idx_to_landmark_verts", []), dtype=np.int64)
    if landmarks.shape != (68,) or landmarks.min() < 0 or landmarks.max() >= n:
        raise FaceModelError(f"{model_dir / 'vertex_indices.json'}: idx_to_landmark_verts must hold 68 "
                             f"vertex ids below {n}, got {landmarks.shape[0]} entries")
    regions = {k: np.arange(a, min(b, n)) for k, (a, b) in ICT_REGIONS.items() if a < n}
    for key, region in (("idx_to_fitting_verts", "fitting"), ("idx_to_rigid_verts", "rigid")):
        if key in index:
            regions[region] = np.asarray(index[key], dtype=np.int64)
    return {
        "name": "ict",
        "neutral": (neutral * ICT_CM_TO_MM).astype(np.float32),
        "identity_basis": deltas(identities),
        "identity_std": np.ones(len(identities), np.float32),
        "expression_basis": deltas(expressions),
        "expression_std": np.ones(len(expressions), np.float32),
        "expression_names": np.array(names),
        "expression_range": np.array([0.0, 1.0]),
        "triangles": neutral_obj["f"],
        "landmark_indices": landmarks,
        "jawline_candidates": {"right": np.array(ICT_JAWLINE_RIGHT), "left": np.array(ICT_JAWLINE_LEFT),
                               "right_landmarks": np.array(ICT_CONTOUR_RIGHT),
                               "left_landmarks": np.array(ICT_CONTOUR_LEFT)},
        "regions": regions,
        "uvs": None if neutral_obj["vt"] is None else neutral_obj["vt"].astype(np.float32),
        "uv_triangles": neutral_obj["ft"],
    }


def _ict_arrays_to_cache(a: dict) -> dict:
    flat = {k: v for k, v in a.items() if not isinstance(v, dict) and v is not None}
    flat.update({f"jaw__{k}": v for k, v in a["jawline_candidates"].items()})
    flat.update({f"region__{k}": v for k, v in a["regions"].items()})
    return flat


def _ict_arrays_from_cache(z) -> dict:
    a = {k: z[k] for k in z.files if k != "cache_key" and "__" not in k}
    a["name"] = str(a["name"])
    a["jawline_candidates"] = {k[5:]: z[k] for k in z.files if k.startswith("jaw__")}
    a["regions"] = {k[8:]: z[k] for k in z.files if k.startswith("region__")}
    a.setdefault("uvs", None)
    a.setdefault("uv_triangles", None)
    return a
