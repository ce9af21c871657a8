"""Olive's evaluators: metrics with sub-types, priorities and goals, with Olive's own keys."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from olivekube.api.common import MAX_LIST, MAX_NAME_LEN, ApiModel

MetricType = Literal["accuracy", "latency", "throughput", "size_on_disk"]
GoalType = Literal[
    "threshold", "max-degradation", "min-improvement", "percent-max-degradation", "percent-min-improvement"
]
STATISTICS = ("avg", "max", "min", "p50", "p75", "p90", "p95", "p99", "p999")
SUB_TYPES: dict[str, tuple[str, ...]] = {
    "accuracy": ("accuracy_score", "f1_score", "perplexity"),
    "latency": STATISTICS,
    "throughput": (*STATISTICS, "time_to_first_token", "time_per_token"),
    "size_on_disk": ("bytes",),
}
"""Each metric type's sub-types (Olive's names; throughput adds the generation's time to first token
and time per token, in ms)."""
LOWER_IS_BETTER = {"perplexity", "time_to_first_token", "time_per_token", "bytes"}
"""Sub-types whose default `higher_is_better` is false, besides every latency."""
NEEDS_DATA = {"accuracy"}
PERCENT_RANGES = {
    ("percent-min-improvement", True): (0, float("inf")),
    ("percent-min-improvement", False): (0, 100),
    ("percent-max-degradation", True): (0, 100),
    ("percent-max-degradation", False): (0, float("inf")),
}
"""Olive's bounds on percent goals, by goal type and higher_is_better."""


def higher_is_better_default(metric_type: str, sub_type: str) -> bool:
    return metric_type != "latency" and sub_type not in LOWER_IS_BETTER


class MetricGoal(ApiModel):
    """What a metric must reach; degradation and improvement goals compare with the input model."""

    type: GoalType = Field(
        description=(
            "threshold (the value itself), max-degradation / min-improvement (against the input model's "
            "value), or their percent- forms."
        )
    )
    value: float = Field(description="The bound: a value, a difference, or a percentage.")


class SubMetric(ApiModel):
    """One number a metric reports."""

    name: str = Field(min_length=1, max_length=64, description="Sub-type, e.g. accuracy_score, p90, avg, bytes.")
    priority: int | None = Field(None, ge=-1, le=64, description="Rank among the metrics (-1: reported only).")
    higher_is_better: bool | None = Field(
        None, description="Whether a larger value is better. Default: by sub-type (latency: false)."
    )
    goal: MetricGoal | None = Field(None, description="What the value must reach, or the workflow fails.")


class MetricUserConfig(ApiModel):
    """How a metric is measured."""

    warmup_num: int | None = Field(None, ge=0, le=1000, description="Untimed runs first (latency, throughput).")
    repeat_test_num: int | None = Field(None, ge=1, le=10000, description="Timed runs (latency, throughput).")
    sleep_num: float | None = Field(None, ge=0, le=60, description="Seconds between timed runs.")
    max_new_tokens: int | None = Field(
        None, ge=1, le=4096, description="Tokens generated per prompt (accuracy: the answer; throughput: timing)."
    )
    max_samples: int | None = Field(None, ge=1, le=100000, description="Evaluate at most this many rows.")


class Metric(ApiModel):
    """An Olive metric. Accuracy of a causal LM: the model's greedy continuation of each row's prompt
    (the data config's text_template up to its last field) against that last field (the label);
    perplexity: over each row's whole text. No user script."""

    _unsupported_keys: ClassVar[dict[str, str]] = {
        "user_script": "the runner image cannot run your Python code; use the built-in metric types",
        "script_dir": "the runner image cannot run your Python code; use the built-in metric types",
    }

    name: str = Field(min_length=1, max_length=MAX_NAME_LEN, description="Metric name.")
    type: MetricType = Field(description="accuracy, latency, throughput or size_on_disk.")
    sub_types: list[SubMetric] = Field(min_length=1, max_length=16, description="The numbers to report.")
    data_config: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        description="Name of the spec.data_configs entry (accuracy; prompts for timing).",
    )
    user_config: MetricUserConfig | None = Field(None, description="How to measure.")
    backend: Literal["torch_metrics", "huggingface_metrics"] | None = Field(
        None, description="Olive's metric backend; olivekube computes the same scores itself."
    )

    @model_validator(mode="after")
    def _sub_types_fit(self) -> Metric:
        problems: list[tuple[str, str]] = []
        allowed = SUB_TYPES[self.type]
        for i, sub in enumerate(self.sub_types):
            if sub.name not in allowed:
                problems.append(
                    (
                        f"sub_types.{i}.name",
                        f"{sub.name!r} is not a {self.type} sub-type; allowed: {', '.join(allowed)}",
                    )
                )
                continue
            goal = sub.goal
            if goal is not None and goal.type.startswith("percent-"):
                better = self.higher_is_better(sub)
                low, high = PERCENT_RANGES[(goal.type, better)]
                if not low < goal.value < high:
                    problems.append(
                        (
                            f"sub_types.{i}.goal.value",
                            f"{goal.value} is outside ({low}, {high}) for {goal.type} "
                            f"with higher_is_better={str(better).lower()}",
                        )
                    )
        if self.type in NEEDS_DATA and not self.data_config:
            problems.append(("data_config", f"an {self.type} metric needs a data config to score"))
        if problems:
            raise PydanticCustomError(
                "field_problems", "; ".join(f"{p}: {m}" for p, m in problems), {"problems": problems}
            )
        return self

    def higher_is_better(self, sub: SubMetric) -> bool:
        if sub.higher_is_better is not None:
            return sub.higher_is_better
        return higher_is_better_default(self.type, sub.name)

    def user_option(self, name: str, default: Any) -> Any:
        value = getattr(self.user_config, name) if self.user_config is not None else None
        return default if value is None else value


class Evaluator(ApiModel):
    """A named set of metrics."""

    metrics: list[Metric] = Field(min_length=1, max_length=MAX_LIST, description="Metrics, each with sub-types.")

    @model_validator(mode="after")
    def _unique_names(self) -> Evaluator:
        names = [m.name for m in self.metrics]
        for name in names:
            if names.count(name) > 1:
                raise ValueError(f"metric name {name!r} is used twice")
        return self
