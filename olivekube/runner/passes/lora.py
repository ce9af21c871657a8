"""LoRA and QLoRA fine-tuning with peft on transformers' Trainer."""

from __future__ import annotations

import functools
import gc
import inspect
import json
import math
import os
import time
from pathlib import Path
from typing import Any

from olivekube.api.passes.lora import DoRA, LoftQ, LoRA, QLoRA, TrainingArgs
from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.runner.data import build_datasets, preflight
from olivekube.runner.passes.base import RunnerPass
from olivekube.runner.torch_utils import dtype_for, load_config, load_kwargs, load_tokenizer, pick_device

TRAINING_LOG = "olivekube-training-log.json"


@functools.cache
def training_argument_names() -> frozenset[str]:
    """The parameters of the installed transformers' TrainingArguments."""
    from transformers import TrainingArguments

    return frozenset(inspect.signature(TrainingArguments.__init__).parameters) - {"self"}


def linear_module_names(model: Any) -> set[str]:
    import torch

    return {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


class LoRAPass(RunnerPass, pass_type="LoRA"):
    """Train a LoRA adapter; the output folder holds the adapter and the tokenizer."""

    accepts = ("hf",)
    produces = "adapter"
    options: LoRA

    def _skeleton(self, model: ModelArtifact) -> Any:
        """The model's modules without its weights (meta device): cheap, for checking names."""
        import torch
        from transformers import AutoModelForCausalLM

        config = load_config(model, self.ctx)
        with torch.device("meta"):
            return AutoModelForCausalLM.from_config(config)

    def preflight(self, model: ModelArtifact) -> None:
        preflight(self.ctx, self.options.train_data_config, self.options.eval_data_config)
        if self.options.target_modules:
            available = linear_module_names(self._skeleton(model))
            missing = [m for m in self.options.target_modules if m not in available]
            if missing:
                raise PassError(
                    f"{self.ctx.field}.target_modules",
                    f"{', '.join(missing)} not in the model's linear layers "
                    f"(available: {', '.join(sorted(available))})",
                )

    def _quantization(self) -> Any:
        return None

    def _load_model(self, model: ModelArtifact, device: str, dtype: Any) -> Any:
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(model.model_ref, dtype=dtype, **load_kwargs(model))
        return loaded.to(device)  # type: ignore[arg-type]

    def training_arguments(self, out: Path, device: str, has_eval: bool) -> Any:
        from transformers import TrainingArguments

        training_args = self.options.training_args
        given = training_args.trainer_options() if training_args else {}
        args: dict[str, Any] = {**TrainingArgs.defaults, **given}
        # Olive's option names from transformers 4 → transformers 5.
        if "warmup_ratio" in args:
            typed_warmup_steps = training_args is not None and training_args.warmup_steps is not None
            args["warmup_steps"] = args.pop("warmup_ratio") if not typed_warmup_steps else args["warmup_steps"]
            args.pop("warmup_ratio", None)
        if args.pop("group_by_length", False):
            args.setdefault("train_sampling_strategy", "group_by_length")
        known = training_argument_names()
        if "gradient_checkpointing" in args and "activation_checkpointing" in known:
            args["activation_checkpointing"] = args.pop("gradient_checkpointing")
        unknown = sorted(set(args) - known)
        if unknown:
            raise PassError(
                f"{self.ctx.field}.training_args",
                f"transformers.TrainingArguments has no {', '.join(unknown)}",
            )
        if not has_eval:
            args["eval_strategy"] = "no"
        elif "eval_strategy" not in args:
            args["eval_strategy"] = "steps" if "eval_steps" in args else "epoch"
        if args.get("load_best_model_at_end"):
            # Olive left save_strategy at transformers' default, which the trainer accepts only when it
            # matches eval_strategy; without eval data there is no best model to load.
            args["load_best_model_at_end"] = has_eval
            if has_eval and "save_strategy" not in args:
                args["save_strategy"] = args["eval_strategy"]
                if "eval_steps" in args:
                    args.setdefault("save_steps", args["eval_steps"])
        if device == "cpu" and (args.get("bf16") or args.get("fp16")):
            raise PassError(
                f"{self.ctx.field}.training_args",
                "bf16/fp16 mixed precision needs a GPU; this pass runs on the CPU: "
                "remove them or use a GPU system",
            )
        if args.get("fsdp"):
            check_fsdp(f"{self.ctx.field}.training_args.fsdp", device)
        args.setdefault("logging_steps", 10)
        args["logging_first_step"] = True
        # No checkpoints unless asked for; save_steps alone asks for them, as it does in transformers
        # (and so in Olive), whose default strategy is "steps".
        args.setdefault("save_strategy", "steps" if "save_steps" in args else "no")
        args.update(
            output_dir=str(out / ".checkpoints"),
            report_to=args.get("report_to") or [],
            use_cpu=device == "cpu",
            disable_tqdm=True,
            remove_unused_columns=False,
        )
        return TrainingArguments(**args)

    def _lora_config(self, **variant: Any) -> Any:
        """peft's LoraConfig from the pass options; `variant` adds what a LoRA variant sets."""
        from peft import LoraConfig

        options: dict[str, Any] = {
            "r": int(self.options.option("r")),
            "lora_alpha": self.options.option("alpha"),
            "lora_dropout": self.options.option("lora_dropout"),
            "target_modules": self.options.target_modules or "all-linear",
            "modules_to_save": self.options.modules_to_save,
            "task_type": "CAUSAL_LM",
        }
        return LoraConfig(**{**options, **variant})

    def _adapted_model(self, model: ModelArtifact, device: str, dtype: Any, out: Path) -> Any:
        """The model to train: the base with fresh adapters."""
        from peft import get_peft_model

        return get_peft_model(self._load_model(model, device, dtype), self._lora_config())

    def _metadata(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        return {"adapter_of": model.digest, "quantized_base": self._quantization() is not None}

    def run(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        import torch
        from transformers import PrinterCallback

        from olivekube.runner.checkpoints import CheckpointStore
        from olivekube.runner.fast_lora import use_fast_lora
        from olivekube.runner.training import CausalLMCollator, Checkpointing, PassTrainer

        ctx = self.ctx
        device = pick_device(ctx)
        tokenizer = load_tokenizer(model, ctx)
        training_args = self.options.training_args or TrainingArgs()
        seed = training_args.seed or TrainingArgs.defaults["seed"]
        data = build_datasets(
            ctx,
            tokenizer,
            self.options.train_data_config,
            self.options.eval_data_config,
            self.options.eval_dataset_size,
            seed,
        )
        ctx.progress(message=f"loading {model.model_ref}")
        torch.manual_seed(seed)
        peft_model = self._adapted_model(model, device, dtype_for(self.options.torch_dtype, device), out)
        peft_model.config.use_cache = False  # no KV cache while training: less work per step
        if device == "cpu":
            use_fast_lora(peft_model)
        args = self.training_arguments(out, device, data.eval is not None)
        store = CheckpointStore(ctx.checkpoint_root, args.save_total_limit or 2) if ctx.checkpoint_root else None
        # Each rank fetches its own copy (ranks of one pod share the workdir), and all must resume from
        # the same step or they would wait for each other's gradients forever.
        restored = store.restore(ctx.workdir / f"resume-rank-{os.environ.get('RANK', '0')}") if store else None
        agree_on_resume_step(ctx.field, restored.step if restored else None)
        history = LossHistory(ctx, resumed_from=restored.step if restored else None)
        checkpointing = Checkpointing(store, ctx)
        trainer = PassTrainer(
            model=peft_model,
            args=args,
            train_dataset=data.train,
            eval_dataset=data.eval,
            data_collator=CausalLMCollator(tokenizer.pad_token_id),
            processing_class=tokenizer,
            callbacks=[history.callback(), checkpointing.callback()],
        )
        trainer.remove_callback(PrinterCallback)  # progress goes through ctx, not print()
        result = self._train(trainer, checkpointing, restored)
        self.ctx.metrics.update(training_metrics(trainer, result, data, history))
        # Under FSDP each rank holds a shard of every parameter: gather the whole adapter (all ranks
        # take part) for rank 0 to save, as transformers' own Trainer.save_model does.
        state_dict = trainer.accelerator.get_state_dict(trainer.model) if trainer.is_fsdp_enabled else None
        if not trainer.is_world_process_zero():
            return {}  # a data-parallel worker: rank 0 writes the output
        peft_model.save_pretrained(str(out), state_dict=state_dict)
        tokenizer.save_pretrained(out)
        (out / TRAINING_LOG).write_text(json.dumps(trainer.state.log_history))  # the report's loss curves
        return self._metadata(model, out)

    def _train(self, trainer: Any, checkpointing: Any, restored: Any) -> Any:
        """Train, from the restored checkpoint if any; a SIGTERM stop fails the pass (it is retried)."""
        if restored:
            self.ctx.progress(message=f"resuming from the checkpoint of step {restored.step}")
        # Libraries, model and data are loaded and outlive training: keep the cyclic collector's
        # collections during training off their ~600k objects.
        gc.freeze()
        try:
            with checkpointing.stop_on_sigterm():
                result = trainer.train(resume_from_checkpoint=str(restored.folder) if restored else None)
        finally:
            gc.unfreeze()
        if checkpointing.stopped_at is not None:
            saved = "; its checkpoint is saved: the next attempt resumes from it" if checkpointing.store else ""
            raise PassError(self.ctx.field, f"stopped by SIGTERM at step {checkpointing.stopped_at}{saved}")
        return result


def agree_on_resume_step(field: str, step: int | None) -> None:
    """PassError when the data-parallel ranks restored different checkpoints (one could not fetch
    the newest): the attempt fails with that message and its retry tries again."""
    import torch

    if not torch.distributed.is_initialized():
        return
    steps: list[int | None] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(steps, step)
    if len(set(steps)) > 1:
        found = ", ".join(f"rank {rank}: {s if s is not None else 'none'}" for rank, s in enumerate(steps))
        raise PassError(field, f"the ranks found different checkpoints to resume from ({found})")


def check_fsdp(field: str, device: str) -> None:
    """FSDP (transformers' `fsdp` option) shards the model across the processes of a data-parallel run
    on GPUs. accelerate has no FSDP on the CPU, where transformers would quietly train unsharded, and
    one process has nothing to shard across: refuse both, naming what would make it work."""
    if device == "cpu":
        raise PassError(
            field,
            "FSDP shards the model across GPUs and this pass runs on the CPU (accelerate has no CPU FSDP); "
            "remove fsdp, or run the pass on a GPU system",
        )
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        raise PassError(
            field,
            "FSDP needs 2 or more processes and this pass runs 1: set numProcPerNode or numNodes in "
            "spec.kubernetes.training (or `olivekube run --nproc-per-node N`), or remove fsdp",
        )


class LossHistory:
    """The first and latest train and eval loss, and progress to the pass's context at each log."""

    def __init__(self, ctx: Any, resumed_from: int | None = None) -> None:
        self.ctx = ctx
        self.values: dict[str, float] = {}
        self.started = time.monotonic()
        self.resumed_from = resumed_from

    def callback(self) -> Any:
        from transformers import TrainerCallback

        history = self

        class Progress(TrainerCallback):
            def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                for logs in state.log_history:  # an earlier attempt's, when resumed from its checkpoint
                    history.remember(logs)

            def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
                history.record(state, logs or {})

        return Progress()

    def remember(self, logs: dict[str, Any]) -> None:
        for key in ("loss", "eval_loss"):
            if key in logs:
                self.values[key] = float(logs[key])
                self.values.setdefault(f"first_{key}", float(logs[key]))

    def record(self, state: Any, logs: dict[str, Any]) -> None:
        self.remember(logs)
        elapsed = time.monotonic() - self.started
        done = state.global_step - (self.resumed_from or 0)  # this attempt's steps
        rate = done / elapsed if elapsed > 0 and done > 0 else None
        self.ctx.progress(
            resumedFromStep=self.resumed_from,
            step=state.global_step,
            totalSteps=state.max_steps,
            epoch=round(state.epoch or 0.0, 4),
            loss=self.values.get("loss"),
            evalLoss=self.values.get("eval_loss"),
            learningRate=logs.get("learning_rate"),
            etaSeconds=round((state.max_steps - state.global_step) / rate, 1) if rate else None,
        )


def training_metrics(trainer: Any, result: Any, data: Any, history: LossHistory) -> dict[str, float]:
    """Train loss (overall, first and final), eval loss and perplexity, rows, steps and seconds."""
    metrics: dict[str, float] = {"train_loss": float(result.training_loss), "train_rows": data.train_rows}
    if history.values.get("loss") is not None:
        metrics["first_loss"] = history.values["first_loss"]
        metrics["final_loss"] = history.values["loss"]
    if data.eval is not None:
        # The trainer may have evaluated at the last step already; evaluate only when it has not.
        evals = [log for log in trainer.state.log_history if "eval_loss" in log]
        if evals and evals[-1].get("step") == trainer.state.global_step:
            eval_loss = float(evals[-1]["eval_loss"])
        else:
            eval_loss = float(trainer.evaluate()["eval_loss"])
        metrics["eval_loss"] = eval_loss
        metrics["eval_rows"] = data.eval_rows
        if eval_loss < 50:
            metrics["eval_perplexity"] = math.exp(eval_loss)
    metrics["train_seconds"] = round(time.monotonic() - history.started, 2)
    metrics["steps"] = trainer.state.global_step
    metrics["world_size"] = trainer.args.world_size
    if history.resumed_from is not None:
        metrics["resumed_from_step"] = history.resumed_from
    return metrics


class QLoRAPass(LoRAPass, pass_type="QLoRA"):
    """LoRA on a 4-bit (bitsandbytes) base; the adapter stays in full precision."""

    options: QLoRA

    def preflight(self, model: ModelArtifact) -> None:
        check_bitsandbytes(self.ctx)
        super().preflight(model)

    def _quantization(self) -> Any:
        from transformers import BitsAndBytesConfig

        compute = self.options.compute_dtype or self.options.torch_dtype or "float32"
        return BitsAndBytesConfig(
            load_in_4bit=True,
            # LoftQ has neither option: its base is chosen for plain nf4.
            bnb_4bit_quant_type=getattr(self.options, "quant_type", None) or "nf4",
            bnb_4bit_use_double_quant=bool(getattr(self.options, "double_quant", False)),
            bnb_4bit_compute_dtype=dtype_for(compute, pick_device(self.ctx)),
        )

    def _load_model(self, model: ModelArtifact, device: str, dtype: Any) -> Any:
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(
            model.model_ref,
            dtype=dtype,
            quantization_config=self._quantization(),
            device_map=device,
            **load_kwargs(model),
        )
        from bitsandbytes.nn.modules import Linear4bit

        self.ctx.metrics["quantized_linear_layers"] = sum(isinstance(m, Linear4bit) for m in base.modules())
        return prepare_model_for_kbit_training(base, use_gradient_checkpointing=False)


def check_bitsandbytes(ctx: Any) -> None:
    """QLoRA needs bitsandbytes' 4-bit kernels on the pass's device: check before loading the model."""
    field = f"{ctx.field}.type"
    try:
        import bitsandbytes.functional as bnbf
        import torch
    except ImportError as exc:
        raise PassError(field, f"QLoRA needs bitsandbytes, which is not installed here ({exc}); use LoRA") from exc
    device = pick_device(ctx)
    try:
        # A fixed draw, and a bound that nf4 always meets (half its widest step, 0.16 of a block's
        # absmax): a random one failed now and then on a correct build.
        weights = torch.randn(64, 64, generator=torch.Generator().manual_seed(0)).to(device)
        packed, state = bnbf.quantize_4bit(weights, quant_type="nf4")
        restored = bnbf.dequantize_4bit(packed, state, quant_type="nf4")
        if (weights - restored).abs().max() > 0.2 * weights.abs().max():
            raise RuntimeError("4-bit round trip is wrong")
    except Exception as exc:
        raise PassError(
            field,
            f"QLoRA needs bitsandbytes 4-bit kernels on {device}, which do not work here ({exc}); "
            "use LoRA, or run this pass on a GPU system",
        ) from exc


class DoRAPass(LoRAPass, pass_type="DoRA"):
    """DoRA: peft's LoRA with the weight decomposed into magnitude and direction (use_dora)."""

    options: DoRA

    def _adapted_model(self, model: ModelArtifact, device: str, dtype: Any, out: Path) -> Any:
        from peft import get_peft_model

        return get_peft_model(self._load_model(model, device, dtype), self._lora_config(use_dora=True))


LOFTQ_BASE = "loftq_base"
"""The folder, inside a LoftQ pass's output, that holds the new base weights its adapter goes with."""


class LoftQPass(QLoRAPass, pass_type="LoftQ"):
    """LoftQ as Olive runs it: LoftQ initialisation on the full-precision model (base = nf4-representable
    weights, adapter = the best low-rank correction; runner/loftq.py), the new base saved, then
    training on that base loaded in 4 bits (bitsandbytes nf4) from the initialised adapter."""

    options: LoftQ  # type: ignore[assignment]

    def _adapted_model(self, model: ModelArtifact, device: str, dtype: Any, out: Path) -> Any:
        import torch
        from peft import PeftModel, get_peft_model
        from transformers import AutoModelForCausalLM

        from olivekube.runner.loftq import apply_loftq

        self.ctx.progress(message="LoftQ initialisation")
        full = AutoModelForCausalLM.from_pretrained(model.model_ref, dtype=torch.float32, **load_kwargs(model))
        targets = self.options.target_modules or sorted(linear_module_names(full) - {"lm_head"})
        initialised = get_peft_model(full.to(device), self._lora_config(target_modules=targets))  # type: ignore[arg-type]
        self.ctx.metrics["loftq_layers"] = apply_loftq(initialised, int(self.options.option("loftq_iter")))
        # Data-parallel ranks on one pod share `out` and the workdir: each writes its own copies (the
        # same bytes, computed from the same seed) and loads them back; rank 0's base is the output's.
        rank = int(os.environ.get("RANK", "0"))
        init_adapter = self.ctx.workdir / f"loftq-init-adapter-rank-{rank}"
        initialised.save_pretrained(str(init_adapter))
        new_base = out / LOFTQ_BASE if rank == 0 else self.ctx.workdir / f"loftq-base-rank-{rank}"
        unloaded: Any = initialised.unload()
        unloaded.to("cpu").save_pretrained(str(new_base))
        load_tokenizer(model, self.ctx).save_pretrained(new_base)
        del initialised, full
        gc.collect()
        base_artifact = ModelArtifact("hf", model.digest, path=new_base, metadata=model.metadata)
        quantized = self._load_model(base_artifact, device, dtype)
        return PeftModel.from_pretrained(quantized, str(init_adapter), is_trainable=True)

    def _metadata(self, model: ModelArtifact, out: Path) -> dict[str, Any]:
        from olivekube.storage.manifest import build_manifest

        return {
            **super()._metadata(model, out),
            "base_folder": LOFTQ_BASE,
            "base_folder_digest": build_manifest(out / LOFTQ_BASE).digest,
        }
