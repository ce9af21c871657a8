"""Print the operator's first decision for the workflow file in argv[1], with the NoOp type loaded."""

from __future__ import annotations

import json
import sys

import noop_pass  # noqa: F401 - defining the type registers it

from olivekube.api.workflow import parse_workflow
from olivekube.operator.jobs import OperatorSettings, build_job
from olivekube.operator.plan import decide

with open(sys.argv[1]) as f:
    workflow = parse_workflow(json.load(f))
decision = decide(workflow, 1, {}, [], lambda p, k: None, lambda j: "")
assert decision.create is not None
job = build_job(workflow, "uid", *decision.create, OperatorSettings())
command = job["spec"]["template"]["spec"]["containers"][0]["command"]
print(json.dumps({"create": decision.create[0], "command": command}))
