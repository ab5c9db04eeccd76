"""Photometric and landmark augmentations (utils/augment.py): measured effects, determinism."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from models.training.augment import (OCCLUDER_KINDS, AugmentConfig, augment_images, augment_landmarks,
                                     jpeg_roundtrip, occluder_mask)

OFF = AugmentConfig.identity()


def _scene(n: int = 3, size: int = 64, seed: int = 0) -> np.ndarray:
    """Smooth random colour images (G, size, size, 3) uint8 away from 0 and 255."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:size, 0:size] / size
    base = 60 + 120 * (0.5 + 0.5 * np.sin(3 * rows[..., None] + 5 * cols[..., None]
                                          + rng.random((n, 1, 1, 3)) * 6))
    return np.round(base).astype(np.uint8)


def test_identity_config_returns_input():
    images = _scene()
    out = augment_images(images, np.random.default_rng(1), OFF)
    np.testing.assert_array_equal(out, images)
    landmarks = np.random.default_rng(2).uniform(0, 64, (3, 68, 2)).astype(np.float32)
    np.testing.assert_array_equal(augment_landmarks(landmarks, np.random.default_rng(1), OFF),
                                  landmarks)


def test_same_seed_same_output_other_seed_differs():
    images = _scene(4)
    config = AugmentConfig()
    a = augment_images(images, np.random.default_rng(7), config)
    b = augment_images(images, np.random.default_rng(7), config)
    c = augment_images(images, np.random.default_rng(8), config)
    assert a.dtype == np.uint8 and a.shape == images.shape
    np.testing.assert_array_equal(a, b)
    assert np.abs(a.astype(int) - c).max() > 0
    lm = np.zeros((4, 68, 2), np.float32)
    np.testing.assert_array_equal(augment_landmarks(lm, np.random.default_rng(3)),
                                  augment_landmarks(lm, np.random.default_rng(3)))
    assert not np.allclose(augment_landmarks(lm, np.random.default_rng(3)),
                           augment_landmarks(lm, np.random.default_rng(4)))


def test_blur_lowers_the_gradient_of_a_step_edge():
    step = np.zeros((1, 32, 32, 3), np.uint8)
    step[:, :, 16:] = 200
    config = replace(OFF, blur_probability=1.0, blur_sigma=(1.0, 1.0))
    out = augment_images(step, np.random.default_rng(0), config).astype(float)
    gradient = np.abs(np.diff(out[0, 16, :, 0]))
    assert gradient.max() < 0.5 * 200
    # A sampled Gaussian of sigma 1 across a step: the largest difference of neighbours is
    # 200 times the centre weight 1 / sum_k exp(-k^2 / 2) = 0.399, and the mean level is kept.
    centre = 1.0 / np.exp(-np.arange(-4, 5) ** 2 / 2.0).sum()
    assert gradient.max() == pytest.approx(200 * centre, abs=1.0)
    assert out.mean() == pytest.approx(100.0, abs=0.5)


@pytest.mark.parametrize("std", [0.01, 0.03])
def test_noise_std_is_as_requested(std):
    grey = np.full((2, 128, 128, 3), 128, np.uint8)
    config = replace(OFF, noise_probability=1.0, noise_std=(std, std))
    out = augment_images(grey, np.random.default_rng(0), config)
    measured = (out.astype(float) - 128).std() / 255.0
    # Rounding to 8 bits adds a uniform error of std 1/255/sqrt(12) in quadrature.
    assert measured == pytest.approx(np.hypot(std, 1 / 255 / np.sqrt(12)), rel=0.03)


@pytest.mark.parametrize("quality", [30, 90])
def test_jpeg_changes_pixels_keeps_mean(quality):
    images = _scene(2, 96)
    rng = np.random.default_rng(5)
    images = np.clip(images + rng.normal(0, 8, images.shape), 0, 255).astype(np.uint8)
    config = replace(OFF, jpeg_probability=1.0, jpeg_quality=(quality, quality))
    out = augment_images(images, np.random.default_rng(0), config)
    np.testing.assert_array_equal(out[0], jpeg_roundtrip(images[0], quality))
    diff = out.astype(float) - images
    assert np.abs(diff).mean() > 1.0
    assert abs(diff.mean()) < 1.0
    if quality == 30:
        high = augment_images(images, np.random.default_rng(0), replace(config, jpeg_quality=(90, 90)))
        assert np.abs(high.astype(float) - images).mean() < np.abs(diff).mean()


@pytest.mark.parametrize("kind", OCCLUDER_KINDS)
def test_occluder_coverage_within_range(kind):
    config = AugmentConfig(occluder_coverage=(0.02, 0.15))
    coverage = np.array([occluder_mask(128, 128, np.random.default_rng(s), config, kind).mean()
                         for s in range(60)])
    # Rasterized shapes are within a few per cent of their analytic area.
    assert coverage.min() >= 0.02 * 0.9 and coverage.max() <= 0.15 * 1.05
    assert coverage.max() - coverage.min() > 0.08


def test_occluders_mostly_over_lower_face_or_sides():
    config = AugmentConfig(occluder_coverage=(0.02, 0.04), occluder_face_probability=1.0)
    masks = np.stack([occluder_mask(100, 100, np.random.default_rng(s), config)
                      for s in range(40)])
    rows, cols = np.mgrid[0:100, 0:100]
    upper_centre = (rows < 20) & (cols > 30) & (cols < 70)
    assert not (masks & upper_centre).any()


def test_occluder_painted_in_images():
    images = _scene(8, 64)
    config = replace(OFF, occluder_probability=1.0, occluder_coverage=(0.05, 0.1))
    out = augment_images(images, np.random.default_rng(0), config)
    changed = (out != images).any(axis=-1).mean(axis=(1, 2))
    assert (changed > 0.03).all() and (changed <= 0.1 * 1.05).all()


def test_colour_jitter_changes_colour_within_bounds():
    images = _scene(6)
    config = replace(OFF, colour_probability=1.0)
    out = augment_images(images, np.random.default_rng(0), config).astype(float)
    ratio = out.mean(axis=(1, 2, 3)) / images.mean(axis=(1, 2, 3))
    assert np.abs(ratio - 1).max() > 0.02
    assert (ratio > 0.4).all() and (ratio < 1.8).all()


def test_landmark_noise_std_as_requested():
    lm = np.full((400, 68, 2), 50.0)
    config = replace(OFF, landmark_noise=1.5)
    out = augment_landmarks(lm, np.random.default_rng(0), config)
    assert (out - lm).std() == pytest.approx(1.5, rel=0.03)
    assert abs((out - lm).mean()) < 0.02


def test_landmark_bias_shared_by_images_and_jawline_noise():
    lm = np.zeros((300, 68, 2))
    bias = augment_landmarks(lm, np.random.default_rng(0), replace(OFF, landmark_bias=1.0))
    np.testing.assert_allclose(bias, np.broadcast_to(bias[0], bias.shape))
    radius = np.linalg.norm(bias[0], axis=-1)
    assert radius.max() <= 1.0 and radius.max() > 0.7
    jaw = augment_landmarks(lm, np.random.default_rng(0), replace(OFF, jawline_noise=2.0))
    assert jaw[:, :17].std() == pytest.approx(2.0, rel=0.05)
    np.testing.assert_array_equal(jaw[:, 17:], 0.0)


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match=r"images: expected a uint8 array of shape \(G, H, W, 3\)"):
        augment_images(np.zeros((64, 64, 3), np.uint8), np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"landmarks: expected shape \(G, 68, 2\)"):
        augment_landmarks(np.zeros((68, 2)), np.random.default_rng(0))
    with pytest.raises(ValueError, match="blur_probability"):
        AugmentConfig(blur_probability=1.5)
    with pytest.raises(ValueError, match="jpeg_quality"):
        AugmentConfig(jpeg_quality=(90, 30))
