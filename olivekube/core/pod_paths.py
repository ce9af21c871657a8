"""Paths inside a pod as this process sees them.

In a real container a path is what it says. The repository's test node agent
(`tools/controlplane/node_agent.py`) runs a pod's container as a plain local process and publishes
where it put each mount in OLIVEKUBE_TEST_NODE_PATHS (mount path → host folder); this module is the
one place that reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

TEST_NODE_PATHS_ENV = "OLIVEKUBE_TEST_NODE_PATHS"


def pod_path(path: str) -> Path:
    """`path` inside the pod, as a path this process can open."""
    mapping: dict[str, str] = json.loads(os.environ.get(TEST_NODE_PATHS_ENV, "{}"))
    for mount in sorted(mapping, key=len, reverse=True):
        if path == mount or path.startswith(mount.rstrip("/") + "/"):
            return Path(mapping[mount]) / path[len(mount) :].lstrip("/")
    return Path(path)
