"""Basel Face Model 2009 loaders: the raw model with the Guo et al. expression basis (Deng et al.'s
cropped front face), and face3d's ``BFM.mat`` layout the original release used.

File formats: ../shared/docs/method.md ("Face models"). Loaders return dicts of numpy arrays in
millimetres for `core.face_model.model.model_from_arrays`; problems raise `FaceModelError`
naming the file.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch

from core.face_model.model import FaceModelError
from core.mesh import subset_index, triangles_within

BFM_UM_TO_MM = 1e-3


# --------------------------------------------------------------------------- BFM
def _loadmat(path: Path, fields: Tuple[str, ...], struct: Optional[str] = None) -> dict:
    if not path.is_file():
        raise FaceModelError(f"missing face model file {path}")
    import scipy.io  # here, not at the top: 0.14 s of every start-up, needed for BFM files only

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
    index = subset_index(torch.from_numpy(np.asarray(ids, np.int64)), n_full)
    return triangles_within(torch.from_numpy(np.asarray(triangles, np.int64)), index)[0].numpy()


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
