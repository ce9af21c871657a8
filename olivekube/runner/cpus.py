"""How many CPUs this process may really use, and thread pools sized to it.

torch (OpenMP) and onnxruntime start one thread per core they see, but a pod with a Kubernetes CPU
limit gets only its cgroup's quota of CPU time (cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us`): with
more runnable threads than that, each step waits on the scheduler and the threads of a matrix
product wait on one another. The usable count is the affinity mask bounded by the quota, rounded
up (a limit of 1.5 CPUs still runs two threads at times).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _cgroup_paths(proc_cgroup: str) -> tuple[str | None, str | None]:
    """(the v2 path, the v1 cpu controller's path) of the process, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _quota(text: str | None, period_text: str | None = None) -> float | None:
    """CPUs a quota allows: cpu.max ("max 100000" or "150000 100000"), or v1's quota and period."""
    if text is None:
        return None
    fields = text.split()
    if period_text is None and len(fields) == 2:
        quota, period = fields
    elif period_text is not None and fields:
        quota, period = fields[0], period_text.strip()
    else:
        return None
    if quota in ("max", "-1") or not period.isdigit() or int(period) == 0:
        return None
    try:
        return int(quota) / int(period)
    except ValueError:
        return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: str | None = None) -> float | None:
    """The CPU quota of this process's cgroup and its parents (the smallest), or None for none."""
    if proc_cgroup is None:
        proc_cgroup = _read(Path("/proc/self/cgroup")) or ""
    v2, v1 = _cgroup_paths(proc_cgroup)
    limits: list[float] = []
    if v2 is not None:
        folder = root / v2.strip("/")
        for candidate in [folder, *folder.parents]:
            if candidate == root.parent or not str(candidate).startswith(str(root)):
                break
            limit = _quota(_read(candidate / "cpu.max"))
            if limit is not None:
                limits.append(limit)
    if v1 is not None:
        for base in (root / "cpu", root / "cpu,cpuacct"):
            for candidate in (base / v1.strip("/"), base):
                limit = _quota(_read(candidate / "cpu.cfs_quota_us"), _read(candidate / "cpu.cfs_period_us"))
                if limit is not None:
                    limits.append(limit)
    return min(limits) if limits else None


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity), bounded by its cgroup's quota; at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    limit = cgroup_cpu_limit()
    if limit is not None:
        count = min(count, math.ceil(limit))
    return max(1, count)


def thread_count() -> int:
    """Threads for a compute pool: OMP_NUM_THREADS when set (by the user, or by size_thread_pools),
    else `usable_cpus()`."""
    given = os.environ.get("OMP_NUM_THREADS", "")
    return int(given) if given.isdigit() and int(given) > 0 else usable_cpus()


def size_thread_pools() -> int:
    """Size torch's and OpenMP's thread pools (and those of child processes) to `usable_cpus()`,
    unless the user set OMP_NUM_THREADS. Returns the count used."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return int(os.environ["OMP_NUM_THREADS"])
    count = usable_cpus()
    os.environ["OMP_NUM_THREADS"] = str(count)
    try:
        import torch
    except ImportError:
        return count
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
    return count
