"""Olive's metrics on a model, and its goals.

A PyTorch model (a Hugging Face folder or hub id, or an adapter on its base) runs with transformers,
an ONNX model with onnxruntime-genai on the target's execution provider; both tokenize with the
model's own Hugging Face tokenizer, so that the two are scored on the same tokens.

- accuracy: each row's prompt is the data config's text_template up to its last field, the label is
  that field's value; the prediction is the model's greedy continuation up to its first line break.
  accuracy_score is the share of exact matches, f1_score the macro F1 over the labels seen.
  perplexity is exp of the mean next-token loss over each row's whole text.
- latency: milliseconds of one forward pass over a prompt (prefill), warm-up runs first.
- throughput: tokens per second of a greedy generation of max_new_tokens; time_to_first_token and
  time_per_token in milliseconds.
- size_on_disk: bytes of the model's files.
"""

from __future__ import annotations

import math
import re
import string
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from olivekube.api.evaluation import Evaluator, Metric, MetricGoal, SubMetric
from olivekube.api.workflow import WorkflowSpec
from olivekube.core.artifact import ModelArtifact
from olivekube.core.errors import PassError
from olivekube.runner.context import PassContext

TIMING_PROMPT = "The quick brown fox jumps over the lazy dog"
DEFAULT_WARMUP, DEFAULT_REPEAT, DEFAULT_NEW_TOKENS = 10, 20, 16


@dataclass
class MetricValue:
    """One sub-metric of one model, with its goal and, once compared, whether it was met."""

    metric: str
    sub_type: str
    value: float
    higher_is_better: bool
    priority: int = -1
    goal: dict[str, Any] | None = None
    baseline: float | None = None
    met: bool | None = None

    @property
    def key(self) -> str:
        return f"{self.metric}-{self.sub_type}"

    def to_json(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class GoalNotMet(PassError):
    """A model missed a metric goal: the workflow fails and nothing is published."""


def goal_met(goal: MetricGoal, value: float, baseline: float | None, higher_is_better: bool) -> bool:
    """Olive's goal types: a threshold on the value, or a bound on the change from the input model."""
    sign = 1.0 if higher_is_better else -1.0
    if goal.type == "threshold":
        return sign * value >= sign * goal.value
    assert baseline is not None
    change = sign * (value - baseline)  # > 0: better than the input model
    if goal.type.startswith("percent-"):
        change = change / abs(baseline) * 100 if baseline else (math.inf if change > 0 else -math.inf)
    if goal.type.endswith("max-degradation"):
        return -change <= goal.value
    return change >= goal.value


def describe_goal(value: MetricValue) -> str:
    goal = value.goal or {}
    base = f" (input model: {value.baseline:.4g})" if value.baseline is not None else ""
    return f"{value.key} = {value.value:.4g}, goal {goal.get('type')} {goal.get('value')}{base}"


# -- models -----------------------------------------------------------------------------------


class _Scored:
    """What a metric needs of a model: greedy generation with per-token times, and next-token loss."""

    tokenizer: Any
    eos: set[int]

    def encode(self, text: str, bos: bool = True, eos: bool = False) -> list[int]:
        """Tokens as training made them (runner/data.py, Olive's pre-processing): "{bos} {text}",
        and " {eos}" after a whole text, encoded without the tokenizer's own special tokens."""
        first = (self.tokenizer.bos_token or "") if bos else ""
        if eos:
            text = f"{first} {text} {self.tokenizer.eos_token or ''}".strip()
        elif first:
            text = f"{first} {text}"
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    def generate(
        self, tokens: list[int], new_tokens: int, stop_at_eos: bool = True
    ) -> tuple[list[int], list[float]]:
        """Greedy new tokens (up to EOS, or exactly `new_tokens`), and the seconds each took."""
        out: list[int] = []
        times: list[float] = []
        started = time.perf_counter()
        for token in self._greedy(tokens, new_tokens, stop_at_eos):
            now = time.perf_counter()
            times.append(now - started)
            started = now
            if stop_at_eos and token in self.eos:
                break
            out.append(token)
        return out, times

    def _greedy(self, tokens: list[int], new_tokens: int, stop_at_eos: bool) -> Iterator[int]:
        """Each next greedy token, computed when asked for (EOS included: `generate` stops at it)."""
        raise NotImplementedError

    def loss(self, tokens: list[int]) -> float:
        """Summed negative log-likelihood of tokens[1:] given what precedes each."""
        raise NotImplementedError

    def forward(self, tokens: list[int]) -> None:
        raise NotImplementedError


class _TorchModel(_Scored):
    def __init__(self, model: ModelArtifact, ctx: PassContext) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        from olivekube.runner.torch_utils import load_kwargs, load_tokenizer

        base = model.base if model.kind == "adapter" and model.base is not None else model
        loaded: Any = AutoModelForCausalLM.from_pretrained(
            base.model_ref, dtype=torch.float32, **load_kwargs(base)
        )
        if model.kind == "adapter":
            from peft import PeftModel

            loaded = PeftModel.from_pretrained(loaded, model.model_ref)
        self.model = loaded.eval()
        self.tokenizer = load_tokenizer(model if model.kind != "adapter" else base, ctx)
        self.eos = _eos_ids(self.model.generation_config.eos_token_id)

    def _greedy(self, tokens: list[int], new_tokens: int, stop_at_eos: bool) -> Iterator[int]:
        import torch

        past = None
        ids = torch.tensor([tokens])
        for _ in range(new_tokens):
            with torch.no_grad():
                result = self.model(ids, past_key_values=past, use_cache=True)
            past = result.past_key_values
            token = int(result.logits[0, -1].argmax())
            yield token
            ids = torch.tensor([[token]])

    def loss(self, tokens: list[int]) -> float:
        import torch

        with torch.no_grad():
            logits = self.model(torch.tensor([tokens])).logits[0, :-1].float()
        logp = torch.log_softmax(logits, dim=-1)
        return float(-logp[torch.arange(len(tokens) - 1), torch.tensor(tokens[1:])].sum())

    def forward(self, tokens: list[int]) -> None:
        import torch

        with torch.no_grad():
            self.model(torch.tensor([tokens]))


class _GenaiModel(_Scored):
    def __init__(self, model: ModelArtifact, adapter: str | None = None) -> None:
        import onnxruntime_genai as og
        from transformers import AutoTokenizer, GenerationConfig

        assert model.path is not None
        self.og = og
        self.model = og.Model(genai_config(og, Path(model.path)))
        self.tokenizer = AutoTokenizer.from_pretrained(str(model.path))
        try:
            self.eos = _eos_ids(GenerationConfig.from_pretrained(str(model.path)).eos_token_id)
        except OSError:
            self.eos = _eos_ids(self.tokenizer.eos_token_id)
        self.adapter = adapter
        self.path = Path(model.path)
        self._adapters: Any = None

    def _generator(self, max_length: int, min_length: int = 0) -> Any:
        params = self.og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, min_length=min_length, do_sample=False)
        generator = self.og.Generator(self.model, params)
        if self.adapter is not None:
            if self._adapters is None:
                self._adapters = self.og.Adapters(self.model)
                self._adapters.load(str(self.path / "adapters" / f"{self.adapter}.onnx_adapter"), self.adapter)
            generator.set_active_adapter(self._adapters, self.adapter)
        return generator

    def _greedy(self, tokens: list[int], new_tokens: int, stop_at_eos: bool) -> Iterator[int]:
        length = len(tokens) + new_tokens
        generator = self._generator(length, 0 if stop_at_eos else length)
        generator.append_tokens(tokens)
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def loss(self, tokens: list[int]) -> float:
        generator = self._generator(len(tokens) + 1)
        generator.append_tokens(tokens)
        logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0]  # (len, vocab)
        logits = logits[: len(tokens) - 1]
        top = logits.max(axis=-1, keepdims=True)
        logz = top[:, 0] + np.log(np.exp(logits - top).sum(axis=-1))
        return float((logz - logits[np.arange(len(tokens) - 1), tokens[1:]]).sum())

    def forward(self, tokens: list[int]) -> None:
        generator = self._generator(len(tokens) + 1)
        generator.append_tokens(tokens)


def genai_config(og: Any, folder: Path) -> Any:
    """The model's onnxruntime-genai config with its thread pool sized to the CPUs this process may use
    (its affinity and cgroup quota, as for torch): onnxruntime's default is one thread per core of
    the node, which oversubscribes a pod with a CPU limit on a large node."""
    import json

    from olivekube.runner.cpus import thread_count

    config = og.Config(str(folder))
    options = {"intra_op_num_threads": thread_count(), "inter_op_num_threads": 1}
    config.overlay(json.dumps({"model": {"decoder": {"session_options": options}}}))
    return config


def _eos_ids(value: Any) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, list | tuple) else {int(value)}


def open_model(model: ModelArtifact, ctx: PassContext) -> _Scored:
    if model.kind == "onnx":  # after ExtractAdapters: with the adapter the workflow built
        return _GenaiModel(model, model.metadata.get("built_adapter_name"))
    return _TorchModel(model, ctx)


# -- data -------------------------------------------------------------------------------------


@dataclass
class LabelledRows:
    special_tokens: bool = True  # the data config's add_special_tokens (BOS before, EOS after a text)
    prompts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)


def labelled_rows(spec: WorkflowSpec, metric: Metric, ctx: PassContext, field_path: str) -> LabelledRows:
    """Prompts and labels (the text_template's last field) and whole texts of the metric's data."""
    from olivekube.runner.data import load_rows, row_text

    configs = {c.name: c for c in spec.data_configs or []}
    config = configs[str(metric.data_config)]
    pre = config.pre_process_data_config
    template = pre.text_template if pre is not None else None
    cols = pre.text_cols if pre is not None else None
    rows = load_rows(config, f"{field_path}.data_config", ctx)
    limit = metric.user_option("max_samples", None)
    out = LabelledRows(special_tokens=pre is None or pre.add_special_tokens is not False)
    label_field, prompt_template = _split_template(template, cols, f"{field_path}.data_config")
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        out.texts.append(row_text(config, row))
        if prompt_template is not None:
            out.prompts.append(prompt_template.format(**row))
        else:
            out.prompts.append(" ".join(str(row[c]) for c in (cols or [])[:-1]) + " ")
        out.labels.append(str(row[label_field]).strip())
    return out


def _split_template(template: str | None, cols: list[str] | None, field_path: str) -> tuple[str, str | None]:
    """(label field, prompt template): the template's last field is the label."""
    if template:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f]
        match = re.search(r"\{(\w+)\}\s*$", template)
        if match is None or not fields:
            raise PassError(
                field_path,
                "an accuracy metric scores the text_template's last field, which must end the template "
                "(e.g. '### Text: {phrase}\\n### The tone is:\\n{tone}')",
            )
        return match.group(1), template[: match.start()]
    if cols and len(cols) >= 2:
        return cols[-1], None
    raise PassError(
        field_path, "an accuracy metric needs a text_template ending with the label field, or text_cols"
    )


# -- metrics ----------------------------------------------------------------------------------


def _stat(values: list[float], name: str) -> float:
    if name == "avg":
        return float(np.mean(values))
    if name == "max":
        return float(np.max(values))
    if name == "min":
        return float(np.min(values))
    return float(np.percentile(values, float(name[1:]) / (10 if name == "p999" else 1)))


def _macro_f1(predictions: list[str], labels: list[str]) -> float:
    scores = []
    for label in sorted(set(labels)):
        tp = sum(p == label and t == label for p, t in zip(predictions, labels, strict=True))
        fp = sum(p == label and t != label for p, t in zip(predictions, labels, strict=True))
        fn = sum(p != label and t == label for p, t in zip(predictions, labels, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(scores)) if scores else 0.0


class MetricRunner:
    """Measures the metrics of one evaluator on one model."""

    def __init__(self, spec: WorkflowSpec, ctx: PassContext, field_path: str) -> None:
        self.spec = spec
        self.ctx = ctx
        self.field_path = field_path

    def run(self, evaluator: Evaluator, model: ModelArtifact) -> list[MetricValue]:
        scored = None
        values: list[MetricValue] = []
        for i, metric in enumerate(evaluator.metrics):
            path = f"{self.field_path}.metrics.{i}"
            if metric.type == "size_on_disk":
                raw = {"bytes": float(_size(model, path))}
            else:
                scored = scored or open_model(model, self.ctx)
                raw = self._measure(metric, scored, path)
            values += [_value(metric, sub, raw[sub.name]) for sub in metric.sub_types]
        return values

    def _measure(self, metric: Metric, model: _Scored, path: str) -> dict[str, float]:
        names = {s.name for s in metric.sub_types}
        if metric.type == "accuracy":
            return self._accuracy(metric, model, names, path)
        prompt = self._timing_prompt(metric, model, path)
        warmup = int(metric.user_option("warmup_num", DEFAULT_WARMUP))
        repeat = int(metric.user_option("repeat_test_num", DEFAULT_REPEAT))
        pause = float(metric.user_option("sleep_num", 0))
        if metric.type == "latency":
            times = _timed(lambda: model.forward(prompt), warmup, repeat, pause)
            return {n: _stat([t * 1000 for t in times], n) for n in names}
        new_tokens = int(metric.user_option("max_new_tokens", DEFAULT_NEW_TOKENS))
        runs: list[list[float]] = []
        _timed(
            lambda: runs.append(model.generate(prompt, new_tokens, stop_at_eos=False)[1]), warmup, repeat, pause
        )
        runs = [r for r in runs[warmup:] if r]
        rates = [len(r) / sum(r) for r in runs]
        out = {n: _stat(rates, n) for n in names if n not in ("time_to_first_token", "time_per_token")}
        out["time_to_first_token"] = float(np.mean([r[0] for r in runs]) * 1000)
        later = [t for r in runs for t in r[1:]]
        out["time_per_token"] = float(np.mean(later) * 1000) if later else out["time_to_first_token"]
        return out

    def _timing_prompt(self, metric: Metric, model: _Scored, path: str) -> list[int]:
        if metric.data_config:
            rows = labelled_rows(self.spec, metric, self.ctx, path)
            if rows.prompts:
                return model.encode(rows.prompts[0], bos=rows.special_tokens)
        return model.encode(TIMING_PROMPT)

    def _accuracy(self, metric: Metric, model: _Scored, names: set[str], path: str) -> dict[str, float]:
        rows = labelled_rows(self.spec, metric, self.ctx, path)
        if not rows.texts:
            raise PassError(f"{path}.data_config", "the data config has no rows to score")
        out: dict[str, float] = {}
        if names & {"accuracy_score", "f1_score"}:
            longest = max(len(model.encode(label, bos=False)) for label in rows.labels)
            new_tokens = int(metric.user_option("max_new_tokens", longest + 2))
            predictions = []
            for prompt in rows.prompts:
                tokens, _ = model.generate(model.encode(prompt, bos=rows.special_tokens), new_tokens)
                text = model.tokenizer.decode(tokens, skip_special_tokens=True)
                predictions.append(text.strip().split("\n")[0].strip())
            pairs = list(zip(predictions, rows.labels, strict=True))
            out["accuracy_score"] = sum(p == t for p, t in pairs) / len(pairs)
            out["f1_score"] = _macro_f1(predictions, rows.labels)
        if "perplexity" in names:
            total, count = 0.0, 0
            for text in rows.texts:
                tokens = model.encode(text, bos=rows.special_tokens, eos=rows.special_tokens)
                if len(tokens) > 1:
                    total += model.loss(tokens)
                    count += len(tokens) - 1
            out["perplexity"] = math.exp(total / count) if count else math.inf
        return out


def _timed(action: Callable[[], Any], warmup: int, repeat: int, pause: float) -> list[float]:
    times = []
    for i in range(warmup + repeat):
        started = time.perf_counter()
        action()
        if i >= warmup:
            times.append(time.perf_counter() - started)
            if pause:
                time.sleep(pause)
    return times


def _size(model: ModelArtifact, path: str) -> int:
    if model.path is None:
        raise PassError(path, f"size_on_disk needs the model's files; {model.model_ref} is a hub id")
    return sum(f.stat().st_size for f in Path(model.path).rglob("*") if f.is_file())


def _value(metric: Metric, sub: SubMetric, value: float) -> MetricValue:
    return MetricValue(
        metric=metric.name,
        sub_type=sub.name,
        value=float(value),
        higher_is_better=metric.higher_is_better(sub),
        priority=sub.priority if sub.priority is not None else -1,
        goal=sub.goal.dump() if sub.goal is not None else None,
    )


def compare(values: list[MetricValue], baseline: list[MetricValue] | None) -> list[MetricValue]:
    """Set each value's baseline (the input model's) and whether its goal is met."""
    before = {v.key: v.value for v in baseline or []}
    for value in values:
        value.baseline = before.get(value.key)
        if value.goal is not None:
            goal = MetricGoal.model_validate(value.goal)
            if goal.type != "threshold" and value.baseline is None:
                value.met = False
            else:
                value.met = goal_met(goal, value.value, value.baseline, value.higher_is_better)
    return values
