"""How many cores parallel work takes (`core.cpus`): only those nothing else is running on; the
same results on any number of threads."""
from __future__ import annotations

import threading

import pytest
import torch

import core.cpus as cpus


@pytest.fixture(autouse=True)
def quota_read_each_time(monkeypatch):
    """The tests below change the quota between calls: no reading kept."""
    monkeypatch.setattr(cpus, "_RECENT_QUOTA", {})
    monkeypatch.setattr(cpus, "_QUOTA_SECONDS", -1.0)


def test_quota_is_read_again_only_after_a_second(monkeypatch):
    reads = []
    monkeypatch.setattr(cpus, "_cpu_quota", lambda: reads.append(1) or 2.5)
    monkeypatch.setattr(cpus, "_QUOTA_SECONDS", 1.0)
    clock = [100.0]
    monkeypatch.setattr(cpus.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert [cpus.usable_cores() for _ in range(5)] == [2] * 5 and len(reads) == 1
    clock[0] += 1.5
    assert cpus.usable_cores() == 2 and len(reads) == 2


def test_free_cores_leave_busy_cores_alone(monkeypatch):
    """A second thread only where a core is free: the count of other runnable tasks decides."""
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(cpus, "_cpu_quota", lambda: None)
    monkeypatch.setattr(cpus, "_runnable_others", lambda: 0)
    assert cpus.free_cores() == 2
    monkeypatch.setattr(cpus, "_runnable_others", lambda: 1)
    assert cpus.free_cores() == 1
    monkeypatch.setattr(cpus, "_runnable_others", lambda: 5)
    assert cpus.free_cores() == 1  # never fewer than one
    monkeypatch.setattr(cpus, "_runnable_others", lambda: None)  # /proc/loadavg unreadable
    assert cpus.free_cores() == 1
    monkeypatch.setattr(cpus.os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    monkeypatch.setattr(cpus, "_runnable_others", lambda: 3)
    assert cpus.free_cores(limit=4) == 4 and cpus.free_cores(limit=16) == 13
    monkeypatch.setattr(cpus, "_cpu_quota", lambda: 2.5)  # a container allowed 2.5 of 16 cores
    monkeypatch.setattr(cpus, "_runnable_others", lambda: 0)
    assert cpus.usable_cores() == 2 and cpus.free_cores() == 2


def test_quota_and_runnable_counts_are_read_from_the_files(monkeypatch, tmp_path):
    """cgroup v2 ``cpu.max`` and v1 quota / period, and the runnable field of ``/proc/loadavg``."""
    import builtins

    files = {"/sys/fs/cgroup/cpu.max": "250000 100000\n", "/proc/loadavg": "0.50 0.40 0.30 3/120 999\n"}
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if path in files:
            target = tmp_path / path.strip("/").replace("/", "_")
            target.write_text(files[path])
            return real_open(target, *args, **kwargs)
        if str(path).startswith("/sys/fs/cgroup"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", fake_open)
    assert cpus._cpu_quota() == 2.5
    assert cpus._runnable_others() == 2  # three runnable, this process one of them
    files["/sys/fs/cgroup/cpu.max"] = "max 100000\n"
    assert cpus._cpu_quota() is None
    del files["/sys/fs/cgroup/cpu.max"]
    files["/sys/fs/cgroup/cpu/cpu.cfs_quota_us"] = "150000\n"
    files["/sys/fs/cgroup/cpu/cpu.cfs_period_us"] = "100000\n"
    assert cpus._cpu_quota() == 1.5


def test_parallel_map_keeps_the_order_and_the_results_on_any_thread_count():
    """Items come back in their order whatever finishes first, the same as a plain loop's."""
    def work(i):
        x = torch.full((60, 60), float(i))
        return float((x @ x).sum())

    serial = [work(i) for i in range(12)]
    assert cpus.parallel_map(work, range(12), threads=3) == serial
    assert cpus.parallel_map(work, range(12), threads=1) == serial
    assert cpus.parallel_map(work, [], threads=2) == []


def test_parallel_map_runs_items_side_by_side():
    """With two threads the first two items run at the same time: each waits for the other (a loop
    would wait forever; the barrier's timeout turns that into an error)."""
    both = threading.Barrier(2, timeout=10)

    def work(i):
        if i < 2:
            both.wait()
        return i

    assert cpus.parallel_map(work, range(5), threads=2) == list(range(5))


def test_parallel_map_raises_the_first_error():
    def work(i):
        if i == 3:
            raise ValueError(f"item {i} is bad")
        return i

    with pytest.raises(ValueError, match="item 3 is bad"):
        cpus.parallel_map(work, range(6), threads=2)


def test_single_thread_restores_the_count():
    before = torch.get_num_threads()
    with cpus.single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError):
        with cpus.single_thread():
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before


def test_threads_started_inside_single_thread_run_with_one_thread():
    """The pool threads of a `parallel_map` under `single_thread` run torch with one intra-op thread."""
    seen = []
    with cpus.single_thread():
        cpus.parallel_map(lambda _: seen.append(torch.get_num_threads()), range(4), threads=2)
    assert seen == [1, 1, 1, 1]


def test_thread_count_is_the_usable_cores_up_to_four_unless_given(monkeypatch):
    for usable, expected in ((8, 4), (2, 2), (None, 1)):
        monkeypatch.setattr(cpus, "usable_cores", lambda usable=usable: usable)
        assert cpus.thread_count() == expected
    assert cpus.thread_count(3) == 3
