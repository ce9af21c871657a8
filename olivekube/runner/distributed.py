"""Data-parallel training: a training pass run by several processes under torchrun's elastic agent.

The process that runs the workflow (`olivekube run`, or the runner in a pod) hands the pass to
`python -m torch.distributed.run`, which starts `numProcPerNode` workers here (entrypoints/
train_worker.py) and, across `numNodes` pods, meets the other pods' agents at node 0 (a static
rendezvous: node 0 is where global rank 0, and so the pass's output, is). Each worker trains on its
shard of every global batch (gloo on CPU, NCCL on GPU); rank 0 alone reports progress (as JSON lines
on its stdout, forwarded here to the pass's progress), saves checkpoints and writes the output. A
failing rank writes its error to a file of its own: the attempt fails with the first one's message.
SIGTERM to this process goes on to the agent and from it to the workers, which agree on a last
checkpoint and stop (runner/training.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from olivekube.core.artifact import ModelArtifact
from olivekube.core.constants import MASTER_ADDR_ENV, NPROC_PER_NODE_ENV, NUM_NODES_ENV
from olivekube.core.errors import PassError
from olivekube.runner.cpus import usable_cpus

PROGRESS_MARK = "olivekube-progress "
MASTER_PORT = 29500
"""Node 0's port for the rendezvous and the process group's store, when several nodes train."""


@dataclass(frozen=True)
class Topology:
    """How many processes train a pass, and where this one's node is among them."""

    nproc_per_node: int = 1
    num_nodes: int = 1
    node_rank: int = 0
    master_addr: str | None = None
    """Node 0's address (the headless Service name of its pod) when num_nodes > 1."""

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.num_nodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def topology_from_env(env: Mapping[str, str] = os.environ) -> Topology:
    """A pod's topology as the operator set it (jobs.py); the Indexed Job gives the node rank."""
    num_nodes = int(env.get(NUM_NODES_ENV, "1"))
    return Topology(
        nproc_per_node=int(env.get(NPROC_PER_NODE_ENV, "1")),
        num_nodes=num_nodes,
        node_rank=int(env.get("JOB_COMPLETION_INDEX", "0")) if num_nodes > 1 else 0,
        master_addr=env.get(MASTER_ADDR_ENV),
    )


def artifact_to_json(model: ModelArtifact) -> dict[str, Any]:
    return {
        "kind": model.kind,
        "digest": model.digest,
        "path": str(model.path) if model.path is not None else None,
        "hub_id": model.hub_id,
        "uri": model.uri,
        "base": artifact_to_json(model.base) if model.base is not None else None,
        "metadata": model.metadata,
    }


def artifact_from_json(data: dict[str, Any]) -> ModelArtifact:
    return ModelArtifact(
        kind=data["kind"],
        digest=data["digest"],
        path=Path(data["path"]) if data["path"] else None,
        hub_id=data["hub_id"],
        uri=data["uri"],
        base=artifact_from_json(data["base"]) if data["base"] else None,
        metadata=data["metadata"],
    )


def launcher_command(topology: Topology, task: Path) -> list[str]:
    """torchrun's command line for this node."""
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={topology.nproc_per_node}"]
    if topology.num_nodes == 1:
        command.append("--standalone")  # a rendezvous on a free local port
    else:
        command += [
            f"--nnodes={topology.num_nodes}",
            f"--node-rank={topology.node_rank}",
            f"--master-addr={topology.master_addr}",
            f"--master-port={MASTER_PORT}",
        ]
    return [*command, "-m", "olivekube.entrypoints.train_worker", str(task)]


def worker_env(topology: Topology) -> dict[str, str]:
    """The workers' environment: each gets its share of this node's CPUs for its thread pools
    (torchrun's own default is one thread each)."""
    threads = max(1, usable_cpus() // topology.nproc_per_node)
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def forward_sigterm(child: subprocess.Popen[str]) -> Iterator[None]:
    """SIGTERM to this process goes on to `child` (torchrun's agent), which passes it to the workers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def first_failure(workdir: Path) -> dict[str, Any] | None:
    """The error the first failing rank wrote (by the time it was written), if any did."""
    files = sorted(workdir.glob("failure-rank-*.json"), key=lambda f: f.stat().st_mtime)
    return dict(json.loads(files[0].read_text())) if files else None


def run_distributed(runner_pass: Any, model: ModelArtifact, out: Path, topology: Topology) -> dict[str, Any]:
    """Run a training pass under torchrun on this node; on node 0, return what rank 0's run returned
    (the output's metadata; its metrics go to the pass's context)."""
    ctx = runner_pass.ctx
    task = ctx.workdir / "distributed-task.json"
    result_file = ctx.workdir / "distributed-result.json"
    task.write_text(
        json.dumps(
            {
                "spec": ctx.spec.dump(),
                "pass": ctx.pass_name,
                "base_dir": str(ctx.base_dir),
                "workdir": str(ctx.workdir),
                "checkpoint_root": ctx.checkpoint_root,
                "model": artifact_to_json(model),
                "out": str(out),
                "result": str(result_file),
                "topology": asdict(topology),
            }
        )
    )
    ctx.progress(message=f"training with {topology.world_size} processes ({topology.num_nodes} node(s))")
    printed: deque[str] = deque(maxlen=200)
    child = subprocess.Popen(
        launcher_command(topology, task),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=worker_env(topology),
    )
    with forward_sigterm(child):
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(PROGRESS_MARK):
                ctx.progress(**json.loads(line[len(PROGRESS_MARK) :]))
            else:
                printed.append(line)
        code = child.wait()
    if code != 0:
        failure = first_failure(ctx.workdir)
        if failure is not None:
            raise PassError(failure.get("field") or ctx.field, f"rank {failure['rank']}: {failure['message']}")
        raise PassError(
            ctx.field, f"the training processes ended with exit code {code}: {''.join(printed)[-4000:]}"
        )
    if topology.node_rank != 0:
        return {}
    result = json.loads(result_file.read_text())
    ctx.metrics.update(result["metrics"])
    return dict(result["metadata"])
