"""Video tracking with a fixed rig: a synthetic sequence with known expressions, poses and lighting
(landmarks projected from the ground truth, one frame rendered for the lighting) is tracked back;
frames without a face are carried over and flagged."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.camera import euler_to_matrix, weak_perspective_screen
from core.fitting.landmark_geometry import LandmarkGeometry, project_landmarks
from core.fitting.variables import EXPRESSION, IDENTITY, ROTATION, SCALE, TRANS2D
from core.lighting import sh_shading, shade
from core.mesh import vertex_normals
from core.render.rasterize import rasterize
from core.render.shade import render_vertex_colors
from core.rig.rig import Rig, RigFileError
from core.rig.tracker import RigTracker, TrackerConfig

T = 12
SIZE = 512
EXPRESSIONS = {"jawOpen": 0.6, "mouthSmile_L": 0.7, "mouthSmile_R": 0.7, "browInnerUp_L": 0.5,
               "browInnerUp_R": 0.5, "eyeBlink_L": 0.9}


@pytest.fixture(scope="module")
def rig(ict_face):
    g = torch.Generator().manual_seed(3)
    identity = torch.randn(ict_face.n_identity, generator=g) * 0.8
    albedo = torch.tensor([0.7, 0.5, 0.42]).expand(ict_face.n_vertices, 3).clone()
    return Rig.from_model(ict_face, identity, albedo=albedo, transfer=False)


def sequence(rig: Rig, n: int = T) -> dict:
    """Smoothly varying expressions and poses (yaw -25..25 degrees) in a 512 px frame."""
    s = torch.linspace(0, 1, n)[:, None]
    expression = torch.zeros(n, rig.n_expression)
    for name, peak in EXPRESSIONS.items():
        expression[:, rig.expression_names.index(name)] = peak * torch.sin(math.pi * s[:, 0]) ** 2
    rotation = torch.cat([0.15 * torch.sin(3 * s), math.radians(25) * (2 * s - 1), 0.08 * torch.cos(2 * s)], 1)
    scale = 1.6 + 0.2 * s[:, 0]
    trans2d = torch.cat([250 + 20 * s, 270 - 15 * s], 1)
    return {EXPRESSION: expression, ROTATION: rotation, SCALE: scale, TRANS2D: trans2d}


def landmarks_of(rig: Rig, template, truth: dict) -> torch.Tensor:
    """The ground truth's 68 landmarks with the sliding jawline (what a detector reports)."""
    params = dict(truth, **{IDENTITY: torch.zeros(len(truth[SCALE]), 1)})
    return project_landmarks(LandmarkGeometry(rig.as_model(template)), params, "weak", "dynamic")


def rotation_error_deg(a: torch.Tensor, b: torch.Tensor) -> float:
    R = euler_to_matrix(a[None]).transpose(1, 2) @ euler_to_matrix(b[None])
    return math.degrees(math.acos(float(((R.diagonal(dim1=1, dim2=2).sum() - 1) / 2).clamp(-1, 1))))


def test_rig_as_model_reproduces_the_rig(rig, ict_face):
    model = rig.as_model(ict_face)
    expression = torch.rand(2, rig.n_expression, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(model.vertices(torch.zeros(2, 1), expression), rig.vertices(expression))
    assert model.n_identity == 1 and bool((model.identity_basis == 0).all())
    torch.testing.assert_close(model.albedo_mean, rig.albedo)
    assert torch.equal(model.landmark_indices, ict_face.landmark_indices)
    with pytest.raises(RigFileError, match="does not match"):
        rig.as_model(ict_face.region("narrow_face"))


def test_tracking_recovers_expressions_and_poses(rig, ict_face):
    # Noise-free landmarks: weak priors (the defaults are set for a real detector's noise and bias).
    tracker = RigTracker(rig, ict_face, TrackerConfig(lighting=False, landmark_sigma=1.5, expression_weight=1.0))
    truth = sequence(rig)
    landmarks = landmarks_of(rig, ict_face, truth)
    truth_meshes = rig.vertices(truth[EXPRESSION])
    baseline = (rig.neutral[None] - truth_meshes).norm(dim=-1).mean(1)
    jaw = rig.expression_names.index("jawOpen")
    for i in range(T):
        r = tracker.step(landmarks[i])
        assert r.detected and r.valid and r.index == i
        assert rotation_error_deg(r.rotation, truth[ROTATION][i]) < 1.0
        assert abs(float(r.scale / truth[SCALE][i]) - 1) < 0.01
        mesh = rig.vertices(r.expression[None])
        screen = weak_perspective_screen(mesh, euler_to_matrix(r.rotation[None]), r.scale[None], r.trans2d[None])
        truth_screen = weak_perspective_screen(truth_meshes[i:i + 1], euler_to_matrix(truth[ROTATION][i:i + 1]),
                                               truth[SCALE][i:i + 1], truth[TRANS2D][i:i + 1])
        assert float((screen - truth_screen)[..., :2].norm(dim=-1).mean()) < 1.0  # the mesh sits on the face
        mesh_error = float((mesh[0] - truth_meshes[i]).norm(dim=-1).mean())
        assert mesh_error < 0.6 and (baseline[i] < 0.5 or mesh_error < 0.35 * float(baseline[i])), (i, mesh_error)
        assert abs(float(r.expression[jaw] - truth[EXPRESSION][i, jaw])) < 0.08
        assert float((r.landmarks_2d - landmarks[i]).norm(dim=-1).mean()) < 1.0
        assert r.error < 0.01
        assert bool((r.expression >= 0).all() and (r.expression <= 1).all())


def test_frames_without_a_face_are_carried_over_and_flagged(rig, ict_face):
    tracker = RigTracker(rig, ict_face, TrackerConfig(lighting=False))
    truth = sequence(rig, 8)
    landmarks = landmarks_of(rig, ict_face, truth)
    first = tracker.step(None)
    assert not first.detected and not first.valid
    assert bool(torch.isnan(first.scale)) and bool((first.expression == 0).all())
    results = [tracker.step(landmarks[i]) for i in range(4)]
    missing = tracker.step(None)
    assert not missing.detected and missing.valid and missing.landmarks_2d is None
    for name in ("expression", "rotation", "scale", "trans2d"):
        assert torch.equal(getattr(missing, name), getattr(results[-1], name))
    garbage = torch.rand(68, 2, generator=torch.Generator().manual_seed(1)) * 300 + 100
    rejected = tracker.step(garbage)  # no face fits these points
    assert not rejected.detected and rejected.valid
    assert torch.equal(rejected.expression, results[-1].expression)
    again = tracker.step(landmarks[6])  # fitted afresh after the gap
    assert again.detected and rotation_error_deg(again.rotation, truth[ROTATION][6]) < 1.0
    assert again.index == 7


def test_lighting_is_recovered_from_a_rendered_frame(rig, ict_face):
    tracker = RigTracker(rig, ict_face)
    truth = {k: v[3:4] for k, v in sequence(rig).items()}
    sh = torch.zeros(1, 9, 3)
    sh[0, 0] = torch.tensor([0.9, 0.85, 0.8])
    sh[0, 2] = 0.35  # light from the front
    sh[0, 3] = torch.tensor([0.2, 0.15, 0.1])  # and from the subject's left
    verts = rig.vertices(truth[EXPRESSION])
    R = euler_to_matrix(truth[ROTATION])
    screen = weak_perspective_screen(verts, R, truth[SCALE], truth[TRANS2D])
    fragments = rasterize(screen, rig.triangles, SIZE, SIZE, cull_backfaces=True)
    colors = shade(rig.albedo[None], vertex_normals(verts @ R.transpose(1, 2), rig.triangles), sh)
    assert float(colors.max()) < 1.0  # nothing clipped
    image = render_vertex_colors(fragments, rig.triangles, colors.clamp(0, 1))
    frame = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    r = tracker.step(landmarks_of(rig, ict_face, truth)[0], frame)
    assert r.sh is not None and r.sh.shape == (9, 3)
    # The face's normals span a hemisphere, so SH bands trade off; what is determined (and what
    # rendering needs) is the shading of the camera-facing surface.
    normals = vertex_normals(verts @ R.transpose(1, 2), rig.triangles)
    facing = normals[0, :, 2] > 0.3
    truth_shading = sh_shading(normals, sh)[0, facing]
    error = (sh_shading(normals, r.sh[None])[0, facing] - truth_shading).abs().mean(0)
    assert bool((error < 0.03 * truth_shading.mean(0)).all()), error
    assert tracker.step(landmarks_of(rig, ict_face, truth)[0], None).sh is None


def test_temporal_prior_reduces_jitter(rig, ict_face):
    truth = sequence(rig, 30)
    still = {k: v[15:16].expand(30, *v.shape[1:]) for k, v in truth.items()}
    noise = torch.randn(30, 68, 2, generator=torch.Generator().manual_seed(0)) * 1.5
    jitter = {}
    for weight in (0.0, TrackerConfig().temporal_weight):
        tracker = RigTracker(rig, ict_face, TrackerConfig(lighting=False, temporal_weight=weight))
        landmarks = landmarks_of(rig, ict_face, still) + noise
        meshes = torch.stack([rig.vertices(tracker.step(lm).expression[None])[0] for lm in landmarks])
        jitter[weight] = float((meshes[2:] - 2 * meshes[1:-1] + meshes[:-2]).norm(dim=-1).mean())
    assert jitter[TrackerConfig().temporal_weight] < 0.7 * jitter[0.0], jitter


def test_bad_landmarks_shape_is_rejected(rig, ict_face):
    tracker = RigTracker(rig, ict_face, TrackerConfig(lighting=False))
    with pytest.raises(ValueError, match=r"\(68, 2\)"):
        tracker.step(np.zeros((5, 2)))
