"""Gaze: angles <-> eyeLook* weights, the eye model of ICT-FaceKit, the estimate from iris points on a
known turn (geometry, and a render whose eyeballs are turned, through MediaPipe's irises and the
tracker), and the gaze rows of tracking.npz."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.fitting.gaze import (EYE_LANDMARKS, ICT_EYES, EyeModel, estimate_gaze, gaze_angles, gaze_direction,
                               gaze_from_weights, gaze_weights)
from core.fitting.points import project_points

NAMES = ["eyeBlink_L", "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L",
         "eyeLookOut_R", "eyeLookUp_L", "eyeLookUp_R"]


def test_weights_name_the_gaze_and_round_trip():
    gaze = torch.tensor([[[math.radians(15), math.radians(10)], [math.radians(15), math.radians(10)]],
                         [[math.radians(-24), math.radians(-8)], [math.radians(-24), math.radians(-8)]]])
    w = gaze_weights(gaze, NAMES)
    i = {n: k for k, n in enumerate(NAMES)}
    # Towards the face's left (+yaw): the left eye looks out, the right eye in; + pitch is down.
    assert float(w[0, i["eyeLookOut_L"]]) == pytest.approx(0.5) and float(w[0, i["eyeLookIn_R"]]) == pytest.approx(0.5)
    assert float(w[0, i["eyeLookIn_L"]]) == 0 and float(w[0, i["eyeLookDown_L"]]) == pytest.approx(0.4)
    assert float(w[1, i["eyeLookIn_L"]]) == pytest.approx(0.8) and float(w[1, i["eyeLookUp_R"]]) == pytest.approx(0.4)
    assert float(w[:, i["eyeBlink_L"]].abs().max()) == 0
    torch.testing.assert_close(gaze_from_weights(w, NAMES), gaze)
    direction = gaze_direction(gaze)
    assert float(direction[0, 0, 0]) > 0 and float(direction[0, 0, 1]) < 0  # towards +x, down (-y)
    torch.testing.assert_close(gaze_angles(direction), gaze)


def test_ict_eye_model_matches_the_model(ict_model):
    measured = EyeModel.from_model(ict_model)
    torch.testing.assert_close(torch.tensor(measured.offsets), torch.tensor(ICT_EYES.offsets), atol=0.01, rtol=0)
    assert measured.depth == pytest.approx(ICT_EYES.depth, abs=0.01)
    # The left eye (object +x) is the one around landmarks 42-47.
    left = ict_model.neutral[ict_model.landmark_indices[list(EYE_LANDMARKS[0])]].mean(0)
    assert float(left[0]) > 0


def test_estimate_recovers_a_known_turn_under_a_head_pose():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[[31.0, 36.0, 80.0], [-31.0, 36.0, 80.0]]]).repeat(5, 1, 1)
    rotation = (torch.rand(5, 3, generator=g) - 0.5) * torch.tensor([0.4, 0.8, 0.2])
    scale, trans2d = torch.full((5,), 1.7), torch.rand(5, 2, generator=g) * 100 + 200
    truth = (torch.rand(5, 1, 2, generator=g) - 0.5) * 0.8  # up to +-23 degrees
    truth = truth.expand(5, 2, 2)
    iris = centres + 15.0 * gaze_direction(truth)
    uv = project_points(iris, rotation, scale, trans2d)  # (5, 2, 2) pixels
    got = estimate_gaze(uv, centres, rotation, scale, trans2d, depth=15.0)
    torch.testing.assert_close(got, truth, atol=1e-4, rtol=0)


def test_recorder_writes_gaze_rows_that_load_tracking_reads(tmp_path):
    from core.rig.tracker import FrameTrack
    from utils.io.tracking import TrackingRecorder, load_tracking

    recorder = TrackingRecorder(3)
    for i in range(3):
        gaze = None if i == 1 else torch.tensor([[0.1 * i, 0.05], [0.1 * i, -0.05]])
        recorder.add(FrameTrack(i, True, True, torch.zeros(3), torch.zeros(3), torch.tensor(1.0), torch.zeros(2),
                                gaze=gaze))
    data = load_tracking(recorder.save(tmp_path / "tracking.npz", 25.0, ["a", "b", "c"]))
    assert data.gaze_left.shape == (3, 2) and data.gaze_right.shape == (3, 2)
    np.testing.assert_allclose(data.gaze_left[2], [0.2, 0.05], atol=1e-6)
    np.testing.assert_allclose(data.gaze_right[0], [0.0, -0.05], atol=1e-6)
    assert np.isnan(data.gaze_left[1]).all()
    plain = TrackingRecorder(3)
    plain.add(FrameTrack(0, True, True, torch.zeros(3), torch.zeros(3), torch.tensor(1.0), torch.zeros(2)))
    assert load_tracking(plain.save(tmp_path / "plain.npz", 25.0, ["a", "b", "c"])).gaze_left is None


@pytest.fixture(scope="module")
def turned_renders(ict_model):
    """Renders of one subject (320 px, frontal-ish) looking ahead, 20 degrees left and right."""
    from utils.synthetic.actions import action_clip
    from utils.synthetic.clip import ClipRenderer, ClipTruth
    from utils.synthetic.generator import SyntheticGenerator

    clip = action_clip(ict_model.expression_names, seed=7, size=320, base_pose_deg=(3.0, 10.0, 0.0))
    t = clip.truth
    frames = [0, 0, 0, 0, 0, 0]
    yaw = [0.0, 0.0, 0.0, math.radians(20), math.radians(-20), 0.0]
    gaze = np.stack([np.full((2, 2), 0.0, np.float32) for _ in frames])
    gaze[:, :, 0] = np.array(yaw, np.float32)[:, None]
    names = ict_model.expression_names
    expression = gaze_weights(torch.from_numpy(gaze), names).numpy()
    truth = ClipTruth(expression, t.rotation[frames], t.scale[frames], t.trans2d[frames], t.sh, (0, 3), 25.0,
                      gaze=gaze)
    subject = SyntheticGenerator(ict_model).subject(1, seed=507)
    images = list(ClipRenderer(ict_model, subject, seed=7).frames(truth, 320, seed=7))
    return images, subject, gaze


def test_tracker_reads_a_rendered_eye_turn_from_the_irises(turned_renders, ict_face):
    pytest.importorskip("mediapipe", reason="the mediapipe package is not installed")
    from core.rig.rig import Rig
    from core.rig.tracker import DenseTies, RigTracker, TrackerConfig
    from utils.landmarks.detect import FaceLandmarker
    from utils.landmarks.mesh import load_mesh_correspondence

    images, subject, gaze = turned_renders
    landmarker = FaceLandmarker("mediapipe")
    faces = [landmarker.detect(image)[0] for image in images]
    rig = Rig.from_model(ict_face, torch.as_tensor(subject.identity, dtype=torch.float32))
    tracker = RigTracker(rig, ict_face, TrackerConfig(lighting=False),
                         dense=DenseTies.from_correspondence(load_mesh_correspondence()))
    tracker.calibrate_rest([f.landmarks for f in faces[:3]], [f.dense for f in faces[:3]])
    yaw = []
    for face in faces[2:]:
        tracker.reset()
        track = tracker.step(face.landmarks, dense=face.dense)
        assert track.gaze is not None and track.gaze.shape == (2, 2)
        yaw.append(math.degrees(float(track.gaze[:, 0].mean())))
    # Measured: ~0 / +14 / -14 / 0 degrees for 0 / +20 / -20 / 0 (MediaPipe's irises move ~0.7 as far).
    assert abs(yaw[0]) < 3 and abs(yaw[3]) < 3, yaw
    assert yaw[1] > 8 and yaw[2] < -8, yaw
    names = rig.expression_names
    looks = tracker.last.expression  # the last frame looks ahead again
    assert float(looks[names.index("eyeLookOut_L")]) < 0.1 and float(looks[names.index("eyeLookIn_L")]) < 0.1
