"""Face crops: the crop <-> image transforms (round trip, known answers) and the resampling."""

import numpy as np
import pytest
import torch

from core.camera import apply_similarity_2d, invert_similarity_2d
from utils.crop import crop_face, crop_transform


def _random_landmarks(seed: int, n: int = 68) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(40, 200, size=(n, 2))


def test_round_trip_crop_image_crop_is_identity():
    rng = np.random.default_rng(1)
    landmarks = torch.from_numpy(np.stack([_random_landmarks(s) for s in range(4)]))
    M = crop_transform(landmarks, scale=1.2, size=256)
    M_inv = invert_similarity_2d(M)
    crop_points = torch.from_numpy(rng.uniform(-20, 280, size=(4, 500, 2)))
    back = apply_similarity_2d(apply_similarity_2d(crop_points, M), M_inv)
    assert float((back - crop_points).abs().max()) < 1e-4


def test_facecrop_round_trip_and_landmarks_in_both_frames():
    image = np.zeros((240, 240, 3), np.uint8)
    landmarks = _random_landmarks(2)
    crop = crop_face(image, landmarks)
    points = np.random.default_rng(3).uniform(0, 255, size=(100, 2))
    np.testing.assert_allclose(crop.to_crop(crop.to_image(points)), points, atol=1e-4)
    np.testing.assert_allclose(crop.to_image(crop.landmarks_crop), landmarks, atol=1e-4)
    np.testing.assert_allclose(crop.landmarks_image, landmarks)
    np.testing.assert_allclose(crop.image_to_crop @ np.append(crop.crop_to_image[:, 2], 1),
                               [0.0, 0.0], atol=1e-9)


def test_square_centred_and_scaled_as_specified():
    """Landmark box centre -> crop centre; longer landmark extent -> size / scale crop pixels."""
    landmarks = np.array([[30.0, 50.0], [130.0, 90.0], [80.0, 70.0]])
    crop = crop_face(np.zeros((200, 200, 3), np.uint8), landmarks, scale=1.25, size=128)
    lo, hi = crop.landmarks_crop.min(0), crop.landmarks_crop.max(0)
    np.testing.assert_allclose((lo + hi) / 2, [63.5, 63.5], atol=1e-9)
    assert hi[0] - lo[0] == pytest.approx(128 / 1.25)
    assert hi[1] - lo[1] == pytest.approx(40 * 128 / 125)
    # a similarity: equal scale on both axes, no rotation
    A = crop.crop_to_image[:, :2]
    np.testing.assert_allclose(A, np.eye(2) * 125 / 128)


def test_crop_transform_known_answer_and_batch():
    lm = torch.tensor([[[10.0, 20.0], [110.0, 70.0]], [[0.0, 0.0], [50.0, 200.0]]])
    M = crop_transform(lm, scale=1.0, size=100)
    # square edges (10 and 110 in x) sit on the crop's outer pixel edges (-0.5 and 99.5)
    expected0 = torch.tensor([[1.0, 0.0, 10.5], [0.0, 1.0, -4.5]])
    expected1 = torch.tensor([[2.0, 0.0, -74.0], [0.0, 2.0, 1.0]])
    torch.testing.assert_close(M, torch.stack([expected0, expected1]))
    assert M.dtype == lm.dtype


def _ramp(height: int, width: int, step: float) -> np.ndarray:
    """Image whose red channel = column * step and green = row * step (linear, so bilinear
    resampling reproduces it exactly up to rounding)."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([cols * step, rows * step, np.zeros_like(cols)], -1).round().astype(np.uint8)


@pytest.mark.parametrize("height, width, step, size", [(250, 250, 1.0, 256),
                                                       (1200, 1000, 0.2, 64)])
def test_crop_pixels_come_from_the_mapped_positions(height, width, step, size):
    """Each crop pixel holds the original image at crop_to_image(pixel) (also when shrinking a
    large image, where the crop first area-averages)."""
    image = _ramp(height, width, step)
    landmarks = np.array([[0.3 * width, 0.3 * height], [0.7 * width, 0.6 * height]])
    crop = crop_face(image, landmarks, scale=1.2, size=size)
    v, u = np.mgrid[0:size, 0:size]
    where = crop.to_image(np.stack([u.ravel(), v.ravel()], -1)).reshape(size, size, 2)
    np.testing.assert_allclose(crop.image[..., 0], where[..., 0] * step, atol=1.01)
    np.testing.assert_allclose(crop.image[..., 1], where[..., 1] * step, atol=1.01)
    assert crop.image.shape == (size, size, 3) and crop.image.dtype == np.uint8


def test_outside_the_image_is_black():
    image = np.full((100, 100, 3), 200, np.uint8)
    crop = crop_face(image, np.array([[0.0, 0.0], [40.0, 40.0]]), size=64)
    assert (crop.image[0, 0] == 0).all() and (crop.image[-1, -1] == 200).all()


def test_bad_input_errors():
    with pytest.raises(ValueError, match="coincide"):
        crop_face(np.zeros((10, 10, 3), np.uint8), np.ones((68, 2)))
    with pytest.raises(ValueError, match=r"landmarks: expected shape \(N, 2\)"):
        crop_face(np.zeros((10, 10, 3), np.uint8), np.ones((68, 3)))
    with pytest.raises(ValueError, match="image_rgb"):
        crop_face(np.zeros((10, 10)), _random_landmarks(0))
    with pytest.raises(ValueError, match=r"\(B, N >= 2, 2\)"):
        crop_transform(torch.zeros(68, 2))
    with pytest.raises(ValueError, match="scale"):
        crop_transform(torch.rand(1, 68, 2), scale=0.0)
