"""Olive's search, pure parts: the space and its points, samplers, and ranking with goals and the
Pareto frontier (metrics planted by hand)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from olivekube.search.parameters import IGNORED, INVALID, Categorical, Conditional, parse
from olivekube.search.results import Objective, dominates, frontier, meets_goals, rank
from olivekube.search.samplers import Sampler
from olivekube.search.space import SEARCHABLE, SearchSpace


def categorical(*values: object) -> dict[str, object]:
    return {"olive_parameter_type": "SearchParameter", "type": "Categorical", "support": list(values)}


LORA = {"type": "LoRA", "r": categorical(4, 8), "train_data_config": "d"}
BUILDER = {"type": "ModelBuilder", "precision": "int4", "int4_block_size": categorical(32, 128)}


def test_a_joint_space_of_two_passes_has_every_combination_in_order() -> None:
    """Olive's order (olive/search/search_space.py: a point's index is a mixed-radix number, the first
    parameter least significant): the first pass's choice changes fastest."""
    space = SearchSpace({"lora": LORA, "merge": {"type": "MergeAdapterWeights"}, "builder": BUILDER})
    points = list(space.points())
    assert len(space) == space.size_bound() == 4 and space.searches
    assert [p.parameters() for p in points] == [
        {"lora": {"r": 4}, "builder": {"int4_block_size": 32}},
        {"lora": {"r": 8}, "builder": {"int4_block_size": 32}},
        {"lora": {"r": 4}, "builder": {"int4_block_size": 128}},
        {"lora": {"r": 8}, "builder": {"int4_block_size": 128}},
    ]
    assert points[3].passes["lora"].options == {"type": "LoRA", "r": 8, "train_data_config": "d"}
    assert points[3].passes["merge"].options == {"type": "MergeAdapterWeights"}


def test_searchable_values_take_olives_default_space_for_the_option() -> None:
    space = SearchSpace(
        {
            "lora": {"type": "QLoRA", "r": SEARCHABLE},
            "b": {"type": "ModelBuilder", "int4_is_symmetric": SEARCHABLE},
        }
    )
    assert [p.parameters() for p in space.points()][:4] == [
        {"lora": {"r": 16}, "b": {"int4_is_symmetric": True}},
        {"lora": {"r": 32}, "b": {"int4_is_symmetric": True}},
        {"lora": {"r": 64}, "b": {"int4_is_symmetric": True}},
        {"lora": {"r": 16}, "b": {"int4_is_symmetric": False}},
    ]
    assert len(space) == 6
    with pytest.raises(
        ValueError, match=r"passes.m.alpha: LoRA has no default search space for alpha \(those with one: r\)"
    ):
        SearchSpace({"m": {"type": "LoRA", "alpha": SEARCHABLE}})


def test_alternatives_under_one_pass_name_are_choices_of_that_pass() -> None:
    space = SearchSpace({"tune": [LORA, {"type": "DoRA", "r": 16}]})
    assert [p.parameters() for p in space.points()] == [
        {"tune": {"alternative": 0, "r": 4}},
        {"tune": {"alternative": 0, "r": 8}},
        {"tune": {"alternative": 1}},
    ]
    assert not SearchSpace({"lora": {"type": "LoRA", "r": 8}}).searches


def test_a_conditional_follows_its_parent_and_invalid_or_ignored_values_are_handled() -> None:
    algo = {
        "olive_parameter_type": "SearchParameter",
        "type": "Conditional",
        "parents": ["int4_algo_config"],
        "support": {"rtn": categorical(32, 64)},
        "default": categorical(IGNORED),
    }
    space = SearchSpace(
        {"b": {"type": "ModelBuilder", "int4_algo_config": categorical("default", "rtn"), "int4_block_size": algo}}
    )
    assert [p.parameters() for p in space.points()] == [
        {"b": {"int4_algo_config": "default"}},
        {"b": {"int4_algo_config": "rtn", "int4_block_size": 32}},
        {"b": {"int4_algo_config": "rtn", "int4_block_size": 64}},
    ]
    assert space.size_bound() == 4  # the conditional counted at its widest
    invalid = {**algo, "default": categorical(INVALID)}
    space = SearchSpace(
        {
            "b": {
                "type": "ModelBuilder",
                "int4_algo_config": categorical("default", "rtn"),
                "int4_block_size": invalid,
            }
        }
    )
    assert len(space) == 2


def test_conditional_default_and_parse_errors_name_the_field() -> None:
    param = parse(
        {
            "olive_parameter_type": "SearchParameter",
            "type": "ConditionalDefault",
            "parents": ["a", "b"],
            "support": {"x": {"true": 1}},
            "default": 3,
        },
        "f",
    )
    assert isinstance(param, Conditional)
    assert param.choices({"a": "x", "b": True}) == (1,) and param.choices({"a": "y", "b": True}) == (3,)
    assert parse(param.to_json(), "g") == param
    assert parse({"olive_parameter_type": "SearchParameter", "type": "Boolean"}, "f") == Categorical((True, False))
    with pytest.raises(ValueError, match=r"^p.r.support: a non-empty list"):
        parse(categorical(), "p.r")
    with pytest.raises(ValueError, match=r"^p.r.type: 'Uniform' is not one of"):
        parse({"olive_parameter_type": "SearchParameter", "type": "Uniform"}, "p.r")
    with pytest.raises(ValueError, match=r"passes.b.x.parents: nope is not a searched option"):
        SearchSpace(
            {
                "b": {
                    "type": "ModelBuilder",
                    "x": {
                        **parse(categorical(1), "x").to_json(),
                        "type": "Conditional",
                        "parents": ["nope"],
                        "support": {},
                    },
                }
            }
        )


def test_tpe_is_seeded_never_repeats_and_covers_the_space() -> None:
    space = SearchSpace(
        {
            "lora": {"type": "LoRA", "r": categorical(4, 8, 16)},
            "builder": {**BUILDER, "int4_block_size": categorical(32, 64, 128)},
        }
    )

    def draws(seed: int, value: Callable[[int], float | None]) -> list[int]:
        sampler, out = Sampler(space, "tpe", seed=seed), []
        while (point := sampler.suggest()) is not None:
            out.append(point.index)
            sampler.tell(point, value(point.index))
        return out

    first = draws(3, lambda i: float(i % 4))
    assert first == draws(3, lambda i: float(i % 4)) and sorted(first) == list(range(9))
    assert first != draws(4, lambda i: float(i % 4))
    assert sorted(draws(3, lambda i: None)) == list(range(9))  # every trial failed: still no repeat
    point = Sampler(space, "tpe", seed=3).suggest()
    assert point is not None and point.parameters() == {
        "lora": {"r": (4, 8, 16)[point.index % 3]},
        "builder": {"int4_block_size": (32, 64, 128)[point.index // 3]},
    }


def test_samplers_are_seeded_never_repeat_and_resume_from_what_was_told() -> None:
    space = SearchSpace({"lora": {"type": "LoRA", "r": categorical(*range(1, 9))}})
    sequential = Sampler(space)
    assert [sequential.suggest().index for _ in range(8)] == list(range(8))  # type: ignore[union-attr]
    assert sequential.suggest() is None
    first, again = Sampler(space, "random", seed=7), Sampler(space, "random", seed=7)
    drawn = [first.suggest().index for _ in range(8)]  # type: ignore[union-attr]
    assert drawn == [again.suggest().index for _ in range(8)] and sorted(drawn) == list(range(8))  # type: ignore[union-attr]
    assert drawn != list(range(8)) and drawn != [
        Sampler(space, "random", seed=8).suggest().index for _ in range(8)
    ]  # type: ignore[union-attr]
    resumed = Sampler(space, "random", seed=7, told=drawn[:3])
    assert [resumed.suggest().index for _ in range(5)] == drawn[3:]  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="sampler: 'grid' is not one of sequential, random"):
        Sampler(space, "grid")


ACCURACY = Objective("accuracy-accuracy_score", 1, True, goal=0.7)
LATENCY = Objective("latency-avg", 2, False, goal=5.0)


def test_the_best_follows_olives_priority_order_and_goals() -> None:
    candidates = {
        "a": {"accuracy-accuracy_score": 0.80, "latency-avg": 4.0},
        "b": {"accuracy-accuracy_score": 0.80, "latency-avg": 3.0},  # same accuracy, faster
        "c": {"accuracy-accuracy_score": 0.90, "latency-avg": 6.0},  # most accurate, misses the latency goal
        "d": {"latency-avg": 1.0},  # no accuracy: the worst on the first objective
    }
    assert rank(candidates, [LATENCY, ACCURACY]) == ["b", "a", "c", "d"]
    assert rank(candidates, [ACCURACY, LATENCY], goals_first=False) == ["c", "b", "a", "d"]
    assert meets_goals(candidates["b"], [ACCURACY, LATENCY]) and not meets_goals(
        candidates["c"], [ACCURACY, LATENCY]
    )
    assert not meets_goals(candidates["d"], [ACCURACY, LATENCY])


def test_the_frontier_keeps_undominated_goal_meeting_candidates_and_ties() -> None:
    candidates = {
        "fast": {"accuracy-accuracy_score": 0.75, "latency-avg": 2.0},
        "accurate": {"accuracy-accuracy_score": 0.85, "latency-avg": 4.0},
        "dominated": {"accuracy-accuracy_score": 0.74, "latency-avg": 3.0},
        "twin": {"accuracy-accuracy_score": 0.85, "latency-avg": 4.0},  # equal to accurate: both stay
        "slow": {"accuracy-accuracy_score": 0.99, "latency-avg": 9.0},  # undominated but misses a goal
    }
    objectives = [ACCURACY, LATENCY]
    assert frontier(candidates, objectives) == ["accurate", "twin", "fast"]
    assert dominates(candidates["fast"], candidates["dominated"], objectives)
    assert not dominates(candidates["accurate"], candidates["twin"], objectives)
    reported_only = Objective("size-bytes", -1, False)
    assert frontier(candidates, [*objectives, reported_only]) == ["accurate", "twin", "fast"]


def test_search_strategy_takes_olives_keys_of_both_generations() -> None:
    from olivekube.search.strategy import Strategy, strategy_of

    assert strategy_of(None) is None and strategy_of(False) is None
    assert strategy_of(True) == Strategy()  # Olive's docs: a sequential joint search
    current = {
        "execution_order": "joint",
        "sampler": "random",
        "sampler_config": {"seed": 3, "max_samples": 5},
        "max_iter": 4,
        "max_time": 60,
        "stop_when_goals_met": True,
        "output_model_num": 2,
        "include_pass_params": True,
    }
    parsed = strategy_of(current)
    assert parsed == Strategy("joint", "random", 3, 5, 4, 60.0, True) and parsed.budget() == 4  # type: ignore[union-attr]
    assert strategy_of({"sampler": "random", "seed": 9, "max_samples": 2}) == Strategy(
        sampler="random", seed=9, max_samples=2
    )
    legacy = {
        "execution_order": "joint",
        "search_algorithm": "exhaustive",
        "search_algorithm_config": {"num_samples": 3, "seed": 1},
    }
    assert strategy_of(legacy) == Strategy(sampler="sequential", seed=1, max_samples=3)
    with pytest.raises(
        ValueError, match=r"^search_strategy.sampler: 'grid' is not one of sequential, exhaustive, random, tpe"
    ):
        strategy_of({"sampler": "grid"})
    with pytest.raises(ValueError, match=r"^search_strategy: unknown key\(s\) max_trials"):
        strategy_of({"max_trials": 3})
    with pytest.raises(ValueError, match=r"^engine.search_strategy.max_iter: an integer of at least 1"):
        strategy_of({"max_iter": 0}, "engine.search_strategy")


def test_validate_prints_the_space_and_names_the_point_whose_options_are_wrong(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import yaml
    from typer.testing import CliRunner

    from olivekube.cli import app
    from tests.helpers.manifests import DATA, workflow_doc

    passes = {"lora": {**LORA, "r": categorical(4, "eight")}, "builder": BUILDER}
    doc = workflow_doc("m", str(DATA), passes, search_strategy={"include_pass_params": False})
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"{path}: search over 4 points (joint, sequential)"
    assert lines[1] == '  point 0: {"lora": {"r": 4}, "builder": {"int4_block_size": 32}}'
    bad = [line for line in lines if "Input should be a valid integer" in line]
    assert bad == [
        f'{path}: point 1 {{"lora": {{"r": "eight"}}, "builder": {{"int4_block_size": 32}}}}: '
        "spec.passes.lora.r: Input should be a valid integer",
        f'{path}: point 3 {{"lora": {{"r": "eight"}}, "builder": {{"int4_block_size": 128}}}}: '
        "spec.passes.lora.r: Input should be a valid integer",
    ]
    doc["spec"]["search_strategy"] = False
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 1 and "search_strategy: the passes search" in result.output


@pytest.mark.parametrize("example", ["phi3-lora-current.json", "phi3-seed-legacy.json"])
def test_olive_configs_that_search_give_a_valid_manifest_for_every_point(example: str) -> None:
    """Olive's own form (current, and before 0.8 with `config`, `lora_r` and engine.search_strategy)."""
    import json

    from olivekube.api.olive_config import to_manifest
    from olivekube.api.workflow import parse_workflow
    from olivekube.search.config import concrete, search_of
    from tests.helpers.manifests import REPO

    raw = json.loads((REPO / "examples" / "olive" / example).read_text())
    lora = raw["passes"]["lora"]
    if "config" in lora:
        lora["config"]["lora_r"] = categorical(16, 32)
        raw.setdefault("engine", {})["search_strategy"] = {"search_algorithm": "exhaustive"}
    else:
        lora["r"] = SEARCHABLE
        raw["search_strategy"] = True
    found = search_of(raw)
    assert found is not None
    space, _ = found
    ranks = []
    for point in space.points():
        manifest, _ = to_manifest(concrete(raw, point), "searched")
        ranks.append(parse_workflow(manifest).spec.passes["lora"].r)  # type: ignore[union-attr]
    # the ranks (the first pass changes fastest), once for each of the builder's 24 points of Olive's
    # default spaces (int4_block_size 3, int4_is_symmetric 2, int4_algo_config 4), as Olive searches
    # the options not written (include_pass_params)
    assert ranks == ([16, 32] if "config" in lora else [16, 32, 64]) * 24
    assert len(space) == len(ranks)  # lora_r, the older name, is written: r's default space is not added
