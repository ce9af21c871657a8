"""The OptimizationWorkflow resource: `spec` mirrors Olive's run config with Olive's own keys."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, JsonValue, field_validator, model_validator
from pydantic_core import PydanticCustomError

from olivekube.api import unsupported
from olivekube.api.common import (
    API_VERSION,
    KIND,
    MAX_DATA_CONFIGS,
    MAX_NAME_LEN,
    MAX_PASSES,
    MAX_STRING,
    MAX_SYSTEMS,
    NAME_PATTERN,
    ApiModel,
    OpenModel,
)
from olivekube.api.data import DataConfig
from olivekube.api.evaluation import Evaluator
from olivekube.api.kubernetes import KubernetesSettings
from olivekube.api.model import InputModel
from olivekube.api.passes import PASS_TYPES, PassBase, on_new_pass_type, pass_config_type
from olivekube.api.status import WorkflowStatus
from olivekube.api.systems import AzureMLClient, AzureMLSystem, System
from olivekube.core.keys import chain_key
from olivekube.search.config import search_of
from olivekube.search.space import SearchSpace
from olivekube.search.strategy import Strategy

if TYPE_CHECKING:
    PassConfig = PassBase
else:
    PassConfig = pass_config_type()

TRAINING_TYPES_CEL = "['LoRA', 'QLoRA', 'DoRA', 'LoftQ']"
CEL_RULES: list[JsonValue] = [
    {
        "rule": "!has(self.host) || (has(self.systems) && self.host in self.systems)",
        "message": "host must name an entry of spec.systems",
        "fieldPath": ".host",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.target) || (has(self.systems) && self.target in self.systems)",
        "message": "target must name an entry of spec.systems",
        "fieldPath": ".target",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.passes.all(p, !has(self.passes[p].host) || "
        "(has(self.systems) && self.passes[p].host in self.systems))",
        "message": "a pass's host must name an entry of spec.systems",
        "fieldPath": ".passes",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.passes.all(p, !has(self.passes[p].train_data_config) || (has(self.data_configs) && "
        "self.data_configs.exists(d, d.name == self.passes[p].train_data_config)))",
        "message": "a pass's train_data_config must name an entry of spec.data_configs",
        "fieldPath": ".passes",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.passes.all(p, !has(self.passes[p].eval_data_config) || (has(self.data_configs) && "
        "self.data_configs.exists(d, d.name == self.passes[p].eval_data_config)))",
        "message": "a pass's eval_data_config must name an entry of spec.data_configs",
        "fieldPath": ".passes",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "!has(self.kubernetes) || !has(self.kubernetes.training) || "
        "!has(self.kubernetes.training.passes) || self.kubernetes.training.passes.all(p, p in self.passes && "
        "self.passes[p].type in " + TRAINING_TYPES_CEL + ")",
        "message": "kubernetes.training.passes must name training passes (LoRA, QLoRA, DoRA, LoftQ)",
        "fieldPath": ".kubernetes.training.passes",
        "reason": "FieldValueInvalid",
    },
    {
        "rule": "self.passes.all(p, p.matches('" + NAME_PATTERN + "'))",
        "message": "pass names must be 1-63 letters, digits, '_', '-' or '.', starting and ending alphanumeric",
        "fieldPath": ".passes",
        "reason": "FieldValueInvalid",
    },
]


class WorkflowSpec(ApiModel):
    """An Olive run config (current form) plus Kubernetes settings."""

    model_config = ConfigDict(
        **ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": list(CEL_RULES)}
    )
    _renamed_keys = {
        "engine": "the engine options (host, target, cache_dir, ...) directly under spec",
        "pass_flows": "the passes in order under passes (Olive 0.8 removed pass_flows)",
        "execution_providers": "systems.<target>.accelerators[].execution_providers",
    }
    _unsupported_keys = {
        "auto_optimizer_config": unsupported.AUTO_OPTIMIZER,
        "packaging_config": unsupported.PACKAGING,
        "workflow_host": unsupported.WORKFLOW_HOST,
        "model_script": unsupported.USER_CODE,
        "components": unsupported.COMPONENTS,
    }

    workflow_id: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        pattern=NAME_PATTERN,
        description="Olive workflow id (cache folder name).",
    )
    azureml_client: AzureMLClient | None = Field(
        None, description="Default Azure ML workspace for AzureML systems and azureml:// URIs."
    )
    input_model: InputModel = Field(description="The model to optimize.")
    systems: dict[str, System] | None = Field(
        None,
        max_length=MAX_SYSTEMS,
        description="Named systems that host and target refer to. Default: the Kubernetes system.",
    )
    data_configs: list[DataConfig] | None = Field(
        None,
        max_length=MAX_DATA_CONFIGS,
        description="Named data configs that passes refer to.",
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    passes: dict[str, PassConfig] = Field(
        min_length=1,
        max_length=MAX_PASSES,
        description=(
            "Passes by name, at most one of each stage, run in stage order: a training pass "
            "(LoRA, QLoRA, DoRA, LoftQ), then MergeAdapterWeights, then ModelBuilder."
        ),
    )
    host: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        description="System that runs the passes. Default: the Kubernetes system.",
    )
    target: str | None = Field(
        None, max_length=MAX_NAME_LEN, description="System the model is built for. Default: host."
    )
    cache_dir: str | None = Field(
        None,
        max_length=MAX_STRING,
        description="Pass cache URI (s3://, pvc://, file://). Default: .olivekube-cache",
    )
    output_dir: str | None = Field(
        None, max_length=MAX_STRING, description="Where the final model is published (URI). Default: outputs"
    )
    log_severity_level: int | None = Field(
        None, ge=0, le=4, description="Log level: 0 debug, 1 info, 2 warning, 3 error, 4 critical."
    )
    ort_log_severity_level: int | None = Field(None, ge=0, le=4, description="onnxruntime log level.")
    search_strategy: bool | dict[str, JsonValue] | None = Field(
        None,
        description=(
            "Olive's search_strategy: true (a sequential joint search), false (none), or execution_order "
            "(joint), sampler (sequential | random), sampler_config {seed, max_samples}, max_iter, max_time "
            "(seconds), stop_when_goals_met, and olivekube's max_failed_trials; Olive's pre-0.8 "
            "search_algorithm and search_algorithm_config too. Each trial is a workflow of its own."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    search_space: dict[str, dict[str, JsonValue]] | None = Field(
        None,
        max_length=MAX_PASSES,
        description=(
            "The options searched, by pass name and option: an Olive search parameter ({type: "
            "Categorical, support: [4, 8]}, Boolean, Conditional; olive_parameter_type may be left out) "
            "or SEARCHABLE_VALUES (Olive's default space of that option). olivekube convert moves an Olive "
            "config's searchable options here."
        ),
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    evaluators: dict[str, Evaluator] | None = Field(
        None, max_length=MAX_PASSES, description="Named evaluators (Olive's): metrics with sub-types and goals."
    )
    evaluator: str | None = Field(
        None,
        max_length=MAX_NAME_LEN,
        description=(
            "Evaluator (in evaluators) run on the input and the final model. A goal the final model misses "
            "fails the workflow (GoalNotMet) and nothing is published to output_dir."
        ),
    )
    evaluate_input_model: bool | None = Field(
        None,
        description=(
            "Evaluate the input model too (default true when there is an evaluator); degradation and "
            "improvement goals need it."
        ),
    )
    clean_cache: bool | None = Field(None, description="Ignore cached pass outputs and run every pass.")
    kubernetes: KubernetesSettings | None = Field(None, description="Settings of the Jobs that run the passes.")
    suspend: bool | None = Field(None, description="Pause after the running pass; false resumes.")

    @field_validator("data_configs")
    @classmethod
    def _unique_data_config_names(cls, v: list[DataConfig] | None) -> list[DataConfig] | None:
        names = [d.name for d in v or []]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"data config names must be unique; repeated: {', '.join(dupes)}")
        return v

    @field_validator("passes")
    @classmethod
    def _pass_names(cls, v: dict[str, Any]) -> dict[str, Any]:
        for name in v:
            if not re.match(NAME_PATTERN, name):
                raise ValueError(
                    f"pass name {name!r} must be 1-63 letters, digits, '_', '-' or '.', "
                    "starting and ending alphanumeric"
                )
        return v

    @model_validator(mode="after")
    def _references(self) -> WorkflowSpec:
        problems = self._reference_problems() or self._chain_problems() or self._search_problems()
        if problems:
            raise PydanticCustomError(
                "field_problems",
                "; ".join(f"{path}: {msg}" for path, msg in problems),
                {"problems": problems},
            )
        return self

    def _reference_problems(self) -> list[tuple[str, str]]:
        systems = self.systems or {}
        known_systems = f"(known: {', '.join(sorted(systems)) or 'none'})"
        data_names = {d.name for d in self.data_configs or []}
        known_data = f"(known: {', '.join(sorted(data_names)) or 'none'})"
        problems: list[tuple[str, str]] = []
        for sname, system in systems.items():
            if isinstance(system, AzureMLSystem) and not (system.azureml_client or self.azureml_client):
                problems.append(
                    (
                        f"systems.{sname}.azureml_client",
                        "an AzureML system needs azureml_client here or in spec",
                    )
                )
        for key in ("host", "target"):
            name = getattr(self, key)
            if name is not None and name not in systems:
                problems.append((key, f"{name!r} is not in spec.systems {known_systems}"))
        evaluators = self.evaluators or {}
        known_evaluators = f"(known: {', '.join(sorted(evaluators)) or 'none'})"
        for ename, evaluator in evaluators.items():
            for i, metric in enumerate(evaluator.metrics):
                if metric.data_config is not None and metric.data_config not in data_names:
                    problems.append(
                        (
                            f"evaluators.{ename}.metrics.{i}.data_config",
                            f"{metric.data_config!r} is not in spec.data_configs {known_data}",
                        )
                    )
        if self.evaluator is not None and self.evaluator not in evaluators:
            problems.append(("evaluator", f"{self.evaluator!r} is not in spec.evaluators {known_evaluators}"))
        if self.evaluate_input_model is False and self.evaluator is not None:
            for ename, i, j, goal in self._goals():
                if ename == self.evaluator and goal.type != "threshold":
                    problems.append(
                        (
                            f"evaluators.{ename}.metrics.{i}.sub_types.{j}.goal.type",
                            f"{goal.type} compares with the input model, and evaluate_input_model is false",
                        )
                    )
        for pname, p in self.passes.items():
            if p.evaluator is not None and p.evaluator not in evaluators:
                problems.append(
                    (f"passes.{pname}.evaluator", f"{p.evaluator!r} is not in spec.evaluators {known_evaluators}")
                )
            if p.host is not None and p.host not in systems:
                problems.append((f"passes.{pname}.host", f"{p.host!r} is not in spec.systems {known_systems}"))
            if p.trains:
                for key in ("train_data_config", "eval_data_config"):
                    ref = getattr(p, key)
                    if ref is not None and ref not in data_names:
                        problems.append(
                            (f"passes.{pname}.{key}", f"{ref!r} is not in spec.data_configs {known_data}")
                        )
        return problems + self._parallelism_problems()

    def _search_problems(self) -> list[tuple[str, str]]:
        for pname, options in (self.search_space or {}).items():
            known = self.passes.get(pname)
            if known is None:
                continue  # search() names it
            for option in options:
                if option not in type(known).model_fields:
                    return [(f"search_space.{pname}.{option}", f"{known.type} has no option {option!r}")]
        try:
            self.search()
        except ValueError as exc:
            field, _, message = str(exc).partition(": ")
            return [(field.removeprefix("spec."), message)]
        return []

    def search(self) -> tuple[SearchSpace, Strategy] | None:
        """The space and strategy when the workflow searches (see olivekube.search.config)."""
        written = {
            "passes": {n: p.dump() for n, p in self.passes.items()},
            "search_space": self.search_space,
            "search_strategy": self.search_strategy,
        }
        return search_of({"spec": {k: v for k, v in written.items() if v is not None}})

    def _parallelism_problems(self) -> list[tuple[str, str]]:
        training = self.kubernetes.training if self.kubernetes else None
        trained = ", ".join(n for n, p in self.passes.items() if p.trains) or "none"
        return [
            ("kubernetes.training.passes", f"{name} is not a training pass (training passes: {trained})")
            for name in ((training.passes or {}) if training else {})
            if name not in self.passes or not self.passes[name].trains
        ]

    def _goals(self) -> list[tuple[str, int, int, Any]]:
        return [
            (ename, i, j, sub.goal)
            for ename, evaluator in (self.evaluators or {}).items()
            for i, metric in enumerate(evaluator.metrics)
            for j, sub in enumerate(metric.sub_types)
            if sub.goal is not None
        ]

    def host_name(self, pass_name: str) -> str | None:
        """The system that hosts a pass: its own host, else the workflow's."""
        return self.passes[pass_name].host or self.host

    def host_system(self, pass_name: str) -> System | None:
        return (self.systems or {}).get(self.host_name(pass_name) or "")

    def pass_data_configs(self, pass_name: str) -> list[DataConfig]:
        """The data configs a pass trains or evaluates on, in spec order."""
        options = self.passes[pass_name]
        wanted = {getattr(options, "train_data_config", None), getattr(options, "eval_data_config", None)}
        return [c for c in self.data_configs or [] if c.name in wanted]

    def ordered_pass_names(self) -> list[str]:
        """Pass names in run order (by stage; validation allows one pass per stage)."""
        return sorted(self.passes, key=lambda n: self.passes[n].stage)

    def previous_pass(self, pass_name: str) -> str | None:
        """The pass that runs before `pass_name`, or None for the first."""
        order = self.ordered_pass_names()
        index = order.index(pass_name)
        return order[index - 1] if index else None

    def is_last_pass(self, pass_name: str) -> bool:
        return self.ordered_pass_names()[-1] == pass_name

    def chain_keys(self) -> dict[str, str]:
        """The chain key of every pass, in run order (see olivekube.core.keys)."""
        keys: dict[str, str] = {}
        previous: Any = {"input_model": self.input_model.dump()}
        data = {d.name: d.dump() for d in self.data_configs or []}
        for name in self.ordered_pass_names():
            options = self.passes[name]
            named = [getattr(options, k, None) for k in ("train_data_config", "eval_data_config")]
            used = [data[str(n)] for n in named if n]
            target = None
            if options.builds_for_target:
                systems = {k: v.dump() for k, v in (self.systems or {}).items()}
                target = {"target": self.target or self.host, "systems": systems}
            keys[name] = chain_key(options.dump(), previous, used, target)
            previous = keys[name]
        return keys

    def _chain_problems(self) -> list[tuple[str, str]]:
        by_stage: dict[int, str] = {}
        for name, p in self.passes.items():
            other = by_stage.setdefault(p.stage, name)
            if other != name:
                return [
                    (
                        f"passes.{name}",
                        f"{p.type} cannot run in the same workflow as {self.passes[other].type} ({other}): "
                        "a workflow has at most one pass of each stage (a training pass, MergeAdapterWeights, "
                        "ModelBuilder); split it into two workflows",
                    )
                ]
        trained = False
        unbuildable: str | None = None  # a trained adapter that the model builder cannot put in a graph
        unmerged = bool(self.input_model.adapter_path)  # an adapter that is not merged (yet)
        built_with_adapter = False
        for name in self.ordered_pass_names():
            p = self.passes[name]
            if p.needs_built_adapter and not built_with_adapter:
                return [
                    (
                        f"passes.{name}",
                        f"{p.type} needs a ModelBuilder pass before it that built an adapter into the graph: "
                        "a training pass (or input_model.adapter_path) before ModelBuilder and no "
                        "MergeAdapterWeights, or ModelBuilder's adapter_path",
                    )
                ]
            if p.trains:
                unmerged = True
            elif p.needs_adapter:
                unmerged = False
            if p.builds_for_target:
                built_with_adapter = unmerged or bool(getattr(p, "adapter_path", None))
                unmerged = False
            if p.needs_adapter and not (trained or self.input_model.adapter_path):
                return [
                    (
                        f"passes.{name}",
                        f"{p.type} needs an adapter: a training pass ({', '.join(training_pass_types())}) "
                        "before it, or input_model.adapter_path",
                    )
                ]
            if p.builds_for_target and unbuildable:
                return [
                    (
                        f"passes.{name}",
                        f"the model builder cannot build a {self.passes[unbuildable].type} adapter into the "
                        f"graph; put a MergeAdapterWeights pass between {unbuildable} and {name}",
                    )
                ]
            if p.trains:
                unbuildable = None if p.adapter_builds_in_graph else name
            elif p.needs_adapter:
                unbuildable = None
            trained = trained or p.trains
        return []


def training_pass_types() -> list[str]:
    return [name for name, cls in PASS_TYPES.items() if cls.trains]


class ObjectMeta(OpenModel):
    """Kubernetes object metadata (name and namespace are checked; the rest passes through)."""

    name: str = Field(
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Workflow name: lowercase letters, digits, '-' and '.'.",
    )
    namespace: str | None = Field(
        None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description="Namespace."
    )


class OptimizationWorkflow(ApiModel):
    """An Olive model optimization workflow run as Kubernetes Jobs, one per pass."""

    apiVersion: Literal["olivekube.io/v1alpha1"] = Field("olivekube.io/v1alpha1", description="API version.")
    kind: Literal["OptimizationWorkflow"] = Field("OptimizationWorkflow", description="Kind.")
    metadata: ObjectMeta = Field(description="Object metadata.")
    spec: WorkflowSpec = Field(description="What to run: an Olive run config plus Kubernetes settings.")
    status: WorkflowStatus | None = Field(None, description="What happened: written by operator and runner.")


def parse_workflow(doc: Any) -> OptimizationWorkflow:
    """Validate a parsed manifest (raises pydantic.ValidationError)."""
    return OptimizationWorkflow.model_validate_json(json.dumps(doc, default=str))


def workflow_of_object(body: dict[str, Any]) -> OptimizationWorkflow:
    """A workflow as the API server returns it: its spec, and of its metadata only the name and
    namespace (the rest is the server's). Raises pydantic.ValidationError."""
    meta = body["metadata"]
    return parse_workflow(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": meta["name"], "namespace": meta.get("namespace")},
            "spec": body.get("spec"),
        }
    )


def _accept_new_pass_type() -> None:
    """A pass type defined after this module (a plugin, a test): rebuild the models that embed the union."""
    global PassConfig
    PassConfig = pass_config_type()
    WorkflowSpec.model_fields["passes"].annotation = dict[str, PassConfig]
    WorkflowSpec.model_rebuild(force=True)
    OptimizationWorkflow.model_rebuild(force=True)


on_new_pass_type(_accept_new_pass_type)
