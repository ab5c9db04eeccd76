"""How many of this machine's cores a piece of parallel work should use now.

Work split evenly over threads (one image each, say) waits for its slowest thread, so a core busy
with another process makes an extra thread a loss rather than a gain. `free_cores` counts the cores
this process may use (its affinity, within a cgroup CPU quota: a container may see more cores than
it may use) that no other runnable task occupies right now (``/proc/loadavg``), and falls back to one
where that cannot be read (not Linux).

Example:
    >>> 1 <= free_cores(limit=4) <= 4
    True
"""
from __future__ import annotations

import os
import time
from typing import Optional

__all__ = ["usable_cores", "free_cores"]


def _runnable_others(samples: int = 3) -> Optional[int]:
    """Tasks running or waiting to run besides this one, from ``/proc/loadavg`` (the least of a few
    readings 1 ms apart: a passing task is not counted, a busy one is); None where unreadable."""
    counts = []
    for i in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, ValueError, IndexError):
            return None
        if i + 1 < samples:
            time.sleep(0.001)
    return max(0, min(counts))


def _cpu_quota() -> Optional[float]:
    """The CPUs a cgroup quota allows this process (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``), or None
    where there is none: a container may see more cores than it may use."""
    for quota_file, period_file in (("/sys/fs/cgroup/cpu.max", None),
                                    ("/sys/fs/cgroup/cpu/cpu.cfs_quota_us", "/sys/fs/cgroup/cpu/cpu.cfs_period_us")):
        try:
            with open(quota_file) as f:
                fields = f.read().split()
            if period_file is not None:
                with open(period_file) as f:
                    fields.append(f.read().strip())
            if fields[0] not in ("max", "-1"):
                return float(fields[0]) / float(fields[1])
            return None
        except (OSError, ValueError, IndexError, ZeroDivisionError):
            continue
    return None


def usable_cores() -> Optional[int]:
    """The cores this process may run on (affinity, within its cgroup quota); None where unknown."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    quota = _cpu_quota()
    return cores if quota is None else min(cores, max(1, int(quota)))


def free_cores(limit: int = 4) -> int:
    """The usable cores that no other runnable task occupies now, at least 1 and at most ``limit``;
    1 where either count cannot be read."""
    cores, others = usable_cores(), _runnable_others()
    if cores is None or others is None:
        return 1
    return max(1, min(cores - others, limit))
