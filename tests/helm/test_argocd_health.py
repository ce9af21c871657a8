"""The Argo CD health check in the README, run by a real Lua interpreter (lupa) against the status
objects the operator's planner writes, one per phase, so the Lua cannot drift from the status."""

from __future__ import annotations

import re
from typing import Any

import pytest

from olivekube.api.status import WorkflowPhase
from olivekube.api.workflow import parse_workflow
from olivekube.operator.plan import decide
from tests.helpers.manifests import REPO, valid_manifest


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """Run the README's Lua with `obj` as Argo CD's `obj`; returns (status, message)."""
    from lupa import LuaRuntime

    script = re.search(r"```lua\n(.*?)```", (REPO / "README.md").read_text(), flags=re.S)
    assert script, "the README has no Lua health check"
    lua = LuaRuntime(unpack_returned_tuples=True)

    def table(value: Any) -> Any:
        if isinstance(value, dict):
            return lua.table_from({k: table(v) for k, v in value.items()})
        if isinstance(value, list):
            return lua.table_from([table(v) for v in value])
        return value

    result = lua.execute(f"return function(obj)\n{script.group(1)}\nend")(table(obj))
    return str(result["status"]), str(result["message"])


def workflow_with_status(phase: WorkflowPhase) -> dict[str, Any]:
    """A workflow and the status the planner writes for it in `phase`."""
    doc = valid_manifest()
    if phase == WorkflowPhase.SUSPENDED:
        doc["spec"]["suspend"] = True
    wf = parse_workflow(doc)
    keys = wf.spec.chain_keys()
    status: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    if phase == WorkflowPhase.SUCCEEDED:
        passes = {n: {"phase": "Succeeded", "chainKey": k, "artifact": {"uri": n}} for n, k in keys.items()}
        status = {"passes": passes}
    if phase == WorkflowPhase.FAILED:
        failed = {"type": "Failed", "status": "True", "lastTransitionTime": "2020-01-01T00:00:00Z"}
        jobs = [
            {
                "metadata": {
                    "name": f"tone-lora-{attempt}",
                    "labels": {
                        "olivekube.io/pass": "lora",
                        "olivekube.io/key": keys["lora"][:16],
                        "olivekube.io/attempt": str(attempt),
                    },
                },
                "status": {"conditions": [failed]},
            }
            for attempt in range(3)
        ]
    decision = decide(wf, 1, status, jobs, lambda name, key: None, lambda job: "data file missing")
    assert decision.status["phase"] == phase.value
    return {**doc, "status": decision.status}


@pytest.mark.parametrize(
    ("phase", "expected"),
    [
        (WorkflowPhase.RUNNING, "Progressing"),
        (WorkflowPhase.SUCCEEDED, "Healthy"),
        (WorkflowPhase.FAILED, "Degraded"),
        (WorkflowPhase.SUSPENDED, "Suspended"),
    ],
)
def test_each_phase_the_operator_writes_has_its_health(phase: WorkflowPhase, expected: str) -> None:
    obj = workflow_with_status(phase)
    status, message = health(obj)
    assert status == expected
    assert message == obj["status"]["message"]


def test_a_workflow_not_yet_seen_by_the_operator_is_progressing() -> None:
    assert health(valid_manifest()) == ("Progressing", "waiting")


def test_every_phase_is_covered() -> None:
    assert set(WorkflowPhase) == {
        WorkflowPhase.RUNNING,
        WorkflowPhase.SUCCEEDED,
        WorkflowPhase.FAILED,
        WorkflowPhase.SUSPENDED,
    }, "a new phase needs a line in the README's Argo CD health check and a case above"
