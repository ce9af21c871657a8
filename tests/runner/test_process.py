"""Process settings of the pass-running commands: bitsandbytes left out when no pass needs it, and
an exit that keeps everything printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from olivekube.api.workflow import parse_workflow
from olivekube.runner.process import needs_bitsandbytes
from tests.helpers.manifests import LORA, workflow_doc

PROBE = """
import json, sys
from olivekube.api.workflow import parse_workflow
from olivekube.runner.process import leave_out_bitsandbytes
left_out = leave_out_bitsandbytes(parse_workflow(json.loads(sys.argv[1])).spec)
import peft.import_utils
from transformers import Trainer
print(json.dumps({"left_out": left_out, "peft_sees_bnb": peft.import_utils.is_bnb_available(),
                  "loaded": sys.modules.get("bitsandbytes") is not None}))
"""


def _doc(passes: dict[str, Any], **input_model: Any) -> dict[str, Any]:
    doc = workflow_doc("tiny-model", "data.json", passes)
    doc["spec"]["input_model"].update(input_model)
    return doc


@pytest.mark.parametrize(
    ("doc", "needed"),
    [
        (_doc({"lora": LORA, "merge": {"type": "MergeAdapterWeights"}}), False),
        (_doc({"qlora": {**LORA, "type": "QLoRA"}, "merge": {"type": "MergeAdapterWeights"}}), True),
        (_doc({"lora": LORA}, load_kwargs={"load_in_4bit": True}), True),
        (_doc({"builder": {"type": "ModelBuilder", "precision": "int4"}}), False),
        (_doc({"lora": {**LORA, "training_args": {"optim": "paged_adamw_8bit"}}}), True),
        (_doc({"lora": {**LORA, "training_args": {"extra_args": {"optim": "adamw_bnb_8bit"}}}}), True),
        (_doc({"lora": {**LORA, "training_args": {"optim": "adamw_torch_fused"}}}), False),
    ],
)
def test_needs_bitsandbytes(doc: dict[str, Any], needed: bool) -> None:
    assert needs_bitsandbytes(parse_workflow(doc).spec) is needed


def _probe(doc: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(doc)], capture_output=True, text=True, check=True, timeout=120
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_a_lora_process_does_not_load_bitsandbytes_and_a_qlora_process_does() -> None:
    assert _probe(_doc({"lora": LORA})) == {"left_out": True, "peft_sees_bnb": False, "loaded": False}
    qlora = _probe(_doc({"qlora": {**LORA, "type": "QLoRA"}}))
    assert qlora == {"left_out": False, "peft_sees_bnb": True, "loaded": True}


def test_end_process_keeps_what_was_printed_and_the_code() -> None:
    script = (
        "import sys, logging; from olivekube.runner.process import end_process\n"
        "logging.basicConfig(stream=sys.stderr); logging.getLogger('x').error('logged')\n"
        "sys.stdout.write('printed' * 1000); end_process(3)"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 3
    assert out.stdout == "printed" * 1000
    assert "logged" in out.stderr


def test_end_process_with_a_reader_that_went_away() -> None:
    script = (
        "import sys, time; from olivekube.runner.process import end_process\n"
        "sys.stdout.write('buffered'); time.sleep(1); end_process(0)"
    )
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=buffered
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # like `olivekube run … | head -1` once head has its line
    assert proc.wait(timeout=60) == 0
    assert b"Traceback" not in proc.stderr.read()
