"""A workflow that searches, run with `olivekube run`: a tiny Phi-3, LoRA rank {4, 8} x ModelBuilder
int4 block size {32, 128}, joint and sequential, with an accuracy objective (priority 1, goal) and a
latency objective (priority 2)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from olivekube.storage.outputs import read_pointer
from tests.helpers.manifests import DATA, LORA, workflow_doc
from tests.helpers.processes import olivekube_run


def categorical(*values: object) -> dict[str, object]:
    return {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": list(values)}


def search_workflow(model: Path, tmp_path: Path) -> dict[str, Any]:
    lora = json.loads(json.dumps(LORA))
    lora["r"] = categorical(4, 8)
    lora["training_args"]["max_steps"] = 20
    passes = {
        "lora": lora,
        "merge": {"type": "MergeAdapterWeights"},
        "builder": {"type": "ModelBuilder", "precision": "int4", "int4_block_size": categorical(32, 128)},
    }
    doc = workflow_doc(
        str(model), str(DATA), passes, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out")
    )
    held_out = json.loads(json.dumps(doc["spec"]["data_configs"][0]))
    held_out["name"] = "held_out"
    held_out["load_dataset_config"]["split"] = "train[90%:]"
    doc["spec"]["data_configs"].append(held_out)
    doc["spec"]["evaluators"] = {
        "tone": {
            "metrics": [
                {
                    "name": "accuracy",
                    "type": "accuracy",
                    "data_config": "held_out",
                    "sub_types": [
                        {"name": "accuracy_score", "priority": 1, "goal": {"type": "threshold", "value": 0.0}}
                    ],
                },
                {
                    "name": "latency",
                    "type": "latency",
                    "sub_types": [{"name": "avg", "priority": 2}],
                    "user_config": {"warmup_num": 1, "repeat_test_num": 3},
                },
            ]
        }
    }
    doc["spec"]["evaluator"] = "tone"
    doc["spec"]["search_strategy"] = {
        "execution_order": "joint",
        "sampler": "sequential",
        "include_pass_params": False,
    }
    return doc


def scaled(metrics: dict[str, Any]) -> tuple[float, float]:
    """Each objective made higher-is-better, in priority order: accuracy, then latency."""
    return metrics["accuracy-accuracy_score"]["value"], -metrics["latency-avg"]["value"]


def dominates(a: dict[str, Any], b: dict[str, Any]) -> bool:
    pairs = list(zip(scaled(a), scaled(b), strict=True))
    return all(x >= y for x, y in pairs) and any(x > y for x, y in pairs)


@pytest.mark.runner
def test_a_joint_search_runs_four_trials_trains_twice_and_publishes_the_best(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(search_workflow(tiny_models["phi3"], tmp_path)))
    run = olivekube_run(path, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "search: 4 points (joint, sequential): tries every point" in run.stdout
    assert [line.split(":")[0] for line in run.stdout.splitlines() if line.startswith("trial ")] == [
        f"trial {n}" for n in (1, 2, 3, 4)
    ]
    # the cache holds two LoRA outputs and two merged models: each trained or merged once per rank
    made = [
        json.loads(m.read_text()).get("metadata", {})
        for m in (tmp_path / "cache").rglob("olivekube-manifest.json")
    ]
    assert sorted(m.get("pass_type") for m in made if m.get("pass_type") in ("LoRA", "MergeAdapterWeights")) == [
        "LoRA",
        "LoRA",
        "MergeAdapterWeights",
        "MergeAdapterWeights",
    ]
    pointer = read_pointer(str(tmp_path / "out"))
    assert pointer is not None
    best_dir = tmp_path / "out" / pointer["current"]
    footprint = json.loads((best_dir / "footprint.json").read_text())
    nodes = footprint["nodes"]
    assert [n["from_pass"] for n in nodes.values()].count("LoRA") == 2 and len(nodes) == 1 + 2 + 2 + 4
    measured = {n["trial"]: n for n in nodes.values() if n.get("metrics")}
    assert sorted(measured) == [1, 2, 3, 4]
    values = {t: n["metrics"]["value"] for t, n in measured.items()}
    best = max(values, key=lambda t: scaled(values[t]))
    assert footprint["best"] == f"trial-{best}"
    manifest = json.loads((best_dir / "olivekube-manifest.json").read_text())
    assert manifest["metadata"]["search"]["trial"] == best
    frontier = {t for t in values if not any(dominates(values[o], values[t]) for o in values if o != t)}
    assert {t for t, n in measured.items() if n["is_pareto_frontier"]} == frontier
    versions = {h["version"] for h in pointer["history"]}
    assert len(versions) == len(frontier)  # every frontier model is a version; the best is current
    assert (best_dir / "run_history.txt").read_text().count("\n") == 5
    assert "accuracy-accuracy_score" in json.loads((best_dir / "input_model_metrics.json").read_text())
    page = (best_dir / "search.html").read_text()  # the trials on accuracy and latency, a row each
    assert "Trials: accuracy-accuracy_score against latency-avg" in page and page.count("<tr>") == 1 + 4


def builder_search(model: Path, tmp_path: Path, sizes: tuple[int, ...] = (48, 32, 64), **strategy: Any) -> Path:
    """ModelBuilder int4 over block sizes (48 is not one ModelBuilder takes: a failed trial)."""
    passes = {"builder": {"type": "ModelBuilder", "precision": "int4", "int4_block_size": categorical(*sizes)}}
    doc = workflow_doc(
        str(model), str(DATA), passes, cache_dir=str(tmp_path / "cache"), output_dir=str(tmp_path / "out")
    )
    doc["spec"]["search_strategy"] = {"sampler": "sequential", "include_pass_params": False, **strategy}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.runner
def test_a_failed_trial_is_recorded_and_the_search_goes_on_until_its_limit(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    run = olivekube_run(builder_search(tiny_models["phi3"], tmp_path, max_failed_trials=0), timeout=600)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert (
        "trial 1:" in run.stdout and "failed" in run.stdout and "spec.passes.builder.int4_block_size" in run.stdout
    )
    assert "trial 2:" not in run.stdout and "too many failed trials: 1 (max_failed_trials 0)" in run.stdout
    assert read_pointer(str(tmp_path / "out")) is None  # nothing published

    again = tmp_path / "again"
    again.mkdir()
    run = olivekube_run(builder_search(tiny_models["phi3"], again, max_failed_trials=1, stop_when_goals_met=True))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "trial 2:" in run.stdout and "trial 3:" not in run.stdout
    assert "goals met by trial 2 (stop_when_goals_met)" in run.stdout
    pointer = read_pointer(str(again / "out"))
    assert pointer is not None and len(pointer["history"]) == 1


@pytest.mark.runner
def test_max_time_ends_a_search_after_its_first_trial(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The first trial always starts; a trial (a ModelBuilder run) outlasts 1 ms, so none follows it."""
    search = builder_search(tiny_models["phi3"], tmp_path, sizes=(32, 48, 64), max_time=0.001)
    run = olivekube_run(search, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "time spent: max_time 0.001s" in run.stdout
    assert "trial 1:" in run.stdout and "trial 2:" not in run.stdout
    pointer = read_pointer(str(tmp_path / "out"))
    assert pointer is not None and len(pointer["history"]) == 1


@pytest.mark.runner
def test_tpe_with_a_seed_tries_the_same_three_trials_in_two_runs(tiny_models, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sizes = (16, 32, 64, 128, 256)
    tried = []
    for run_number in (1, 2):
        folder = tmp_path / f"run-{run_number}"
        folder.mkdir()
        search = builder_search(tiny_models["phi3"], folder, sizes=sizes, sampler="tpe", max_samples=3, seed=5)
        run = olivekube_run(search, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert "search: 5 points (joint, tpe): tries 3 of them, drawn by the tpe sampler" in run.stdout
        tried.append([line.split("  ")[0] for line in run.stdout.splitlines() if line.startswith("trial ")])
    assert len(tried[0]) == 3 and len(set(tried[0])) == 3 and tried[0] == tried[1]


@pytest.mark.runner
def test_pass_by_pass_walks_each_pass_on_the_best_of_the_one_before_and_back_up(
    tiny_models, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Olive's pass-by-pass walk: both ranks (each LoRA output measured), then down the better rank
    through the merge into both block sizes, then back up to the other rank and down again: 8 trials,
    each LoRA trained once, the best a whole chain."""
    doc = search_workflow(tiny_models["phi3"], tmp_path)
    doc["spec"]["search_strategy"]["execution_order"] = "pass-by-pass"
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = olivekube_run(path, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "search: 4 points (pass-by-pass, sequential)" in run.stdout
    trials = [
        json.loads(line.split(": ", 1)[1].split("  ")[0])
        for line in run.stdout.splitlines()
        if line.startswith("trial ")
    ]
    lora_only, whole = ["lora"], ["builder", "lora"]  # the merge searches nothing: not in the parameters
    shapes = [lora_only, lora_only, lora_only, whole, whole, lora_only, whole, whole]
    assert [sorted(t) for t in trials] == shapes, run.stdout
    first, second = trials[2]["lora"]["r"], trials[5]["lora"]["r"]
    assert {first, second} == {4, 8} and [t["lora"]["r"] for t in trials[3:5]] == [first, first]
    assert [t["builder"]["int4_block_size"] for t in (trials[3], trials[4], trials[6], trials[7])] == [32, 128] * 2
    made = [
        json.loads(m.read_text()).get("metadata", {}).get("pass_type")
        for m in (tmp_path / "cache").rglob("olivekube-manifest.json")
    ]
    assert made.count("LoRA") == 2 and made.count("MergeAdapterWeights") == 2
    pointer = read_pointer(str(tmp_path / "out"))
    assert pointer is not None
    footprint = json.loads((tmp_path / "out" / pointer["current"] / "footprint.json").read_text())
    assert footprint["best"] in {f"trial-{n}" for n in (4, 5, 7, 8)}  # a whole chain, never a prefix
