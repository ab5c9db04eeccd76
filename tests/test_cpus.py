"""How many cores parallel work takes (`core.cpus`): only those nothing else is running on."""
from __future__ import annotations

import core.cpus as cpus


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
