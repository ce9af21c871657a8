"""Chain keys: each pass's identity computed from the spec alone.

key(pass i) = sha256(runner version, the pass's options, key(pass i-1) or the input model's
identity, the data configs it reads). The operator compares them with the keys the runner recorded
in status to know which passes a spec change invalidates, names Jobs with them, and looks them up
in the store's index to skip a pass whose output already exists. The runner's content keys (over
input digests) stay the source of truth for the artifacts themselves.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from olivekube.api.workflow import WorkflowSpec

# Part of every cache and chain key: raise it whenever a pass can produce other output from the same
# inputs, so that no cached artifact of the old behaviour is reused (0.1.1: CPU LoRA dropout masks,
# EOS tokens kept in the labels when a tokenizer pads with EOS; 0.1.2: the CPU LoRA forward folds its
# scales into B and draws its masks in another order; 0.1.3: CPU LoRA masks seeded from torch's
# generator, the LoRA Linear one autograd node).
RUNNER_VERSION = "0.1.3"


def _digest(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def chain_keys(spec: WorkflowSpec) -> dict[str, str]:
    """Key of every pass, in run order."""
    keys: dict[str, str] = {}
    previous: Any = {"input_model": spec.input_model.dump()}
    data = {d.name: d.dump() for d in spec.data_configs or []}
    for name in spec.ordered_pass_names():
        options = spec.passes[name].dump()
        options.pop("host", None)
        body: dict[str, Any] = {"runner": RUNNER_VERSION, "options": options, "input": previous}
        used = [str(options[k]) for k in ("train_data_config", "eval_data_config") if options.get(k)]
        if used:
            body["data"] = [data[n] for n in used]
        if options["type"] == "ModelBuilder":
            body["target"] = spec.target or spec.host
            body["systems"] = {k: v.dump() for k, v in (spec.systems or {}).items()}
        keys[name] = _digest(body)
        previous = keys[name]
    return keys
