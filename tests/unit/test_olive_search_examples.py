"""Every Olive config that searches (Olive's examples in both key generations, olive-recipes;
examples/olive/upstream-search/SOURCES.md) converts, or is refused only for a pass, evaluator or user
code olivekube does not run, never for its search; its search strategy, as written, runs our passes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from olivekube.api.olive_config import ConvertError, spec_to_olive, to_manifest
from olivekube.api.validation import validate_document
from olivekube.api.workflow import parse_workflow

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "olive"
UPSTREAM = EXAMPLES / "upstream-search"
CONFIGS = sorted(UPSTREAM.glob("*.json"))
NOT_RUN_HERE = ("type", "user_script", "model_loader", "model_path", "pass_flows")
"""The last part of every refused key: a pass or evaluator type, user code (a model loader leaves no
model_path), several pass flows."""


def strategy_of(config: dict[str, Any]) -> Any:
    return config.get("search_strategy", (config.get("engine") or {}).get("search_strategy"))


def problems(config: dict[str, Any]) -> list[Any]:
    try:
        to_manifest(config, "wf", "ml")
    except ConvertError as exc:
        return list(exc.problems)
    return []


def test_every_searching_config_of_olive_and_olive_recipes_is_here() -> None:
    assert len(CONFIGS) == 20, [p.name for p in CONFIGS]
    for path in CONFIGS:
        assert strategy_of(json.loads(path.read_text())) not in (None, False), path.name
    legacy = [p for p in CONFIGS if "search_algorithm" in json.dumps(strategy_of(json.loads(p.read_text())))]
    assert len(legacy) == 9  # both key generations are covered


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_refused_only_for_what_does_not_run_here_never_for_its_search(path: Path) -> None:
    found = problems(json.loads(path.read_text()))
    for problem in found:
        assert problem.path.rsplit(".", 1)[-1] in NOT_RUN_HERE, problem
        assert "search" not in str(problem).lower(), problem


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_its_search_strategy_as_written_searches_our_passes(path: Path) -> None:
    """The config's own search_strategy (either generation, where that generation keeps it) on Olive's
    Phi-3 LoRA example with ModelBuilder's declared block sizes: converts, validates, searches, and
    `convert --to olive` gives the strategy back as written."""
    strategy = copy.deepcopy(strategy_of(json.loads(path.read_text())))
    legacy = "search_algorithm" in json.dumps(strategy)
    config = json.loads((EXAMPLES / ("phi3-seed-legacy.json" if legacy else "phi3-lora-current.json")).read_text())
    builder = config["passes"]["builder"]
    builder.get("config", builder)["int4_block_size"] = "SEARCHABLE_VALUES"
    (config["engine"] if legacy else config)["search_strategy"] = strategy
    manifest, _ = to_manifest(config, "wf", "ml")
    assert validate_document(manifest) == []
    points, written = parse_workflow(manifest).spec.search() or ([], None)
    assert written is not None and written.include_pass_params  # none of them turns it off
    lora_written = "lora_r" in json.dumps(config["passes"]["lora"])  # the legacy example sets it
    # int4_block_size 32, 64, 128, by Olive's default spaces of what is not written: int4_is_symmetric
    # (2), int4_algo_config (4) and, unless written, LoRA's r (16, 32, 64)
    assert len(points) == 3 * 2 * 4 * (1 if lora_written else 3)
    assert spec_to_olive(manifest["spec"])["search_strategy"] == strategy


def test_the_llama2_qlora_search_converts_once_its_lm_eval_evaluator_goes() -> None:
    """The one searching config made of passes olivekube runs: refused for LMEvaluator alone (named),
    and whole without it; its auto_optimizer_config is dropped as Olive ignores it with passes given."""
    config = json.loads((UPSTREAM / "olive-current-llama2-llama2_lmeval.json").read_text())
    assert [p.path for p in problems(config)] == ["evaluators.evaluator.type"]
    del config["evaluators"], config["evaluator"]
    manifest, warnings = to_manifest(config, "wf", "ml")
    assert validate_document(manifest) == []
    assert manifest["spec"]["passes"]["f"]["type"] == "QLoRA"
    assert manifest["spec"]["search_strategy"] == {"execution_order": "joint", "sampler": "sequential"}
    assert any(w.path == "auto_optimizer_config" for w in warnings)
    choosing = {**config, "passes": {}, "auto_optimizer_config": {"opt_level": 0}}
    assert "auto_optimizer_config" in [p.path for p in problems(choosing)]  # there Olive would choose passes
