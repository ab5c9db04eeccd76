"""Face model loaders on small files written here in the exact upstream formats, and bad input."""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

from core.face_model.load import load_face_model
from core.face_model.model import FaceModelError

RNG = np.random.default_rng(0)


# ----------------------------------------------------------------------- tiny ICT layout
def _write_obj(path: Path, v: np.ndarray, faces=None, uvs=None) -> None:
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in v]
    if uvs is not None:
        lines += [f"vt {a:.6f} {b:.6f}" for a, b in uvs]
    for f in faces or []:
        lines.append("f " + " ".join(f"{i + 1}/{i + 1}" for i in f))
    path.write_text("\n".join(lines) + "\n")


def make_tiny_ict(root: Path, n_id: int = 3, names=("jawOpen", "eyeBlink_L")) -> dict:
    """A 10 x 10 grid of quads in the ICT folder layout (centimetres), with 68 'landmarks'."""
    d = root / "FaceXModel"
    d.mkdir(parents=True)
    xs, ys = np.meshgrid(np.arange(10.0), np.arange(10.0))
    neutral = np.stack([xs.ravel(), ys.ravel(), np.zeros(100)], 1)
    quads = [[r * 10 + c, r * 10 + c + 1, (r + 1) * 10 + c + 1, (r + 1) * 10 + c]
             for r in range(9) for c in range(9)]
    _write_obj(d / "generic_neutral_mesh.obj", neutral, quads, uvs=neutral[:, :2] / 10)
    deltas = {}
    for i in range(n_id):
        deltas[f"identity{i:03d}"] = RNG.normal(size=(100, 3))
    for n in names:
        deltas[n] = RNG.normal(size=(100, 3))
    for name, dv in deltas.items():
        _write_obj(d / f"{name}.obj", neutral + dv, quads)
    index = {"expressions": list(names), "idx_to_landmark_verts": list(range(68))}
    (d / "vertex_indices.json").write_text(json.dumps(index))
    return {"neutral": neutral, "deltas": deltas, "quads": quads}


def test_tiny_ict_values_and_triangulation(tmp_path):
    truth = make_tiny_ict(tmp_path / "ICT")
    m = load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")
    assert m.n_vertices == 100 and m.n_identity == 3 and m.n_expression == 2
    np.testing.assert_allclose(m.neutral.numpy(), truth["neutral"] * 10, atol=1e-4)
    np.testing.assert_allclose(m.expression_basis[0].numpy(), truth["deltas"]["jawOpen"] * 10, atol=1e-4)
    np.testing.assert_allclose(m.identity_basis[2].numpy(), truth["deltas"]["identity002"] * 10, atol=1e-4)
    assert m.triangles.shape == (2 * 81, 3)
    q = truth["quads"][0]
    assert m.triangles[:2].tolist() == [[q[0], q[1], q[2]], [q[0], q[2], q[3]]]
    assert m.landmark_indices.tolist() == list(range(68))


def test_cache_invalidated_when_a_source_changes(tmp_path, caplog):
    truth = make_tiny_ict(tmp_path / "ICT")
    caplog.set_level(logging.INFO, logger="core.face_model.ict")
    load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")
    load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")
    assert sum("parsing" in r.message for r in caplog.records) == 1  # second load came from the cache
    changed = truth["neutral"] + 0.5
    obj = tmp_path / "ICT" / "FaceXModel" / "jawOpen.obj"
    _write_obj(obj, changed, truth["quads"])
    st = obj.stat()
    os.utime(obj, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    m = load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")
    assert sum("parsing" in r.message for r in caplog.records) == 2
    np.testing.assert_allclose(m.expression_basis[0].numpy(), np.full((100, 3), 5.0), atol=1e-4)


def test_ict_missing_folder_names_what_to_download(tmp_path):
    with pytest.raises(FaceModelError, match="ICT-VGL/ICT-FaceKit") as e:
        load_face_model("ict", tmp_path / "nowhere")
    assert "nowhere" in str(e.value)


def test_ict_obj_with_wrong_vertex_count(tmp_path):
    truth = make_tiny_ict(tmp_path / "ICT")
    bad = tmp_path / "ICT" / "FaceXModel" / "eyeBlink_L.obj"
    _write_obj(bad, truth["neutral"][:99], [])
    with pytest.raises(FaceModelError, match=r"eyeBlink_L\.obj has 99 vertices.*100"):
        load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")


def test_ict_missing_expression_file(tmp_path):
    make_tiny_ict(tmp_path / "ICT")
    (tmp_path / "ICT" / "FaceXModel" / "jawOpen.obj").unlink()
    with pytest.raises(FaceModelError, match=r"missing expression file .*jawOpen\.obj"):
        load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")


def test_ict_malformed_obj(tmp_path):
    make_tiny_ict(tmp_path / "ICT")
    (tmp_path / "ICT" / "FaceXModel" / "identity001.obj").write_text("v 1 2 x\n")
    with pytest.raises(FaceModelError, match=r"identity001\.obj"):
        load_face_model("ict", tmp_path / "ICT", cache_dir=tmp_path / "c")


# ----------------------------------------------------------------------- BFM 2009
N_FULL, N_TRIM, N_FRONT, K_EXP = 30, 25, 20, 4


def _interleaved(n: int, k: int) -> np.ndarray:
    return RNG.normal(size=(3 * n, k))


def _write_exp_pca(path: Path, mean: np.ndarray, basis: np.ndarray) -> None:
    """Guo et al.'s layout: int32 k, float32 mean (3n), float32 basis stored basis-major (k, 3n)."""
    with open(path, "wb") as f:
        f.write(np.int32(basis.shape[1]).astype("<i4").tobytes())
        f.write(mean.astype("<f4").tobytes())
        f.write(basis.T.astype("<f4").tobytes())


def make_bfm2009(folder: Path) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    t = {
        "shapeMU": _interleaved(N_FULL, 1) * 1e4, "shapePC": _interleaved(N_FULL, 6),
        "shapeEV": np.abs(RNG.normal(size=(6, 1))) * 1e3,
        "texMU": RNG.uniform(0, 255, size=(3 * N_FULL, 1)), "texPC": _interleaved(N_FULL, 6),
        "texEV": np.abs(RNG.normal(size=(6, 1))) * 10,
    }
    grid = np.arange(N_FULL).reshape(5, 6)
    tris = [[grid[r, c], grid[r, c + 1], grid[r + 1, c]] for r in range(4) for c in range(5)]
    t["tl"] = np.array(tris, dtype=np.float64) + 1  # MATLAB: 1-based doubles
    scipy.io.savemat(folder / "01_MorphableModel.mat", t)
    trim = np.sort(RNG.choice(N_FULL, N_TRIM, replace=False))
    front = np.sort(RNG.choice(N_TRIM, N_FRONT, replace=False))
    scipy.io.savemat(folder / "BFM_exp_idx.mat", {"trimIndex": (trim + 1).reshape(-1, 1).astype(np.int32)})
    scipy.io.savemat(folder / "BFM_front_idx.mat", {"idx": (front + 1).reshape(-1, 1).astype(np.int32)})
    exp_mu, exp_pc = RNG.normal(size=3 * N_TRIM), _interleaved(N_TRIM, K_EXP)
    _write_exp_pca(folder / "Exp_Pca.bin", exp_mu, exp_pc)
    std = np.abs(RNG.normal(size=K_EXP)) * 1e4
    (folder / "std_exp.txt").write_text(" ".join(f"{s:.6f}" for s in std) + "\n")
    keypoints = RNG.integers(0, N_FRONT, size=68)
    scipy.io.savemat(folder / "facemodel_info.mat", {"keypoints": (keypoints + 1).reshape(1, -1).astype(np.float64)})
    t.update(trim=trim, front=front, exp_pc=exp_pc, exp_std=std, keypoints=keypoints, tris=np.array(tris))
    return t


def test_bfm2009_values_shapes_and_index_conversions(tmp_path):
    t = make_bfm2009(tmp_path / "BFM")
    m = load_face_model("bfm2009", tmp_path / "BFM", dtype=torch.float64, n_identity=5, n_expression=3)
    ids = t["trim"][t["front"]]
    assert m.n_vertices == N_FRONT and m.n_identity == 5 and m.n_expression == 3 and m.n_albedo == 6
    assert m.vertex_ids.tolist() == ids.tolist()
    np.testing.assert_allclose(m.neutral.numpy(), t["shapeMU"].reshape(-1, 3)[ids] / 1e3, rtol=1e-6)
    id_basis = (t["shapePC"][:, :5] * t["shapeEV"][:5, 0]).T.reshape(5, N_FULL, 3)[:, ids] / 1e3
    np.testing.assert_allclose(m.identity_basis.numpy(), id_basis, rtol=1e-5)
    exp = (t["exp_pc"][:, :3] * t["exp_std"][:3]).T.reshape(3, N_TRIM, 3)[:, t["front"]] / 1e3
    np.testing.assert_allclose(m.expression_basis.numpy(), exp, rtol=1e-4)
    np.testing.assert_allclose(m.albedo_mean.numpy(), t["texMU"].reshape(-1, 3)[ids] / 255, rtol=1e-6)
    assert m.landmark_indices.tolist() == t["keypoints"].tolist()
    # Triangles: exactly those of the full mesh with all corners kept, re-indexed.
    pos = {v: i for i, v in enumerate(ids)}
    expected = {tuple(sorted(pos[v] for v in tri)) for tri in t["tris"] if all(v in pos for v in tri)}
    assert {tuple(sorted(tri)) for tri in m.triangles.tolist()} == expected


def test_bfm2009_truncated_exp_pca(tmp_path):
    make_bfm2009(tmp_path / "BFM")
    path = tmp_path / "BFM" / "Exp_Pca.bin"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(FaceModelError, match=r"Exp_Pca\.bin is truncated"):
        load_face_model("bfm2009", tmp_path / "BFM")


def test_bfm2009_mat_without_fields(tmp_path):
    make_bfm2009(tmp_path / "BFM")
    scipy.io.savemat(tmp_path / "BFM" / "01_MorphableModel.mat", {"shapeMU": np.zeros((9, 1))})
    with pytest.raises(FaceModelError, match=r"01_MorphableModel\.mat lacks the field\(s\) shapePC"):
        load_face_model("bfm2009", tmp_path / "BFM")


@pytest.mark.parametrize("missing", ["01_MorphableModel.mat", "Exp_Pca.bin", "std_exp.txt",
                                     "BFM_exp_idx.mat", "BFM_front_idx.mat"])
def test_bfm2009_missing_file(tmp_path, missing):
    make_bfm2009(tmp_path / "BFM")
    (tmp_path / "BFM" / missing).unlink()
    with pytest.raises(FaceModelError, match=missing.replace(".", r"\.")):
        load_face_model("bfm2009", tmp_path / "BFM")


def test_corrupt_mat_file(tmp_path):
    make_bfm2009(tmp_path / "BFM")
    (tmp_path / "BFM" / "BFM_front_idx.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(FaceModelError, match=r"BFM_front_idx\.mat"):
        load_face_model("bfm2009", tmp_path / "BFM")


# ----------------------------------------------------------------------- face3d
def make_face3d(folder: Path, with_bin: bool = True) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    n = N_TRIM
    grid = np.arange(n).reshape(5, 5)
    tris = np.array([[grid[r, c], grid[r + 1, c], grid[r, c + 1]] for r in range(4) for c in range(4)])
    model = {
        "shapeMU": _interleaved(n, 1) * 1e4, "shapePC": _interleaved(n, 7),
        "shapeEV": np.abs(RNG.normal(size=(7, 1))) * 1e3,
        "expMU": _interleaved(n, 1), "expPC": _interleaved(n, 5), "expEV": np.abs(RNG.normal(size=(5, 1))),
        "texMU": RNG.uniform(0, 255, size=(3 * n, 1)), "texPC": _interleaved(n, 7),
        "texEV": np.abs(RNG.normal(size=(7, 1))),
        "tri": (tris.T + 1).astype(np.float64),  # face3d stores (3, m), 1-based
        "kpt_ind": (RNG.integers(0, n, size=(1, 68)) + 1).astype(np.float64),
    }
    scipy.io.savemat(folder / "BFM.mat", {"model": model})  # a MATLAB struct, as face3d writes it
    t = dict(model, tris=tris)
    if with_bin:
        t["bin_mu"], t["bin_pc"] = RNG.normal(size=3 * n) * 100, _interleaved(n, K_EXP)
        _write_exp_pca(folder / "Exp_Pca.bin", t["bin_mu"], t["bin_pc"])
        t["bin_std"] = np.abs(RNG.normal(size=K_EXP)) * 1e4
        (folder / "std_exp.txt").write_text("\n".join(f"{s:.6f}" for s in t["bin_std"]))
    return t


def test_face3d_with_exp_pca(tmp_path):
    t = make_face3d(tmp_path / "Out")
    m = load_face_model("face3d", tmp_path / "Out", dtype=torch.float64)
    assert m.n_vertices == N_TRIM and m.n_identity == 7 and m.n_expression == K_EXP
    mean = (t["shapeMU"].reshape(-1, 3) + t["bin_mu"].reshape(-1, 3)) / 1e3
    np.testing.assert_allclose(m.neutral.numpy(), mean, rtol=1e-5, atol=1e-6)
    exp = (t["bin_pc"] * t["bin_std"]).T.reshape(K_EXP, N_TRIM, 3) / 1e3
    np.testing.assert_allclose(m.expression_basis.numpy(), exp, rtol=1e-4)
    assert m.landmark_indices.tolist() == (t["kpt_ind"].ravel().astype(int) - 1).tolist()
    got = {tuple(sorted(tri)) for tri in m.triangles.tolist()}
    assert got == {tuple(sorted(tri)) for tri in t["tris"].tolist()}


def test_face3d_without_exp_pca_uses_mat_basis(tmp_path):
    t = make_face3d(tmp_path / "Out", with_bin=False)
    m = load_face_model("face3d", tmp_path / "Out" / "BFM.mat", dtype=torch.float64)
    assert m.n_expression == 5
    mean = (t["shapeMU"] + t["expMU"]).reshape(-1, 3) / 1e3
    np.testing.assert_allclose(m.neutral.numpy(), mean, rtol=1e-5, atol=1e-8)
    exp = (t["expPC"] * t["expEV"][:, 0]).T.reshape(5, N_TRIM, 3) / 1e3
    np.testing.assert_allclose(m.expression_basis.numpy(), exp, rtol=1e-5, atol=1e-9)


def test_face3d_exp_pca_of_other_vertex_count(tmp_path):
    make_face3d(tmp_path / "Out")
    _write_exp_pca(tmp_path / "Out" / "Exp_Pca.bin", np.zeros(3 * 10), np.zeros((30, 2)))
    with pytest.raises(FaceModelError, match=r"Exp_Pca\.bin .*over 25 vertices"):
        load_face_model("face3d", tmp_path / "Out")


def test_unknown_kind():
    with pytest.raises(FaceModelError, match="unknown face model kind 'flame'"):
        load_face_model("flame", ".")
