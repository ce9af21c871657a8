"""The CPUs a process may use: its affinity bounded by its cgroup's CPU quota (a Kubernetes limit)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from olivekube.runner.cpus import cgroup_cpu_limit

V2 = "0::/kubepods/pod1/container\n"
V1 = "4:memory:/x\n2:cpu,cpuacct:/kubepods/pod1/container\n0::/\n"


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "proc", "expected"),
    [
        ({"kubepods/pod1/container/cpu.max": "150000 100000\n"}, V2, 1.5),
        ({"kubepods/pod1/container/cpu.max": "max 100000\n", "kubepods/cpu.max": "200000 100000\n"}, V2, 2.0),
        ({"kubepods/pod1/container/cpu.max": "max 100000\n"}, V2, None),
        ({"cpu.max": "50000 100000\n"}, "0::/\n", 0.5),  # inside a container's own cgroup namespace
        (
            {
                "cpu,cpuacct/kubepods/pod1/container/cpu.cfs_quota_us": "250000\n",
                "cpu,cpuacct/kubepods/pod1/container/cpu.cfs_period_us": "100000\n",
            },
            V1,
            2.5,
        ),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, V1, None),
        ({}, V2, None),
    ],
    ids=["v2", "v2-parent", "v2-none", "v2-namespace", "v1", "v1-none", "no-files"],
)
def test_cgroup_quota(tmp_path: Path, files: dict[str, str], proc: str, expected: float | None) -> None:
    assert cgroup_cpu_limit(tree(tmp_path, files), proc) == expected


def test_a_process_pinned_to_one_cpu_runs_one_torch_thread() -> None:
    code = (
        "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); "
        "os.environ.pop('OMP_NUM_THREADS', None); "
        "from olivekube.runner.cpus import size_thread_pools; import torch; "
        "print(size_thread_pools(), torch.get_num_threads(), os.environ['OMP_NUM_THREADS'])"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ["1", "1", "1"]
