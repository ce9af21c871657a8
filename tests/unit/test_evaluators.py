"""Evaluators in manifests and Olive configs: Olive's keys accepted, bad metric configs refused naming
the field and what is allowed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from olivekube.api.olive_config import to_manifest
from olivekube.api.validation import validate_document
from tests.helpers.manifests import LORA, workflow_doc

UPSTREAM = Path(__file__).resolve().parents[2] / "examples" / "olive" / "upstream"
ACCURACY = {
    "name": "accuracy",
    "type": "accuracy",
    "data_config": "tone",
    "sub_types": [{"name": "accuracy_score", "priority": 1, "goal": {"type": "max-degradation", "value": 0.05}}],
}


def manifest(metrics: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    doc = workflow_doc("m", "tone.json", {"lora": LORA})
    doc["spec"]["evaluators"] = {"common": {"metrics": copy.deepcopy(metrics)}}
    doc["spec"]["evaluator"] = "common"
    doc["spec"].update(spec)
    return doc


def test_olive_metric_keys_validate() -> None:
    latency = {
        "name": "latency",
        "type": "latency",
        "sub_types": [{"name": "avg", "goal": {"type": "percent-min-improvement", "value": 20}}, {"name": "p90"}],
        "user_config": {"warmup_num": 2, "repeat_test_num": 5},
    }
    assert validate_document(manifest([ACCURACY, latency])) == []


BAD = [
    ({"type": "bleu"}, "spec.evaluators.common.metrics.0.type", "accuracy"),
    ({"sub_types": [{"name": "accuracy_score", "goal": {"type": "threshold"}}]}, "value", "Field required"),
    ({"data_config": "nowhere"}, "spec.evaluators.common.metrics.0.data_config", "not in spec.data_configs"),
    ({"data_config": None}, "spec.evaluators.common.metrics.0.data_config", "needs a data config"),
    ({"sub_types": [{"name": "p90"}]}, "spec.evaluators.common.metrics.0.sub_types.0.name", "accuracy_score"),
    (
        {"sub_types": [{"name": "accuracy_score", "goal": {"type": "percent-max-degradation", "value": 150}}]},
        "spec.evaluators.common.metrics.0.sub_types.0.goal.value",
        "outside (0, 100)",
    ),
    ({"user_script": "metric.py"}, "spec.evaluators.common.metrics.0.user_script", "Python code"),
]


@pytest.mark.parametrize(
    ("change", "path", "words"), BAD, ids=[b[1].rsplit(".", 1)[-1] + "-" + b[2][:12] for b in BAD]
)
def test_a_bad_metric_config_is_refused_naming_the_field(change: dict[str, Any], path: str, words: str) -> None:
    metric = {**ACCURACY, **change}
    problems = validate_document(manifest([{k: v for k, v in metric.items() if v is not None}]))
    assert any(p.path.endswith(path) and words in p.message for p in problems), [str(p) for p in problems]


def test_an_unknown_evaluator_and_a_degradation_goal_without_the_input_model_are_refused() -> None:
    problems = validate_document(manifest([ACCURACY], evaluator="other"))
    assert [p.path for p in problems] == ["spec.evaluator"]
    problems = validate_document(manifest([ACCURACY], evaluate_input_model=False))
    assert [p.path for p in problems] == ["spec.evaluators.common.metrics.0.sub_types.0.goal.type"]


def test_an_olive_config_with_evaluators_converts_and_validates() -> None:
    """Olive's phi3 template as its phi3.py writes it with --tune_session_params kept out of search:
    the LoRA → merge → int4 passes and its latency evaluator (an ORT dummy-data container and io_bind
    that olivekube does not use are dropped with warnings)."""
    config = json.loads((UPSTREAM / "phi3_phi3_template.json").read_text())
    for name in ("qlora", "awq", "fp32_logits", "tune_session_params"):
        config["passes"].pop(name)
    config["passes"]["builder"]["precision"] = "int4"
    config["evaluator"] = "common_evaluator"
    manifest_doc, warnings = to_manifest(config, "phi3", "ml")
    assert validate_document(manifest_doc) == []
    spec = manifest_doc["spec"]
    assert spec["evaluator"] == "common_evaluator"
    latency = spec["evaluators"]["common_evaluator"]["metrics"][0]
    assert latency["sub_types"][0] == {
        "name": "avg",
        "priority": 1,
        "goal": {"type": "percent-min-improvement", "value": 20},
    }
    assert "data_config" not in latency and "user_config" not in latency
    paths = {w.path for w in warnings}
    assert "evaluators.common_evaluator.metrics[0].user_config.io_bind" in paths
    assert "evaluators.common_evaluator.metrics[0].data_config" in paths


def test_a_status_evaluation_written_to_flood_the_operator_adds_only_what_an_evaluator_could() -> None:
    from olivekube.operator.metrics import evaluation_samples

    flood = {
        "models": {
            **{f"junk-{i}": {"m": {"value": 1.0}} for i in range(1000)},
            "final": {f"metric-{i}": {"value": float(i)} for i in range(10_000)},
            "pass:lora": {"x" * 5000: {"value": 1.0}, "accuracy-accuracy_score": {"value": 0.5}},
        }
    }
    samples = evaluation_samples(flood)
    assert {model for model, *_ in samples} == {"final", "pass:lora"}
    assert len(samples) == 64 * 16 + 1
    assert evaluation_samples({"models": ["not", "a", "map"]}) == []


def test_status_evaluation_becomes_prometheus_samples_and_goes_with_the_workflow() -> None:
    from prometheus_client import REGISTRY

    from olivekube.operator.metrics import export_evaluation

    evaluation = {
        "evaluator": "tone",
        "goalsMet": False,
        "models": {
            "input": {"accuracy-accuracy_score": {"value": 0.1}},
            "final": {
                "accuracy-accuracy_score": {
                    "value": 0.5,
                    "goal": {"type": "threshold", "value": 0.6},
                    "met": False,
                }
            },
        },
    }
    labels = {"namespace": "ml", "workflow": "wf", "model": "final", "metric": "accuracy-accuracy_score"}
    exported = export_evaluation("ml", "wf", evaluation, set())
    assert REGISTRY.get_sample_value("olivekube_evaluation_value", labels) == 0.5
    assert REGISTRY.get_sample_value("olivekube_evaluation_goal_met", labels) == 0.0
    assert REGISTRY.get_sample_value("olivekube_evaluation_value", {**labels, "model": "input"}) == 0.1
    export_evaluation("ml", "wf", None, exported)  # the workflow is gone
    assert REGISTRY.get_sample_value("olivekube_evaluation_value", labels) is None
