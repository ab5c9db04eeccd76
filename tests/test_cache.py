"""`core.cache.RecentResults`: found by values, kept apart from the caller's tensors, the oldest dropped."""
from __future__ import annotations

import numpy as np
import torch

from core.cache import RecentResults


def test_found_by_values_not_by_identity_or_a_lookalike():
    recent = RecentResults(4)
    triangles = torch.tensor([[0, 1, 2], [2, 1, 3]])
    recent.put((5, triangles), "operators")
    assert recent.get((5, triangles.clone())) == "operators"
    assert recent.get((6, triangles)) is None  # another plain value
    assert recent.get((5, triangles.int())) is None  # the same values in another dtype
    assert recent.get((5, triangles[:1])) is None  # another shape
    assert recent.get((5, triangles.numpy())) is None  # an array is not a tensor
    mask = np.array([[True, False], [False, True]])
    recent.put((mask,), "fill")
    assert recent.get((mask.copy(),)) == "fill" and recent.get((~mask,)) is None


def test_keys_are_copies_and_the_oldest_go_first():
    recent = RecentResults(2)
    key = torch.zeros(3)
    recent.put((key,), "a")
    key += 1.0  # the caller changes its tensor afterwards: the kept key does not follow
    assert recent.get((torch.zeros(3),)) == "a" and recent.get((key,)) is None
    recent.put((torch.ones(1),), "b")
    recent.put((torch.ones(2),), "c")
    assert len(recent) == 2 and recent.get((torch.zeros(3),)) is None  # "a" was the oldest
    assert recent.get((torch.ones(1),)) == "b"
    recent.clear()
    assert len(recent) == 0
