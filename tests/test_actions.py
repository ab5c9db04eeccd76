"""Scripted action clips (the fidelity benchmark's ground truth) and eyeballs turned by the gaze."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from core.camera import euler_to_matrix
from core.fitting.gaze import ICT_EYES, gaze_direction, gaze_from_weights
from utils.synthetic.actions import KEY_ACTIONS, action_clip


def test_action_clip_truth_is_consistent(ict_model):
    names = ict_model.expression_names
    clip = action_clip(names, seed=3, size=320)
    t = clip.truth
    assert t.expression.shape == (t.n_frames, len(names)) and t.gaze.shape == (t.n_frames, 2, 2)
    assert set(KEY_ACTIONS) <= {a.name for a in clip.actions}
    # Each action plays once in its own stretch, at its intensity, and only its shapes move there.
    for a, action in enumerate(clip.actions):
        frames = np.flatnonzero(clip.labels == a)
        assert len(frames) == action.length and np.all(np.diff(frames) == 1)
        for name, value in action.weights.items():
            assert t.expression[frames, names.index(name)].max() == pytest.approx(value * clip.intensity[a], rel=1e-5)
        others = [i for i, n in enumerate(names) if n not in action.weights and not n.startswith("eyeLook")]
        assert not t.expression[frames][:, others].any()
    # Gaze: the eyeLook* weights name the eyeballs' turn.
    np.testing.assert_allclose(gaze_from_weights(torch.from_numpy(t.expression), names).numpy(), t.gaze, atol=1e-5)
    left = next(a for a, act in enumerate(clip.actions) if act.name == "gaze_left")
    assert t.gaze[clip.labels == left, :, 0].max() > math.radians(17)
    # Rest: no weight, no gaze; still frames: nothing changes; the head holds still at rest.
    rest = clip.neutral()
    assert rest.sum() > 100 and not t.expression[rest].any() and not t.gaze[rest].any()
    still = clip.still()
    assert still[1:][clip.labels[1:] < 0].mean() > 0.8
    assert np.all(t.rotation[1:][still[1:]] == t.rotation[:-1][still[1:]])
    # Deterministic given the seed.
    np.testing.assert_array_equal(action_clip(names, seed=3, size=320).truth.expression, t.expression)


def test_turned_eyes_move_the_iris_by_the_eye_model(ict_model):
    from utils.synthetic.clip import ClipRenderer
    from utils.synthetic.generator import SyntheticGenerator

    renderer = ClipRenderer(ict_model, SyntheticGenerator(ict_model).subject(1, seed=1), supersample=1)
    verts = ict_model.vertices(torch.zeros(1, ict_model.n_identity), torch.zeros(1, ict_model.n_expression))
    yaw, pitch = math.radians(20), math.radians(-10)
    turned = renderer.turn_eyes(verts, np.array([[yaw, pitch], [yaw, pitch]]))
    moved = (turned - verts)[0].norm(dim=-1)
    eyes = torch.cat([ict_model.regions["eyeball_left"], ict_model.regions["eyeball_right"]])
    outside = torch.ones(ict_model.n_vertices, dtype=torch.bool)
    outside[eyes] = False
    assert float(moved[outside].max()) == 0 and float(moved[eyes].max()) > 3
    for region in ("eyeball_left", "eyeball_right"):
        ids = ict_model.regions[region]
        points, after = verts[0, ids], turned[0, ids]
        centre = 0.5 * (points.min(0).values + points.max(0).values)
        # A rigid turn about the centre: Ry(yaw) Rx(pitch), the gaze convention of core.fitting.gaze.
        R = euler_to_matrix(torch.tensor([[pitch, yaw, 0.0]]))[0]
        torch.testing.assert_close(after - centre, (points - centre) @ R.T, atol=1e-4, rtol=0)
        # The visible iris (the front cap) ends up ahead of the centre along the gaze, at the model's depth.
        front = points[:, 2] > centre[2] + 0.9 * (points[:, 2].max() - centre[2])
        ahead = (after[front].mean(0) - centre)
        direction = gaze_direction(torch.tensor([yaw, pitch]))
        assert float(torch.nn.functional.cosine_similarity(ahead, direction, dim=0)) > 0.99
    assert 14 < ICT_EYES.depth < 17
