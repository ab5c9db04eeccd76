"""`core.cache.RecentResults`: found by values, kept apart from the caller's tensors, the oldest dropped;
`core.cache.StoredResults`: found again on disk by a new run, never by other values, names or code."""
from __future__ import annotations

import os

import numpy as np
import torch

from core import cache
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


def _counting(value):
    calls = []

    def compute():
        calls.append(1)
        return value

    return compute, calls


def test_stored_results_are_found_again_by_a_new_run(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.RESULTS_DIR_ENV, str(tmp_path))
    triangles = torch.tensor([[0, 1, 2], [2, 1, 3]])
    value = (torch.arange(6.0).reshape(2, 3), np.array([4, 5], np.int32), {"a": [1.5]})
    compute, calls = _counting(value)
    assert cache.StoredResults(2, "ops").recall((4, triangles), compute) is value and len(calls) == 1
    assert len(list(tmp_path.glob("ops-*.pkl"))) == 1
    again = cache.StoredResults(2, "ops")  # a new process's cache: empty memory, the same folder
    back = again.recall((4, triangles.clone()), compute)
    assert len(calls) == 1  # read, not computed
    assert torch.equal(back[0], value[0]) and back[1].dtype == np.int32 and np.array_equal(back[1], value[1])
    assert back[2] == {"a": [1.5]}
    assert again.recall((4, triangles), compute) is back  # then from memory
    cache.StoredResults(2, "scalar").recall((np.array(2.5), None, (1, "a")), compute)  # 0-d arrays, nesting
    assert len(calls) == 2 and len(list(tmp_path.glob("scalar-*.pkl"))) == 1
    # Other values, another name, other code: computed afresh.
    cache.StoredResults(2, "ops").recall((5, triangles), compute)
    cache.StoredResults(2, "other").recall((4, triangles), compute)
    monkeypatch.setattr(cache, "_code_version", lambda: b"changed")
    cache.StoredResults(2, "ops").recall((4, triangles), compute)
    assert len(calls) == 5


def test_a_broken_or_missing_folder_only_costs_the_computation(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.RESULTS_DIR_ENV, str(tmp_path))
    compute, calls = _counting(torch.ones(3))
    cache.StoredResults(1, "r").recall((1,), compute)
    (stored,) = tmp_path.glob("r-*.pkl")
    stored.write_bytes(stored.read_bytes()[:20])  # truncated
    assert torch.equal(cache.StoredResults(1, "r").recall((1,), compute), torch.ones(3)) and len(calls) == 2
    assert torch.equal(cache.StoredResults(1, "r").recall((1,), compute), torch.ones(3)) and len(calls) == 2
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    monkeypatch.setenv(cache.RESULTS_DIR_ENV, str(blocked / "results"))  # cannot be made
    assert torch.equal(cache.StoredResults(1, "r").recall((1,), compute), torch.ones(3)) and len(calls) == 3
    monkeypatch.setenv(cache.RESULTS_DIR_ENV, "")  # nothing on disk
    assert cache.results_dir() is None
    cache.StoredResults(1, "r").recall((2,), compute)
    assert len(calls) == 4 and len(list(tmp_path.glob("r-*.pkl"))) == 1
    memory_only = cache.StoredResults(1, "r")
    monkeypatch.setenv(cache.RESULTS_DIR_ENV, str(tmp_path))
    assert memory_only.recall((object(),), compute) is not None and len(calls) == 5  # a key it cannot digest
    assert len(list(tmp_path.glob("r-*.pkl"))) == 1


def test_the_least_recently_used_files_go(tmp_path, monkeypatch):
    monkeypatch.setenv(cache.RESULTS_DIR_ENV, str(tmp_path))
    monkeypatch.setattr(cache, "_KEPT_BYTES", 2 * 10_000 + 1000)  # room for two results, not three
    seen = set()
    for k in range(3):
        cache.StoredResults(1, "a" if k else "b").recall((k,), lambda: np.zeros(10_000, np.uint8))
        (new,) = set(tmp_path.glob("*.pkl")) - seen
        seen.add(new)
        if k < 2:
            os.utime(new, (1000.0 * (k + 1), 1000.0 * (k + 1)))  # used long ago, 0 before 1
    assert len(list(tmp_path.glob("*.pkl"))) == 2  # over all kinds of result
    compute, calls = _counting(np.zeros(10_000, np.uint8))
    cache.StoredResults(1, "a").recall((1,), compute)  # kept
    assert len(calls) == 0
    cache.StoredResults(1, "b").recall((0,), compute)  # the least recently used went
    assert len(calls) == 1
    other = tmp_path / "users_own.pkl"
    other.write_bytes(b"x" * 50_000)
    monkeypatch.setattr(cache, "_KEPT_BYTES", 10)  # smaller than any result: the newest stays
    cache.StoredResults(1, "a").recall((5,), compute)
    assert len(list(tmp_path.glob("*-*.pkl"))) == 1 and len(calls) == 2
    assert other.is_file()  # a file the results did not write is left alone
