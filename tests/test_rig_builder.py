"""Rig building converges to the ground truth of synthetic subjects; works from one image up."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.fitting.landmark_geometry import LandmarkGeometry, project_landmarks
from core.fitting.shading_refine import ShadingConfig
from core.metrics import aligned_mesh_error
from core.rig.builder import RigBuildConfig, build_rig, fit_rig_code
from core.rig.rig import CorrectiveBasis, Rig
from utils.synthetic.generator import SyntheticGenerator
from utils.synthetic.truth import subject_params


@pytest.fixture(scope="module")
def subject(ict_model):
    return SyntheticGenerator(ict_model).subject(4, seed=1000)


def _truth(subject, face):
    params = subject_params(subject)
    landmarks = project_landmarks(LandmarkGeometry(face), params, "weak", "dynamic")
    images = torch.from_numpy(subject.images).permute(0, 3, 1, 2).float() / 255.0
    return params, landmarks, images


def test_noise_free_landmarks_recover_the_person(subject, ict_face):
    params, landmarks, images = _truth(subject, ict_face)
    res = build_rig(ict_face, images, landmarks, config=RigBuildConfig(photometric=False, landmark_sigma=0.5))
    truth = torch.from_numpy(subject.neutral).float()[None]
    baseline = float(aligned_mesh_error(ict_face.neutral[None], truth))
    error = float(aligned_mesh_error(res.rig.neutral[None], truth))
    assert error < 0.35 * baseline, f"rig neutral error {error:.2f} mm vs mean face {baseline:.2f} mm"
    assert float(res.reprojection_error.max()) < 0.5
    assert float((res.params["rotation"] - params["rotation"]).abs().max()) < np.radians(3.0)
    assert res.params["expression"].min() >= 0 and res.params["expression"].max() <= 1
    meshes = res.rig.vertices(res.params["expression"])
    per_image = aligned_mesh_error(meshes, torch.from_numpy(subject.vertices).float())
    assert float(per_image.mean()) < 0.5 * baseline


def test_photometric_stage_keeps_the_fit_and_estimates_appearance(subject, ict_face):
    _, landmarks, images = _truth(subject, ict_face)
    noisy = landmarks + 1.5 * torch.randn(landmarks.shape, generator=torch.Generator().manual_seed(0))
    config = RigBuildConfig(landmark_sigma=1.5, shading=ShadingConfig(rounds=1, iterations=20))
    res = build_rig(ict_face, images, noisy, config=config)
    truth = torch.from_numpy(subject.neutral).float()[None]
    assert float(aligned_mesh_error(res.rig.neutral[None], truth)) < 0.75 * float(
        aligned_mesh_error(ict_face.neutral[None], truth))
    assert res.sh.shape == (4, 9, 3) and set(res.timings) == {"coarse fit", "landmark fit", "photometric refinement", "rig code"}
    # The estimated albedo matches the generator's skin where the face is seen, up to the
    # albedo-lighting scale ambiguity (compare chromaticity).
    albedo, true_albedo = res.rig.albedo, torch.from_numpy(subject.albedo).float()
    cheek = ict_face.regions["narrow_face"]
    chroma = lambda a: a / a.sum(-1, keepdim=True).clamp(min=1e-6)  # noqa: E731
    assert float((chroma(albedo[cheek]) - chroma(true_albedo[cheek])).abs().mean()) < 0.05


def test_landmark_weights_follow_the_detector_noise(subject, ict_face):
    """Jawline points 8x noisier than the rest: weighting by inverse variance gives a better face."""
    _, landmarks, images = _truth(subject, ict_face)
    gen = torch.Generator().manual_seed(3)
    sigma = torch.full((68,), 1.0)
    sigma[:17] = 8.0
    noisy = landmarks + torch.randn(landmarks.shape, generator=gen) * sigma[None, :, None]
    config = RigBuildConfig(photometric=False, landmark_sigma=1.0, landmark_huber=None)
    truth = torch.from_numpy(subject.neutral).float()[None]
    errors = {}
    for name, confidence in (("plain", None), ("weighted", (1.0 / sigma ** 2)[None].expand(4, -1))):
        res = build_rig(ict_face, images, noisy, config=config, confidence=confidence)
        errors[name] = float(aligned_mesh_error(res.rig.neutral[None], truth))
    assert errors["weighted"] < 0.8 * errors["plain"], errors


def test_single_image_and_bad_shapes(subject, ict_face):
    _, landmarks, images = _truth(subject, ict_face)
    res = build_rig(ict_face, images[:1], landmarks[:1], config=RigBuildConfig(photometric=False))
    assert res.params["expression"].shape == (1, 53) and res.rig.neutral.shape == (9409, 3)
    with pytest.raises(ValueError, match=r"landmarks must be \(2, 68, 2\)"):
        build_rig(ict_face, images[:2], landmarks[:1])
    with pytest.raises(ValueError, match=r"images must be \(G, 3, H, W\)"):
        build_rig(ict_face, images[:, 0], landmarks)


def test_rig_code_explains_person_specific_expressions(ict_face):
    """Landmarks of a rig with a known corrective are explained by the fitted rig code."""
    g = torch.Generator().manual_seed(4)
    geometry = LandmarkGeometry(ict_face)
    corrective = CorrectiveBasis.from_model(ict_face, rank=3)
    true_code = 0.5 * torch.randn(*corrective.code_shape, generator=g)
    identity = torch.zeros(ict_face.n_identity)
    person = Rig.from_model(ict_face, identity, rig_code=true_code, corrective=corrective, transfer=False)
    n = 6
    flat = {"identity": identity[None].expand(n, -1), "expression": torch.rand(n, 53, generator=g) * 0.6,
            "rotation": 0.3 * torch.randn(n, 3, generator=g), "scale": torch.full((n,), 1.2),
            "trans2d": torch.full((n, 2), 128.0)}
    corr = geometry.default_correspondence(n)
    from core.rig.builder import project_rig_landmarks

    targets = project_rig_landmarks(person, geometry, flat, corr)
    generic = Rig.from_model(ict_face, identity, transfer=False)
    before = (project_rig_landmarks(generic, geometry, flat, corr) - targets).norm(dim=-1).mean()
    code = fit_rig_code(geometry, corrective, flat, corr, targets, None, sigma=1.0, weight=1e-6)
    fitted = Rig.from_model(ict_face, identity, rig_code=code, corrective=corrective, transfer=False)
    after = (project_rig_landmarks(fitted, geometry, flat, corr) - targets).norm(dim=-1).mean()
    assert float(before) > 1.0 and float(after) < 0.05 * float(before)
