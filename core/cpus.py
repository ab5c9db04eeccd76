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

import contextlib
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, TypeVar

import torch

__all__ = ["usable_cores", "free_cores", "single_thread", "thread_count", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


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


#: The last quota read and when (`time.monotonic`): the video job asks for the cores thousands of
#: times (every rasterization), and reading the cgroup files costs ~30 us each time.
_RECENT_QUOTA: Dict[str, Tuple[float, Optional[float]]] = {}
_QUOTA_SECONDS = 1.0


def _recent_quota() -> Optional[float]:
    """`_cpu_quota`, read again at most once per ``_QUOTA_SECONDS``."""
    now = time.monotonic()
    kept = _RECENT_QUOTA.get("quota")
    if kept is None or now - kept[0] > _QUOTA_SECONDS:
        kept = _RECENT_QUOTA["quota"] = (now, _cpu_quota())
    return kept[1]


def usable_cores() -> Optional[int]:
    """The cores this process may run on (affinity, within its cgroup quota, as read within the last
    second); None where unknown."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None
    quota = _recent_quota()
    return cores if quota is None else min(cores, max(1, int(quota)))


def free_cores(limit: int = 4) -> int:
    """The usable cores that no other runnable task occupies now, at least 1 and at most ``limit``;
    1 where either count cannot be read."""
    cores, others = usable_cores(), _runnable_others()
    if cores is None or others is None:
        return 1
    return max(1, min(cores - others, limit))


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run the block with one torch intra-op thread (the previous count restored after). The count
    is the calling thread's (OpenMP's), and threads started inside the block begin with it.

    The fits are many small tensor operations (a few thousand vertices, a few dozen unknowns per
    image), for which a second intra-op thread costs more in waking and waiting than it saves; on
    this project's shared 2-core machines (load 2-4) it made the shading stage several times
    slower (14 photos: 12 s with two threads at load 3.5, 2.5-4 s with one).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def thread_count(threads: Optional[int] = None) -> int:
    """``threads``, or where None the usable cores, at most 4: how many threads a piece of parallel
    work takes (`parallel_map`, a compiled loop, a tree search)."""
    return min(usable_cores() or 1, 4) if threads is None else int(threads)


def parallel_map(fn: Callable[[T], R], items: Iterable[T], threads: Optional[int] = None) -> List[R]:
    """``[fn(x) for x in items]`` on up to ``threads`` threads (None: the usable cores, at most 4).

    For independent pieces of work whose time is spent in code that releases the GIL (torch, cv2,
    compiled passes), e.g. one image each; under `single_thread` where the pieces use torch, so
    that the pieces, not torch's intra-op threads, share the cores. Each thread takes the next
    item when it is done, so a core busy with something else slows the map down but does not hold
    the other thread up (unlike an evenly split pass: `free_cores`). Results come in the order of
    ``items`` and do not depend on the thread count; the first exception raised by ``fn`` is
    raised here.
    """
    work = list(items)
    if len(work) <= 1:  # nothing to share out: the cores are not even counted
        count = len(work)
    else:
        count = min(thread_count(threads), len(work))
    if count <= 1:
        return [fn(x) for x in work]
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(fn, work))
