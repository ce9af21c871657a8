"""`olivekube watch NAME`: live progress bars from a workflow's status (a watch, not polling)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import TaskID

from olivekube.api.common import GROUP, PLURAL, VERSION
from olivekube.api.status import WorkflowPhase
from olivekube.entrypoints.console import pass_bars
from olivekube.kube import load_config

FINAL = (WorkflowPhase.SUCCEEDED, WorkflowPhase.FAILED)


def _info(status: dict[str, Any]) -> str:
    progress = status.get("progress") or {}
    parts = [status.get("phase") or ""]
    if "loss" in progress:
        parts.append(f"loss {progress['loss']:.4f}")
    if "evalLoss" in progress:
        parts.append(f"eval {progress['evalLoss']:.4f}")
    if "etaSeconds" in progress:
        parts.append(f"eta {progress['etaSeconds']:.0f}s")
    if status.get("cached"):
        parts.append("cached")
    if status.get("message") and status.get("phase") == "Failed":
        parts.append(str(status["message"])[:80])
    return "  ".join(p for p in parts if p)


def watch_workflow(namespace: str, name: str, console: Console) -> int:
    """Show the workflow's passes until it ends. Returns 0 when it succeeded, 1 otherwise."""
    from kubernetes import client, watch

    load_config()
    api = client.CustomObjectsApi()
    tasks: dict[str, TaskID] = {}
    phase = None
    with pass_bars(console, elapsed=False) as bars:
        for event in watch.Watch().stream(
            api.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
        ):
            body = event["object"]
            if event["type"] == "DELETED":
                console.print(f"{namespace}/{name} was deleted", markup=False)
                return 1
            status = body.get("status") or {}
            for pass_name, ps in (status.get("passes") or {}).items():
                if pass_name not in tasks:
                    tasks[pass_name] = bars.add_task(pass_name, total=None, info="")
                progress = ps.get("progress") or {}
                finished = ps.get("phase") == "Succeeded"
                total = progress.get("totalSteps") or (1 if finished else None)
                completed = total if finished else progress.get("step", 0)
                bars.update(tasks[pass_name], total=total, completed=completed, info=_info(ps))
            phase = status.get("phase")
            if phase in FINAL:
                break
    message = f" ({status.get('message')})" if status.get("message") else ""
    console.print(f"{namespace}/{name}: {phase}{message}", markup=False, highlight=False)
    if status.get("outputs"):
        console.print(f"output: {status['outputs'].get('uri')}", markup=False, highlight=False)
    return 0 if phase == "Succeeded" else 1
