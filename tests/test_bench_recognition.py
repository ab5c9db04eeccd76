"""The face recogniser of benchmarks/bench_recognition.py on the shipped example photos (one person)
and on synthetic faces (other identities)."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from utils.paths import EXAMPLES_DIR

pytest.importorskip("dlib")


@pytest.fixture(scope="module")
def recogniser_and_photos():
    from benchmarks.bench_recognition import FaceRecogniser
    from utils.io.images import read_image
    from utils.landmarks.detect import FaceLandmarker

    landmarker = FaceLandmarker("dlib")
    photos = []
    for path in sorted((EXAMPLES_DIR / "photos").glob("*.jpg"))[:3]:
        image = read_image(path)
        photos.append((image, landmarker.detect(image)[0].landmarks))
    return FaceRecogniser(), landmarker, photos


def test_descriptor_follows_the_landmarks_not_the_frame(recogniser_and_photos):
    from benchmarks.bench_recognition import distance

    recogniser, _, photos = recogniser_and_photos
    image, landmarks = photos[0]
    d = recogniser.descriptor(image, landmarks)
    assert d.shape == (128,) and distance(d, recogniser.descriptor(image, landmarks)) == 0.0
    shifted = np.zeros_like(image)
    shifted[12:, 20:] = image[:-12, :-20]                  # the face moved 20 px right, 12 px down
    moved = recogniser.descriptor(shifted, landmarks + np.array([20.0, 12.0]))
    assert distance(d, moved) < 0.05


def test_one_person_is_nearer_itself_than_other_faces(recogniser_and_photos, ict_model):
    from benchmarks.bench_recognition import distance
    from utils.synthetic.generator import SyntheticGenerator

    recogniser, landmarker, photos = recogniser_and_photos
    own = [recogniser.descriptor(i, lm) for i, lm in photos]
    generator = SyntheticGenerator(ict_model)
    others = []
    for seed in (3000, 3001):
        image = generator.subject(1, seed=seed).images[0]
        others.append(recogniser.descriptor(image, landmarker.detect(image)[0].landmarks))
    same = [distance(a, b) for a, b in combinations(own, 2)]
    different = [distance(a, b) for a in own for b in others]
    # Measured: same person 0.27-0.52 (mean 0.39), synthetic faces 0.55-0.80 (mean 0.69).
    assert np.mean(same) < 0.5 and np.mean(different) > 0.55 and np.mean(same) + 0.15 < np.mean(different)
