"""Landmarker: no-face cases, the rig photos, landmark order, backend fallback, CLI, drawing."""

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from utils.io.images import ImageArrayError, read_image
from utils.landmarks.__main__ import main
from utils.landmarks.base import DEFAULT_BACKEND, BackendUnavailableError, Face, LandmarkError
from utils.landmarks.detect import FaceLandmarker, detect_folder, select_face
from utils.landmarks.drawing import draw_bbox, draw_landmarks

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RIG = SHARED / "data" / "real" / "rig_case1"


def _need_rig() -> list[Path]:
    if not RIG.is_dir():
        pytest.skip(f"shared data not found: {RIG} (the rig_case1 photos)")
    return sorted(RIG.glob("*.jpg"))


@pytest.fixture(scope="module")
def landmarker() -> FaceLandmarker:
    return FaceLandmarker("dlib")


def test_no_face_gives_empty_list(landmarker):
    assert landmarker.detect(np.zeros((120, 160, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)
    assert landmarker.detect(noise) == []
    assert landmarker.backend == "dlib"


def test_every_rig_photo_has_one_face_with_68_landmarks(landmarker):
    for path in _need_rig():
        image = read_image(path)
        faces = landmarker.detect(image)
        assert len(faces) == 1, path.name
        face = faces[0]
        assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float64
        x0, y0, x1, y1 = face.bbox
        assert 60 < x1 - x0 < 256 and isinstance(face.confidence, float)
        centre = face.landmarks.mean(0)
        assert x0 < centre[0] < x1 and y0 < centre[1] < y1, path.name
        # iBUG order: the subject's right eye (36-41) and mouth corner (48) are left of the
        # left ones (42-47, 54) in the image; the nose tip (30) is below the eyes, the mouth
        # (48-67) below the nose, the chin (8) below the mouth.
        right_eye, left_eye = face.landmarks[36:42].mean(0), face.landmarks[42:48].mean(0)
        nose, mouth = face.landmarks[30], face.landmarks[48:68].mean(0)
        assert right_eye[0] < left_eye[0], path.name
        assert face.landmarks[48, 0] < face.landmarks[54, 0], path.name
        assert max(right_eye[1], left_eye[1]) < nose[1] < mouth[1], path.name
        jaw = face.landmarks[0:17]
        assert jaw[0, 0] < jaw[8, 0] < jaw[16, 0] and jaw[8, 1] > mouth[1], path.name


def test_face_scale_scans_only_the_levels_that_can_hold_the_face(landmarker, monkeypatch):
    # Rescanning from RESCAN_FROM_LEVEL finds the box (and so the landmarks) the whole pyramid finds,
    # on the example photos (512 px) and, where present, rig_case1's (256 px: 2x upsampled first).
    import utils.landmarks.detect as detect

    assert detect.RESCAN_FROM_LEVEL == 5  # boxes of 73 * 1.2^k px: level 4's overlap a 300 px box by 0.25
    paths = sorted((Path(__file__).resolve().parents[1] / "examples" / "photos").glob("*.jpg"))
    paths += sorted(RIG.glob("*.jpg"))[:6] if RIG.is_dir() else []
    compared = 0
    for path in paths:
        image = read_image(path)
        for face in landmarker.detect(image, search="full"):
            monkeypatch.setattr(detect, "RESCAN_FROM_LEVEL", 0)
            whole = landmarker.at_face_scale(image, face)
            monkeypatch.setattr(detect, "RESCAN_FROM_LEVEL", 5)
            rescanned = landmarker.at_face_scale(image, face)
            assert rescanned.bbox == whole.bbox, path.name
            assert np.array_equal(rescanned.landmarks, whole.landmarks), path.name
            # Boxes that do not come back as the detector's squares (here: a wrong size for them)
            # make it scan the whole pyramid: the same box again, not a box mapped wrongly.
            monkeypatch.setattr(detect, "_HOG_BOX_PX", 60)
            assert landmarker.at_face_scale(image, face).bbox == whole.bbox, path.name
            monkeypatch.setattr(detect, "_HOG_BOX_PX", 73)
            compared += 1
    assert compared >= len(paths)


def test_landmarks_follow_the_face_in_original_pixels(landmarker):
    """Padding the photo by (dx, dy) moves the landmarks by (dx, dy)."""
    image = read_image(_need_rig()[0])
    padded = cv2.copyMakeBorder(image, 30, 10, 50, 0, cv2.BORDER_REPLICATE)
    a, b = landmarker.detect(image)[0], landmarker.detect(padded)[0]
    shift = (b.landmarks - a.landmarks).mean(0)
    np.testing.assert_allclose(shift, [50, 30], atol=2.0)


def test_region_detection_finds_the_same_face(landmarker):
    image = read_image(_need_rig()[0])
    (box, _), = landmarker.detect_boxes(image)
    (near, _), = landmarker.detect_boxes(image, region=box)
    np.testing.assert_allclose(near, box, atol=0.15 * (box[2] - box[0]))


def test_face_alignment_without_weights_offline_raises_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("INORIG_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torch hub cache
    with pytest.raises(BackendUnavailableError) as info:
        FaceLandmarker("face_alignment")
    message = str(info.value)
    assert "weights are missing" in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert "2DFAN4" in message and "s3fd" in message
    assert "backend='dlib'" in message and "INORIG_OFFLINE" in message


def test_auto_is_the_default_backend_and_never_downloads(monkeypatch, tmp_path, recwarn):
    monkeypatch.delenv("INORIG_OFFLINE", raising=False)  # even where downloads would be allowed
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for lm in (FaceLandmarker("auto"), FaceLandmarker()):
        assert lm.backend == DEFAULT_BACKEND == "dlib"
    assert not list(tmp_path.rglob("*"))  # nothing fetched into the hub cache
    assert not [w for w in recwarn if "face_alignment" in str(w.message)]


def test_bad_input_errors(landmarker):
    with pytest.raises(ImageArrayError, match="image_rgb: expected an"):
        landmarker.detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ImageArrayError, match="image_rgb: expected dtype uint8"):
        landmarker.detect(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(LandmarkError, match="bbox"):
        landmarker.landmarks_in_box(np.zeros((10, 10, 3), np.uint8), (5, 5, 2, 8))
    with pytest.raises(LandmarkError, match="backend: expected"):
        FaceLandmarker("openface")
    with pytest.raises(LandmarkError, match="detector: expected"):
        FaceLandmarker("dlib", detector="yolo")


def test_select_face():
    def face(box, confidence, centre):
        return Face(box, np.tile(centre, (68, 1)).astype(float), confidence)
    small_central = face((45, 45, 55, 55), 2.0, (50, 50))
    big_corner = face((0, 0, 30, 30), 1.0, (15, 15))
    faces = [small_central, big_corner]
    assert select_face(faces, (100, 100, 3), "largest") is big_corner
    assert select_face(faces, (100, 100, 3), "confident") is small_central
    assert select_face(faces, (100, 100, 3), "central") is small_central
    with pytest.raises(LandmarkError, match="no face"):
        select_face([], (100, 100, 3))


def test_folder_skips_faceless_and_corrupt_images(landmarker, tmp_path):
    rig = _need_rig()
    shutil.copy(rig[0], tmp_path / "a.jpg")
    shutil.copy(rig[1], tmp_path / "b.jpg")
    cv2.imwrite(str(tmp_path / "c_blank.png"), np.zeros((64, 64, 3), np.uint8))
    (tmp_path / "d_corrupt.jpg").write_bytes(b"not a jpeg")
    found = detect_folder(tmp_path, landmarker)
    assert [p.name for p, _, _ in found.faces] == ["a.jpg", "b.jpg"]
    assert found.skipped[tmp_path / "c_blank.png"] == "no face found"
    assert "d_corrupt.jpg: cannot decode" in found.skipped[tmp_path / "d_corrupt.jpg"]


def test_cli_writes_coordinates_and_optional_overlays(landmarker, tmp_path, monkeypatch):
    rig = _need_rig()
    folder = tmp_path / "in"
    folder.mkdir()
    for path in rig[:2]:
        shutil.copy(path, folder / path.name)
    monkeypatch.setenv("INORIG_OFFLINE", "1")
    assert main([str(folder), "--out", str(tmp_path / "plain"), "--backend", "dlib"]) == 0
    assert [p.name for p in (tmp_path / "plain").iterdir()] == ["landmarks.json"]  # overlays only when asked
    assert main([str(folder), "--out", str(tmp_path / "out"), "--overlays"]) == 0
    doc = json.loads((tmp_path / "out" / "landmarks.json").read_text())
    assert doc["detector"] == "dlib" and "pixel centres at integer coordinates" in doc["pixel_convention"]
    entry = doc["images"][rig[0].name]
    assert (entry["width"], entry["height"]) == (256, 256) and entry["chosen"] == 0
    face = entry["faces"][0]
    assert len(face["box"]) == 4 and np.asarray(face["landmarks"]).shape == (68, 2)
    assert face["detector"] == "dlib" and isinstance(face["score"], float)
    detected = landmarker.detect(read_image(rig[0]))[0]
    np.testing.assert_allclose(face["landmarks"], detected.landmarks, atol=1e-3)
    outputs = sorted((tmp_path / "out").glob("*.png"))
    assert [p.stem for p in outputs] == [p.stem for p in rig[:2]]
    overlay = cv2.imread(str(outputs[0]))[..., ::-1]
    x, y = np.round(np.asarray(entry["chosen_landmarks"])[30]).astype(int)
    np.testing.assert_array_equal(overlay[y, x], (0, 255, 0))  # a green dot on the nose tip


def test_drawing_marks_points_and_leaves_input_alone():
    image = np.full((50, 60, 3), 100, np.uint8)
    points = np.array([[10.0, 20.0], [40.4, 30.2], [np.nan, 5.0]])
    out = draw_landmarks(image, points, color=(255, 0, 0), radius=2)
    assert (image == 100).all()
    np.testing.assert_array_equal(out[20, 10], (255, 0, 0))
    np.testing.assert_array_equal(out[30, 40], (255, 0, 0))
    assert (out[0:10, 50:60] == 100).all()
    boxed = draw_bbox(image, (5, 5, 45, 40), color=(0, 0, 255), thickness=1)
    np.testing.assert_allclose(boxed[5, 25], (0, 0, 255), atol=20)  # anti-aliased edge
    np.testing.assert_array_equal(boxed[20, 25], (100, 100, 100))
    with pytest.raises(ValueError, match=r"landmarks: expected shape \(N, 2\)"):
        draw_landmarks(image, np.zeros(68))
    with pytest.raises(ValueError, match="image_rgb"):
        draw_landmarks(image[..., 0], points)


def test_saved_face_detector_detects_as_dlibs_own(tmp_path, caplog, monkeypatch):
    """The detector read from its saved copy finds the same boxes, scores and sub-detectors as the
    one dlib builds, on the example photos at the pipeline's 2x and on noise; a damaged copy is
    replaced with a warning, and an unwritable cache or no home folder still gives a working detector."""
    import dlib

    from utils.landmarks.detect import frontal_face_detector

    built = dlib.get_frontal_face_detector()
    frontal_face_detector(dlib, tmp_path)  # saved on first use
    (saved_file,) = tmp_path.iterdir()
    assert dlib.__version__ in saved_file.name
    saved = frontal_face_detector(dlib, tmp_path)
    photos = sorted((Path(__file__).resolve().parents[1] / "examples" / "photos").glob("*.jpg"))
    images = [cv2.resize(read_image(p), None, fx=2, fy=2) for p in photos]
    images.append(np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    found = 0
    for image in images:
        a, b = built.run(image, 0, -0.5), saved.run(image, 0, -0.5)
        assert [(r.left(), r.top(), r.right(), r.bottom()) for r in a[0]] == \
               [(r.left(), r.top(), r.right(), r.bottom()) for r in b[0]]
        assert a[1] == b[1] and a[2] == b[2]
        found += len(a[0])
    assert found >= len(photos)  # every example photo has a face: the comparison saw detections

    saved_file.write_bytes(saved_file.read_bytes()[:500])
    with caplog.at_level("WARNING"):
        again = frontal_face_detector(dlib, tmp_path)
    assert "unreadable face detector copy" in caplog.text and str(saved_file) in caplog.text
    assert again.run(images[0], 0, -0.5)[1] == built.run(images[0], 0, -0.5)[1]
    assert dlib.fhog_object_detector(str(saved_file)).num_detectors == built.num_detectors  # rewritten whole

    blocked = tmp_path / "a_file"
    blocked.write_text("not a folder")
    assert frontal_face_detector(dlib, blocked).run(images[0], 0, -0.5)[1] == built.run(images[0], 0, -0.5)[1]
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)

    def no_home(cls):
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", classmethod(no_home))
    assert frontal_face_detector(dlib).run(images[0], 0, -0.5)[1] == built.run(images[0], 0, -0.5)[1]
