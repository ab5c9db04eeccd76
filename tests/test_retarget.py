"""Retargeting: expressions carried by name onto a target rig, identical rigs reproduce the source,
frontal framing, and the windowed render equals a full-frame one."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from core.camera import WeakPerspective, euler_to_matrix, weak_perspective_screen
from core.lighting import shade
from core.mesh import vertex_normals
from core.render.rasterize import rasterize
from core.render.shade import render_vertex_colors
from core.rig.retarget import (RetargetError, expression_map, face_window, frontal_pose, neutral_sh,
                               render_rig, retarget)
from core.rig.rig import Rig
from core.rig.tracker import RigTracker, TrackerConfig
from tests.test_tracking import landmarks_of, sequence


def _rig(model, seed: int) -> Rig:
    g = torch.Generator().manual_seed(seed)
    albedo = torch.rand(model.n_vertices, 3, generator=g) * 0.5 + 0.3
    return Rig.from_model(model, torch.randn(model.n_identity, generator=g), albedo=albedo)


@pytest.fixture(scope="module")
def rigs(ict_face):
    return _rig(ict_face, 1), _rig(ict_face, 2)


def test_expression_map_by_name():
    assert expression_map(["a", "b", "c"], ["a", "b", "c"]) is None
    assert expression_map(["a", "b", "c"], ["c", "a", "b"]).tolist() == [2, 0, 1]
    with pytest.raises(RetargetError, match=r"\['d'\]"):
        expression_map(["a", "b", "c"], ["a", "d"])


def test_retarget_onto_the_same_rig_reproduces_the_tracked_source(rigs, ict_face):
    source, _ = rigs
    truth = sequence(source, 6)
    tracker = RigTracker(source, ict_face, TrackerConfig(lighting=False, landmark_sigma=1.5, expression_weight=1.0))
    tracked = torch.stack([tracker.step(lm).expression for lm in landmarks_of(source, ict_face, truth)])
    torch.testing.assert_close(retarget(source, tracked, source.expression_names), source.vertices(tracked))
    truth_meshes = source.vertices(truth["expression"])
    error = (retarget(source, tracked) - truth_meshes).norm(dim=-1).mean(1)
    assert float(error.max()) < 0.6, error  # mm: the source's own meshes, through tracking


def test_retarget_follows_names_and_the_target_face(rigs):
    source, target = rigs
    g = torch.Generator().manual_seed(0)
    expression = torch.rand(3, source.n_expression, generator=g)
    order = torch.randperm(target.n_expression, generator=g)
    shuffled = Rig(target.neutral, target.blendshapes[order], target.albedo, target.triangles, target.vertex_ids,
                   [target.expression_names[i] for i in order], target.model, target.expression_range)
    torch.testing.assert_close(retarget(shuffled, expression, source.expression_names),
                               target.vertices(expression), atol=1e-4, rtol=1e-4)
    # The expression lands on the target's face (its neutral + its own blendshapes), not the source's.
    moved = retarget(target, expression) - target.neutral
    assert float((moved - (source.vertices(expression) - source.neutral)).norm(dim=-1).mean()) > 0.01
    with pytest.raises(ValueError, match="names"):
        retarget(target, expression, source.expression_names[:-1])


def test_frontal_pose_centres_and_fills_the_frame(rigs):
    _, target = rigs
    pose = frontal_pose(target.neutral, 300, 400, fill=0.6)
    assert pose.batch == 1 and float(pose.rotation.abs().max()) == 0.0
    screen = weak_perspective_screen(target.neutral[None], euler_to_matrix(pose.rotation), pose.scale,
                                     pose.trans2d)[0]
    lo, hi = screen[:, :2].amin(0), screen[:, :2].amax(0)
    torch.testing.assert_close((lo + hi) / 2, torch.tensor([199.5, 149.5]), atol=1e-3, rtol=0)
    assert abs(float((hi - lo).max()) - 0.6 * 300) < 1e-3


def test_face_window_clips_to_the_frame():
    screen = torch.tensor([[-10.0, 5.0, 0.0], [50.0, 70.5, 0.0]])
    assert face_window(screen, 60, 40, margin=0) == (0, 5, 40, 60)
    assert face_window(screen + 500, 60, 40) is None


def test_render_rig_matches_a_full_frame_render(rigs):
    _, target = rigs
    expression = torch.zeros(1, target.n_expression)
    expression[0, target.expression_names.index("jawOpen")] = 0.5
    rotation, scale, trans = torch.tensor([[0.1, 0.4, 0.05]]), torch.tensor([0.9]), torch.tensor([[130.0, 140.0]])
    background = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    verts = retarget(target, expression)
    out = render_rig(target, verts, WeakPerspective(rotation, scale, trans), background)
    R = euler_to_matrix(rotation)
    screen = weak_perspective_screen(verts, R, scale, trans)
    fragments = rasterize(screen, target.triangles, 256, 256, cull_backfaces=True)
    colors = shade(target.albedo[None], vertex_normals(verts @ R.transpose(1, 2), target.triangles),
                   neutral_sh(1)).clamp(0, 1)
    full = render_vertex_colors(fragments, target.triangles, colors)
    mask = fragments.mask[:, None]
    expected = torch.where(mask, full, background)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert 0.1 < float(mask.float().mean()) < 0.6
    assert np.isclose(float((out != background).any(1).float().mean()), float(mask.float().mean()), atol=0.01)
