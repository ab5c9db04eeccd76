"""The project's copy of dlib's shape predictor (utils.landmarks.shape_predictor): dlib's landmarks to
the pixel from dlib's own files, a cache that survives damage, and clear errors for bad files."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.io.images import read_image
from utils.landmarks.detect import face_recognition_model, shape_predictor
from utils.landmarks.shape_predictor import ShapePredictor, load_shape_predictor, read_dlib_predictor

dlib = pytest.importorskip("dlib")
pytest.importorskip("utils.landmarks._dlib_format", reason="the compiled reader is not built (make install)")

PHOTOS = sorted((Path(__file__).resolve().parents[1] / "examples" / "photos").glob("*.jpg"))


def _dlib_points(predictor, image: np.ndarray, box) -> np.ndarray:
    shape = predictor(image, dlib.rectangle(*box))
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def _boxes(image: np.ndarray, rng: np.random.Generator, count: int) -> list:
    """Boxes of many sizes and places, some over the image's edges (feature pixels outside it)."""
    h, w = image.shape[:2]
    boxes = []
    for _ in range(count):
        side = int(rng.integers(20, max(21, min(h, w))))
        x, y = int(rng.integers(-side // 3, w - side // 2)), int(rng.integers(-side // 3, h - side // 2))
        boxes.append((x, y, x + side + int(rng.integers(-5, 6)), y + side))
    return boxes


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A small predictor dlib trains here: 5 landmarks, 3 levels of 20 trees of depth 3."""
    rng = np.random.default_rng(0)
    images, objects = [], []
    for _ in range(12):
        image = cv2.GaussianBlur(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), (5, 5), 2)
        cx, cy = rng.uniform(35, 60, 2)
        points = [dlib.point(int(cx + dx), int(cy + dy))
                  for dx, dy in ((-15, -10), (15, -10), (0, 0), (-10, 15), (10, 15))]
        cv2.circle(image, (int(cx), int(cy)), 20, (255, 255, 255), 2)
        images.append(image)
        objects.append([dlib.full_object_detection(dlib.rectangle(int(cx) - 25, int(cy) - 25, int(cx) + 25,
                                                                  int(cy) + 25), points)])
    options = dlib.shape_predictor_training_options()
    options.cascade_depth, options.num_trees_per_cascade_level, options.tree_depth = 3, 20, 3
    options.oversampling_amount, options.feature_pool_size, options.num_threads = 5, 50, 1
    options.random_seed = "0"
    path = tmp_path_factory.mktemp("tiny") / "tiny_predictor.dat"
    dlib.train_shape_predictor(images, objects, options).save(str(path))
    return path


def test_tiny_model_is_read_whole_and_predicts_as_dlib(tiny_model, tmp_path):
    ours = read_dlib_predictor(tiny_model)
    assert ours.n_landmarks == 5
    assert ours.splits.shape == (3, 20, 7, 2) and ours.leaves.shape == (3, 20, 8, 10)
    assert ours.anchors.shape == (3, 50) and ours.deltas.shape == (3, 50, 2)
    theirs = dlib.shape_predictor(str(tiny_model))
    rng = np.random.default_rng(1)
    for _ in range(10):
        image = cv2.GaussianBlur(rng.integers(0, 256, (80, 120, 3), dtype=np.uint8), (3, 3), 1)
        grey = np.ascontiguousarray(image[..., 1])
        for box in _boxes(image, rng, 8):
            np.testing.assert_array_equal(ours(image, box), _dlib_points(theirs, image, box))
            np.testing.assert_array_equal(ours(grey, box), _dlib_points(theirs, grey, box))


def test_68_point_model_gives_dlibs_landmarks_on_photos(tmp_path):
    """The installed model, on the example photos at two scales, a grey copy and noise: dlib's
    landmarks to the pixel, for the detector's boxes and for boxes moved and resized around them."""
    path = face_recognition_model("shape_predictor_68_face_landmarks.dat")
    ours = load_shape_predictor(path, tmp_path)
    assert ours.n_landmarks == 68
    theirs = dlib.shape_predictor(path)
    detector = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(2)
    images = [read_image(p) for p in PHOTOS]
    images += [cv2.resize(images[0], None, fx=2.5, fy=2.5), np.ascontiguousarray(images[1][..., 0]),
               rng.integers(0, 256, (200, 300, 3), dtype=np.uint8)]
    compared = 0
    for image in images:
        found = [(r.left(), r.top(), r.right(), r.bottom()) for r in detector(image, 1)]
        moved = [tuple(np.add(b, rng.integers(-30, 31, 4))) for b in found]
        for box in found + _boxes(image, rng, 6) + moved:
            np.testing.assert_array_equal(ours(image, box), _dlib_points(theirs, image, box))
            compared += 1
    assert compared > 3 * len(images)


def test_cached_arrays_are_mapped_and_a_damaged_copy_is_replaced(tiny_model, tmp_path, caplog):
    first = load_shape_predictor(tiny_model, tmp_path)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert folder.name.startswith("tiny_predictor-") and not list(tmp_path.glob("*.partial"))
    again = load_shape_predictor(tiny_model, tmp_path)
    assert isinstance(again.leaves, np.memmap)
    for name in ("initial", "splits", "thresholds", "leaves", "anchors", "deltas"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    image = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    expected = first(image, (10, 10, 50, 50))

    leaves = folder / "leaves.npy"
    leaves.write_bytes(leaves.read_bytes()[:200])
    with caplog.at_level("WARNING"):
        repaired = load_shape_predictor(tiny_model, tmp_path)
    assert "unreadable shape predictor copy" in caplog.text and str(folder) in caplog.text
    np.testing.assert_array_equal(repaired(image, (10, 10, 50, 50)), expected)
    np.testing.assert_array_equal(np.load(leaves), first.leaves)  # saved again, whole

    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    unsaved = load_shape_predictor(tiny_model, blocked)
    np.testing.assert_array_equal(unsaved(image, (10, 10, 50, 50)), expected)


@pytest.mark.parametrize("damage, message", [
    (lambda data: data[:len(data) // 2], "ends early|not"),
    (lambda data: data + b"\x01\x00", "2 bytes left over"),
    (lambda data: b"\x01\x02" + data[2:], r"version 2 at byte 0"),
    (lambda data: b"", "version 0"),
])
def test_a_damaged_model_file_is_refused_by_name(tiny_model, tmp_path, damage, message):
    bad = tmp_path / "bad_predictor.dat"
    bad.write_bytes(damage(tiny_model.read_bytes()))
    with pytest.raises(ValueError, match=message) as err:
        read_dlib_predictor(bad)
    assert str(bad) in str(err.value)


def test_landmarker_falls_back_to_dlibs_own_predictor(tiny_model, tmp_path, caplog):
    """Where the file cannot be read as arrays, dlib's predictor is used: the same points."""
    bad = tmp_path / "other.dat"
    bad.write_bytes(tiny_model.read_bytes() + b"\x01\x00")  # dlib stops at the end of its data
    with caplog.at_level("INFO"):
        predict = shape_predictor(dlib, str(bad), tmp_path)
    assert "dlib's own shape predictor" in caplog.text
    image = np.random.default_rng(4).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    box = (8, 8, 52, 52)
    expected = read_dlib_predictor(tiny_model)(image, box)
    np.testing.assert_array_equal(predict(image, box), expected)
    ours = shape_predictor(dlib, str(tiny_model), tmp_path)
    np.testing.assert_array_equal(ours(image, box), expected)


def test_wrong_images_are_refused(tiny_model):
    ours = read_dlib_predictor(tiny_model)
    with pytest.raises(ValueError, match="uint8 image"):
        ours(np.zeros((32, 32, 3), np.float32), (0, 0, 20, 20))
    with pytest.raises(ValueError, match="uint8 image"):
        ours(np.zeros((32, 32, 4), np.uint8), (0, 0, 20, 20))
    assert isinstance(ours, ShapePredictor)
