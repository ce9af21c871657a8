"""A workflow run's evaluation: the input model's values (the baseline of degradation goals), each
pass that names an evaluator, and the final model under spec.evaluator; goals checked before
anything is published; the report written beside the output (JSON and an HTML page)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from olivekube.core.errors import PassError
from olivekube.runner.context import PassContext
from olivekube.runner.evaluation import GoalNotMet, MetricRunner, MetricValue, compare, describe_goal
from olivekube.runner.report import render_html

if TYPE_CHECKING:
    from olivekube.api.workflow import WorkflowSpec
    from olivekube.core.artifact import ModelArtifact
    from olivekube.runner.progress import ProgressSink
    from olivekube.runner.results import PassResult


class AcceptanceHost(Protocol):
    """What acceptance needs of the engine that runs the workflow (WorkflowRunner): its spec, its
    folders, its progress reports, and how it resolves models."""

    spec: WorkflowSpec
    work_root: Path
    base_dir: Path
    report: ProgressSink

    def resolve_model(self, value: str, field_name: str) -> ModelArtifact: ...

    def input_model(self) -> ModelArtifact: ...


REPORT_JSON = "olivekube-evaluation.json"
REPORT_HTML = "olivekube-evaluation.html"


class Acceptance:
    def __init__(self, runner: AcceptanceHost) -> None:
        self.runner = runner
        self.spec = runner.spec
        self._baselines: dict[str, list[MetricValue] | None] = {}
        self.report: dict[str, Any] = {"evaluator": self.spec.evaluator, "models": {}, "goalsMet": True}

    def reuse_baselines(self, other: Acceptance) -> None:
        """Take the input model's values another run of the same input measured (a search's trials)."""
        self._baselines.update(other._baselines)
        if "input" in other.report["models"]:
            self.report["models"]["input"] = other.report["models"]["input"]

    @property
    def active(self) -> bool:
        return self.spec.evaluator is not None or any(p.evaluator for p in self.spec.passes.values())

    def preflight(self) -> None:
        """Before any pass: the metrics that run the model can run it here, on the target's provider."""
        if not self.active:
            return
        names = {self.spec.evaluator, *(p.evaluator for p in self.spec.passes.values())} - {None}
        ctx = PassContext(
            self.spec, self.spec.ordered_pass_names()[-1], self.runner.work_root, self.runner.base_dir
        )
        provider, ep = ctx.execution_provider()
        if ep == "cpu" or provider_available(ep):
            return
        builds = any(p.builds_for_target for p in self.spec.passes.values())
        for name in sorted(str(n) for n in names):
            for i, metric in enumerate((self.spec.evaluators or {})[name].metrics):
                if metric.type != "size_on_disk" and builds:
                    raise PassError(
                        f"spec.evaluators.{name}.metrics.{i}.type",
                        f"a {metric.type} metric runs the ONNX model on the target's execution provider "
                        f"({provider}), which this machine does not have; evaluate where the target runs, "
                        "or keep only size_on_disk here",
                    )

    def _measure(self, evaluator: str, model: ModelArtifact, path: str, pass_name: str) -> list[MetricValue]:
        evaluators = self.spec.evaluators or {}
        ctx = PassContext(
            self.spec,
            pass_name,
            self.runner.work_root / "evaluation",
            self.runner.base_dir,
            self.runner.report,
            resolve_model=self.runner.resolve_model,
        )
        ctx.workdir.mkdir(parents=True, exist_ok=True)
        self.runner.report(pass_name, {"message": f"evaluating the {path} model with {evaluator}"})
        return MetricRunner(self.spec, ctx, f"spec.evaluators.{evaluator}").run(evaluators[evaluator], model)

    def _baseline(self, evaluator: str, pass_name: str) -> list[MetricValue] | None:
        if self.spec.evaluate_input_model is False:
            return None
        if evaluator not in self._baselines:
            values = self._measure(evaluator, self.runner.input_model(), "input", pass_name)
            self._baselines[evaluator] = values
            self.report["models"].setdefault("input", {})[evaluator] = [v.to_json() for v in values]
        return self._baselines[evaluator]

    def check_model(
        self, role: str, evaluator: str, model: ModelArtifact, field_path: str, where: str, pass_name: str
    ) -> None:
        """Progress goes to `pass_name`, the pass whose output is evaluated."""
        baseline = self._baseline(evaluator, pass_name)
        values = compare(self._measure(evaluator, model, role, pass_name), baseline)
        self.report["models"].setdefault(role, {})[evaluator] = [v.to_json() for v in values]
        missed = [v for v in values if v.met is False]
        if missed:
            self.report["goalsMet"] = False
            raise GoalNotMet(
                field_path,
                f"GoalNotMet: {'; '.join(describe_goal(v) for v in missed)}. Nothing was published to "
                f"output_dir; the model stays in the cache at {where}",
            )

    def after_pass(self, name: str, model: ModelArtifact, uri: str | None) -> None:
        evaluator = self.spec.passes[name].evaluator
        if evaluator is not None:
            where = uri or str(model.path)
            self.check_model(f"pass:{name}", evaluator, model, f"spec.passes.{name}.evaluator", where, name)

    def final(self, model: ModelArtifact, uri: str | None) -> None:
        if self.spec.evaluator is not None:
            last = self.spec.ordered_pass_names()[-1]
            self.check_model("final", self.spec.evaluator, model, "spec.evaluator", uri or str(model.path), last)

    def files(self, results: list[PassResult]) -> dict[str, str]:
        """The report files to publish beside the model (none when nothing was evaluated)."""
        if not self.report["models"]:
            return {}
        logs = {r.name: _training_log(r) for r in results}
        self.report["training"] = {name: log for name, log in logs.items() if log}
        return {REPORT_JSON: json.dumps(self.report, indent=2), REPORT_HTML: render_html(self.report)}

    def summary(self) -> dict[str, Any] | None:
        """For status.evaluation: each model's values by metric, and whether every goal was met."""
        if not self.report["models"]:
            return None
        return {
            "evaluator": self.report["evaluator"],
            "goalsMet": self.report["goalsMet"],
            "models": {
                role: {
                    v["metric"] + "-" + v["sub_type"]: {
                        k: v[k] for k in ("value", "goal", "met", "baseline") if k in v
                    }
                    for values in by_evaluator.values()
                    for v in values
                }
                for role, by_evaluator in self.report["models"].items()
            },
        }


def _training_log(result: PassResult) -> list[dict[str, Any]]:
    if not result.uri:
        return []
    path = Path(result.uri) / "olivekube-training-log.json"
    try:
        return list(json.loads(path.read_text())) if path.is_file() else []
    except (OSError, ValueError):
        return []


def provider_available(ep: str) -> bool:
    """Whether onnxruntime-genai here can run a model built for `ep`: cuda needs a CUDA device and
    onnxruntime-genai's CUDA build (the PyPI package `onnxruntime-genai` alone runs only on the CPU)."""
    if ep == "cuda":
        import onnxruntime_genai as og
        import torch

        return bool(torch.cuda.is_available() and og.is_cuda_available())
    return ep == "cpu"
