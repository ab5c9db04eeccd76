"""Parsers for the face model files users have: ICT-FaceKit, BFM 2009 (+ expression basis), face3d.

Each loader returns a dict of numpy arrays in millimetres that `core.morphable_model.model_from_arrays`
turns into a `MorphableModel`. File formats are described in ../shared/docs/method.md ("Face models").
Every problem raises `FaceModelError` naming the file and what is wrong.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import scipy.io

from core.morphable_model import FaceModelError

logger = logging.getLogger(__name__)

ICT_CM_TO_MM = 10.0
BFM_UM_TO_MM = 1e-3
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


# --------------------------------------------------------------------------- OBJ
def read_obj(path: Path, with_faces: bool = True) -> dict:
    """Read vertices (and faces with UV indices, quads triangulated) from a Wavefront OBJ.

    Returns ``{"v": (V,3) float64, "vt": (T,2) or None, "f": (F,3) int64 0-based,
    "ft": (F,3) int64 or None}``; only ``v`` when ``with_faces`` is False. Vertex order is kept.
    """
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FaceModelError(f"cannot read OBJ file {path}: {err}") from err
    lines = data.split(b"\n")
    try:
        v = np.array(b" ".join(l[2:] for l in lines if l.startswith(b"v ")).split(), dtype=np.float64)
        v = v.reshape(-1, 3)
    except ValueError as err:
        raise FaceModelError(f"malformed vertex lines in OBJ file {path}: {err}") from err
    if len(v) == 0:
        raise FaceModelError(f"OBJ file {path} has no vertices")
    out = {"v": v}
    if not with_faces:
        return out
    vt_lines = [l[3:] for l in lines if l.startswith(b"vt ")]
    out["vt"] = (np.array(b" ".join(vt_lines).split(), dtype=np.float64).reshape(-1, 2)
                 if vt_lines else None)
    tris: List[Tuple[int, int, int]] = []
    uv_tris: List[Tuple[int, int, int]] = []
    for line in lines:
        if not line.startswith(b"f "):
            continue
        corners = [c.split(b"/") for c in line[2:].split()]
        try:
            vid = [int(c[0]) for c in corners]
            tid = [int(c[1]) if len(c) > 1 and c[1] else 0 for c in corners]
        except ValueError as err:
            raise FaceModelError(f"malformed face line in OBJ file {path}: {line[:80]!r}") from err
        for k in range(1, len(vid) - 1):  # fan triangulation of quads / polygons
            tris.append((vid[0], vid[k], vid[k + 1]))
            uv_tris.append((tid[0], tid[k], tid[k + 1]))
    f = np.asarray(tris, dtype=np.int64)
    f = np.where(f < 0, f + len(v), f - 1)  # OBJ indices are 1-based (negative: relative)
    if len(f) and (f.min() < 0 or f.max() >= len(v)):
        raise FaceModelError(f"OBJ file {path} has face indices outside its {len(v)} vertices")
    out["f"] = f
    ft = np.asarray(uv_tris, dtype=np.int64) - 1
    out["ft"] = ft if out["vt"] is not None and (ft >= 0).all() else None
    return out


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


# --------------------------------------------------------------------------- BFM
def _loadmat(path: Path, fields: Tuple[str, ...], struct: Optional[str] = None) -> dict:
    if not path.is_file():
        raise FaceModelError(f"missing face model file {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as err:  # scipy raises several types for corrupt files
        raise FaceModelError(f"cannot read MATLAB file {path}: {err}") from err
    if struct and struct in mat and not all(f in mat for f in fields):
        s = mat[struct]
        while s.dtype.names is None and s.size == 1 and s.dtype == object:
            s = s.flat[0]
        s = s.flat[0] if s.dtype.names is not None else s
        mat = {name: s[name] for name in s.dtype.names}
    missing = [f for f in fields if f not in mat]
    if missing:
        present = sorted(k for k in mat if not k.startswith("__"))
        raise FaceModelError(f"{path} lacks the field(s) {', '.join(missing)} (found: {', '.join(present)})")
    return {f: np.asarray(mat[f]) for f in fields}


def _one_based(ids: np.ndarray, upper: int, path: Path, field: str) -> np.ndarray:
    ids = np.asarray(ids).astype(np.int64).reshape(-1) - 1
    if len(ids) and (ids.min() < 0 or ids.max() >= upper):
        raise FaceModelError(f"{path} field {field}: 1-based indices must lie in [1, {upper}], "
                             f"got [{ids.min() + 1}, {ids.max() + 1}]")
    return ids


def read_exp_pca(path: Path, n_vertices: int) -> Tuple[np.ndarray, np.ndarray]:
    """Read Guo et al.'s ``Exp_Pca.bin``: int32 k, float32 mean (3n), float32 basis (k x 3n).

    Returns mean (n, 3) and basis (k, n, 3) in the file's units (micrometres).
    """
    if not path.is_file():
        raise FaceModelError(f"missing expression basis file {path}")
    raw = path.read_bytes()
    if len(raw) < 4:
        raise FaceModelError(f"{path} is truncated: {len(raw)} bytes, not even the int32 component count")
    k = int(np.frombuffer(raw[:4], dtype="<i4")[0])
    expected = 4 + 4 * 3 * n_vertices * (k + 1)
    if k <= 0 or len(raw) != expected:
        what = "truncated" if len(raw) < expected else "larger than expected"
        raise FaceModelError(f"{path} is {what}: {len(raw)} bytes, expected {expected} for {k} components "
                             f"over {n_vertices} vertices (int32 k + float32 mean + float32 basis)")
    data = np.frombuffer(raw[4:], dtype="<f4")
    mean = data[: 3 * n_vertices].reshape(n_vertices, 3)
    basis = data[3 * n_vertices:].reshape(k, n_vertices, 3)
    return mean.astype(np.float32), basis.astype(np.float32)


def read_std_exp(path: Path, k: int) -> np.ndarray:
    """Read ``std_exp.txt``: k whitespace-separated standard deviations."""
    if not path.is_file():
        raise FaceModelError(f"missing expression standard deviations file {path}")
    try:
        std = np.array(path.read_text().split(), dtype=np.float64)
    except ValueError as err:
        raise FaceModelError(f"{path}: expected whitespace-separated numbers ({err})") from err
    if len(std) < k:
        raise FaceModelError(f"{path} holds {len(std)} standard deviations, the expression basis has {k}")
    return std[:k]


def _pca(mu: np.ndarray, pc: np.ndarray, ev: np.ndarray, n: int, scale: float, path: Path,
         what: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean (V,3), basis scaled by std (k,V,3) and std (k,) from interleaved BFM arrays."""
    nv = mu.size // 3
    if pc.shape[0] != 3 * nv or ev.size < pc.shape[1]:
        raise FaceModelError(f"{path}: {what} shapes disagree: mean {mu.shape}, components {pc.shape}, "
                             f"std {ev.shape}")
    k = min(n, pc.shape[1])
    std = ev.reshape(-1)[:k].astype(np.float64)
    basis = (pc[:, :k] * std[None]).T.reshape(k, nv, 3) * scale
    return (mu.reshape(nv, 3) * scale).astype(np.float32), basis.astype(np.float32), (std * scale).astype(np.float32)


def _outward(triangles: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Flip the winding where face normals point away from the viewer (+z) on average."""
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    nz = np.cross(b - a, c - a)[:, 2].sum()
    return triangles if nz >= 0 else triangles[:, [0, 2, 1]]


def _triangles_inside(triangles: np.ndarray, ids: np.ndarray, n_full: int) -> np.ndarray:
    remap = np.full(n_full, -1, dtype=np.int64)
    remap[ids] = np.arange(len(ids))
    t = remap[triangles]
    return t[(t >= 0).all(axis=1)]


def _bfm_landmarks(folder: Path, n_vertices: int) -> np.ndarray:
    info, txt = folder / "facemodel_info.mat", folder / "landmarks_68.txt"
    if info.is_file():
        return _one_based(_loadmat(info, ("keypoints",))["keypoints"], n_vertices, info, "keypoints")
    if txt.is_file():
        ids = np.array(txt.read_text().split(), dtype=np.int64)
        if ids.shape != (68,) or ids.min() < 0 or ids.max() >= n_vertices:
            raise FaceModelError(f"{txt}: expected 68 0-based vertex ids below {n_vertices}")
        return ids
    raise FaceModelError(f"no 68-landmark indices for the BFM front model in {folder}: put Deng et al.'s "
                         f"facemodel_info.mat (field 'keypoints', 1-based) or a landmarks_68.txt "
                         f"(68 0-based vertex ids of the front model) there")


def load_bfm2009(path: Path, n_identity: int = 80, n_expression: int = 64, n_albedo: int = 80) -> dict:
    """BFM 2009 + Guo et al.'s expression basis, cropped to the 35,709-vertex front face.

    The cropping follows Deng et al.'s loaders: ``trimIndex`` (BFM_exp_idx.mat) selects the 53,215
    vertices of the expression basis among the 53,490 BFM vertices, and ``idx`` (BFM_front_idx.mat)
    selects the front face among those. Like Deng et al., the mean shape is BFM's ``shapeMU`` (the
    expression mean of Exp_Pca.bin is not added). Micrometres become millimetres; colours 0..255
    become [0, 1].
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    main = folder / "01_MorphableModel.mat"
    bfm = _loadmat(main, ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tl"))
    n_full = bfm["shapeMU"].size // 3
    trim = _one_based(_loadmat(folder / "BFM_exp_idx.mat", ("trimIndex",))["trimIndex"], n_full,
                      folder / "BFM_exp_idx.mat", "trimIndex")
    front = _one_based(_loadmat(folder / "BFM_front_idx.mat", ("idx",))["idx"], len(trim),
                       folder / "BFM_front_idx.mat", "idx")
    exp_mean, exp_basis = read_exp_pca(folder / "Exp_Pca.bin", len(trim))
    exp_std = read_std_exp(folder / "std_exp.txt", exp_basis.shape[0])
    ids = trim[front]

    shape_mu, id_basis, id_std = _pca(bfm["shapeMU"], bfm["shapePC"], bfm["shapeEV"], n_identity,
                                      BFM_UM_TO_MM, main, "shape")
    tex_mu, tex_basis, tex_std = _pca(bfm["texMU"], bfm["texPC"], bfm["texEV"], n_albedo, 1 / 255.0,
                                      main, "texture")
    k = min(n_expression, exp_basis.shape[0])
    exp = exp_basis[:k, front] * (exp_std[:k, None, None] * BFM_UM_TO_MM)
    tris = _one_based(bfm["tl"], n_full, main, "tl").reshape(-1, 3)
    neutral = shape_mu[ids]
    return {
        "name": "bfm2009",
        "neutral": neutral,
        "identity_basis": id_basis[:, ids],
        "identity_std": id_std,
        "expression_basis": exp.astype(np.float32),
        "expression_std": exp_std[:k].astype(np.float32),
        "expression_names": np.array([f"exp{i:02d}" for i in range(k)]),
        "expression_range": None,
        "triangles": _outward(_triangles_inside(tris, ids, n_full), neutral),
        "landmark_indices": _bfm_landmarks(folder, len(ids)),
        "regions": {"face": np.arange(len(ids))},
        "vertex_ids": ids,
        "albedo_mean": tex_mu[ids],
        "albedo_basis": tex_basis[:, ids],
        "albedo_std": tex_std,
    }


def load_face3d(path: Path, n_identity: int = 199, n_expression: int = 79, n_albedo: int = 199) -> dict:
    """face3d's ``BFM.mat`` (the original release's ``external/face3d/examples/Data/BFM/Out/``).

    Shape and albedo come from BFM.mat (a MATLAB struct ``model`` as face3d writes it, or top-level
    fields); the expression basis from ``Exp_Pca.bin`` + ``std_exp.txt`` beside it where present (as
    the original release uses), else from BFM.mat's ``expPC`` / ``expEV``. As face3d does, the mean
    shape is ``shapeMU + expMU``. ``tri`` and ``kpt_ind`` are 1-based in the file.
    """
    mat_path = Path(path)
    if mat_path.is_dir():
        mat_path = mat_path / "BFM.mat"
    folder = mat_path.parent
    fields = ("shapeMU", "shapePC", "shapeEV", "texMU", "texPC", "texEV", "tri", "kpt_ind")
    m = _loadmat(mat_path, fields, struct="model")
    shape_mu, id_basis, id_std = _pca(m["shapeMU"], m["shapePC"], m["shapeEV"], n_identity,
                                      BFM_UM_TO_MM, mat_path, "shape")
    tex_mu, tex_basis, tex_std = _pca(m["texMU"], m["texPC"], m["texEV"], n_albedo, 1 / 255.0,
                                      mat_path, "texture")
    nv = len(shape_mu)
    if (folder / "Exp_Pca.bin").is_file():
        exp_mean, exp_basis = read_exp_pca(folder / "Exp_Pca.bin", nv)
        exp_std = read_std_exp(folder / "std_exp.txt", exp_basis.shape[0])
        k = min(n_expression, exp_basis.shape[0])
        exp = exp_basis[:k] * (exp_std[:k, None, None] * BFM_UM_TO_MM)
        exp_mean = exp_mean * BFM_UM_TO_MM
    else:
        e = _loadmat(mat_path, ("expMU", "expPC", "expEV"), struct="model")
        exp_mean, exp, exp_std = _pca(e["expMU"], e["expPC"], e["expEV"], n_expression, BFM_UM_TO_MM,
                                      mat_path, "expression")
        k = exp.shape[0]
    tri = np.asarray(m["tri"])
    if tri.ndim != 2 or 3 not in tri.shape:
        raise FaceModelError(f"{mat_path} field tri: expected (m, 3) or (3, m), got {tri.shape}")
    if tri.shape[1] != 3:
        tri = tri.T
    neutral = (shape_mu + exp_mean).astype(np.float32)
    return {
        "name": "face3d",
        "neutral": neutral,
        "identity_basis": id_basis,
        "identity_std": id_std,
        "expression_basis": exp.astype(np.float32),
        "expression_std": np.asarray(exp_std[:k], np.float32),
        "expression_names": np.array([f"exp{i:02d}" for i in range(k)]),
        "expression_range": None,
        "triangles": _outward(_one_based(tri, nv, mat_path, "tri").reshape(-1, 3), neutral),
        "landmark_indices": _one_based(m["kpt_ind"], nv, mat_path, "kpt_ind"),
        "regions": {"face": np.arange(nv)},
        "albedo_mean": tex_mu,
        "albedo_basis": tex_basis,
        "albedo_std": tex_std,
    }
