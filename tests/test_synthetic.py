"""Synthetic data generator: determinism, ground-truth consistency, sampling ranges, albedo, I/O."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from utils.synthetic.__main__ import main
from utils.synthetic.files import load_subject, write_subject
from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator, crop_camera, generate_subject
from utils.synthetic.scene import (EXPRESSION_RECIPES, expose, sample_background, sample_expression,
                                   sample_pose, sample_sh, sh_irradiance_range)
from utils.synthetic.skin_albedo import landmark_region_weights, procedural_albedo

# Small, fast crops for the tests that do not look at realism.
SMALL = SyntheticConfig(image_size=80, supersample=1)


@pytest.fixture(scope="module")
def generator(ict_model):
    return SyntheticGenerator(ict_model)


@pytest.fixture(scope="module")
def subject(generator):
    """Three default 256x256 images of one subject."""
    return generator.subject(3, seed=7)


@pytest.fixture(scope="module")
def small_generator(ict_model):
    return SyntheticGenerator(ict_model, SMALL)


def test_same_seed_same_data_other_seed_differs(small_generator):
    a = small_generator.subject(2, seed=(3, 1))
    b = small_generator.subject(2, seed=(3, 1))
    c = small_generator.subject(1, seed=(3, 2))
    for name in ("images", "expression", "rotation", "sh", "landmarks", "identity", "albedo",
                 "vertices"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
        assert not np.array_equal(getattr(a, name)[:1], getattr(c, name)[:1]), name
    # Image k depends on (seed, k) only, not on how many images are drawn.
    single = small_generator.subject(1, seed=(3, 1))
    assert np.array_equal(single.images[0], a.images[0])
    assert np.array_equal(single.expression[0], a.expression[0])


def test_landmarks_are_projected_landmark_vertices(subject, ict_model):
    s = subject
    lm3d = s.vertices[:, s.landmark_indices].astype(np.float64)          # (M, 68, 3)
    rotated = np.einsum("mij,mnj->mni", s.rotation_matrix.astype(np.float64), lm3d)
    u = s.scale[:, None] * rotated[..., 0] + s.trans2d[:, None, 0]
    v = -s.scale[:, None] * rotated[..., 1] + s.trans2d[:, None, 1]
    assert np.abs(np.stack([u, v], -1) - s.landmarks).max() < 1e-4
    # Camera space is R X; the ground-truth landmark vertices are the model's landmark vertices.
    assert np.allclose(s.vertices_camera, np.einsum("mij,mnj->mni", s.rotation_matrix, s.vertices),
                       atol=1e-3)
    full = ict_model.vertices(torch.as_tensor(s.identity)[None].expand(s.n_images, -1),
                              torch.as_tensor(s.expression))
    assert np.allclose(full[:, ict_model.landmark_indices].numpy(), lm3d, atol=1e-3)
    assert np.array_equal(s.vertex_ids[s.landmark_indices], ict_model.landmark_indices.numpy())
    # Rotation matrices are the Euler angles' (R = Rz Ry Rx) and orthonormal.
    assert np.allclose(s.rotation_matrix @ s.rotation_matrix.transpose(0, 2, 1), np.eye(3), atol=1e-5)
    pitch, yaw, roll = s.rotation[0]
    assert s.rotation_matrix[0, 2, 0] == pytest.approx(-math.sin(yaw), abs=1e-6)


def test_crop_camera_frames_the_landmark_box():
    points = torch.tensor([[[-50.0, 20.0, 0.0], [50.0, -30.0, 5.0], [0.0, 0.0, 10.0]]])
    scale, translation = crop_camera(points, torch.eye(3)[None], 240, crop_scale=1.2)
    assert scale.item() == pytest.approx(240 / 120)          # 100 mm wide box, 1.2x
    # The box centre (x 0, y -5 mm) lands on the crop centre 119.5: v = -s y + ty.
    assert translation[0].tolist() == pytest.approx([119.5, 119.5 - 2 * 5.0])
    scale2, translation2 = crop_camera(points, torch.eye(3)[None], 240, 1.2,
                                       torch.tensor([[0.1, 0.05, 0.0]]))
    assert scale2.item() == pytest.approx(1.1 * 2.0)
    assert translation2[0, 0].item() == pytest.approx(119.5 + 0.05 * 240)


def test_expression_and_pose_ranges(ict_model):
    names = ict_model.expression_names
    assert all(k in names for recipe in EXPRESSION_RECIPES.values() for k in recipe), \
        "a recipe names a blendshape the ICT model does not have"
    rng = np.random.default_rng(0)
    draws = np.stack([sample_expression(names, rng)[0] for _ in range(400)])
    assert draws.min() >= 0.0 and draws.max() <= 1.0
    assert (draws.max(1) > 0.3).mean() > 0.7                 # mostly real expressions
    assert np.all(draws[:, names.index("mouthClose")] == 0)   # only meaningful with jawOpen
    left, right = names.index("mouthSmile_L"), names.index("mouthSmile_R")
    moving = draws[:, left] + draws[:, right] > 0.2
    assert (np.abs(draws[moving, left] - draws[moving, right]) < 0.15).mean() > 0.6
    poses = np.degrees(np.stack([sample_pose(rng, np.radians((20, 60, 15))) for _ in range(2000)]))
    assert np.all(np.abs(poses) <= np.array([20, 60, 15]) + 1e-9)
    assert np.abs(poses[:, 1]).max() > 45                   # the range is used
    gaussian = sample_expression(["a", "b"], rng, bounded=False, neutral_probability=0.0)[0]
    assert np.any(gaussian != 0)


def test_generated_ranges(subject):
    assert subject.expression.min() >= 0 and subject.expression.max() <= 1
    assert np.all(np.abs(np.degrees(subject.rotation)) <= np.array([20, 60, 15]) + 1e-4)
    assert subject.images.shape == (3, 256, 256, 3) and subject.images.dtype == np.uint8


def test_sh_keeps_shading_positive():
    rng = np.random.default_rng(1)
    for _ in range(200):
        sh = sample_sh(rng)
        low, high = sh_irradiance_range(sh)
        assert sh.shape == (9, 3)
        assert low.min() > 0.05 and high.max() < 3.0
    sh = sample_sh(rng)
    assert np.allclose(expose(sh, 0.2, 0.4), sh * np.clip(0.4 / (0.2 * _frontal(sh)), 0.6, 3.0))


def _frontal(sh):
    from core.lighting import sh_basis

    basis = sh_basis(torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64))[0, 0].numpy()
    return float((basis @ sh).mean())


def test_albedo_regions(ict_model):
    albedo = procedural_albedo(ict_model, np.random.default_rng(4)).numpy()
    assert albedo.shape == (ict_model.n_vertices, 3)
    assert albedo.min() >= 0 and albedo.max() <= 1
    neutral = ict_model.neutral.numpy()
    w = landmark_region_weights(neutral, neutral[ict_model.landmark_indices.numpy()])
    redness = albedo[:, 0] / np.maximum(albedo[:, 1], 1e-6)
    face = np.zeros(len(neutral), dtype=bool)
    face[ict_model.regions["face"].numpy()] = True
    lips, cheeks, brows = (face & (w[k] > t) for k, t in (("lips", 0.9), ("cheeks", 0.6),
                                                          ("brows", 0.9)))
    assert lips.sum() > 50 and cheeks.sum() > 50 and brows.sum() > 50
    assert redness[lips].mean() > redness[cheeks].mean() + 0.1
    forehead = (neutral[:, 1] > neutral[ict_model.landmark_indices.numpy()[19], 1] + 15) & \
        (neutral[:, 1] < neutral[ict_model.landmark_indices.numpy()[19], 1] + 30) & \
        (np.abs(neutral[:, 0]) < 20) & (neutral[:, 2] > 80)
    assert albedo[brows].mean() < albedo[forehead].mean() - 0.05
    # Deterministic given the generator's seed.
    again = procedural_albedo(ict_model, np.random.default_rng(4)).numpy()
    assert np.array_equal(albedo, again)


def test_face_covers_crop_and_background_is_kept(subject):
    coverage = subject.masks.mean(axis=(1, 2))
    assert np.all((coverage > 0.5) & (coverage < 0.97)), coverage
    outside = ~subject.masks
    assert np.array_equal(subject.images[outside], subject.backgrounds[outside])
    inside = subject.masks
    diff = np.abs(subject.images[inside].astype(int) - subject.backgrounds[inside]).mean()
    assert diff > 10
    # The face is centred: the landmarks' box centre lies near the crop centre.
    centre = 0.5 * (subject.landmarks.min(1) + subject.landmarks.max(1))
    assert np.all(np.abs(centre - 127.5) < 0.06 * 256)


def test_frontal_landmarks_visible_and_profile_hides_far_jaw(ict_model):
    frontal = SyntheticGenerator(ict_model, dataclasses.replace(SMALL, pose_limits_deg=(0, 0, 0)))
    s = frontal.subject(3, seed=0)
    assert s.landmark_visibility.sum(1).min() >= 60
    assert s.landmark_visibility[:, 17:36].all()
    assert s.landmark_visibility[:, :17].sum(1).min() >= 15
    turned = SyntheticGenerator(ict_model, dataclasses.replace(
        SMALL, pose_limits_deg=(0, 60, 0), pose_spread=100.0))
    s = turned.subject(4, seed=0)
    k = int(np.argmax(np.abs(s.rotation[:, 1])))
    yaw = math.degrees(s.rotation[k, 1])
    assert abs(yaw) > 40
    # Positive yaw turns the subject's left side (x > 0, jaw landmarks 9-16) away.
    far, near = (slice(9, 17), slice(0, 8)) if yaw > 0 else (slice(0, 8), slice(9, 17))
    assert (~s.landmark_visibility[k, far]).sum() >= 4
    assert s.landmark_visibility[k, near].all() and s.landmark_visibility[k, 27:34].all()


def test_write_then_load_equals_memory(subject, tmp_path):
    write_subject(subject, tmp_path / "subject_000")
    loaded = load_subject(tmp_path / "subject_000")
    for f in dataclasses.fields(subject):
        if f.name == "backgrounds":
            assert loaded.backgrounds is None
            continue
        a, b = getattr(subject, f.name), getattr(loaded, f.name)
        if isinstance(a, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), f.name
        else:
            assert a == b, f.name
    assert (tmp_path / "subject_000" / "neutral.obj").is_file()
    assert (tmp_path / "subject_000" / "image_02.obj").is_file()


def test_model_with_albedo_basis_and_pca_expressions(ict_face):
    g = torch.Generator().manual_seed(0)
    n = ict_face.n_vertices
    model = dataclasses.replace(
        ict_face, albedo_mean=torch.full((n, 3), 0.5),
        albedo_basis=0.05 * torch.randn(4, n, 3, generator=g), expression_range=None)
    s = generate_subject(model, 2, seed=1, config=dataclasses.replace(SMALL, neutral_probability=0))
    assert s.albedo.min() >= 0 and s.albedo.max() <= 1 and np.abs(s.albedo - 0.5).max() > 0.01
    assert s.expression.min() < 0                              # Gaussian PCA coefficients
    assert s.vertices.shape == (2, n, 3) and np.array_equal(s.vertex_ids, np.arange(n))


def test_bad_input(ict_model, small_generator, tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        small_generator.subject(0, seed=0)
    with pytest.raises(ValueError, match="seed"):
        small_generator.subject(1, seed=-3)
    with pytest.raises(ValueError, match="gt_region"):
        SyntheticGenerator(ict_model, dataclasses.replace(SMALL, gt_region="teeth"))
    with pytest.raises(FileNotFoundError, match="no_such"):
        load_subject(tmp_path / "no_such")
    with pytest.raises(ValueError, match="kind"):
        sample_background(np.random.default_rng(0), 32, kind="sky")


def test_command_line_writes_subjects(ict_dir, tmp_path):
    assert main(["--out", str(tmp_path), "--subjects", "2", "--images", "1", "--seed", "3",
                 "--size", "48", "--supersample", "1", "--no-obj", "--model-dir",
                 str(ict_dir)]) == 0
    for i in range(2):
        loaded = load_subject(tmp_path / f"subject_{i:03d}")
        assert loaded.images.shape == (1, 48, 48, 3) and loaded.seed == [3, i]
    assert not (tmp_path / "subject_000" / "image_00.obj").exists()
