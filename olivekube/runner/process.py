"""Settings of a process that runs passes (`olivekube run`, `olivekube runner`), made once at its start."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from typing import Any, NoReturn

from olivekube.api.workflow import WorkflowSpec

QUANTIZING_LOAD_KWARGS = ("quantization_config", "load_in_4bit", "load_in_8bit")
# transformers' optimizers that bitsandbytes implements (adamw_bnb_8bit, paged_adamw_32bit, lion_8bit, …).
BITSANDBYTES_OPTIMIZER_MARKS = ("bnb", "8bit", "32bit", "paged", "lion", "ademamix")


def _optimizer(options: Any) -> str:
    training_args = getattr(options, "training_args", None)
    return str(training_args.trainer_options().get("optim") or "") if training_args is not None else ""


def needs_bitsandbytes(spec: WorkflowSpec) -> bool:
    """A QLoRA pass, a training pass with a bitsandbytes optimizer, or an input model loaded with a
    bitsandbytes quantization."""
    if any(p.needs_bitsandbytes for p in spec.passes.values()):
        return True
    if any(mark in _optimizer(p) for p in spec.passes.values() for mark in BITSANDBYTES_OPTIMIZER_MARKS):
        return True
    kwargs = spec.input_model.load_kwargs.model_dump() if spec.input_model.load_kwargs else {}
    return any(key in kwargs for key in QUANTIZING_LOAD_KWARGS)


def leave_out_bitsandbytes(spec: WorkflowSpec) -> bool:
    """transformers and peft import bitsandbytes whenever it is installed, which costs ~1 s and
    ~50 MB here even for plain LoRA. When no pass of this process needs it, make it look absent
    to them (an import of it then fails, and their `find_spec` checks say it is not there).
    Process-wide and not undone: call it only at a command's start. Returns whether it did."""
    if needs_bitsandbytes(spec) or "bitsandbytes" in sys.modules:
        return False
    sys.modules["bitsandbytes"] = None  # type: ignore[assignment]
    return True


def quiet_libraries() -> None:
    """Keep library chatter off the terminal and the pod's log: progress says what happens."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    for name in ("transformers", "peft", "datasets", "onnxruntime", "accelerate", "bitsandbytes"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def end_process(code: int) -> NoReturn:
    """End a command that ran passes: flush what it printed and logged, then exit without the
    interpreter's teardown, which spends ~1 s here collecting and freeing the objects of torch,
    transformers and the model (every file, status and artifact is written before this)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError, ValueError):  # a reader gone, or a closed stream
            stream.flush()
    os._exit(code)
