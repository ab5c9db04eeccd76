"""Accuracy measures: similarity alignment recovers known transforms; errors on known cases."""
from __future__ import annotations

import math

import torch

from core.camera import euler_to_matrix
from core.metrics import aligned_mesh_error, normalized_landmark_error, rotation_error_deg, similarity_align


def test_similarity_alignment_undoes_a_similarity():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 50, 3, generator=g, dtype=torch.float64)
    R = euler_to_matrix(torch.tensor([[0.3, -0.7, 0.2], [1.0, 0.1, -0.4]], dtype=torch.float64))
    y = 1.7 * x @ R.transpose(1, 2) + torch.tensor([5.0, -2.0, 30.0], dtype=torch.float64)
    torch.testing.assert_close(similarity_align(x, y), y)
    assert float(aligned_mesh_error(x, y).max()) < 1e-9


def test_aligned_error_of_a_known_offset():
    x = torch.zeros(1, 4, 3, dtype=torch.float64)
    x[0, :, 0] = torch.tensor([-1.0, 1.0, 0.0, 0.0])
    x[0, :, 1] = torch.tensor([0.0, 0.0, -1.0, 1.0])
    y = x.clone()
    y[0, 0, 2] = 1.0  # one vertex 1 mm off the plane: alignment cannot remove all of it
    aligned = similarity_align(x, y)
    sq_aligned = float(((aligned - y) ** 2).sum())
    assert 0.0 < sq_aligned < 1.0  # least squares: better than unaligned (1 mm^2), not perfect
    assert float(aligned_mesh_error(x, y)) > 0.0


def test_normalized_landmark_error():
    det = torch.zeros(1, 68, 2)
    det[0, 45, 0] = 100.0
    pred = det + torch.tensor([3.0, 4.0])
    torch.testing.assert_close(normalized_landmark_error(pred, det), torch.tensor([0.05]))


def test_rotation_error_of_known_turns():
    base = torch.tensor([[0.1, -0.4, 0.2], [0.0, 0.0, 0.0]])
    turned = base.clone()
    turned[1, 1] = 0.3  # a pure 0.3 rad yaw from the identity
    err = rotation_error_deg(turned, base)
    torch.testing.assert_close(err, torch.tensor([0.0, math.degrees(0.3)]), atol=1e-3, rtol=1e-5)
    torch.testing.assert_close(rotation_error_deg(base, turned), err, atol=1e-3, rtol=1e-5)  # symmetric
