"""Exports for 3D tools (issue 17): tracking.npz reader, ARKit names, Live Link Face CSV, rig.glb, animation.glb.

Files are written and read back (pygltflib, csv) and compared with the rig and tracking they came
from. The ICT test renders the face with only ``eyeBlink_L`` at 1 to check the side; the real-client
test (Khronos validator + Blender) skips where the tools are absent.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from pygltflib import GLTF2
from scipy.spatial.transform import Rotation

from core.rig.rig import Rig, RigFileError
from utils.export import (ExportError, GltfOptions, export_animation, export_files, export_live_link_csv,
                          export_rig)
from utils.export.__main__ import main as cli_main
from utils.export.arkit import (ARKIT_NAMES, LIVE_LINK_HEADER, arkit_name, live_link_timecode, target_mapping,
                                to_arkit_weights)
from utils.export.gltf import srgb_to_linear
from utils.export.gltf_read import read_glb
from utils.export.motion import continuous_quaternions, hold_invalid, matrix_to_quaternion
from utils.io.tracking import TrackingFileError, load_tracking

REPO_ROOT = Path(__file__).resolve().parents[1]
ISSUE_HEADER = (
    "Timecode,BlendShapeCount,EyeBlinkLeft,EyeLookDownLeft,EyeLookInLeft,EyeLookOutLeft,EyeLookUpLeft,EyeSquintLeft,"
    "EyeWideLeft,EyeBlinkRight,EyeLookDownRight,EyeLookInRight,EyeLookOutRight,EyeLookUpRight,EyeSquintRight,"
    "EyeWideRight,JawForward,JawRight,JawLeft,JawOpen,MouthClose,MouthFunnel,MouthPucker,MouthRight,MouthLeft,"
    "MouthSmileLeft,MouthSmileRight,MouthFrownLeft,MouthFrownRight,MouthDimpleLeft,MouthDimpleRight,MouthStretchLeft,"
    "MouthStretchRight,MouthRollLower,MouthRollUpper,MouthShrugLower,MouthShrugUpper,MouthPressLeft,MouthPressRight,"
    "MouthLowerDownLeft,MouthLowerDownRight,MouthUpperUpLeft,MouthUpperUpRight,BrowDownLeft,BrowDownRight,BrowInnerUp,"
    "BrowOuterUpLeft,BrowOuterUpRight,CheekPuff,CheekSquintLeft,CheekSquintRight,NoseSneerLeft,NoseSneerRight,"
    "TongueOut,HeadYaw,HeadPitch,HeadRoll,LeftEyeYaw,LeftEyePitch,LeftEyeRoll,RightEyeYaw,RightEyePitch,RightEyeRoll")
NAMES = ["eyeBlink_L", "eyeBlink_R", "browInnerUp_L", "browInnerUp_R", "jawOpen", "fooSquish"]


# ------------------------------------------------------------------ helpers
def small_rig(names=NAMES, seed: int = 0) -> Rig:
    """A 5-vertex pyramid (mm) with random deltas per expression and a known albedo."""
    rng = np.random.default_rng(seed)
    neutral = torch.tensor([[0, 0, 20], [-30, -30, 0], [30, -30, 0], [30, 30, 0], [-30, 30, 0]], dtype=torch.float32)
    triangles = torch.tensor([[0, 1, 2], [0, 2, 3], [0, 3, 4], [0, 4, 1]])
    blend = torch.tensor(rng.normal(0, 3, (len(names), 5, 3)), dtype=torch.float32)
    albedo = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.04045, 1.0], [0.2, 0.4, 0.6], [0.8, 0.1, 0.3], [1.0, 1.0, 0.0]])
    return Rig(neutral=neutral, blendshapes=blend, albedo=albedo, triangles=triangles, vertex_ids=torch.arange(5),
               expression_names=list(names), model="test/pyramid")


def tracking_arrays(n: int = 6, names=NAMES, fps: float = 30.0, seed: int = 1) -> dict:
    """The keys `TrackingRecorder.save` writes (those the exporter reads), random but finite."""
    rng = np.random.default_rng(seed)
    return {"expression": rng.uniform(0, 1, (n, len(names))).astype(np.float32),
            "rotation": rng.uniform(-0.4, 0.4, (n, 3)).astype(np.float32),
            "scale": np.full(n, 2.0, np.float32), "translation": rng.uniform(0, 200, (n, 2)).astype(np.float32),
            "detected": np.ones(n, bool), "valid": np.ones(n, bool), "fps": np.array(fps),
            "expression_names": np.array(names), "frame_index": np.arange(n)}


def write_tracking(path: Path, **overrides) -> Path:
    arrays = tracking_arrays(**{k: overrides.pop(k) for k in ("n", "names", "fps", "seed") if k in overrides})
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def dense_accessor(gltf: GLTF2, index: int) -> np.ndarray:
    """A float32 accessor decoded by hand (independent of utils.export.gltf_read)."""
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[acc.type]
    assert acc.componentType == 5126 and view.byteStride in (None, 4 * width)
    return np.frombuffer(gltf.binary_blob(), np.float32, acc.count * width,
                         view.byteOffset + (acc.byteOffset or 0)).reshape(acc.count, width)


def glb_json(path: Path) -> dict:
    """The JSON chunk of a .glb exactly as written (pygltflib fills defaults such as byteOffset on load)."""
    data = path.read_bytes()
    length = int.from_bytes(data[12:16], "little")
    assert data[16:20] == b"JSON"
    return json.loads(data[20:20 + length])


def quat_rotate(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Rotate vector v by the glTF quaternion (x, y, z, w)."""
    return Rotation.from_quat(q).apply(v)  # scipy uses (x, y, z, w) too


# ------------------------------------------------------------------ tracking.npz reader
def test_load_tracking_reads_what_the_recorder_writes(tmp_path):
    from core.rig.tracker import FrameTrack
    from utils.io.tracking import TrackingRecorder

    recorder = TrackingRecorder(len(NAMES))
    rows = tracking_arrays(n=4)
    for i in range(4):
        recorder.add(FrameTrack(index=i, detected=i != 2, valid=True,
                                expression=torch.from_numpy(rows["expression"][i]),
                                rotation=torch.from_numpy(rows["rotation"][i]), scale=torch.tensor(2.0),
                                trans2d=torch.from_numpy(rows["translation"][i])))
    path = recorder.save(tmp_path / "tracking.npz", 29.97, NAMES, model="toy", n_vertices=5)
    data = load_tracking(path)
    assert data.format_version == 2 and data.n_frames == 4 and data.fps == pytest.approx(29.97)
    assert data.model == "toy" and data.n_vertices == 5
    assert data.expression_names == NAMES and data.expression.dtype == np.float32
    np.testing.assert_array_equal(data.expression, rows["expression"])
    np.testing.assert_array_equal(data.trans2d, rows["translation"])
    np.testing.assert_array_equal(data.detected, [True, True, False, True])
    assert data.gaze_left is None and data.gaze_right is None and data.path == path
    np.testing.assert_allclose(data.times, np.arange(4) / 29.97)


def test_load_tracking_reads_version_1_files(tmp_path):
    """Files written by 0.6 and earlier: no format_version, the 2-D offset under ``translation``."""
    arrays = tracking_arrays(n=3)
    np.savez(tmp_path / "old.npz", **arrays)
    data = load_tracking(tmp_path / "old.npz")
    assert data.format_version == 1 and data.model is None
    np.testing.assert_array_equal(data.trans2d, arrays["translation"])


def test_load_tracking_reads_gaze_of_version_2(tmp_path):
    arrays = tracking_arrays(n=3)
    arrays["trans2d"] = arrays.pop("translation")
    gaze = np.array([[0.1, -0.2], [0.0, 0.0], [0.3, 0.1]], np.float32)
    np.savez(tmp_path / "t.npz", format_version=np.array(2), gaze_left=gaze, gaze_right=-gaze, **arrays)
    data = load_tracking(tmp_path / "t.npz")
    assert data.format_version == 2
    np.testing.assert_array_equal(data.trans2d, arrays["trans2d"])
    np.testing.assert_array_equal(data.gaze_right, -gaze)


@pytest.mark.parametrize("change, message", [
    ({"rotation": None}, "lacks rotation"),
    ({"translation": None}, "lacks trans2d or translation"),
    ({"rotation": np.zeros((6, 2), np.float32)}, r"rotation must be \(6, 3\)"),
    ({"valid": np.ones(5, bool)}, r"valid must be \(6,\)"),
    ({"expression": np.zeros((6, 4), np.float32)}, r"expression must be \(N, 6\)"),
    ({"n": 0}, "has no frames"),
    ({"fps": np.array(0.0)}, "fps must be a positive number"),
    ({"format_version": np.array(7)}, "format_version 7"),
])
def test_load_tracking_errors_name_the_file_and_problem(tmp_path, change, message):
    path = write_tracking(tmp_path / "bad.npz", **change)
    with pytest.raises(TrackingFileError, match=message) as err:
        load_tracking(path)
    assert str(path) in str(err.value)


def test_load_tracking_missing_and_corrupt_files(tmp_path):
    with pytest.raises(TrackingFileError, match="does not exist"):
        load_tracking(tmp_path / "nothing.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(TrackingFileError, match="corrupt"):
        load_tracking(tmp_path / "junk.npz")


# ------------------------------------------------------------------ ARKit names and weights
def test_live_link_header_is_the_apps():
    assert ",".join(LIVE_LINK_HEADER) == ISSUE_HEADER
    assert len(ARKIT_NAMES) == 52 == len(set(ARKIT_NAMES))
    assert ARKIT_NAMES[0] == "eyeBlinkLeft" and ARKIT_NAMES[-1] == "tongueOut"


@pytest.mark.parametrize("model, arkit", [
    ("eyeBlink_L", "eyeBlinkLeft"), ("eyeBlink_R", "eyeBlinkRight"), ("mouthSmile_L", "mouthSmileLeft"),
    ("browInnerUp_L", "browInnerUp"), ("cheekPuff_R", "cheekPuff"), ("jawOpen", "jawOpen"),
    ("fooSquish_L", "fooSquishLeft"), ("fooSquish", "fooSquish")])
def test_arkit_name(model, arkit):
    assert arkit_name(model) == arkit


def test_target_mapping_merges_split_halves_and_keeps_model_names():
    arkit = target_mapping(NAMES, "arkit")
    assert arkit.names == ("eyeBlinkLeft", "eyeBlinkRight", "browInnerUp", "jawOpen", "fooSquish")
    assert arkit.groups == ((0,), (1,), (2, 3), (4,), (5,))
    blend = np.arange(6 * 2 * 3, dtype=np.float32).reshape(6, 2, 3)
    np.testing.assert_array_equal(arkit.deltas(blend)[2], blend[2] + blend[3])
    w = np.array([[0.1, 0.2, 0.3, 0.5, 0.9, 1.0]], np.float32)
    np.testing.assert_allclose(arkit.weights(w), [[0.1, 0.2, 0.4, 0.9, 1.0]], rtol=1e-6)
    model = target_mapping(NAMES, "model")
    assert model.names == tuple(NAMES)
    np.testing.assert_array_equal(model.deltas(blend), blend)


def test_to_arkit_weights_averages_halves_and_zeroes_absent_shapes():
    w = np.array([0.1, 0.2, 0.3, 0.5, 0.9, 1.0], np.float32)
    out = to_arkit_weights(w, NAMES)
    assert out.shape == (52,)
    index = {n: i for i, n in enumerate(ARKIT_NAMES)}
    assert out[index["eyeBlinkLeft"]] == pytest.approx(0.1) and out[index["eyeBlinkRight"]] == pytest.approx(0.2)
    assert out[index["browInnerUp"]] == pytest.approx(0.4) and out[index["jawOpen"]] == pytest.approx(0.9)
    assert out[index["tongueOut"]] == 0 and out[index["cheekPuff"]] == 0
    assert np.count_nonzero(out) == 4  # fooSquish is no ARKit shape
    np.testing.assert_allclose(to_arkit_weights(np.stack([w, 2 * w]), NAMES)[1], 2 * out, rtol=1e-6)


@pytest.mark.parametrize("frame, fps, code", [
    (0, 25, "00:00:00:00.000"), (26, 25, "00:00:01:01.000"), (24, 25, "00:00:00:24.000"),
    (25 * 3600 + 25 * 61 + 3, 25, "01:01:01:03.000"), (30, 29.97, "00:00:01:00.030"), (59, 60, "00:00:00:59.000")])
def test_live_link_timecode(frame, fps, code):
    assert live_link_timecode(frame, fps) == code


# ------------------------------------------------------------------ rig.glb
def test_rig_glb_holds_the_rig_in_metres_with_named_targets(tmp_path):
    rig = small_rig()
    path = export_rig(rig, tmp_path / "rig.glb", names="model")
    gltf = GLTF2().load_binary(str(path))
    assert gltf.asset.version == "2.0" and "INORig" in gltf.asset.generator
    mesh = gltf.meshes[0]
    assert mesh.extras["targetNames"] == NAMES
    assert mesh.weights == [0.0] * len(NAMES)
    prim = mesh.primitives[0]
    positions = dense_accessor(gltf, prim.attributes.POSITION)
    np.testing.assert_allclose(positions, rig.neutral.numpy() / 1000, atol=1e-9)
    acc = gltf.accessors[prim.attributes.POSITION]
    assert acc.min == positions.min(0).tolist() and acc.max == positions.max(0).tolist()
    for k, target in enumerate(prim.targets):
        index = target["POSITION"] if isinstance(target, dict) else target.POSITION
        delta = dense_accessor(gltf, index)
        np.testing.assert_allclose(delta, rig.blendshapes[k].numpy() / 1000, atol=1e-9)
        assert gltf.accessors[index].min == delta.min(0).tolist()
        assert gltf.accessors[index].max == delta.max(0).tolist()
    normals = dense_accessor(gltf, prim.attributes.NORMAL)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=1), 1, atol=1e-6)
    assert normals[0] == pytest.approx([0, 0, 1], abs=1e-6)  # the apex of a symmetric pyramid
    assert (normals[1:, 2] > 0).all() and normals[3, 0] > 0 and normals[3, 1] > 0  # outward
    colors = dense_accessor(gltf, prim.attributes.COLOR_0)
    assert colors[0] == pytest.approx([0.21404] * 3, abs=1e-5)  # sRGB 0.5 -> linear 0.214
    assert colors[1] == pytest.approx([0.0, 0.04045 / 12.92, 1.0], abs=1e-7)
    np.testing.assert_allclose(colors, srgb_to_linear(rig.albedo.numpy()), atol=1e-7)
    triangles = read_glb(path).triangles
    np.testing.assert_array_equal(triangles, rig.triangles.numpy())


def test_rig_glb_with_arkit_names_sums_the_halves(tmp_path):
    rig = small_rig()
    content = read_glb(export_rig(rig, tmp_path / "rig.glb"))
    assert content.target_names == ["eyeBlinkLeft", "eyeBlinkRight", "browInnerUp", "jawOpen", "fooSquish"]
    b = rig.blendshapes.numpy() / 1000
    np.testing.assert_allclose(content.targets[0], b[0], atol=1e-9)
    np.testing.assert_allclose(content.targets[2], b[2] + b[3], atol=1e-9)
    np.testing.assert_allclose(content.targets[4], b[5], atol=1e-9)


@pytest.mark.parametrize("options", [GltfOptions(sparse=True), GltfOptions(quantize=True),
                                     GltfOptions(sparse=True, quantize=True)])
def test_sparse_and_quantized_targets_read_back(tmp_path, options):
    rig = small_rig()
    rig.blendshapes[1, 2:] = 0  # a target that moves only vertices 0 and 1
    path = export_rig(rig, tmp_path / "rig.glb", names="model", options=options)
    content = read_glb(path)
    step = content.mesh_scale / 32767 if options.quantize else 0
    tol = step / 2 + 1e-9
    np.testing.assert_allclose(content.positions, rig.neutral.numpy() / 1000, atol=tol)
    np.testing.assert_allclose(content.targets, rig.blendshapes.numpy() / 1000, atol=tol)
    raw = glb_json(path)
    if options.sparse:
        target = raw["accessors"][raw["meshes"][0]["primitives"][0]["targets"][1]["POSITION"]]
        assert "bufferView" not in target and "byteOffset" not in target  # glTF: absent without a bufferView
        assert target["sparse"]["count"] == 2 and "min" in target and "max" in target
        # Every target's bounds are its dense values' (the vertices left out at zero).
        for t, attributes in enumerate(raw["meshes"][0]["primitives"][0]["targets"]):
            accessor = raw["accessors"][attributes["POSITION"]]
            dense = content.targets[t] * (32767 / content.mesh_scale if options.quantize else 1)
            expected = (np.round(dense) if options.quantize else dense.astype(np.float32))
            np.testing.assert_array_equal(accessor["min"], expected.min(0))
            np.testing.assert_array_equal(accessor["max"], expected.max(0))
    if options.quantize:
        assert raw["extensionsRequired"] == ["KHR_mesh_quantization"]
        assert raw["nodes"][0]["scale"][0] == pytest.approx(content.mesh_scale)


# ------------------------------------------------------------------ animation.glb
def test_animation_glb_keys_hold_invalid_frames(tmp_path):
    rig = small_rig()
    arrays = tracking_arrays(n=7, fps=30.0)
    arrays["valid"][0] = arrays["detected"][0] = False  # before the first fit: takes frame 1's values
    arrays["detected"][3] = False  # no face: holds frame 2
    arrays["expression"][4, 2] = np.nan  # a NaN frame: holds frame 2 too
    arrays["rotation"][6] = np.nan  # holds frame 5
    np.savez(tmp_path / "tracking.npz", **arrays)
    tracking = load_tracking(tmp_path / "tracking.npz")
    content = read_glb(export_animation(rig, tracking, tmp_path / "animation.glb"))
    source = np.array([1, 1, 2, 2, 2, 5, 5])
    np.testing.assert_allclose(content.times, np.arange(7) / 30.0, rtol=1e-6)
    mapping = target_mapping(NAMES, "arkit")
    np.testing.assert_allclose(content.weights, mapping.weights(arrays["expression"][source]), atol=1e-6)
    assert np.isfinite(content.weights).all() and np.isfinite(content.rotations).all()
    truth = Rotation.from_euler("xyz", arrays["rotation"][source].astype(np.float64))  # R = Rz Ry Rx
    got = Rotation.from_quat(content.rotations.astype(np.float64))
    assert (got.inv() * truth).magnitude().max() < 1e-5
    anim = content.gltf.animations[0]
    assert len(anim.samplers) == 2 and {c.target.path for c in anim.channels} == {"weights", "rotation"}
    times = content.gltf.accessors[anim.samplers[0].input]
    assert times.min == [0.0] and times.max == [pytest.approx(6 / 30.0)]
    assert content.gltf.meshes[0].weights == [0.0] * 5


def test_animation_rotation_keys_keep_one_sign(tmp_path):
    rig = small_rig()
    n = 40
    arrays = tracking_arrays(n=n)
    yaw = np.linspace(-0.5, -3.6, n)  # a half turn and through +-pi (wrapped): single-frame quaternions flip
    arrays["rotation"] = np.stack([np.full(n, 0.1), np.angle(np.exp(1j * yaw)), np.zeros(n)], 1).astype(np.float32)
    np.savez(tmp_path / "t.npz", **arrays)
    q = read_glb(export_animation(rig, load_tracking(tmp_path / "t.npz"), tmp_path / "a.glb")).rotations
    assert (np.einsum("ij,ij->i", q[1:], q[:-1]) > 0.99).all()
    R = Rotation.from_euler("xyz", arrays["rotation"].astype(np.float64))
    for raw in (R.as_quat(), matrix_to_quaternion(R.as_matrix())):  # the case is really exercised
        assert (np.einsum("ij,ij->i", raw[1:], raw[:-1]) < 0).any()
        np.testing.assert_allclose(np.abs(np.einsum("ij,ij->i", q, raw)), 1, atol=1e-6)


def test_continuous_quaternions_flips_only_the_needed_keys():
    q = np.array([[0, 0, 0, -1.0], [0, 0, 0.1, -0.995], [0, 0, -0.2, 0.98], [0, 0, -0.3, 0.954]])
    out = continuous_quaternions(q)
    np.testing.assert_allclose(out, [[0, 0, 0, 1], [0, 0, -0.1, 0.995], [0, 0, -0.2, 0.98], [0, 0, -0.3, 0.954]])


def test_known_turn_yaw_turns_the_nose_towards_plus_x(tmp_path):
    arrays = tracking_arrays(n=2)
    arrays["rotation"] = np.array([[0, 0.3, 0], [0.2, 0, 0]], np.float32)
    np.savez(tmp_path / "t.npz", **arrays)
    q = read_glb(export_animation(small_rig(), load_tracking(tmp_path / "t.npz"), tmp_path / "a.glb")).rotations
    nose = quat_rotate(q[0].astype(np.float64), np.array([0, 0, 1.0]))
    np.testing.assert_allclose(nose, [np.sin(0.3), 0, np.cos(0.3)], atol=1e-6)  # towards +x (the face's left)
    nose = quat_rotate(q[1].astype(np.float64), np.array([0, 0, 1.0]))
    assert nose[1] == pytest.approx(-np.sin(0.2), abs=1e-6)  # positive pitch: the nose goes down


# ------------------------------------------------------------------ Live Link Face CSV
def test_live_link_csv_rows_match_the_tracking(tmp_path):
    arrays = tracking_arrays(n=5, fps=25.0)
    arrays["expression"][0, 0] = 1.7  # clipped to 1
    arrays["expression"][1, 0] = -0.2  # clipped to 0
    arrays["detected"][3] = False  # holds frame 2
    gaze = np.array([[0.1, -0.05]] * 5, np.float32)
    np.savez(tmp_path / "t.npz", gaze_left=gaze, gaze_right=gaze * 2, **arrays)
    path = export_live_link_csv(load_tracking(tmp_path / "t.npz"), tmp_path / "animation_arkit.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    assert ",".join(rows[0]) == ISSUE_HEADER
    body = rows[1:]
    assert len(body) == 5 and all(len(r) == 63 for r in body)
    assert [r[0] for r in body] == [f"00:00:00:{i:02d}.000" for i in range(5)]
    assert all(r[1] == "61" for r in body)
    values = np.array([[float(x) for x in r[2:]] for r in body])
    col = {name: i for i, name in enumerate(LIVE_LINK_HEADER[2:])}
    weights = values[:, :52]
    assert weights.min() >= 0 and weights.max() <= 1
    source = np.array([0, 1, 2, 2, 4])
    e = arrays["expression"][source]
    np.testing.assert_allclose(values[:, col["EyeBlinkLeft"]], np.clip(e[:, 0], 0, 1), atol=1e-9)
    np.testing.assert_allclose(values[:, col["EyeBlinkRight"]], e[:, 1], atol=1e-7)
    np.testing.assert_allclose(values[:, col["BrowInnerUp"]], (e[:, 2] + e[:, 3]) / 2, atol=1e-7)
    np.testing.assert_allclose(values[:, col["JawOpen"]], e[:, 4], atol=1e-7)
    assert (values[:, col["TongueOut"]] == 0).all() and (values[:, col["CheekPuff"]] == 0).all()
    r = arrays["rotation"][source]
    # radians, the app's signs: yaw and roll mirrored, pitch kept (see utils/export/arkit.py)
    np.testing.assert_allclose(values[:, col["HeadYaw"]], -r[:, 1], atol=1e-7)
    np.testing.assert_allclose(values[:, col["HeadPitch"]], r[:, 0], atol=1e-7)
    np.testing.assert_allclose(values[:, col["HeadRoll"]], -r[:, 2], atol=1e-7)
    np.testing.assert_allclose(values[:, col["LeftEyeYaw"]], -0.1, atol=1e-7)
    np.testing.assert_allclose(values[:, col["LeftEyePitch"]], -0.05, atol=1e-7)
    np.testing.assert_allclose(values[:, col["RightEyeYaw"]], -0.2, atol=1e-7)
    np.testing.assert_allclose(values[:, col["RightEyePitch"]], -0.1, atol=1e-7)
    assert (values[:, col["LeftEyeRoll"]] == 0).all()


def test_live_link_csv_without_gaze_writes_zero_eye_rotations(tmp_path):
    write_tracking(tmp_path / "t.npz", n=3)
    path = export_live_link_csv(load_tracking(tmp_path / "t.npz"), tmp_path / "a.csv")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert all(float(x) == 0 for r in rows for x in r[-6:])
    assert all(re.fullmatch(r"\d\d:\d\d:\d\d:\d\d\.\d\d\d", r[0]) for r in rows)


# ------------------------------------------------------------------ bad inputs
def test_rig_and_tracking_with_different_expressions(tmp_path):
    small_rig().save(tmp_path / "rig.npz")
    tracking = write_tracking(tmp_path / "t.npz", names=["a", "b", "c", "d", "e", "f"])
    with pytest.raises(ExportError, match="lacks") as err:
        export_files(tmp_path / "rig.npz", tmp_path / "out", tracking)
    assert str(tmp_path / "rig.npz") in str(err.value) and str(tracking) in str(err.value)


def test_tracking_of_a_rig_with_another_vertex_count(tmp_path):
    small_rig().save(tmp_path / "rig.npz")
    tracking = write_tracking(tmp_path / "t.npz", n_vertices=np.array(9409))
    with pytest.raises(ExportError, match="9409 vertices.*has 5"):
        export_files(tmp_path / "rig.npz", tmp_path / "out", tracking)


def test_rig_file_with_inconsistent_vertex_counts(tmp_path, capsys):
    rig = small_rig()
    arrays = dict(np.load(rig.save(tmp_path / "rig.npz")))
    arrays["blendshapes"] = arrays["blendshapes"][:, :4]
    np.savez(tmp_path / "bad.npz", **arrays)
    assert cli_main([str(tmp_path / "bad.npz"), "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "bad.npz") in err and "inconsistent shapes" in err
    with pytest.raises(RigFileError):
        export_files(tmp_path / "bad.npz", tmp_path / "out")


def test_tracking_without_any_tracked_frame(tmp_path):
    arrays = tracking_arrays(n=4)
    arrays["detected"][:] = False
    np.savez(tmp_path / "t.npz", **arrays)
    with pytest.raises(ExportError, match="none of its 4 frames"):
        hold_invalid(load_tracking(tmp_path / "t.npz"))


def test_nan_only_in_unused_expressions_does_not_hold(tmp_path):
    """Expressions the rig does not use are dropped before the hold rule looks for NaN."""
    names = NAMES + ["unused"]
    arrays = tracking_arrays(n=3, names=names)
    arrays["expression"][1, -1] = np.nan
    np.savez(tmp_path / "t.npz", **arrays)
    content = read_glb(export_animation(small_rig(), load_tracking(tmp_path / "t.npz"), tmp_path / "a.glb",
                                        names="model"))
    np.testing.assert_allclose(content.weights, arrays["expression"][:, :6], atol=1e-7)


# ------------------------------------------------------------------ command line
def test_cli_writes_all_files_and_exit_codes(tmp_path, capsys):
    small_rig().save(tmp_path / "rig.npz")
    write_tracking(tmp_path / "t.npz", n=4)
    out = tmp_path / "out"
    assert cli_main([str(tmp_path / "rig.npz"), "--tracking", str(tmp_path / "t.npz"), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == {"rig.glb", "animation.glb", "animation_arkit.csv"}
    assert read_glb(out / "animation.glb").weights.shape == (4, 5)
    assert cli_main([str(tmp_path / "rig.npz"), "--out", str(tmp_path / "o2"), "--names", "model",
                     "--format", "glb"]) == 0
    assert read_glb(tmp_path / "o2" / "rig.glb").target_names == NAMES
    capsys.readouterr()
    assert cli_main([str(tmp_path / "missing.npz"), "--out", str(out)]) == 1
    assert f"{tmp_path / 'missing.npz'} does not exist" in capsys.readouterr().err
    for argv in ([str(tmp_path / "rig.npz")], [str(tmp_path / "rig.npz"), "--out", "x", "--format", "fbx"],
                 [str(tmp_path / "rig.npz"), "--out", "x", "--format", "csv"]):
        with pytest.raises(SystemExit) as exit_:
            cli_main(argv)
        assert exit_.value.code == 2


# ------------------------------------------------------------------ the ICT face: sides and size
def test_ict_eye_blink_left_closes_the_faces_own_left_eye(ict_face, tmp_path):
    """Render the exported face with only eyeBlinkLeft (ICT eyeBlink_L) at 1: the +x eye closes."""
    from core.camera import weak_perspective_screen
    from core.render.rasterize import rasterize

    rig = Rig.from_model(ict_face, torch.zeros(ict_face.n_identity), transfer=False)
    path = export_rig(rig, tmp_path / "rig.glb")
    assert path.stat().st_size < 8e6
    content = read_glb(path)
    mapping = target_mapping(rig.expression_names, "arkit")
    blink = content.target_names.index("eyeBlinkLeft")
    assert mapping.groups[blink] == (rig.expression_names.index("eyeBlink_L"),)
    assert len(content.target_names) == 51 and "browInnerUp" in content.target_names

    def coverage(vertices_m: np.ndarray) -> tuple:
        """Rendered (orthographic, frontal) coverage of the boxes around each eye's landmarks."""
        verts = torch.from_numpy(vertices_m.astype(np.float64) * 1000)[None]
        screen = weak_perspective_screen(verts, torch.eye(3, dtype=torch.float64)[None],
                                         torch.tensor([1.2], dtype=torch.float64),
                                         torch.tensor([[128.0, 128.0]], dtype=torch.float64))
        mask = (rasterize(screen, rig.triangles, 256, 256).tri_id[0] >= 0).numpy()
        out = []
        for ids in (range(36, 42), range(42, 48)):
            p = screen[0, ict_face.landmark_indices[list(ids)], :2].numpy()
            (u0, v0), (u1, v1) = p.min(0).astype(int), p.max(0).astype(int)
            out.append((float(verts[0, ict_face.landmark_indices[list(ids)], 0].mean()), (u0 + u1) / 2,
                        float(mask[v0:v1 + 1, u0:u1 + 1].mean())))
        return out

    neutral = coverage(content.positions)
    blinked = coverage(content.positions + content.targets[blink])
    (x_a, u_a, open_a), (x_b, u_b, open_b) = neutral
    left = 0 if x_a > 0 else 1  # the eye on object +x: the face's own left (docs/conventions.md)
    assert neutral[left][0] > 20 and neutral[1 - left][0] < -20
    assert neutral[left][1] > 128  # seen from the front, the face's left eye is on the image's right
    assert neutral[left][2] < 0.6 and blinked[left][2] > 0.9  # the eye opening is covered by the lid
    assert blinked[1 - left][2] == pytest.approx(neutral[1 - left][2], abs=0.02)  # the other eye stays open


# ------------------------------------------------------------------ real clients (Blender, Khronos validator)
def _client_tools():
    from benchmarks import check_exports

    tools = check_exports.Tools.find()
    missing = tools.missing()
    if missing:
        pytest.skip("real-client check needs Blender (bpy venv) and gltf-validator: " + "; ".join(missing)
                    + f" (set {check_exports.TOOLS_ENV} or see benchmarks/README_exports.md)")
    return check_exports, tools


@pytest.mark.parametrize("options", [GltfOptions(), GltfOptions(sparse=True, quantize=True)])
def test_blender_and_the_khronos_validator_accept_the_files(tmp_path, options):
    check_exports, tools = _client_tools()
    rig = small_rig()
    rig.save(tmp_path / "rig.npz")
    arrays = tracking_arrays(n=9, fps=24.0)
    arrays["detected"][4] = False
    np.savez(tmp_path / "t.npz", **arrays)
    written = export_files(tmp_path / "rig.npz", tmp_path / "out", tmp_path / "t.npz", options=options)
    result = check_exports.check_exports(written["rig"], written["animation"], tmp_path / "rig.npz",
                                         tmp_path / "t.npz", tools=tools)
    assert result["problems"] == []
    assert all(r["errors"] == 0 for r in result["validator"].values())
    blender = result["blender"]
    assert blender["rig_shape_keys"] == ["eyeBlinkLeft", "eyeBlinkRight", "browInnerUp", "jawOpen", "fooSquish"]
    assert blender["keys_per_curve"] == [9, 9] and blender["frames_match"]
    assert blender["mesh_max_error_m"] <= blender["mesh_tolerance_m"]
    assert blender["head_max_angle_deg"] < 1e-3
