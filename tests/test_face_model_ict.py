"""The ICT-FaceKit model loaded from the real files (../shared), and its cache."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from core.face_model.load import load_face_model

# The 68 iBUG landmark vertex ids of ICT, as listed in ../shared/docs/method.md.
METHOD_MD_LANDMARKS = [int(x) for x in """
1225 1888 1052 367 1719 1722 2199 1447 966 3661 4390 3927 3924 2608 3272 4088 3443
268 493 1914 2044 1401 3615 4240 4114 2734 2509 978 4527 4942 4857 1140 2075 1147 4269 3360
1507 1542 1537 1528 1518 1511 3742 3751 3756 3721 3725 3732 5708 5695 2081 0 4275 6200 6213
6346 6461 5518 5957 5841 5702 5711 5533 6216 6207 6470 5517 5966""".split()]


def test_sizes_names_and_landmarks(ict_model, ict_dir):
    m = ict_model
    assert m.n_vertices == 26719
    assert m.n_identity == 100 and m.n_expression == 53
    assert m.landmark_indices.tolist() == METHOD_MD_LANDMARKS
    import json
    names = json.loads((ict_dir / "FaceXModel" / "vertex_indices.json").read_text())["expressions"]
    assert m.expression_names == names
    assert {"jawOpen", "mouthSmile_L", "eyeBlink_R"} <= set(m.expression_names)
    assert m.expression_range == (0.0, 1.0)
    # 548 triangles + 25,836 quads split in two.
    assert m.triangles.shape == (548 + 2 * 25836, 3)
    assert m.uvs is not None and m.uv_triangles.shape == m.triangles.shape


def test_units_are_millimetres(ict_model):
    lm = ict_model.neutral[ict_model.landmark_indices]
    eye_dist = float((lm[36] - lm[45]).norm())
    assert 80.0 < eye_dist < 100.0  # upstream: ~8.9 cm between outer eye corners


def test_basis_is_file_minus_neutral(ict_model, ict_dir):
    from core.face_model.obj import read_obj

    d = ict_dir / "FaceXModel"
    neutral = read_obj(d / "generic_neutral_mesh.obj", with_faces=False)["v"]
    jaw = read_obj(d / "jawOpen.obj", with_faces=False)["v"]
    ident = read_obj(d / "identity007.obj", with_faces=False)["v"]
    k = ict_model.expression_names.index("jawOpen")
    np.testing.assert_allclose(ict_model.expression_basis[k].numpy(), (jaw - neutral) * 10, atol=1e-3)
    np.testing.assert_allclose(ict_model.identity_basis[7].numpy(), (ident - neutral) * 10, atol=1e-3)
    # vertices() = neutral + basis @ coefficients.
    e = torch.zeros(1, 53)
    e[0, k] = 0.5
    i = torch.zeros(1, 100)
    i[0, 7] = -2.0
    v = ict_model.vertices(i, e)[0].numpy()
    np.testing.assert_allclose(v, (neutral + 0.5 * (jaw - neutral) - 2.0 * (ident - neutral)) * 10, atol=2e-3)


def test_triangles_face_outwards(ict_face):
    v, f = ict_face.neutral, ict_face.triangles
    n = torch.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]], dim=1)
    nose_tip = ict_face.landmark_indices[30]
    around_nose = (f == nose_tip).any(dim=1)
    assert n[around_nose, 2].sum() > 0  # the nose tip looks at the viewer (+z)
    assert n[:, 2].sum() > 0


def test_face_region_matches_full_model(ict_model, ict_face):
    assert ict_face.n_vertices == 9409
    assert 18000 < len(ict_face.triangles) < 19000
    assert ict_face.vertex_ids.tolist() == list(range(9409))
    assert (ict_face.neutral[ict_face.landmark_indices] == ict_model.neutral[ict_model.landmark_indices]).all()
    g = torch.Generator().manual_seed(0)
    i, e = torch.randn(3, 100, generator=g), torch.rand(3, 53, generator=g)
    full = ict_model.vertices(i, e)
    assert torch.allclose(ict_face.vertices(i, e), full[:, ict_face.vertex_ids], atol=1e-4)
    narrow = ict_model.region("narrow_face")
    assert narrow.n_vertices == 6706 and narrow.triangles.max() < 6706


def test_float64_on_request(ict_dir):
    m = load_face_model("ict", ict_dir, dtype=torch.float64, region="face")
    assert m.neutral.dtype == torch.float64 and m.identity_basis.dtype == torch.float64
    assert m.vertices(torch.zeros(2, 100, dtype=torch.float64)).dtype == torch.float64


def test_wrong_coefficient_shapes_raise(ict_face):
    with pytest.raises(ValueError, match=r"\(B, 100\)"):
        ict_face.vertices(torch.zeros(2, 99))
    with pytest.raises(ValueError, match="batch"):
        ict_face.vertices(torch.zeros(2, 100), torch.zeros(3, 53))


def test_random_mesh_obj_round_trip(ict_model, tmp_path):
    g = torch.Generator().manual_seed(1)
    v = ict_model.vertices(torch.randn(1, 100, generator=g), torch.rand(1, 53, generator=g))[0].numpy()
    path = tmp_path / "random.obj"
    trimesh.Trimesh(v, ict_model.triangles.numpy(), process=False).export(path)
    back = trimesh.load(path, process=False)
    assert back.vertices.shape == (26719, 3)
    np.testing.assert_allclose(back.vertices, v, atol=1e-4)
    np.testing.assert_array_equal(back.faces, ict_model.triangles.numpy())


def _link_copy(src: Path, dst: Path) -> None:
    """A copy of an ICT folder whose files are symbolic links (fast, no 390 MB copy)."""
    (dst / "FaceXModel").mkdir(parents=True)
    for f in (src / "FaceXModel").iterdir():
        os.symlink(f, dst / "FaceXModel" / f.name)


def test_cache_makes_second_load_10x_faster(ict_dir, tmp_path, caplog):
    src = tmp_path / "ICT"
    _link_copy(ict_dir, src)
    caplog.set_level(logging.INFO)
    t0 = time.perf_counter()
    first = load_face_model("ict", src, cache_dir=tmp_path / "cache")
    t1 = time.perf_counter()
    second = load_face_model("ict", src, cache_dir=tmp_path / "cache")
    t2 = time.perf_counter()
    assert sum("parsing" in r.message for r in caplog.records) == 1
    assert (t1 - t0) >= 10 * (t2 - t1), f"first load {t1 - t0:.2f} s, cached load {t2 - t1:.2f} s"
    assert torch.equal(first.expression_basis, second.expression_basis)
    assert first.expression_names == second.expression_names
    assert torch.equal(first.regions["face"], second.regions["face"])


def test_jawline_candidates_from_method_md(ict_face):
    jaw = ict_face.jawline_candidates
    assert jaw["right_landmarks"].tolist() == [1278, 1272, 12, 1834, 243, 781, 2199, 1447]
    assert jaw["left_landmarks"].tolist() == [3661, 4390, 3022, 2484, 4036, 2253, 3490, 3496]
    assert set(jaw["right_landmarks"].tolist()) <= set(jaw["right"].tolist())
    assert set(jaw["left_landmarks"].tolist()) <= set(jaw["left"].tolist())
    # The right jaw is on the subject's right: negative x (the viewer's left in a frontal view).
    assert (ict_face.neutral[jaw["right"], 0] < 0).all() and (ict_face.neutral[jaw["left"], 0] > 0).all()
