"""Cached synthetic training set (utils/training_data.py): round trip, landmarks, dataset items."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from models.training.augment import AugmentConfig
from models.training.data import SyntheticFaceDataset, TrainingCacheError, build_cache, load_cache
from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator
from utils.synthetic.truth import detector_landmarks

SMALL = SyntheticConfig(image_size=64, supersample=1)


@pytest.fixture(scope="module")
def cache(ict_model, tmp_path_factory):
    """2 subjects x 3 images of 64 px, no detection."""
    return build_cache(ict_model, tmp_path_factory.mktemp("cache") / "train.npz", subjects=2,
                       images=3, seed=7, detect=False, synthetic_config=SMALL)


def test_cache_round_trip(cache, ict_model):
    arrays = load_cache(cache)
    generator = SyntheticGenerator(ict_model, SMALL)
    face = ict_model.region("face")
    for i in range(2):
        subject = generator.subject(3, seed=(7, i, 1))
        np.testing.assert_array_equal(arrays["images"][i], subject.images)
        np.testing.assert_array_equal(arrays["identity"][i], subject.identity)
        np.testing.assert_array_equal(arrays["expression"][i], subject.expression)
        for name in ("rotation", "scale", "trans2d", "sh"):
            np.testing.assert_allclose(arrays[name][i], getattr(subject, name), rtol=1e-6)
        np.testing.assert_allclose(arrays["landmarks"][i], detector_landmarks(face, subject),
                                   atol=1e-4)
    assert np.isnan(arrays["landmarks_detected"]).all() and not arrays["detected_ok"].any()
    meta = arrays["meta"]
    assert meta["model"] == "ict" and meta["image_size"] == 64
    assert meta["subject_seeds"] == [[7, 0, 1], [7, 1, 1]]
    assert meta["expression_names"] == list(ict_model.expression_names)
    json.dumps(meta)


def test_training_seeds_differ_from_evaluation_seeds(ict_model, cache):
    # SeedSequence pads with zeros: (s, 0) draws the same subject as the plain int s ...
    generator = SyntheticGenerator(ict_model, SMALL)
    evaluation = generator.subject(1, seed=7).identity
    np.testing.assert_array_equal(generator.subject(1, seed=(7, 0)).identity, evaluation)
    # ... so the cache's subject 0 of seed 7 is another person.
    assert not np.allclose(load_cache(cache)["identity"][0], evaluation)


def test_detector_landmarks_move_only_the_contour(ict_model):
    face = ict_model.region("face")
    frontal = SyntheticConfig(image_size=64, supersample=1, pose_limits_deg=(0.0, 0.0, 0.0))
    subject = SyntheticGenerator(ict_model, frontal).subject(2, seed=(3, 0))
    points = detector_landmarks(face, subject)
    assert points.shape == (2, 68, 2) and points.dtype == np.float32
    np.testing.assert_allclose(points[:, 17:], subject.landmarks[:, 17:], atol=1e-3)
    moved = np.linalg.norm(points - subject.landmarks, axis=-1)
    assert moved[:, :17].max() > 0.1
    with pytest.raises(ValueError, match="subject: expected identity"):
        detector_landmarks(face, replace(subject, identity=subject.identity[:5]))


def test_dataset_items(cache):
    data = SyntheticFaceDataset(cache, images_per_subject=2, seed=1)
    assert len(data) == 2
    item = data[1]
    shapes = {"images": (2, 3, 64, 64), "landmarks": (2, 68, 2), "identity": (100,),
              "expression": (2, 53), "rotation": (2, 3), "scale": (2,), "trans2d": (2, 2),
              "sh": (2, 9, 3), "subject": ()}
    assert {k: tuple(v.shape) for k, v in item.items()} == shapes
    assert all(v.dtype == torch.float32 for k, v in item.items() if k != "subject")
    assert item["subject"].item() == 1
    assert 0.0 <= item["images"].min() and item["images"].max() <= 1.0
    arrays = load_cache(cache)
    np.testing.assert_array_equal(item["identity"].numpy(), arrays["identity"][1])
    # The ground-truth rows the item took: its expressions are two of the subject's three.
    rows = [int(np.argmin(np.abs(arrays["expression"][1] - e.numpy()).sum(1)))
            for e in item["expression"]]
    np.testing.assert_array_equal(item["expression"].numpy(), arrays["expression"][1, rows])
    np.testing.assert_array_equal(item["rotation"].numpy(), arrays["rotation"][1, rows])


def test_dataset_without_augmentation_gives_cached_values(cache):
    data = SyntheticFaceDataset(cache, images_per_subject=3, augment=None)
    arrays = load_cache(cache)
    item = data[0]
    np.testing.assert_array_equal(item["landmarks"].numpy(), arrays["landmarks"][0])
    np.testing.assert_allclose(item["images"].numpy(),
                               arrays["images"][0].transpose(0, 3, 1, 2) / 255.0, atol=1e-7)


def test_dataset_determinism_and_epochs(cache):
    a = SyntheticFaceDataset(cache, images_per_subject=2, seed=4)
    b = SyntheticFaceDataset(cache, images_per_subject=2, seed=4)
    first = a[0]
    for key, value in b[0].items():
        torch.testing.assert_close(first[key], value, rtol=0, atol=0)
    subsets = set()
    for epoch in range(6):
        a.set_epoch(epoch)
        subsets.add(tuple(a[0]["rotation"][:, 1].tolist()))
    assert len(subsets) > 1
    a.set_epoch(0)
    torch.testing.assert_close(a[0]["images"], first["images"], rtol=0, atol=0)


def test_dataloader_collates_groups(cache):
    data = SyntheticFaceDataset(cache, images_per_subject=2, augment=AugmentConfig())
    batch = next(iter(torch.utils.data.DataLoader(data, batch_size=2)))
    assert tuple(batch["images"].shape) == (2, 2, 3, 64, 64)
    assert tuple(batch["landmarks"].shape) == (2, 2, 68, 2)
    assert tuple(batch["identity"].shape) == (2, 100)
    assert batch["subject"].tolist() == [0, 1]


def test_detected_landmarks_on_a_256_px_render(ict_model, tmp_path):
    path = build_cache(ict_model, tmp_path / "detected.npz", subjects=1, images=2, seed=11,
                       synthetic_config=SyntheticConfig(supersample=1))
    arrays = load_cache(path)
    ok = arrays["detected_ok"][0]
    assert ok.any()
    error = np.linalg.norm(arrays["landmarks_detected"][0, ok] - arrays["landmarks"][0, ok], axis=-1)
    assert error.mean() < 8.0
    assert np.isnan(arrays["landmarks_detected"][0, ~ok]).all()
    # With probability 1 every item takes dlib's points where dlib found the face.
    data = SyntheticFaceDataset(path, images_per_subject=2, augment=None, detected_probability=1.0)
    expected = np.where(ok[:, None, None], arrays["landmarks_detected"][0], arrays["landmarks"][0])
    np.testing.assert_array_equal(data[0]["landmarks"].numpy(), expected)


def test_malformed_cache_errors_name_the_file(cache, tmp_path):
    arrays = dict(np.load(cache))
    missing = tmp_path / "missing_key.npz"
    np.savez(missing, **{k: v for k, v in arrays.items() if k != "sh"})
    with pytest.raises(TrainingCacheError, match=rf"{missing}.*missing arrays \['sh'\]"):
        SyntheticFaceDataset(missing)
    wrong = tmp_path / "wrong_shape.npz"
    np.savez(wrong, **{**arrays, "rotation": arrays["rotation"][:, :, :2]})
    with pytest.raises(TrainingCacheError, match=rf"{wrong}: rotation: expected shape \(2, 3, 3\)"):
        load_cache(wrong)
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"not a zip file")
    with pytest.raises(TrainingCacheError, match=str(garbage)):
        load_cache(garbage)
    with pytest.raises(FileNotFoundError, match="nowhere.npz"):
        load_cache(tmp_path / "nowhere.npz")
    with pytest.raises(ValueError, match="images_per_subject: expected 1..3"):
        SyntheticFaceDataset(cache, images_per_subject=4)
