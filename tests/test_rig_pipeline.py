"""Photos in, rig files out: rig building end to end on synthetic renders, and bad inputs."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.fitting.shading_refine import ShadingConfig
from core.metrics import aligned_mesh_error
from core.rig.builder import RigBuildConfig
from core.rig.rig import Rig
from utils.io.images import read_image
from utils.io.meshes import load_mesh
from utils.landmarks.detect import FaceLandmarker
from utils.pipelines.rig import RigInputError, build_rig_from_folder
from utils.synthetic.generator import SyntheticConfig, SyntheticGenerator

FAST = RigBuildConfig(rounds=2, iterations=6, shading=ShadingConfig(rounds=1, iterations=10))


@pytest.fixture(scope="module")
def landmarker():
    return FaceLandmarker("dlib")


@pytest.fixture(scope="module")
def subject(ict_model):
    """Three near-frontal renders of one synthetic person (dlib finds a face in each)."""
    generator = SyntheticGenerator(ict_model, SyntheticConfig(pose_limits_deg=(10.0, 25.0, 5.0)))
    return generator.subject(3, seed=1)


def _write_png(path, image: np.ndarray) -> None:
    import cv2

    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))


def test_rig_from_folder_writes_every_output(subject, ict_face, landmarker, tmp_path, monkeypatch):
    import utils.pipelines.builders as pipeline

    seen = {}

    def spy(*args, confidence=None, **kwargs):
        seen["confidence"] = confidence
        return real_build_rig(*args, confidence=confidence, **kwargs)

    real_build_rig = pipeline.build_rig
    monkeypatch.setattr(pipeline, "build_rig", spy)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, image in enumerate(subject.images):
        _write_png(photos / f"person_{k}.png", image)
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    _write_png(photos / "wall.png", np.full((200, 200, 3), 128, np.uint8))
    out = tmp_path / "out"
    run = build_rig_from_folder(photos, out, ict_face, landmarker=landmarker, config=FAST)

    assert run.used == ["person_0", "person_1", "person_2"]
    # The landmarks are weighted by the detector's measured noise (utils.landmarks.noise).
    landmarks = torch.stack([torch.from_numpy(c.landmarks_crop).float() for c in run.crops])
    assert torch.allclose(seen["confidence"], landmarker.landmark_weights(landmarks))
    jaw, inner = seen["confidence"][:, :17].max(1).values, seen["confidence"].max(1).values
    assert bool((jaw < 0.9 * inner).all()) and bool((inner < 0.5).all())
    assert set(run.skipped) == {"broken.jpg", "wall.png"}
    assert run.skipped["wall.png"] == "no face found" and "broken.jpg" in run.skipped["broken.jpg"]
    assert set(run.timings) == {"landmark detection", "coarse fit", "landmark fit", "photometric refinement",
                                "rig code", "writing outputs"}

    rig = Rig.load(out / "rig" / "rig.npz", expect_model="ict/face", expect_vertices=9409)
    with np.load(out / "rig" / "rig.npz") as z:
        assert {"neutral", "blendshapes", "albedo", "triangles", "vertex_ids", "expression_names",
                "model", "code_identity", "code_rig_code"} <= set(z.files)
        assert z["blendshapes"].shape == (53, 9409, 3) and z["albedo"].min() >= 0 and z["albedo"].max() <= 1
    # The rig is closer to the person than the model's mean face is.
    truth = torch.from_numpy(subject.neutral).float()[None]
    assert float(aligned_mesh_error(rig.neutral[None], truth)) < float(aligned_mesh_error(ict_face.neutral[None], truth))

    for stem in run.used:
        mesh = load_mesh(out / "mesh" / f"{stem}.obj")
        assert mesh.vertices.shape == (9409, 3)  # the model's vertex order and count
        params = json.loads((out / "params" / f"{stem}.json").read_text())
        assert np.asarray(params["landmarks_2d"]).shape == (68, 2)
        assert np.asarray(params["landmarks_detected"]).shape == (68, 2)
        assert len(params["expression_coefficients"]) == 53 and np.asarray(params["sh"]).shape == (9, 3)
        assert params["landmark_error_px"] < 6.0
        picture = read_image(out / "visualization" / f"{stem}.jpg")
        assert picture.shape[0] >= subject.images.shape[1] and picture.shape[1] > 3 * subject.images.shape[2]
    assert load_mesh(out / "mesh" / "rig_neutral.obj").colors is not None


def test_empty_folder(tmp_path, ict_face, landmarker):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RigInputError, match=r"no usable face in .*empty \(no image files\)"):
        build_rig_from_folder(tmp_path / "empty", tmp_path / "out", ict_face, landmarker=landmarker)


def test_folder_without_faces_names_each_file(tmp_path, ict_face, landmarker):
    folder = tmp_path / "walls"
    folder.mkdir()
    _write_png(folder / "grey.png", np.full((120, 160, 3), 90, np.uint8))
    (folder / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(RigInputError, match=r"grey\.png: no face found.*|cut\.png.*grey\.png: no face found"):
        build_rig_from_folder(folder, tmp_path / "out", ict_face, landmarker=landmarker)
    assert not (tmp_path / "out" / "rig").exists()


def test_missing_folder(tmp_path, ict_face, landmarker):
    with pytest.raises(RigInputError, match="does not exist"):
        build_rig_from_folder(tmp_path / "nope", tmp_path / "out", ict_face, landmarker=landmarker)


def test_files_queued_on_a_worker_leave_out_a_failed_export(subject, ict_face, landmarker, tmp_path, monkeypatch):
    """With the caller's worker thread (as the demo passes it), the run's outputs name what was written
    once the worker is closed: a rig.glb whose export failed is logged and left out, the rest is there."""
    import utils.pipelines.rig as pipeline
    from utils.background import BackgroundWorker
    from utils.export.errors import ExportError

    def refuse(*args, **kwargs):
        raise ExportError("refused for the test")

    monkeypatch.setattr(pipeline, "export_rig", refuse)
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, image in enumerate(subject.images):
        _write_png(photos / f"person_{k}.png", image)
    with BackgroundWorker("test") as writer:
        run = build_rig_from_folder(photos, tmp_path / "out", ict_face, landmarker=landmarker, config=FAST,
                                    visualize=False, writer=writer)
    assert "rig_glb" not in run.outputs and not (tmp_path / "out" / "rig" / "rig.glb").exists()
    assert all(run.outputs[k].exists() for k in ("rig", "rig_neutral", "mesh", "params"))
    assert sorted(p.stem for p in run.outputs["params"].glob("*.json")) == run.used
    assert "writing outputs" in run.timings



def test_rig_archive_left_to_the_caller(subject, ict_face, landmarker, tmp_path):
    """``save_rig=False`` (the demo, whose whole head's archive takes its place): every other file is
    written, the archive is not."""
    photos = tmp_path / "photos"
    photos.mkdir()
    for k, image in enumerate(subject.images[:2]):
        _write_png(photos / f"person_{k}.png", image)
    run = build_rig_from_folder(photos, tmp_path / "out", ict_face, landmarker=landmarker, config=FAST,
                                visualize=False, export=False, save_rig=False)
    assert not run.outputs["rig"].exists() and not (tmp_path / "out" / "rig").exists()
    assert run.outputs["rig_neutral"].is_file()
    assert sorted(p.stem for p in run.outputs["mesh"].glob("person_*.obj")) == run.used == ["person_0", "person_1"]
