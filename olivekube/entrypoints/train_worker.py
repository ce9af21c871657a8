"""One worker of a data-parallel training pass: `python -m olivekube.entrypoints.train_worker TASK`,
started by torchrun (runner/distributed.py), never by hand.

Every rank runs the pass on the same input; the trainer gives each its shard of the data. Rank 0
prints progress as JSON lines for the launching process and writes the output and the result file;
the others only train. A rank that fails writes `failure-rank-N.json`
in the pass's working folder (field and message) before it exits non-zero.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from olivekube.api.workflow import WorkflowSpec
from olivekube.core.errors import PassError
from olivekube.runner.context import PassContext
from olivekube.runner.cpus import size_thread_pools
from olivekube.runner.distributed import PROGRESS_MARK, artifact_from_json
from olivekube.runner.passes import PASSES
from olivekube.runner.process import leave_out_bitsandbytes, quiet_libraries


def print_progress(pass_name: str, progress: dict[str, Any]) -> None:
    print(PROGRESS_MARK + json.dumps(progress), flush=True)


def run(task: dict[str, Any], rank: int) -> None:
    spec = WorkflowSpec.model_validate_json(json.dumps(task["spec"]))
    leave_out_bitsandbytes(spec)
    name = task["pass"]
    workdir = Path(task["workdir"])
    own = workdir if rank == 0 else workdir / f"rank-{rank}"
    own.mkdir(parents=True, exist_ok=True)
    # One output folder per node: the trainer's checkpoints hold every local rank's RNG state; only
    # rank 0 writes the model into it.
    out = Path(task["out"])
    out.mkdir(parents=True, exist_ok=True)
    ctx = PassContext(
        spec,
        name,
        own,
        Path(task["base_dir"]),
        print_progress if rank == 0 else lambda pass_name, progress: None,
        checkpoint_root=task["checkpoint_root"],
    )
    runner_pass = PASSES[spec.passes[name].type](spec.passes[name], ctx)
    metadata = runner_pass.run(artifact_from_json(task["model"]), out)
    if rank == 0:
        Path(task["result"]).write_text(json.dumps({"metadata": metadata, "metrics": ctx.metrics}))


def main() -> None:
    quiet_libraries()
    size_thread_pools()
    rank = int(os.environ.get("RANK", "0"))
    task = json.loads(Path(sys.argv[1]).read_text())
    try:
        run(task, rank)
    except BaseException as exc:
        field = exc.field if isinstance(exc, PassError) else None
        message = exc.message if isinstance(exc, PassError) else f"{type(exc).__name__}: {exc}"
        failure = {"rank": rank, "field": field, "message": message}
        (Path(task["workdir"]) / f"failure-rank-{rank}.json").write_text(json.dumps(failure))
        raise


if __name__ == "__main__":
    main()
