"""The pieces a training pass hands to transformers' Trainer. Imported only when a pass trains."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import DistributedType
from torch.nn.utils.rnn import pad_sequence
from transformers import Trainer

from olivekube.runner.checkpoints import CheckpointStore

IGNORE_INDEX = -100


class CausalLMCollator:
    """Right-padded `input_ids`, `attention_mask`, and `labels` equal to `input_ids` except over the
    padding. Padding is known by position, not by token id: transformers' language-model collator
    ignores every label equal to the pad token's id, and when a tokenizer pads with its EOS token
    (Phi-3, Llama without a pad token) that hides every EOS from the loss, so the model never
    learns to stop. Olive's LoRA collator also labels by position."""

    def __init__(self, pad_token_id: int | None) -> None:
        self.pad_token_id = 0 if pad_token_id is None else pad_token_id  # any id: padding is masked

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        sequences = [torch.as_tensor(row["input_ids"], dtype=torch.long) for row in rows]
        input_ids = pad_sequence(sequences, batch_first=True, padding_value=self.pad_token_id)
        lengths = torch.tensor([len(s) for s in sequences])
        real = torch.arange(input_ids.shape[1])[None, :] < lengths[:, None]
        return {
            "input_ids": input_ids,
            "attention_mask": real.long(),
            "labels": input_ids.masked_fill(~real, IGNORE_INDEX),
        }


class PassTrainer(Trainer):
    """transformers' Trainer, without three walks over every module of the model at each step: the
    parameter count for the floating-point-operations estimate is counted once, and in a single
    process gradient clipping and `model.zero_grad()` see only the trainable parameters, the only
    ones that hold gradients (with `TokenSequences` data, 0.6 s less over the benchmark's 200
    steps of ~65 ms: four interleaved pairs of runs). Distributed runs keep the Trainer's own."""

    @functools.cached_property
    def _trainable_parameters(self) -> list[torch.nn.Parameter]:
        model: Any = self.model
        return [p for p in model.parameters() if p.requires_grad]

    def _single_process(self) -> bool:
        return bool(self.accelerator.distributed_type == DistributedType.NO)

    def _clip_grad_norm(self, model: Any) -> Any:
        if not self._single_process():
            return super()._clip_grad_norm(model)  # type: ignore[no-untyped-call]
        return self.accelerator.clip_grad_norm_(self._trainable_parameters, self.args.max_grad_norm)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        model: Any = self.model
        if not self._single_process():
            return super().train(*args, **kwargs)
        trainable = self._trainable_parameters

        def zero_grad(set_to_none: bool = True) -> None:
            for parameter in trainable:
                if set_to_none:
                    parameter.grad = None
                elif parameter.grad is not None:
                    parameter.grad.zero_()

        model.zero_grad = zero_grad
        try:
            return super().train(*args, **kwargs)
        finally:
            del model.zero_grad

    def evaluate(self, *args: Any, **kwargs: Any) -> Any:
        """Evaluate without touching the random state training draws from (dropout, data loader seeds).
        Each evaluation's data loader takes a seed from torch's generator; at an epoch's end the Trainer
        saves a checkpoint (with that generator's state) before it evaluates, so a run resumed from that
        checkpoint would draw every later dropout mask one step off the uninterrupted run's."""
        with preserved_random_state():
            return super().evaluate(*args, **kwargs)

    @functools.cached_property
    def _parameters_without_embeddings(self) -> int:
        model: Any = self.model
        return int(model.num_parameters(exclude_embeddings=True))

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        ids = inputs.get(getattr(self.model, "main_input_name", "input_ids"))
        if ids is None or not hasattr(self.model, "num_parameters"):
            return 0
        return 6 * int(ids.numel()) * self._parameters_without_embeddings


def gather_rng_states(folder: Path) -> None:
    """Every rank's `rng_state_<rank>.pth` into rank 0's checkpoint folder. The Trainer writes each
    rank's file into its own pod's folder; on several pods rank 0's folder, the one published, held
    only its own pod's, and the other pods' ranks resumed with fresh random states."""
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    own = folder / f"rng_state_{rank}.pth"
    states: list[bytes | None] = [None] * world
    torch.distributed.all_gather_object(states, own.read_bytes() if own.is_file() else None)
    if rank != 0:
        return
    for other, data in enumerate(states):
        target = folder / f"rng_state_{other}.pth"
        if data is not None and not target.exists():
            target.write_bytes(data)


@contextlib.contextmanager
def preserved_random_state() -> Iterator[None]:
    """Python's, numpy's, torch's CPU and the current CUDA device's random state, as they were before."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    cuda_in_use = torch.cuda.is_available() and torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
    devices = [torch.cuda.current_device()] if cuda_in_use else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class Checkpointing:
    """Hands each checkpoint the trainer saves to the pass's CheckpointStore, and turns SIGTERM (a
    preempted or evicted pod, Ctrl-C's sibling) into one more checkpoint at the end of the running step
    and a stop, well within a pod's grace period. `stopped_at` is the step it stopped at, if it did."""

    def __init__(self, store: CheckpointStore | None, ctx: Any) -> None:
        self.store = store
        self.ctx = ctx
        self.stop_requested = False
        self.stopped_at: int | None = None

    def callback(self) -> Any:
        from transformers import TrainerCallback

        checkpointing = self

        class Checkpoints(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if checkpointing.stop_is_agreed():
                    control.should_save = checkpointing.store is not None
                    control.should_training_stop = True
                    checkpointing.stopped_at = state.global_step

            def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                if checkpointing.store is None:
                    return
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if torch.distributed.is_initialized():
                    gather_rng_states(folder)  # and so every rank's file is written before rank 0 publishes
                if not state.is_world_process_zero:
                    return
                checkpointing.store.save(folder, state.global_step)
                checkpointing.ctx.progress(checkpointStep=state.global_step)

        return Checkpoints()

    def stop_is_agreed(self) -> bool:
        """Whether to stop after this step. Data-parallel ranks stop at the same step or they hang in
        the next all-reduce: a SIGTERM seen by any rank stops them all (one small all-reduce a step)."""
        if not torch.distributed.is_initialized():
            return self.stop_requested
        flag = torch.tensor([int(self.stop_requested)])
        if torch.distributed.get_backend() == "nccl":
            flag = flag.to(f"cuda:{torch.cuda.current_device()}")
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        self.stop_requested = bool(flag.item())
        return self.stop_requested

    @contextlib.contextmanager
    def stop_on_sigterm(self) -> Iterator[None]:
        """While training, SIGTERM asks for a checkpoint and a stop instead of ending the process.
        Only the main thread can take signals; elsewhere (a test's thread) nothing changes."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def request_stop(signum: int, frame: Any) -> None:
            self.stop_requested = True

        previous = signal.signal(signal.SIGTERM, request_stop)
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)
