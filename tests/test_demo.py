"""demo.py end to end on a tiny synthetic subject (3 photos, a 10-frame video): every output (with
the glTF/CSV exports and summary.json), and its bad inputs: a missing --weights file, the demo with
the shipped network, a rig.npz of another model or corrupt, an unreadable video, a video with
face-less frames, a truncated one. The command line as a new user meets it: tests/test_newcomer.py."""
from __future__ import annotations

import gc
import json
import logging
from pathlib import Path

import numpy as np
import pytest

import demo
from core.rig.rig import Rig
from tests.conftest import x264_options
from utils.io.video import VideoReader
from utils.io.video_writer import VideoWriter, h264_available
from utils.synthetic.clip import write_synthetic_inputs

FRAMES = 10
SHIPPED_WEIGHTS = Path(demo.__file__).resolve().parent / "net_weights" / "inorig_ict.pth"
SIZE = 192


@pytest.fixture(scope="module")
def inputs(ict_model, tmp_path_factory):
    return write_synthetic_inputs(ict_model, tmp_path_factory.mktemp("synthetic"), n_images=3, n_frames=FRAMES,
                                  size=SIZE, seed=5)


@pytest.fixture(scope="module")
def demo_run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("demo_out")
    code = demo.main(["--rig-dir", str(inputs.rig_dir), "--video", str(inputs.video), "--out", str(out),
                      "--source-frames", "3", "--no-photometric"])
    return code, out


def _frames(path):
    with VideoReader(path) as reader:
        return reader.info, [f for f in reader]


def test_demo_writes_every_output(demo_run, inputs, ict_face):
    code, out = demo_run
    assert code == 0
    assert gc.isenabled() and gc.get_freeze_count() == 0  # the start-up's collector pause is undone
    rig = Rig.load(out / "rig" / "rig.npz", expect_model=ict_face.name, expect_vertices=ict_face.n_vertices)
    stems = sorted(p.stem for p in inputs.rig_dir.glob("*.png"))
    assert sorted(p.stem for p in (out / "params").glob("*.json")) == stems
    assert {p.stem for p in (out / "mesh").glob("*.obj")} == set(stems) | {"rig_neutral", "rig_textured"}
    assert sorted(p.stem for p in (out / "visualization").glob("*.jpg")) == stems
    params = json.loads((out / "params" / f"{stems[0]}.json").read_text())
    assert np.asarray(params["landmarks_2d"]).shape == (68, 2)

    videos = out / "videos"
    for name in ("input_clip", "output_recon", "output_exptrans"):
        info, frames = _frames(videos / f"{name}.mp4")
        assert len(frames) == FRAMES and frames[0].shape == (SIZE, SIZE, 3), name
        if h264_available():  # encoded with the job's preset (superfast: diamond search, subme 1)
            options = x264_options(videos / f"{name}.mp4")
            assert (options["me"], options["subme"]) == ("dia", "1"), name
    _, clip = _frames(videos / "input_clip.mp4")
    _, source = _frames(inputs.video)
    assert np.abs(clip[4].astype(int) - source[4]).mean() < 4  # the clip is the input (re-encoded)
    _, recon = _frames(videos / "output_recon.mp4")
    assert np.abs(recon[4].astype(int) - source[4]).mean() > 2  # the mesh is drawn over it

    with np.load(videos / "tracking.npz") as z:
        assert z["expression"].shape == (FRAMES, rig.n_expression)
        assert z["rotation"].shape == (FRAMES, 3) and z["rotation_matrix"].shape == (FRAMES, 3, 3)
        assert z["trans2d"].shape == (FRAMES, 2) and z["scale"].shape == (FRAMES,)
        assert z["landmarks_2d"].shape == (FRAMES, 68, 2) and z["sh"].shape == (FRAMES, 9, 3)
        assert z["detected"].dtype == bool and z["valid"].dtype == bool
        assert z["detected"].sum() >= FRAMES - 1 and z["valid"].all()
        truth = np.load(inputs.truth)
        detected = z["detected"]
        # The tracked head follows the rendered one: projected landmarks vs the rendered model's.
        eyes = np.linalg.norm(truth["landmarks"][:, 36] - truth["landmarks"][:, 45], axis=1)
        err = np.linalg.norm(z["landmarks_2d"] - truth["landmarks"], axis=-1).mean(1) / eyes
        assert float(err[detected].mean()) < 0.07, err  # ~0.05: the detector itself errs by ~5 %
        yaw = np.degrees(z["rotation"][detected, 1] - truth["rotation"][detected, 1])
        assert np.abs(yaw).mean() < 5, yaw
    assert Rig.load(videos / "source_rig.npz").n_vertices == rig.n_vertices

    # exports for 3D tools (issue 17), read back
    from pygltflib import GLTF2

    glb = GLTF2().load(str(out / "rig" / "rig.glb"))
    assert glb.meshes[0].extras["targetNames"][0] == "browDownLeft"
    anim = GLTF2().load(str(videos / "animation.glb"))
    assert len(anim.animations) == 1
    rows = (videos / "animation_arkit.csv").read_text().splitlines()
    assert rows[0].startswith("Timecode,BlendShapeCount,EyeBlinkLeft") and len(rows) == 1 + FRAMES

    summary = json.loads((out / "summary.json").read_text())
    assert summary["rig"]["images_used"] == stems and summary["video"]["frames"] == FRAMES
    assert summary["driven_rig"] == str(out / "rig" / "rig.npz")
    files = set(summary["files"])
    for name in ("rig/rig.npz", "rig/rig.glb", "videos/animation.glb", "videos/animation_arkit.csv",
                 "videos/tracking.npz", "summary.json", f"params/{stems[0]}.json", "mesh/rig_neutral.obj"):
        assert name in files, name
    assert all((out / f).is_file() for f in files)
    from utils.pipelines.summary import OUTPUT_NOTES

    assert {"rig_texture", "rig_textured", "rig_glb", "output_exptrans"} <= set(summary["outputs"])
    assert all(OUTPUT_NOTES.get(key) for key in summary["outputs"]), set(summary["outputs"]) - set(OUTPUT_NOTES)


def test_missing_weights_file_is_refused_before_any_work(inputs, tmp_path, caplog):
    missing = tmp_path / "none.pth"
    with caplog.at_level(logging.ERROR, logger="demo"):
        code = demo.main(["--weights", str(missing), "--rig-dir", str(inputs.rig_dir), "--video", str(inputs.video),
                          "--out", str(tmp_path / "o")])
    assert code == 1
    assert str(missing) in caplog.text and "no such file" in caplog.text
    assert not (tmp_path / "o").exists()


def test_demo_with_the_shipped_network(inputs, tmp_path, ict_face):
    if not SHIPPED_WEIGHTS.is_file():
        pytest.skip(f"{SHIPPED_WEIGHTS} absent")
    out = tmp_path / "net"
    code = demo.main(["--weights", str(SHIPPED_WEIGHTS), "--rig-dir", str(inputs.rig_dir), "--video",
                      str(inputs.video), "--out", str(out), "--source-frames", "3", "--max-frames", "4"])
    assert code == 0
    rig = Rig.load(out / "rig" / "rig.npz", expect_model=ict_face.name, expect_vertices=ict_face.n_vertices)
    assert "rig_code" in rig.codes
    stems = sorted(p.stem for p in inputs.rig_dir.glob("*.png"))
    for stem in stems:
        params = json.loads((out / "params" / f"{stem}.json").read_text())
        # the network's rig sits on the face: its landmarks are within a few px of the detections
        assert params["landmark_error_px"] < 4.0, (stem, params["landmark_error_px"])
    _, recon = _frames(out / "videos" / "output_recon.mp4")
    assert len(recon) == 4


def test_target_rig_of_another_model_or_corrupt(demo_run, inputs, tmp_path, caplog):
    _, out = demo_run
    rig = Rig.load(out / "rig" / "rig.npz")
    rig.model = "bfm2009"
    other = rig.save(tmp_path / "other.npz")
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"not a zip file")
    for path, message in ((other, "built on face model 'bfm2009'"), (corrupt, "not a rig.npz")):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="demo"):
            assert demo.main(["--target-rig", str(path), "--video", str(inputs.video), "--out", str(tmp_path / "o")]) == 1
        assert message in caplog.text and str(path) in caplog.text
    assert not (tmp_path / "o").exists()  # refused before any work
    assert gc.isenabled() and gc.get_freeze_count() == 0  # refused before the imports were done: undone too


def test_unreadable_video_is_refused_before_any_work(inputs, tmp_path, caplog):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with caplog.at_level(logging.ERROR):
        code = demo.main(["--rig-dir", str(inputs.rig_dir), "--video", str(bad), "--out", str(tmp_path / "o"),
                          "--no-photometric"])
    assert code == 1 and str(bad) in caplog.text
    assert not (tmp_path / "o").exists()


def test_video_with_faceless_frames_is_flagged(demo_run, inputs, tmp_path, ict_face):
    from utils.landmarks.detect import FaceLandmarker
    from utils.pipelines.video import track_and_retarget

    _, out = demo_run
    _, frames = _frames(inputs.video)
    blank = np.full_like(frames[0], 90)
    clip = tmp_path / "gaps.mp4"
    with VideoWriter(clip, 25) as writer:
        for i, frame in enumerate(frames):
            writer.write(blank if i in (4, 5) else frame)
    rig = Rig.load(out / "videos" / "source_rig.npz")
    run = track_and_retarget(clip, tmp_path, rig, ict_face, rig, FaceLandmarker("dlib"))
    assert run.error is None and run.frames == FRAMES and run.flagged >= 2
    with np.load(tmp_path / "videos" / "tracking.npz") as z:
        assert not z["detected"][4] and not z["detected"][5] and z["valid"][4:6].all()
        np.testing.assert_array_equal(z["expression"][4], z["expression"][3])
        assert z["detected"][7:].all()
    assert len(_frames(tmp_path / "videos" / "output_recon.mp4")[1]) == FRAMES


def test_truncated_video_keeps_the_frames_read(demo_run, inputs, tmp_path, ict_face):
    import cv2

    from utils.landmarks.detect import FaceLandmarker
    from utils.pipelines.video import track_and_retarget

    _, out = demo_run
    _, frames = _frames(inputs.video)
    full = tmp_path / "full.avi"
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 25, (SIZE, SIZE))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    cut = tmp_path / "cut.avi"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    rig = Rig.load(out / "videos" / "source_rig.npz")
    run = track_and_retarget(cut, tmp_path, rig, ict_face, rig, FaceLandmarker("dlib"))
    assert run.error is not None and "truncated" in run.error and str(cut) in run.error
    assert 0 < run.frames < FRAMES
    with np.load(tmp_path / "videos" / "tracking.npz") as z:
        assert z["expression"].shape[0] == run.frames
    assert len(_frames(tmp_path / "videos" / "output_exptrans.mp4")[1]) == run.frames


def test_render_error_reaches_the_caller_and_keeps_what_was_tracked(demo_run, inputs, tmp_path, ict_face,
                                                                     monkeypatch):
    """The two rendering threads: an error in one stops the loop and is raised by `track_and_retarget`
    after the videos are closed and the tracking written; the other thread's video holds every frame
    it was given, in order."""
    from utils.landmarks.detect import FaceLandmarker
    from utils.pipelines import video as video_pipeline

    _, out = demo_run
    rig = Rig.load(out / "videos" / "source_rig.npz")
    calls = []
    original = video_pipeline._Retargeter.__call__

    def failing(self, track):
        calls.append(track)
        if len(calls) == 3:
            raise RuntimeError("render failed on the third frame")
        return original(self, track)

    monkeypatch.setattr(video_pipeline._Retargeter, "__call__", failing)
    with pytest.raises(RuntimeError, match="third frame"):
        video_pipeline.track_and_retarget(inputs.video, tmp_path, rig, ict_face, rig, FaceLandmarker("dlib"),
                                          export=False)
    with np.load(tmp_path / "videos" / "tracking.npz") as z:
        tracked = z["expression"].shape[0]
    assert 3 <= tracked < FRAMES                      # the loop stops at the next frame after the error
    assert len(_frames(tmp_path / "videos" / "output_exptrans.mp4")[1]) == 2   # the frames rendered before
    _, source = _frames(inputs.video)
    _, clip = _frames(tmp_path / "videos" / "input_clip.mp4")
    assert len(clip) == tracked                       # the other thread wrote every frame it was given
    distance = np.array([[np.abs(a.astype(float) - b.astype(float)).mean() for a in source] for b in clip])
    # Each frame where it was, re-encoded: its own source frame the nearest, or as near as the nearest
    # (the subject holds still over source frames 4-6: they differ by ~0.02 levels, the others by 6+).
    own = distance[np.arange(tracked), np.arange(tracked)]
    assert np.all(own <= distance.min(1) + 0.5), np.round(distance, 2)


def test_video_folder_means_its_first_video(tmp_path):
    from utils.pipelines.inputs import InputError, first_video

    for name in ("b.mp4", "a.mp4", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert first_video(tmp_path) == tmp_path / "a.mp4"
    assert first_video(tmp_path / "b.mp4") == tmp_path / "b.mp4"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="holds no video"):
        first_video(empty)
