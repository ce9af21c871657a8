"""Property: `olivekube convert` never emits a manifest that `olivekube validate` refuses, and never
crashes, whatever form (legacy or current) and whatever values an Olive config takes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from olivekube.api.olive_config import ConvertError, to_manifest
from olivekube.api.passes.training_argument_names import TRAINING_ARGUMENT_NAMES
from olivekube.api.validation import validate_document
from tests.unit.test_validation_property import paths, values

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "olive"
SEEDS = [
    json.loads(p.read_text())
    for p in [*sorted(EXAMPLES.glob("*.json")), *sorted(EXAMPLES.glob("upstream/*.json"))]
]

scalars = (
    st.none() | st.booleans() | st.integers(-5, 5000) | st.floats(-2, 2, allow_nan=False) | st.text(max_size=8)
)
pass_types = st.sampled_from(
    ["LoRA", "lora", "QLoRA", "qlora", "ModelBuilder", "modelbuilder", "mergeadapterweights"]
)


def _legacy_data(data: dict[str, Any]) -> dict[str, Any]:
    """The same data config in Olive's legacy params_config/component_kwargs form."""
    load = data.get("load_dataset_config", {})
    pre = data.get("pre_process_data_config", {})
    out = {k: v for k, v in data.items() if k not in ("load_dataset_config", "pre_process_data_config")}
    out["params_config"] = {**load, "component_kwargs": {"pre_process_data": pre}}
    return out


@st.composite
def olive_configs(draw: st.DrawFn) -> dict[str, Any]:
    config = copy.deepcopy(draw(st.sampled_from(SEEDS)))
    if draw(st.booleans()) and isinstance(config.get("data_configs"), list):
        config["data_configs"] = [
            _legacy_data(d) if isinstance(d, dict) and "load_dataset_config" in d else d
            for d in config["data_configs"]
        ]
    passes = config.get("passes", {})
    for name in list(passes):
        node = passes[name].get("config", passes[name]) if isinstance(passes[name], dict) else None
        if not isinstance(node, dict):
            continue
        if draw(st.booleans()):
            passes[name]["type"] = draw(pass_types)
        args = node.get("training_args")
        if isinstance(args, dict) and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(TRAINING_ARGUMENT_NAMES)) | st.text(min_size=1, max_size=10))
            args[key] = draw(scalars)
    for _ in range(draw(st.integers(0, 2))):
        options = paths(config)
        if not options:
            break
        path = draw(st.sampled_from(options))
        node: Any = config
        for key in path[:-1]:
            node = node[key]
        if isinstance(node, dict):
            action = draw(st.sampled_from(["set", "delete", "add"]))
            if action == "delete":
                node.pop(path[-1], None)
            elif action == "add":
                node[draw(st.text(min_size=1, max_size=12))] = draw(values)
            else:
                node[path[-1]] = draw(values)
        elif isinstance(node, list) and isinstance(path[-1], int):
            node[path[-1]] = draw(values)
    return config


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(olive_configs())
def test_convert_never_emits_what_validate_refuses(config: dict[str, Any]) -> None:
    try:
        manifest, _ = to_manifest(config, "wf", "ml")
    except ConvertError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)
        return
    assert validate_document(manifest) == []
