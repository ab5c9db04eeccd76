"""Landmark-only fitting: synthetic ICT faces (random identity, expression, pose with yaw within
+-45 degrees) projected to 68 landmarks (with the sliding contour) are fitted back."""
from __future__ import annotations

import math

import pytest
import torch

from core.fitting.fit_landmarks import LandmarkFitConfig, fit_landmarks, init_pose_weak
from core.fitting.landmark_geometry import LandmarkGeometry, landmark_points, project_landmarks
from core.fitting.variables import EXPRESSION, FOCAL, IDENTITY, ROTATION, SCALE, TRANS2D, TRANSLATION
from core.metrics import aligned_mesh_error, rotation_error_deg

B = 8


@pytest.fixture(scope="module")
def geometry(ict_face):
    return LandmarkGeometry(ict_face)


def _subjects(geometry, camera="weak", seed=0):
    """Random faces: identity ~ N(0, 1), sparse expressions in [0, 1], yaw in +-45 degrees."""
    g = torch.Generator().manual_seed(seed)
    active = torch.rand(B, geometry.n_expression, generator=g) < 0.15
    gt = {
        IDENTITY: torch.randn(B, geometry.n_identity, generator=g),
        EXPRESSION: torch.rand(B, geometry.n_expression, generator=g) * active,
        ROTATION: torch.stack([(torch.rand(B, generator=g) * 2 - 1) * 0.3,
                               torch.linspace(-math.pi / 4, math.pi / 4, B),
                               (torch.rand(B, generator=g) * 2 - 1) * 0.2], -1),
    }
    if camera == "weak":
        gt[SCALE] = 1.0 + 0.3 * torch.rand(B, generator=g)
        gt[TRANS2D] = 128 + 6 * torch.randn(B, 2, generator=g)
    else:
        gt[TRANSLATION] = torch.cat([4 * torch.randn(B, 2, generator=g),
                                     -700 + 50 * torch.randn(B, 1, generator=g)], -1)
        gt[FOCAL] = torch.full((B,), 800.0)
    return gt


def _mesh_errors(ict_face, fit, gt):
    truth = ict_face.vertices(gt[IDENTITY], gt[EXPRESSION])
    fitted = ict_face.vertices(fit.params[IDENTITY], fit.params[EXPRESSION])
    return aligned_mesh_error(fitted, truth), aligned_mesh_error(ict_face.neutral.expand(B, -1, -1), truth)


def test_closed_form_weak_pose_is_exact_for_rigid_points(geometry):
    gt = _subjects(geometry)
    pts = geometry.points(gt[IDENTITY], gt[EXPRESSION])
    uv = project_landmarks(geometry, gt, "weak", geometry.default_correspondence(B))
    pose = init_pose_weak(landmark_points(pts, geometry.default_correspondence(B)), uv)
    assert rotation_error_deg(pose[ROTATION], gt[ROTATION]).max() < 0.05
    assert torch.allclose(pose[SCALE], gt[SCALE], rtol=1e-4)
    assert torch.allclose(pose[TRANS2D], gt[TRANS2D], atol=1e-2)


def test_noise_free_landmarks_are_fitted_back(ict_face, geometry):
    gt = _subjects(geometry)
    targets = project_landmarks(geometry, gt, "weak", "dynamic")
    config = LandmarkFitConfig(identity_weight=0.01, expression_weight=0.01)
    fit = fit_landmarks(geometry, targets, config=config)
    assert fit.reprojection_error.max() < 0.15
    assert rotation_error_deg(fit.params[ROTATION], gt[ROTATION]).max() < 3.0
    err, baseline = _mesh_errors(ict_face, fit, gt)
    assert (err < 0.7 * baseline).all() and err.mean() < 0.4 * baseline.mean()
    assert fit.history.shape[0] == B and (fit.history[:, -1] <= fit.history[:, 0]).all()


def test_noisy_landmarks_still_beat_the_mean_face(ict_face, geometry):
    gt = _subjects(geometry, seed=1)
    targets = project_landmarks(geometry, gt, "weak", "dynamic")
    noisy = targets + 1.5 * torch.randn(targets.shape, generator=torch.Generator().manual_seed(2))
    fit = fit_landmarks(geometry, noisy)
    err, baseline = _mesh_errors(ict_face, fit, gt)
    assert err.mean() < 0.75 * baseline.mean()
    assert rotation_error_deg(fit.params[ROTATION], gt[ROTATION]).max() < 5.0
    # The fit explains the landmarks to about the noise level, not to zero (priors).
    assert 0.8 < float(fit.reprojection_error.mean()) < 2.5
    assert (fit.params[EXPRESSION] >= 0).all() and (fit.params[EXPRESSION] <= 1).all()


def test_perspective_camera_fit(geometry):
    gt = _subjects(geometry, "perspective", seed=3)
    pp = torch.full((B, 2), 128.0)
    targets = project_landmarks(geometry, gt, "perspective", "dynamic", principal_point=pp)
    config = LandmarkFitConfig(camera="perspective", identity_weight=0.01, expression_weight=0.01)
    fit = fit_landmarks(geometry, targets, config=config, focal=800.0, principal_point=pp)
    assert fit.reprojection_error.max() < 0.2
    assert rotation_error_deg(fit.params[ROTATION], gt[ROTATION]).max() < 3.0
    assert torch.equal(fit.params[FOCAL], torch.full((B,), 800.0))


def test_tracking_with_fixed_identity_and_previous_frame(geometry):
    gt = _subjects(geometry, seed=4)
    targets = project_landmarks(geometry, gt, "weak", "dynamic")
    first = fit_landmarks(geometry, targets, identity=gt[IDENTITY])
    assert torch.equal(first.params[IDENTITY], gt[IDENTITY])
    moved = dict(gt, **{ROTATION: gt[ROTATION] + torch.tensor([0.0, 0.05, 0.0])})
    nxt = project_landmarks(geometry, moved, "weak", "dynamic")
    prev = {k: first.params[k] for k in (ROTATION, SCALE, TRANS2D, EXPRESSION)}
    config = LandmarkFitConfig(pose_rounds=0, rounds=2, temporal_weight=1e-3)
    second = fit_landmarks(geometry, nxt, identity=gt[IDENTITY], init=prev, previous=prev,
                           config=config)
    assert second.reprojection_error.max() < 0.5
    assert rotation_error_deg(second.params[ROTATION], moved[ROTATION]).max() < 1.5
    # A heavy temporal weight keeps the previous frame's expression.
    stiff = fit_landmarks(geometry, nxt, identity=gt[IDENTITY], init=prev, previous=prev,
                          config=LandmarkFitConfig(pose_rounds=0, rounds=2, temporal_weight=1e6))
    assert torch.allclose(stiff.params[EXPRESSION], prev[EXPRESSION], atol=1e-3)


def test_missing_landmarks_via_confidence(geometry):
    gt = _subjects(geometry, seed=5)
    targets = project_landmarks(geometry, gt, "weak", "dynamic")
    conf = torch.ones(B, 68)
    conf[:, 48:] = 0.0  # mouth missing
    targets[:, 48:] = 1e4  # garbage there must not matter
    fit = fit_landmarks(geometry, targets, confidence=conf,
                        config=LandmarkFitConfig(identity_weight=0.01, expression_weight=0.01))
    assert fit.reprojection_error.max() < 0.2


def test_bad_inputs(geometry):
    with pytest.raises(ValueError, match="landmarks"):
        fit_landmarks(geometry, torch.zeros(2, 5, 2))
    with pytest.raises(ValueError, match="focal"):
        fit_landmarks(geometry, torch.zeros(2, 68, 2), config=LandmarkFitConfig(camera="perspective"))
    with pytest.raises(ValueError, match="identity"):
        fit_landmarks(geometry, torch.zeros(2, 68, 2), identity=torch.zeros(2, 3))
    with pytest.raises(ValueError, match="confidence"):
        fit_landmarks(geometry, torch.zeros(2, 68, 2), confidence=torch.ones(2, 67))
