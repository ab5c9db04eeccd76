"""Identity from shading: the truth is a fixed point, and shading moves a landmark-only face towards it."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from core.camera import euler_to_matrix
from core.metrics import aligned_mesh_error
from core.residuals import LandmarkGeometry, project_landmarks, update_contour
from core.shading_refine import ShadingConfig, eye_region_mask, refine_identity_from_shading
from utils.synthetic import SyntheticGenerator
from utils.training_data import subject_params

NOISE_PX = 1.5


@pytest.fixture(scope="module")
def subject(ict_model):
    return SyntheticGenerator(ict_model).subject(6, seed=1003)


def _inputs(subject, face, identity):
    """Per-image parameters (true pose and expression, ``identity`` (n_id,)), crops, geometry, contour."""
    truth = subject_params(subject)
    params = dict(truth, identity=identity[None].expand(len(subject.images), -1))
    images = torch.from_numpy(subject.images).permute(0, 3, 1, 2).float() / 255.0
    geometry = LandmarkGeometry(face)
    points = geometry.points(truth["identity"], truth["expression"])
    corr = update_contour(geometry, points, euler_to_matrix(truth["rotation"]))
    landmarks = project_landmarks(geometry, truth, correspondence=corr)
    return params, images, geometry, corr, landmarks


def _refine(face, params, images, geometry, corr, landmarks, config=ShadingConfig()):
    return refine_identity_from_shading(
        face, images, params, geometry, corr, landmarks, prior_albedo=torch.tensor([0.62, 0.45, 0.38]),
        mask=torch.ones(face.n_vertices), landmark_sigma=NOISE_PX, landmark_huber=4.0, identity_weight=1.0,
        config=config)


def _neutral_error(face, identity, subject) -> float:
    return float(aligned_mesh_error(face.vertices(identity[None]), torch.from_numpy(subject.neutral).float()[None]))


def test_eye_region_mask(ict_face):
    mask = eye_region_mask(ict_face, 6.0)
    eyes = ict_face.landmark_indices[36:48]
    assert mask.shape == (ict_face.n_vertices,) and bool((mask[eyes] == 0).all())
    near = torch.cdist(ict_face.neutral, ict_face.neutral[eyes]).min(1).values
    assert bool((mask == (near > 6.0).float()).all())
    assert 0.02 < 1.0 - float(mask.mean()) < 0.2  # the eye surroundings, not most of the face
    assert bool((eye_region_mask(ict_face, 0.0) == 1).all())


def test_truth_is_nearly_a_fixed_point(subject, ict_face):
    truth = torch.from_numpy(subject.identity).float()
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, truth)
    config = ShadingConfig(rounds=1, iterations=30)
    identity, sh = _refine(ict_face, params, images, geometry, corr, landmarks, config)
    assert sh.shape == (6, 9, 3)
    baseline = float(aligned_mesh_error(ict_face.neutral[None], torch.from_numpy(subject.neutral).float()[None]))
    # Starting at the truth with exact landmarks, the refinement stays within a small fraction
    # of the mean face's error (the identity prior and the renderer's pixel noise pull a little).
    assert _neutral_error(ict_face, identity, subject) < 0.15 * baseline


def test_shading_moves_a_landmark_fit_towards_the_truth(subject, ict_face):
    """True poses, expressions; identity from noisy landmarks alone, then refined by shading."""
    n_id = ict_face.n_identity
    params, images, geometry, corr, landmarks = _inputs(subject, ict_face, torch.zeros(n_id))
    noisy = landmarks + NOISE_PX * torch.randn(landmarks.shape, generator=torch.Generator().manual_seed(0))
    # Landmark-only identity: the shading term switched off (weight 0).
    off = dataclasses.replace(ShadingConfig(), weight=0.0, rounds=1, iterations=100)
    start, _ = _refine(ict_face, params, images, geometry, corr, noisy, off)
    before = _neutral_error(ict_face, start, subject)
    refined, _ = _refine(ict_face, dict(params, identity=start[None].expand(6, -1)), images, geometry, corr, noisy)
    after = _neutral_error(ict_face, refined, subject)
    assert after < 0.85 * before, f"neutral error {before:.2f} mm -> {after:.2f} mm"
